"""Tests for capacity.keys: one hash tag per site-day, key order shared with the Lua scripts."""

from __future__ import annotations

import re
from datetime import date
from importlib import resources

from redis.crc import key_slot

from capacity.keys import RequestKeys, SiteDay

PALACE = SiteDay("palace-museum", date(2026, 12, 1))
PALACE_NEXT = SiteDay("palace-museum", date(2026, 12, 2))

# The names the Lua headers use for the keys, and the SiteDay attribute each one means.
LUA_KEY_NAMES = {
    "epoch": lambda sd, slot: sd.epoch,
    "day hash": lambda sd, slot: sd.day,
    "day free units": lambda sd, slot: sd.day_free,
    "visitor id hashes": lambda sd, slot: sd.visitor_ids,
    "slot hash": lambda sd, slot: sd.slot(slot),
    "slot free units": lambda sd, slot: sd.slot_free(slot),
    "owners hash": lambda sd, slot: sd.owners,
    "slot returns": lambda sd, slot: sd.slot_returns(slot),
    "day returns": lambda sd, slot: sd.day_returns,
}


def every_key(site_day: SiteDay) -> list[str]:
    return [
        *site_day.allocation_keys("0900"),
        *site_day.allocation_keys("1300"),
        site_day.epoch,
        site_day.slot_index,
        site_day.suspects,
        site_day.rebuild_lock,
    ]


def documented_keys(script: str) -> list[str]:
    """The KEYS line of a script's header, e.g. '-- KEYS: 1 epoch, 2 day hash, ...'."""
    text = resources.files("capacity").joinpath("scripts", script).read_text(encoding="utf-8")
    header = re.search(r"^-- KEYS: (.*)$", text, re.MULTILINE)
    assert header is not None
    entries = [entry.strip() for entry in header.group(1).split(",")]
    names = []
    for position, entry in enumerate(entries, start=1):
        number, _, name = entry.partition(" ")
        assert int(number) == position
        names.append(name)
    return names


def test_site_day_tag_is_the_hash_tag_of_site_and_date() -> None:
    assert PALACE.tag == "tg:{palace-museum:2026-12-01}"
    assert PALACE.slot("0900") == "tg:{palace-museum:2026-12-01}:slot:0900"
    assert PALACE.slot_free("0900") == "tg:{palace-museum:2026-12-01}:slot:0900:free"


def test_every_key_of_a_site_day_contains_the_same_hash_tag() -> None:
    for key in every_key(PALACE):
        assert re.findall(r"\{[^}]*\}", key) == ["{palace-museum:2026-12-01}"], key


def test_every_key_of_a_site_day_maps_to_one_cluster_slot() -> None:
    slots = {key_slot(key.encode()) for key in every_key(PALACE)}
    assert slots == {key_slot(b"palace-museum:2026-12-01")}


def test_keys_of_a_site_day_are_all_distinct() -> None:
    keys = [
        PALACE.epoch,
        PALACE.day,
        PALACE.day_free,
        PALACE.visitor_ids,
        PALACE.slot_index,
        PALACE.suspects,
        PALACE.rebuild_lock,
        PALACE.slot("0900"),
        PALACE.slot_free("0900"),
        PALACE.slot("1300"),
        PALACE.slot_free("1300"),
        PALACE.slot_returns("0900"),
        PALACE.slot_returns("1300"),
        PALACE.day_returns,
    ]
    assert len(set(keys)) == len(keys)


def test_keys_of_two_days_differ() -> None:
    assert set(every_key(PALACE)).isdisjoint(every_key(PALACE_NEXT))


def test_keys_of_two_sites_on_one_day_differ() -> None:
    other = SiteDay("yonghe-temple", date(2026, 12, 1))
    assert set(every_key(PALACE)).isdisjoint(every_key(other))


def test_allocation_keys_follow_the_keys_order_of_allocate_lua() -> None:
    names = documented_keys("allocate.lua")
    assert names == list(LUA_KEY_NAMES)
    expected = [LUA_KEY_NAMES[name](PALACE, "0900") for name in names]
    assert PALACE.allocation_keys("0900") == expected


def test_release_lua_takes_the_same_keys_as_allocate_lua() -> None:
    assert documented_keys("release.lua") == documented_keys("allocate.lua")


def test_request_keys_are_stable_and_separate_owners() -> None:
    first = RequestKeys.of("owner-a", "key-1")
    assert first == RequestKeys.of("owner-a", "key-1")
    assert first != RequestKeys.of("owner-b", "key-1")
    assert first != RequestKeys.of("owner-a", "key-2")


def test_request_keys_share_one_cluster_slot_with_their_shard_marker() -> None:
    keys = RequestKeys.of("owner-a", "a key with spaces and ünïcode")
    assert len({key_slot(k.encode()) for k in (keys.done, keys.in_flight, keys.warm)}) == 1
    assert "ünïcode" not in keys.done
