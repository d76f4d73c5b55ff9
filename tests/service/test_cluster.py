"""tidegate on a real three-master Redis Cluster (started by the `redis_cluster` fixture).

Every script runs whole on one node only if all its keys hash to one slot: each site-day's
keys share the hash tag `{site:date}`. A rush on one site-day therefore loads one node, and
different site-days spread over the cluster, so two busy sites on a day need not share one.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from capacity.keys import SiteDay, open_holds
from service.runtime import Runtime
from tests.conftest import TODAY, YONGHE_10, hold, lift_account_limits, new_tourist, visitor
from tests.redis_cluster import RedisClusterProcesses

# Thursday 3 December: the two busiest sites' keys hash to slots of different masters (on
# about one day in three any two site-days share a master, by chance: see the spread test).
BUSY_DAY = date(2026, 12, 3)
PALACE = SiteDay("palace-museum", BUSY_DAY)
TEMPLE = SiteDay("temple-of-heaven", BUSY_DAY)


@pytest.fixture
def redis_url(redis_cluster: RedisClusterProcesses) -> str:
    """This module always runs on the cluster, whatever Redis the rest of the suite uses."""
    return redis_cluster.url


# Each script by the first words of its own header comment (room.lua comes first in some).
SCRIPTS = {
    "allocate": "-- Allocate places for a party",
    "release": "-- Return units to one slot",
    "move": "-- Move a party from one slot",
    "rebuild": "-- Replace one site-day's counters",
    "set_capacity": "-- Change the cap of a slot",
    "claim_hold": "-- Count one more open hold",
    "begin_request": "-- Start an idempotent request",
}


@pytest.fixture
def script_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Every Lua script call's name and keys, as the client sends them."""
    calls: list[tuple[str, list[str]]] = []
    call = AsyncScript.__call__

    async def recording(
        self: AsyncScript, keys: Any = None, args: Any = None, client: Any = None
    ) -> Any:
        source = str(self.script)
        name = next((name for name, mark in SCRIPTS.items() if mark in source), "other")
        calls.append((name, [str(key) for key in keys or []]))
        return await call(self, keys=keys, args=args, client=client)

    monkeypatch.setattr(AsyncScript, "__call__", recording)
    return calls


def site_day_keys(site_day: SiteDay, slot_key: str) -> list[str]:
    """Every key name `SiteDay` makes, for one of its slots."""
    names = [
        getattr(site_day, name)
        for name, member in inspect.getmembers(SiteDay)
        if isinstance(member, property)
    ]
    names += [site_day.slot(slot_key), site_day.slot_free(slot_key)]
    names += [site_day.slot_returns(slot_key), *site_day.allocation_keys(slot_key)]
    names += site_day.move_keys(slot_key, "1400")
    return [name for name in names if isinstance(name, str) and name.startswith("tg:")]


def test_every_key_of_a_site_day_hashes_to_one_slot() -> None:
    for site in ("palace-museum", "temple-of-heaven", "yonghe-temple"):
        for day in (TODAY, TODAY + timedelta(days=1)):
            site_day = SiteDay(site, day)
            keys = site_day_keys(site_day, "1000")
            assert len(keys) >= 20, keys
            assert {key_slot(key.encode()) for key in keys} == {
                key_slot(f"{site}:{day.isoformat()}".encode())
            }


def test_site_days_spread_evenly_over_three_masters() -> None:
    """Across a season, each master owns about a third of the demo's busiest site-days."""
    sites = ["palace-museum", "temple-of-heaven", "beihai-park", "jingshan-park"]
    days = [date(2026, 12, 1) + timedelta(days=n) for n in range(90)]
    per_master = [0, 0, 0]
    for site in sites:
        for day in days:
            per_master[key_slot(SiteDay(site, day).epoch.encode()) * 3 // 16384] += 1
    assert sum(per_master) == 360
    assert all(90 <= count <= 150 for count in per_master), per_master


async def test_the_runtime_talks_to_the_cluster(runtime: Runtime, redis_cluster: Any) -> None:
    assert isinstance(runtime.redis, RedisCluster)
    assert {node.port for node in runtime.redis.get_primaries()} == set(redis_cluster.ports)


async def test_every_script_of_a_booking_day_runs_on_one_slot(
    client: httpx.AsyncClient,
    runtime: Runtime,
    admin: dict[str, str],
    script_calls: list[tuple[str, list[str]]],
) -> None:
    """Hold, confirm, reschedule, cancel, change a cap, rebuild: each script call's keys
    share one slot (on a cluster, Redis itself would refuse them with CROSSSLOT)."""
    tourist = await new_tourist(client)
    held = await hold(client, {**tourist, "Idempotency-Key": "cluster-hold"})
    assert held.status_code == 201, held.text
    reservation = held.json()["id"]
    path = f"/v1/reservations/{reservation}"
    confirmed = await client.post(f"{path}/confirm", headers=tourist)
    assert confirmed.status_code == 200, confirmed.text
    moved = await client.post(
        f"{path}/reschedule", json={"slot_id": "yonghe-temple.2026-12-01.1400"}, headers=tourist
    )
    assert moved.status_code == 200, moved.text
    cancelled = await client.post(f"{path}/cancel", headers=tourist)
    assert cancelled.status_code == 200, cancelled.text
    changed = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 50}, headers=admin)
    assert changed.status_code == 200, changed.text
    await runtime.reconciler.rebuild(SiteDay("yonghe-temple", TODAY))

    assert {name for name, _ in script_calls} >= set(SCRIPTS)
    for name, keys in script_calls:
        assert keys, name
        assert len({key_slot(key.encode()) for key in keys}) == 1, (name, keys)


async def test_two_busy_sites_land_on_different_nodes(
    client: httpx.AsyncClient, runtime: Runtime, redis_cluster: RedisClusterProcesses
) -> None:
    await lift_account_limits(runtime)
    tourist = await new_tourist(client)
    for slot_id in ("palace-museum.2026-12-03.1100", "temple-of-heaven.2026-12-03.1200"):
        response = await hold(client, tourist, slot_id)
        assert response.status_code == 201, response.text

    cluster = runtime.redis
    assert isinstance(cluster, RedisCluster)
    owners = {}
    for site_day in (PALACE, TEMPLE):
        node = cluster.get_node_from_key(site_day.epoch)
        assert node is not None
        slot = key_slot(site_day.epoch.encode())
        # The node that owns the slot holds the site-day's keys, and no other node does.
        stored = await cluster.execute_command(
            "CLUSTER GETKEYSINSLOT", slot, 1000, target_nodes=node
        )
        assert {site_day.epoch, site_day.day, site_day.visitor_ids} <= set(stored)
        for other in cluster.get_primaries():
            if other.name != node.name:
                count = await cluster.execute_command(
                    "CLUSTER COUNTKEYSINSLOT", slot, target_nodes=other
                )
                assert count == 0
        owners[str(site_day)] = node.port
    assert owners["palace-museum:2026-12-03"] != owners["temple-of-heaven:2026-12-03"]
    assert set(owners.values()) <= set(redis_cluster.ports)


async def test_a_rush_on_the_cluster_sells_exactly_the_slot(
    client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    await lift_account_limits(runtime)
    changed = await client.patch(f"/v1/slots/{YONGHE_10}", json={"capacity": 25}, headers=admin)
    assert changed.status_code == 200, changed.text
    tourists = [await new_tourist(client) for _ in range(4)]
    answers = await asyncio.gather(
        *(hold(client, tourists[n % 4], visitors=[visitor()]) for n in range(60))
    )
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(201) == 25
    assert statuses.count(409) == 35
    slot = await client.get(f"/v1/slots/{YONGHE_10}")
    assert slot.json()["remaining"] == 0
    assert (await runtime.reconciler.reconcile()).drift == 0


async def test_an_account_key_is_one_slot_of_its_own() -> None:
    assert key_slot(open_holds("acct-1").encode()) == key_slot(b"acct:acct-1")


async def test_one_client_takes_a_rush_of_commands_at_once_on_one_node(runtime: Runtime) -> None:
    """1,500 commands in flight at once on one master: each gets its answer (redis-py's default
    of 100 connections a node refused the rest, and its topology refresh then broke the
    connections other requests were using: bookings answered 500)."""
    cluster = runtime.redis
    assert isinstance(cluster, RedisCluster)
    key = PALACE.day
    await cluster.hset(key, "probe", "1")
    answers = await asyncio.gather(*(cluster.hget(key, "probe") for _ in range(1500)))
    assert answers == ["1"] * 1500
