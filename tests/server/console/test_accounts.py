"""Console accounts: passwords and principals (server/console/accounts.py), the store's
accounts, sessions and figures on both backends, and `lmg account ...`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import secrets
import uuid

import orjson
import pytest

from lmg.protocol.regions import UnknownRegion
from lmg.server.admin.api import ApiRequest
from lmg.server.cli import main
from lmg.server.console import accounts
from lmg.storage import (
    AccountExists, ConsoleSession, Department, EvaluationScope, UnknownAccount, WarningFinding, open_store,
)
from tests.server.console.conftest import A, B, CITY, NOW_MS, PASSWORD, password_hash, person
from tests.server.supervision.conftest import Clock
from tests.storage.conftest import BACKENDS, PG_DSN, drop_schema, require_postgres


# --- passwords and principals -----------------------------------------------------------------


def test_short_and_repetitive_passwords_are_refused():
    for weak in ("", "123456789", "aaaaaaaaaaaa", "abababababab"):
        with pytest.raises(accounts.WeakPassword):
            accounts.hash_password(weak)


def test_a_hash_is_argon2id_and_checks_only_its_password():
    stored = password_hash()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.verify_password(stored, PASSWORD)
    assert not accounts.verify_password(stored, PASSWORD + "x")
    assert not accounts.verify_password(None, PASSWORD)  # an unknown name: the dummy hash, never a match
    assert not accounts.verify_password("not a hash", PASSWORD)


def test_session_ids_are_random_and_stored_as_their_sha256():
    (one, digest), (two, _) = accounts.new_session_id(), accounts.new_session_id()
    assert one != two and len(one) == 43 and digest == hashlib.sha256(one.encode()).digest()


def _account(role: str, region: str, department: str = "住建", pii: bool = False):
    from lmg.storage.console import new_account

    return new_account("someone", password_hash(), department, region, role, pii, "test", NOW_MS)


def test_a_supervisor_acts_as_a_region_token_and_an_operator_as_an_operator_token():
    county = accounts.principal(_account("supervisor", A, pii=True))
    assert (county.region_code, county.department, county.scopes) == (A, Department.CONSTRUCTION,
                                                                      frozenset({"read", "write", "pii"}))
    req = ApiRequest(None, None, county)  # type: ignore[arg-type]
    assert req.sees(A) and not req.sees(B) and req.list_scope(CITY) == A
    province_ops = accounts.principal(_account("operator", "620000"))
    assert (province_ops.region_code, province_ops.department, province_ops.scopes) == (None, None,
                                                                                         frozenset({"read", "write"}))
    ApiRequest(None, None, province_ops).require_operator()  # type: ignore[arg-type]  # passes
    county_ops = accounts.principal(_account("operator", A))
    assert county_ops.region_code == A and county_ops.department is None


# --- the store, both backends -----------------------------------------------------------------


def _session(account: str, now: int, csrf: str | None = None) -> tuple[ConsoleSession, bytes]:
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    return ConsoleSession(digest, account, csrf or secrets.token_urlsafe(32), now, now + 43_200_000, now), digest


async def test_accounts_are_created_once_listed_and_checked(console_store):
    store = console_store
    made = await store.create_console_account("zhang.san", password_hash(), department="人社", region_code=A,
                                              role="operator", pii=True, created_by="tester")
    assert (made.department, made.role, made.pii, made.disabled, made.failed_logins) == (Department.LABOUR,
                                                                                        "operator", True, False, 0)
    assert await store.get_console_account("zhang.san") == made
    with pytest.raises(AccountExists):
        await store.create_console_account("zhang.san", password_hash(), department="住建", region_code=A)
    for bad in (dict(name="", region_code=A), dict(name="x" * 65, region_code=A), dict(name="ok", region_code=A,
                                                                                     role="admin")):
        with pytest.raises(ValueError):
            await store.create_console_account(password_hash=password_hash(), department="住建",
                                               **{"role": "supervisor", **bad})
    with pytest.raises(UnknownRegion):
        await store.create_console_account("ok", password_hash(), department="住建", region_code="629999")
    with pytest.raises(ValueError):
        await store.create_console_account("ok", "plaintext password", department="住建", region_code=A)
    with pytest.raises(ValueError):
        await store.create_console_account("ok", password_hash(), department="教育", region_code=A)
    await store.create_console_account("li.si", password_hash(), department="construction", region_code=CITY)
    assert [a.name for a in await store.list_console_accounts()] == ["li.si", "zhang.san"]
    assert await store.get_console_account("nobody") is None


async def test_sessions_live_until_ended_and_a_new_password_or_disabling_ends_them(console_store, clock):
    store = console_store
    await store.create_console_account("a", password_hash(), department="住建", region_code=A)
    await store.create_console_account("b", password_hash(), department="住建", region_code=B)
    one, one_id = _session("a", clock.now_ms)
    two, two_id = _session("a", clock.now_ms)
    other, other_id = _session("b", clock.now_ms)
    for s in (one, two, other):
        await store.create_console_session(s)
    assert await store.get_console_session(one_id) == one
    with pytest.raises(UnknownAccount):
        await store.create_console_session(_session("ghost", clock.now_ms)[0])
    with pytest.raises(ValueError):
        await store.create_console_session(_session("a", clock.now_ms, csrf="short")[0])
    await store.touch_console_session(one_id, clock.now_ms + 5_000)
    assert (await store.get_console_session(one_id)).last_seen_ms == clock.now_ms + 5_000
    assert await store.end_console_sessions(id_sha256=two_id) == 1
    assert await store.get_console_session(two_id) is None
    assert await store.update_console_account("a", password_hash=accounts.hash_password("another passphrase"))
    assert await store.get_console_session(one_id) is None  # a new password signs everyone out
    assert await store.get_console_session(other_id) == other  # another account's session stays
    assert await store.update_console_account("b", disabled=True)
    assert await store.get_console_session(other_id) is None and (await store.get_console_account("b")).disabled
    assert not await store.update_console_account("ghost", disabled=True)


async def test_prune_drops_sessions_past_their_absolute_or_idle_end(console_store, clock):
    store = console_store
    await store.create_console_account("a", password_hash(), department="住建", region_code=A)
    fresh, fresh_id = _session("a", clock.now_ms)
    idle, idle_id = _session("a", clock.now_ms - 3_600_000)
    await store.create_console_session(fresh)
    await store.create_console_session(idle)
    old = ConsoleSession(hashlib.sha256(b"old").digest(), "a", secrets.token_urlsafe(32), 0, clock.now_ms,
                         clock.now_ms)
    await store.create_console_session(old)
    assert await store.prune_console_sessions(now_ms=clock.now_ms, idle_before_ms=clock.now_ms - 1_800_000) == 2
    assert await store.get_console_session(fresh_id) == fresh and await store.get_console_session(idle_id) is None


async def test_the_lockout_state_is_written_back(console_store):
    store = console_store
    await store.create_console_account("a", password_hash(), department="住建", region_code=A)
    assert await store.set_console_lockout("a", failed_logins=0, locked_until_ms=123, lockout_level=2)
    got = await store.get_console_account("a")
    assert (got.failed_logins, got.locked_until_ms, got.lockout_level) == (0, 123, 2)
    assert not await store.set_console_lockout("ghost", failed_logins=1, locked_until_ms=None, lockout_level=0)
    with pytest.raises(ValueError):
        await store.set_console_lockout("a", failed_logins=-1, locked_until_ms=None, lockout_level=0)


async def test_warning_counts_by_region_level_state_and_openings_by_china_day(console_store, clock):
    from datetime import date

    store = console_store
    for code, region in (("P-A", A), ("P-B", B), ("P-XQ", "620171")):
        await store.add_project(code, name="项目", region_code=region)
    first, last = date(2026, 8, 1), date(2026, 8, 28)
    # 2026-08-31 16:30 UTC is 2026-09-01 00:30 in China: a September day; B and 新区 open at 2026-08-02 00:00 China
    at = {"P-A": 1_788_193_800_000, "P-B": 1_785_600_000_000, "P-XQ": 1_785_600_000_000}
    for code, at_ms in at.items():
        findings = [WarningFinding("low-presence", code, person(A, n), "project-manager", first, last,
                                   {"valid_days": 1, "construction_days": 20, "rate": 0.05}) for n in (1, 2)]
        await store.apply_warnings(EvaluationScope(frozenset({"low-presence"}), first, last, frozenset({code})),
                                   findings, at_ms)
    # one of B's is resolved: the next evaluation does not find it
    await store.apply_warnings(EvaluationScope(frozenset({"low-presence"}), first, last, frozenset({"P-B"})),
                               [WarningFinding("low-presence", "P-B", person(A, 1), "project-manager", first, last,
                                               {"valid_days": 1, "construction_days": 20, "rate": 0.05})],
                               at["P-B"] + 1)
    counts = await store.warning_counts(region_scope=CITY)
    assert [(c.region_code, c.level, c.state.value, c.count) for c in counts] == [
        (A, 1, "open", 2), (B, 1, "open", 1), (B, 1, "resolved", 1)]  # not 兰州新区, though its code is 6201..
    assert [(c.region_code, c.count) for c in await store.warning_counts(region_scope=CITY, state="open")] == [
        (A, 2), (B, 1)]
    assert len(await store.warning_counts(state="open")) == 3
    with pytest.raises(ValueError):
        await store.warning_counts(state="sleeping")
    assert await store.warnings_opened(since_ms=0, region_scope=CITY) == [(date(2026, 8, 2), 2),
                                                                         (date(2026, 9, 1), 2)]
    assert await store.warnings_opened(since_ms=at["P-A"], region_scope=A) == [(date(2026, 9, 1), 2)]
    assert await store.warnings_opened(since_ms=at["P-A"] + 1) == []


async def test_the_outbox_glance_counts_up_to_its_cap(console_store, clock):
    from lmg.storage import PunchIn

    store = console_store
    assert await store.outbox_glance(now_ms=clock.now_ms, cap=3) == await store.outbox_status(clock.now_ms)
    await store.store_punches([PunchIn("D1", n, person(A, 1), clock.now_ms, 1, 1, 365, None, 0) for n in range(6)])
    clock.now_ms += 5_000
    items = await store.claim_outbox(1, clock.now_ms, lease_ms=1_000)
    await store.dead_letter([items[0].id], "refused")
    exact = await store.outbox_status(clock.now_ms)
    assert (exact.pending, exact.dead_letters) == (5, 1)
    assert await store.outbox_glance(now_ms=clock.now_ms, cap=10) == exact
    capped = await store.outbox_glance(now_ms=clock.now_ms, cap=3)
    assert (capped.pending, capped.dead_letters, capped.oldest_age_s) == (4, 1, exact.oldest_age_s)


async def test_count_devices_by_presence_and_region(console_store):
    store = console_store
    for serial, region in (("D1", A), ("D2", A), ("D3", B)):
        await store.add_device(serial, project_code="P", region_code=region)
    assert await store.count_devices() == 3
    assert await store.count_devices(online=False, region_scope=A) == 2
    assert await store.count_devices(online=True, region_scope=CITY) == 0


# --- lmg account --------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lmg.db'}"
        return
    require_postgres()
    made = f"{PG_DSN}?schema=t_{uuid.uuid4().hex[:12]}"
    yield made
    asyncio.run(drop_schema(made.rsplit("schema=", 1)[1]))


def lmg(capsys, monkeypatch, url: str, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["account", *argv, "--store", url])
    out, err = capsys.readouterr()
    return code, out, err


def _stored(url: str, tmp_path, name: str):
    async def read():
        store = await open_store(url, data_dir=tmp_path, clock_ms=Clock(NOW_MS))
        try:
            return await store.get_console_account(name), await store.list_audit(limit=20)
        finally:
            await store.close()

    return asyncio.run(read())


def test_account_create_list_disable_unlock_passwd(url, capsys, monkeypatch, tmp_path):
    code, out, _ = lmg(capsys, monkeypatch, url, "create", "wang", "--department", "住建", "--region", A, "--pii",
                       "--password-stdin", "--json", stdin=PASSWORD + "\n")
    assert code == 0 and orjson.loads(out) == {"name": "wang", "department": "construction", "region": A,
                                               "role": "supervisor", "pii": True, "by": orjson.loads(out)["by"]}
    code, out, _ = lmg(capsys, monkeypatch, url, "create", "zhao", "--department", "labour", "--region", "620000",
                       "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "人社 620000 甘肃省, operator" in out
    account, _ = _stored(url, tmp_path, "wang")
    assert accounts.verify_password(account.password_hash, PASSWORD) and PASSWORD not in account.password_hash
    code, out, _ = lmg(capsys, monkeypatch, url, "list", "--json")
    assert [(a["name"], a["department"], a["role"], a["pii"]) for a in orjson.loads(out)] == [
        ("wang", "construction", "supervisor", True), ("zhao", "labour", "operator", False)]
    code, out, _ = lmg(capsys, monkeypatch, url, "list")
    assert "wang" in out and "active" in out and PASSWORD not in out

    async def lock():
        store = await open_store(url, data_dir=tmp_path)
        try:
            await store.set_console_lockout("wang", failed_logins=0, locked_until_ms=2**42, lockout_level=3)
        finally:
            await store.close()

    asyncio.run(lock())
    assert "locked" in lmg(capsys, monkeypatch, url, "list")[1]
    assert lmg(capsys, monkeypatch, url, "unlock", "wang")[0] == 0
    account, _ = _stored(url, tmp_path, "wang")
    assert (account.failed_logins, account.locked_until_ms, account.lockout_level) == (0, None, 0)
    assert lmg(capsys, monkeypatch, url, "passwd", "wang", "--password-stdin", stdin="a new passphrase!\n")[0] == 0
    account, _ = _stored(url, tmp_path, "wang")
    assert accounts.verify_password(account.password_hash, "a new passphrase!")
    assert lmg(capsys, monkeypatch, url, "disable", "wang")[0] == 0
    account, audit = _stored(url, tmp_path, "wang")
    assert account.disabled
    assert {e.event for e in audit} >= {"console_account_created", "console_account_unlocked",
                                         "console_account_password_changed", "console_account_disabled"}
    assert all(e.subject.startswith("account:") for e in audit if e.event.startswith("console_account"))


def test_account_mistakes_exit_2_with_what_to_do(url, capsys, monkeypatch):
    ok = ("--department", "住建", "--region", A, "--password-stdin")
    code, _, err = lmg(capsys, monkeypatch, url, "create", "wang", *ok, stdin="short\n")
    assert code == 2 and "at least 10 characters" in err
    code, _, err = lmg(capsys, monkeypatch, url, "create", "wang", "--department", "教育", "--region", A,
                       "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2 and "住建" in err
    code, _, err = lmg(capsys, monkeypatch, url, "create", "wang", "--department", "住建", "--region", "629999",
                       "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2 and "629999" in err
    assert lmg(capsys, monkeypatch, url, "create", "wang", *ok, stdin=PASSWORD + "\n")[0] == 0
    code, _, err = lmg(capsys, monkeypatch, url, "create", "wang", *ok, stdin=PASSWORD + "\n")
    assert code == 2 and "already exists" in err
    code, _, err = lmg(capsys, monkeypatch, url, "create", "bad name", *ok, stdin=PASSWORD + "\n")
    assert code == 2 and "account name" in err
    for action in ("disable", "unlock"):
        code, _, err = lmg(capsys, monkeypatch, url, action, "nobody")
        assert code == 2 and "lmg account list" in err
    code, _, err = lmg(capsys, monkeypatch, url, "create", "li", "--department", "住建", "--region", A)
    assert code == 2 and "--password-stdin" in err  # no terminal to prompt at
