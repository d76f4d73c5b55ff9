from __future__ import annotations

import httpx

from tests.conftest import YONGHE_10, hold


async def test_hold_answers_201_with_masked_visitors(
    client: httpx.AsyncClient, tourist: dict[str, str]
) -> None:
    visitors = [{"name": "Li Lei", "id_type": "resident_id", "id_number": "11010519491231002x"}]
    response = await hold(client, tourist, visitors=visitors)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "held"
    assert body["slot_id"] == YONGHE_10
    assert body["visitors"] == [
        {"name": "Li Lei", "id_type": "resident_id", "id_number_masked": "1101**********002X"}
    ]
