"""Lockout of failed authentications: per (serial, address) and per address, never a whole site.

The pure guard (server/gateway/lockout.py) first, then the gateway over real sockets with an
injected clock: no test sleeps for a lockout to pass.
"""

from __future__ import annotations

import asyncio
import os

from hypothesis import given
from hypothesis import strategies as st

from lmg.protocol import ResultCode
from lmg.server.gateway.auth_audit import FailureAudit, clean
from lmg.server.gateway.lockout import AuthGuard
from lmg.simulators.terminal import DeviceCredentials

from tests.server.conftest import wait_for

NAT = "10.0.0.1"


# --- the guard, pure ------------------------------------------------------------------------


def test_a_pair_lock_grows_is_capped_and_stays_with_its_serial_and_address():
    guard = AuthGuard(pair_failures=3, base_ms=1000, max_ms=4000)
    assert guard.failed(NAT, "GS-1", 0) == guard.failed(NAT, "GS-1", 0) == []
    (lock,) = guard.failed(NAT, "GS-1", 0)
    assert (lock.scope, lock.serial, lock.until_ms, lock.failures) == ("pair", "GS-1", 1000, 3)
    assert guard.locked_until(NAT, "GS-1", 999) == 1000
    assert not guard.is_locked(NAT, "GS-2", 999)  # another terminal behind the same NAT
    assert not guard.is_locked("10.9.9.9", "GS-1", 999)  # the same serial elsewhere
    assert not guard.is_locked(NAT, "GS-1", 1000)
    locks = [guard.failed(NAT, "GS-1", 1000) for _ in range(3)]
    assert locks[-1][0].until_ms == 1000 + 2000  # the second lockout is twice as long
    for _ in range(9):
        locks.append(guard.failed(NAT, "GS-1", 10_000))
    assert locks[-1][0].until_ms == 10_000 + 4000  # capped
    fresh = AuthGuard(pair_failures=3)
    fresh.failed("a", "s", 0)
    fresh.failed("a", "s", 0)
    fresh.succeeded("a", "s")
    assert fresh.failed("a", "s", 0) == []  # the count started again


@given(st.lists(st.tuples(st.sampled_from(["X", "Y", "Z"]), st.sampled_from(["GS-1", "GS-2"])), max_size=200))
def test_failures_from_one_address_never_lock_a_serial_at_another(failures):
    """A stranger who read a serial off a device cannot keep it locked out: the serial's
    failures from X never lock it at W, where nothing failed."""
    guard = AuthGuard(pair_failures=2, address_failures=5)
    for now, (address, serial) in enumerate(failures):
        guard.failed(address, serial, now)
        assert not guard.is_locked("W", "GS-1", now)
        assert not guard.is_locked("W", "GS-2", now)


def test_an_address_lock_stops_a_scan_but_spares_the_terminals_that_authenticated_there():
    guard = AuthGuard(pair_failures=5, address_failures=10, address_window_ms=60_000, base_ms=60_000)
    guard.succeeded(NAT, "GS-GOOD")
    started = []
    for i in range(10):  # a scan: ten serials, one try each
        started += guard.failed(NAT, f"GS-SCAN-{i}", 1000 + i)
    assert [lock.scope for lock in started] == ["address"]
    assert guard.locked_until(NAT, "GS-SCAN-99", 2000) == 1009 + 60_000
    assert guard.locked_until(NAT, "GS-NEW", 2000) > 0  # never seen here: locked with the scan
    assert not guard.is_locked(NAT, "GS-GOOD", 2000)  # authenticated from here before: spared
    assert not guard.is_locked("10.0.0.2", "GS-SCAN-1", 2000)


def test_address_failures_are_counted_per_window():
    guard = AuthGuard(pair_failures=100, address_failures=3, address_window_ms=10_000)
    guard.failed(NAT, "a", 0)
    guard.failed(NAT, "b", 5_000)
    assert guard.failed(NAT, "c", 10_000) == []  # the first window ended: counting restarted
    assert guard.failed(NAT, "d", 11_000) == []
    assert [lock.scope for lock in guard.failed(NAT, "e", 12_000)] == ["address"]


def test_lockout_memory_is_bounded():
    guard = AuthGuard(pair_failures=2, max_keys=100)
    for i in range(1000):
        guard.failed(f"10.0.{i // 256}.{i % 256}", "x" * 255, 0)
        guard.succeeded(f"10.1.{i // 256}.{i % 256}", "y" * 255)
    assert len(guard._records) == 100 and len(guard._trusted) == 100
    assert all(len(key[-1]) <= 64 for key in guard._records)  # junk serials are cut in keys


# --- the failure audit, pure --------------------------------------------------------------------


def test_repeated_failures_from_one_source_are_one_row_per_window_with_a_count():
    audit = FailureAudit(window_ms=60_000, max_sources=2)
    first = audit.failed(NAT, "GS-\x00EVIL\n" + "A" * 300, "UNKNOWN_DEVICE", 0)
    assert len(first) == 1 and first[0].detail == {"reason": "UNKNOWN_DEVICE", "count": 1}
    assert first[0].subject.startswith("GS-?EVIL?") and len(first[0].subject) == 64
    rows = [row for i in range(599) for row in audit.failed(NAT, f"GS-{i % 7}", "UNKNOWN_DEVICE", 1 + i)]
    assert rows == []  # 600 HELLOs in a window: nothing more written yet
    (summary,) = audit.due(60_000)
    assert summary.detail["count"] == 599 and summary.detail["reasons"] == {"UNKNOWN_DEVICE": 599}
    assert len(summary.detail["serials"]) == 5
    assert audit.due(120_000) == [] and len(audit) == 0
    # many sources: the oldest window is closed early, memory stays bounded
    for i in range(10):
        audit.failed(f"10.0.0.{i}", "s", "BAD_SIGNATURE", 200_000)
        audit.failed(f"10.0.0.{i}", "s", "BAD_SIGNATURE", 200_001)
    assert len(audit) == 2


def test_clean_keeps_printable_text_and_cuts_the_rest():
    assert clean("GS-LZ-000123") == "GS-LZ-000123"
    assert clean("a\x00b\x1b[31mc") == "a?b?[31mc"
    assert clean("x" * 100, 10) == "x" * 9 + "…"


# --- the gateway --------------------------------------------------------------------------------


class Clock:
    def __init__(self, now_ms: int = 1_800_000_000_000):
        self.now = now_ms

    def __call__(self) -> int:
        return self.now


async def test_one_terminal_with_a_wrong_secret_behind_a_nat_does_not_lock_out_the_other_49(start_gateway):
    """The issue's scenario: 50 terminals behind one address, one with a mistyped secret
    retrying every 2 s for a minute (simulated), the other 49 connecting throughout. Before,
    five failures locked the whole address for 60 s and more."""
    clock = Clock()
    gw = await start_gateway(clock_ms=clock)
    good = [await gw.add_device(f"GS-NAT-{i:03d}") for i in range(49)]
    bad = DeviceCredentials(gw.device.serial, os.urandom(32))

    async def connect(credentials: DeviceCredentials) -> int:
        client = await gw.raw(local_addr="127.0.0.5")
        result = await client.authenticate(credentials)
        await client.close()
        return result.result

    bad_results = []
    for _ in range(31):  # 0, 2, ..., 60 s
        bad_results.append(await connect(bad))
        results = await asyncio.gather(*(connect(device) for device in good))
        assert results == [ResultCode.OK] * 49, [ResultCode(r).name for r in results]
        clock.now += 2_000
    threshold = gw.config.gateway.lockout_pair_failures
    assert bad_results[:threshold] == [ResultCode.BAD_SIGNATURE] * threshold
    assert ResultCode.LOCKED_OUT in bad_results  # the bad one is locked, alone
    # its correct secret is refused too until its lock ends, from this address only ...
    assert await connect(gw.device) == ResultCode.LOCKED_OUT
    elsewhere = await gw.raw(local_addr="127.0.0.6")
    assert (await elsewhere.authenticate(gw.device)).result == ResultCode.OK


async def test_a_locked_out_terminal_is_told_when_to_retry_and_every_lockout_is_audited(start_gateway):
    clock = Clock()
    gw = await start_gateway(clock_ms=clock, lockout_pair_failures=2, lockout_base_s=90, auth_audit_window_s=60)
    wrong = DeviceCredentials(gw.device.serial, os.urandom(32))
    for _ in range(2):
        client = await gw.raw()
        assert (await client.authenticate(wrong)).result == ResultCode.BAD_SIGNATURE
    clock.now += 30_000
    client = await gw.raw()
    refused = await client.authenticate(gw.device)
    assert (refused.result, refused.retry_after_s) == (ResultCode.LOCKED_OUT, 60)  # 90 s lock, 30 s gone
    assert await client.closed_after() == []
    clock.now += 60_000
    assert (await (await gw.raw()).authenticate(gw.device)).result == ResultCode.OK
    clock.now += 60_000
    await gw.gateway.flush_failure_audit()

    async def audited():
        entries = await gw.store.list_audit(limit=50)
        kinds = [e.event for e in entries]
        return entries if "auth_lockout" in kinds and kinds.count("auth_failed") >= 2 else None

    entries = await wait_for(audited, what="the lockout and the failures in the audit log")
    (lock,) = [e for e in entries if e.event == "auth_lockout"]
    assert (lock.subject, lock.address) == (gw.device.serial, "127.0.0.1")
    assert lock.detail["scope"] == "pair" and lock.detail["retry_after_s"] == 90
    failed = sorted((e for e in entries if e.event == "auth_failed"), key=lambda e: e.detail["count"])
    # the first failure at once; the rest of the window (a failure and a LOCKED_OUT) as one row
    assert [e.detail["count"] for e in failed] == [1, 2]
    assert failed[1].detail["reasons"] == {"BAD_SIGNATURE": 1, "LOCKED_OUT": 1}
    assert gw.gateway.counters["lockouts_pair"] == 1


async def test_failed_logins_are_logged_at_info_at_most_once_per_interval(gw, caplog):
    # Before: one line per failure, with the serial as sent (NUL bytes and all).
    import logging

    caplog.set_level(logging.DEBUG, logger="lmg")
    for _ in range(20):
        client = await gw.raw()
        result = await client.authenticate(DeviceCredentials("GS-\x00" + "N" * 200, os.urandom(32)))
        assert result.result in (ResultCode.UNKNOWN_DEVICE, ResultCode.LOCKED_OUT)  # locked after 5
    lines = [r for r in caplog.records if r.getMessage().startswith("authentication refused")]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "\x00" not in lines[0].serial and len(lines[0].serial) <= 64
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
