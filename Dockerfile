# tidegate: one image for the API (`tidegate serve`) and the background worker
# (`tidegate worker`). Build: docker build -t tidegate .   Run: see compose.yaml, docs/deploy.md.

# --- build: a virtualenv with tidegate and its dependencies ---------------------------------
FROM python:3.11.7-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
RUN python -m venv /opt/tidegate
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY service ./service
COPY booking ./booking
COPY capacity ./capacity
# Editable, so that `tidegate migrate` finds alembic/ beside the packages in /app.
RUN /opt/tidegate/bin/pip install --no-cache-dir -e .

# --- run: the virtualenv and the code, as an unprivileged user ------------------------------
FROM python:3.11.7-slim-bookworm AS run

ENV PATH=/opt/tidegate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIDEGATE_DATA_DIR=/var/lib/tidegate

RUN groupadd --system --gid 10001 tidegate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tidegate --create-home tidegate

COPY --from=build /opt/tidegate /opt/tidegate
COPY --from=build /app /app

USER 10001:10001
WORKDIR /var/lib/tidegate
EXPOSE 8000

# Liveness of the API process; the worker's compose service sets a check of its own.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

ENTRYPOINT ["tidegate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
