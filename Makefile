# tidegate: `make run` serves on the embedded defaults, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo test lint typecheck layers install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/tidegate migrate
	$(BIN)/tidegate seed --demo
	$(BIN)/tidegate serve --host 127.0.0.1 --port 8000

# A day brought to life: the service on a clock 60 times faster (from 08:50 in Beijing today)
# and the simulator driving it; the dashboard link is printed. Rate limits are off: the
# simulator is many tourists behind one address.
demo: $(STAMP)
	$(BIN)/tidegate migrate
	$(BIN)/tidegate seed --demo
	TIDEGATE_CLOCK_START=$$(TZ=Asia/Shanghai date +%F)T08:50:00+08:00 TIDEGATE_CLOCK_SPEED=60 \
	  TIDEGATE_RATE_LIMITS=off \
	  $(BIN)/tidegate serve --host 127.0.0.1 --port 8000 & server=$$!; \
	  trap 'kill $$server' EXIT; \
	  until $(BIN)/python -c "import httpx; httpx.get('http://127.0.0.1:8000/readyz').raise_for_status()" \
	    2>/dev/null; do sleep 0.5; done; \
	  $(BIN)/tidegate simulate --url http://127.0.0.1:8000 --seconds 600

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

test: lint typecheck layers
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/flash_sale.py --n 5000 --c 64 --k 2000

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
