"""The Store contract of the operations API (migration 4), on every backend: API tokens,
the session-end signal (signals of kind session_end since migration 5), devices' last
address, and the operators' listings."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pickle
import sqlite3

import asyncpg
import pytest

from lmg.storage import (
    MAX_PUNCH_PAGE, ApiToken, Device, Presence, SessionEndReason, StoreNotFound, TokenExists,
    UnknownDevice, open_store,
)
from lmg.storage.postgres import signals_channel
from lmg.storage.url import parse_store_url
from test_store_contract import punch

# As in conftest.py; not imported from there, as other test folders have a conftest too.
PG_DSN = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
T0 = 1_700_000_000_000
WORKER_A = "620102199001011234"
WORKER_B = "62010219900101123X"
WAIT_S = 5.0  # for a notification that normally arrives in a few ms


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def raw_sql(backend, sqlite_sql: str, pg_sql: str) -> None:
    """Run SQL beside the store, on its database (the PostgreSQL text gets {schema})."""
    if backend.name == "sqlite":
        conn = sqlite3.connect(parse_store_url(backend.url).sqlite_path)
        try:
            conn.executescript(sqlite_sql)
        finally:
            conn.close()
        return
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(pg_sql.format(schema=backend.url.rsplit("schema=", 1)[1]))
    finally:
        await conn.close()


# ------------------------------------------------------------------------- API tokens


async def test_api_token_is_found_by_hash_listed_and_revoked(store):
    made = await store.create_api_token("ops-alice", sha("t1"), {"devices:write", "devices:read"},
                                        created_by="root@console")
    assert made.active and made.scopes == frozenset({"devices:read", "devices:write"})
    assert made.region_code is None and made.created_at_ms > 0
    await store.create_api_token("metrics", sha("t2"), ["metrics:read"], region_code="620100")
    found = await store.get_api_token_by_hash(sha("t1"))
    assert found == made  # scopes read back as the same set, every field as written
    assert await store.get_api_token_by_hash(sha("never issued")) is None
    assert [t.name for t in await store.list_api_tokens()] == ["metrics", "ops-alice"]
    assert (await store.list_api_tokens())[0].region_code == "620100"
    assert await store.count_active_api_tokens() == 2

    assert await store.revoke_api_token("ops-alice") is True
    assert await store.revoke_api_token("ops-alice") is False  # already revoked
    assert await store.revoke_api_token("nobody") is False
    revoked = await store.get_api_token_by_hash(sha("t1"))  # still found: the caller checks
    assert revoked is not None and not revoked.active and revoked.revoked_at_ms >= made.created_at_ms
    assert await store.count_active_api_tokens() == 1


async def test_api_token_name_stays_taken_after_revocation(store):
    await store.create_api_token("ci", sha("a"), {"punches:read"})
    with pytest.raises(TokenExists, match="'ci'.*choose another name"):
        await store.create_api_token("ci", sha("b"), {"punches:read"})
    await store.revoke_api_token("ci")
    with pytest.raises(TokenExists, match="'ci'"):
        await store.create_api_token("ci", sha("c"), {"punches:read"})
    with pytest.raises(ValueError, match="token_sha256"):  # the same token under another name
        await store.create_api_token("ci-2", sha("a"), {"punches:read"})
    assert [t.name for t in await store.list_api_tokens()] == ["ci"]
    refused = TokenExists("ci")
    assert str(pickle.loads(pickle.dumps(refused))) == str(refused)


@pytest.mark.parametrize("name, token_sha256, scopes, region_code, field", [
    ("", sha("x"), {"a"}, None, "token name"),
    ("n" * 65, sha("x"), {"a"}, None, "token name"),
    ("tab\there", sha("x"), {"a"}, None, "token name"),
    ("ok", b"short", {"a"}, None, "token_sha256"),
    ("ok", sha("x").hex(), {"a"}, None, "token_sha256"),
    ("ok", sha("x"), set(), None, "scopes"),
    ("ok", sha("x"), "devices:read", None, "scopes"),
    ("ok", sha("x"), {"a,b"}, None, "scopes"),
    ("ok", sha("x"), {""}, None, "scopes"),
    ("ok", sha("x"), {"a"}, "62", "region code"),
])
async def test_api_token_fields_are_checked(store, name, token_sha256, scopes, region_code, field):
    with pytest.raises(ValueError, match=field):
        await store.create_api_token(name, token_sha256, scopes, region_code=region_code)
    assert await store.list_api_tokens() == []


async def test_api_token_hash_lookup_wants_32_bytes(store):
    with pytest.raises(ValueError, match="token_sha256"):
        await store.get_api_token_by_hash(b"\x00" * 31)


def test_api_token_active_follows_revocation():
    token = ApiToken("n", sha("x"), frozenset({"a"}), None, T0, None, "")
    assert token.active and not ApiToken("n", sha("x"), frozenset({"a"}), None, T0, T0 + 1, "").active


# ------------------------------------------------------------------ session-end signal


async def test_disable_rotate_and_operator_close_each_signal_a_session_end(store):
    for serial in ("LMG1", "LMG2"):
        await store.add_device(serial, project_code="P", region_code="620100")
    assert await store.last_session_end_id() == 0
    await store.disable_device("LMG1")
    await store.enable_device("LMG1")  # enabling ends nothing
    await store.rotate_device_secret("LMG2")
    closed = await store.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
    ends = await store.session_ends_after(0)
    assert [(e.device_serial, e.reason) for e in ends] == [
        ("LMG1", SessionEndReason.DISABLED), ("LMG2", SessionEndReason.SECRET_ROTATED),
        ("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)]
    assert [e.id for e in ends] == sorted(e.id for e in ends) and ends[-1].id == closed
    assert all(e.created_at_ms > 0 for e in ends)
    assert await store.last_session_end_id() == closed
    assert await store.session_ends_after(ends[0].id, limit=1) == [ends[1]]
    assert await store.session_ends_after(closed) == []


async def test_unknown_devices_signal_nothing(store):
    with pytest.raises(UnknownDevice):
        await store.disable_device("NOPE")
    with pytest.raises(UnknownDevice):
        await store.rotate_device_secret("NOPE")
    with pytest.raises(UnknownDevice, match="'NOPE'"):
        await store.end_device_sessions("NOPE", SessionEndReason.CLOSED_BY_OPERATOR)
    assert await store.session_ends_after(0) == [] and await store.last_session_end_id() == 0


async def test_session_end_reason_is_one_of_the_enum(store):
    await store.add_device("LMG1", project_code="P", region_code="620100")
    with pytest.raises(ValueError, match="reason 'kicked'.*closed_by_operator"):
        await store.end_device_sessions("LMG1", "kicked")
    end_id = await store.end_device_sessions("LMG1", "closed_by_operator")  # the value is accepted
    assert (await store.session_ends_after(end_id - 1))[0].reason is SessionEndReason.CLOSED_BY_OPERATOR


async def test_a_session_end_commits_with_its_change_or_neither_does(backend):
    """Disabling and rotating write their session end in the same transaction: if the
    end cannot be written, the device is not disabled and keeps its secret."""
    store = await backend.open()
    device = await store.add_device("LMG1", project_code="P", region_code="620100")
    await raw_sql(
        backend,
        "CREATE TRIGGER refuse BEFORE INSERT ON signals BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS '
        "$$BEGIN RAISE EXCEPTION 'refused by the test'; END$$; "
        'CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".signals '
        'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();')
    with pytest.raises(Exception, match="refused by the test"):
        await store.disable_device("LMG1")
    with pytest.raises(Exception, match="refused by the test"):
        await store.rotate_device_secret("LMG1")
    kept = await store.get_device("LMG1")
    assert kept.enabled and kept.secret == device.secret
    await raw_sql(backend, "DROP TRIGGER refuse;", 'DROP TRIGGER refuse ON "{schema}".signals;')
    await store.disable_device("LMG1")  # the store was not harmed
    assert not (await store.get_device("LMG1")).enabled
    assert [e.reason for e in await store.session_ends_after(0)] == [SessionEndReason.DISABLED]


async def test_pruning_never_lets_an_id_come_back(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    await store.add_device("LMG1", project_code="P", region_code="620100")
    first = await store.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
    clock[0] += 1000
    second = await store.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
    assert await store.prune_session_ends(T0 + 1000) == 1  # older than: strictly before
    assert [e.id for e in await store.session_ends_after(0)] == [second]
    assert await store.prune_session_ends(T0 + 1001) == 1
    assert await store.last_session_end_id() == 0
    await store.close()
    store = await backend.open(clock_ms=lambda: clock[0])  # a restart does not reuse ids either
    third = await store.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
    assert third > second > first  # a reader whose cursor is at `second` still sees it


async def test_listening_is_postgres_only(backend):
    store = await backend.open()
    stop = await store.listen_session_ends(lambda end_id: None)
    if backend.name == "sqlite":
        assert stop is None
    else:
        assert stop is not None
        await stop()
        await stop()  # idempotent


@pytest.mark.postgres
async def test_postgres_notifies_other_nodes_of_session_ends_at_once(pg_urls, tmp_path):
    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)  # another node on the same store
    elsewhere = await open_store(pg_urls(), data_dir=tmp_path)  # another schema, same database
    try:
        heard: asyncio.Queue[int] = asyncio.Queue()
        overheard: list[int] = []
        stop = await b.listen_session_ends(heard.put_nowait)
        stop_elsewhere = await elsewhere.listen_session_ends(overheard.append)
        assert stop is not None and stop_elsewhere is not None
        await a.add_device("LMG1", project_code="P", region_code="620100")
        await elsewhere.add_device("LMG1", project_code="P", region_code="620100")

        await a.disable_device("LMG1")
        end_id = await asyncio.wait_for(heard.get(), WAIT_S)
        assert [(e.id, e.reason) for e in await b.session_ends_after(end_id - 1)] == [
            (end_id, SessionEndReason.DISABLED)]
        await a.rotate_device_secret("LMG1")
        assert await asyncio.wait_for(heard.get(), WAIT_S) > end_id
        closed = await a.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
        assert await asyncio.wait_for(heard.get(), WAIT_S) == closed

        mine = await elsewhere.end_device_sessions("LMG1", SessionEndReason.CLOSED_BY_OPERATOR)
        for _ in range(int(WAIT_S / 0.01)):
            if overheard:
                break
            await asyncio.sleep(0.01)
        assert overheard == [mine]  # its own schema's end only, never the three of a
        assert heard.empty()  # and a never heard the other schema's

        await stop()
        await a.disable_device("LMG1")
        await asyncio.sleep(0.2)
        assert heard.empty()
        await stop_elsewhere()
    finally:
        for store in (a, b, elsewhere):
            await store.close()


@pytest.mark.postgres
async def test_postgres_listener_reports_a_lost_connection(pg_urls, tmp_path):
    store = await open_store(pg_urls(), data_dir=tmp_path)
    try:
        lost = asyncio.Event()
        stop = await store.listen_session_ends(lambda end_id: None, on_lost=lost.set)
        assert stop is not None
        conn = await asyncpg.connect(PG_DSN)
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
                f'LISTEN "{store.signals_channel}"')
        finally:
            await conn.close()
        assert killed == 1
        await asyncio.wait_for(lost.wait(), WAIT_S)
        await stop()  # still safe to call
    finally:
        await store.close()


def test_signal_channels_are_per_schema_and_valid_names():
    assert signals_channel(None) == signals_channel("public") == "lmg_signals"
    assert signals_channel("site_7") == "lmg_signals_site_7"
    long_a, long_b = "a" * 62 + "x", "a" * 62 + "y"
    channels = {signals_channel(long_a), signals_channel(long_b)}
    assert len(channels) == 2 and all(len(c) <= 63 for c in channels)


# ---------------------------------------------------------------- devices and presence


async def test_presence_address_becomes_the_devices_last_address(store):
    for n in range(2):
        await store.add_device(f"LMG{n}", project_code="P", region_code="620100")
    assert (await store.get_device("LMG0")).last_address is None
    assert await store.update_presence([
        Presence("LMG0", T0, True, address="10.1.2.3:50000"), Presence("LMG1", T0, True)]) == 2
    d0, d1 = await store.list_devices()
    assert (d0.last_address, d1.last_address) == ("10.1.2.3:50000", None)
    await store.update_presence([Presence("LMG0", T0 + 1, False)])  # no address: kept
    assert (await store.get_device("LMG0")).last_address == "10.1.2.3:50000"
    await store.update_presence([Presence("LMG0", T0 + 2, True, "2.0", 3, "[2001:db8::7]:4000")])
    d0 = (await store.get_devices(["LMG0"]))["LMG0"]
    assert (d0.firmware, d0.roster_version, d0.last_address) == ("2.0", 3, "[2001:db8::7]:4000")
    assert "2001:db8::7" in repr(d0)


def test_device_and_presence_keep_their_positional_and_keyword_forms():
    secret = bytes(32)
    old = Device("S", secret, "P", "620100", True, None, False, "", 0, T0)
    assert old.last_address is None and old == Device(
        serial="S", secret=secret, project_code="P", region_code="620100", created_at_ms=T0)
    assert Device("S", secret, "P", "620100", True, None, False, "", 0, T0, "1.2.3.4:5").last_address
    assert Presence("S", T0, True, "fw", 2).address is None


async def test_list_devices_filters_by_project_region_and_online(backend):
    store = await backend.open(clock_ms=lambda: T0 + 10)  # online is read against the store's clock
    for serial, project, region in (("A1", "PA", "620100"), ("A2", "PA", "620200"),
                                    ("B1", "PB", "620100"), ("B2", "PB", "620100")):
        await store.add_device(serial, project_code=project, region_code=region)
    await store.update_presence([Presence("A2", T0, True), Presence("B2", T0, True)])

    async def serials(**filters) -> list[str]:
        return [d.serial for d in await store.list_devices(**filters)]

    assert await serials() == ["A1", "A2", "B1", "B2"]
    assert await serials(project_code="PA") == ["A1", "A2"]
    assert await serials(region_code="620100") == ["A1", "B1", "B2"]
    assert await serials(online=True) == ["A2", "B2"]
    assert await serials(online=False) == ["A1", "B1"]
    assert await serials(project_code="PB", region_code="620100", online=False) == ["B1"]
    assert await serials(project_code="PB", after_serial="B1", limit=5) == ["B2"]
    assert await serials(project_code="PA", limit=1) == ["A1"]
    assert await serials(project_code="NONE") == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_devices(limit=-1)


# ------------------------------------------------------------------------ punch listing


async def _punches_of_two_projects(store) -> None:
    await store.add_device("A1", project_code="PA", region_code="620100")
    await store.add_device("A2", project_code="PA", region_code="620100")
    await store.add_device("B1", project_code="PB", region_code="620100")
    # record n of each device: worker A on even n, B on odd; punch time T0 + n
    records = [punch(serial, n, worker_id=WORKER_A if n % 2 == 0 else WORKER_B, punch_time_ms=T0 + n)
               for n in range(10) for serial in ("A1", "A2", "B1", "GHOST")]
    await store.store_punches(records)
    await store.store_punches([punch("A1", 99, worker_id="bad", reject_reason=3)])  # rejected: never listed


async def test_list_punches_in_arrival_order_with_every_filter(store):
    await _punches_of_two_projects(store)
    everything = await store.list_punches()
    assert len(everything) == 40
    assert {(p.punch.device_serial, p.punch.record_no) for p in everything} == {
        (serial, n) for n in range(10) for serial in ("A1", "A2", "B1", "GHOST")}
    assert [p.id for p in everything] == sorted(p.id for p in everything)
    assert {p.punch.device_serial: p.project_code for p in everything} == {
        "A1": "PA", "A2": "PA", "B1": "PB", "GHOST": ""}
    first = everything[0]
    assert first.punch == await store.get_punch("A1", 0)

    async def keys(**filters) -> list[tuple[str, int]]:
        return [(p.punch.device_serial, p.punch.record_no) for p in await store.list_punches(**filters)]

    assert await keys(project_code="PB") == [("B1", n) for n in range(10)]
    assert len(await keys(project_code="PA")) == 20
    assert await keys(device_serial="A2", worker_id=WORKER_B) == [("A2", n) for n in (1, 3, 5, 7, 9)]
    assert await keys(device_serial="GHOST", since_ms=T0 + 3, until_ms=T0 + 6) == [
        ("GHOST", 3), ("GHOST", 4), ("GHOST", 5)]  # since inclusive, until exclusive
    assert await keys(project_code="PA", worker_id=WORKER_A, since_ms=T0 + 8) == [("A1", 8), ("A2", 8)]
    assert await keys(worker_id="nobody") == []
    assert await keys(device_serial="A1", until_ms=T0) == []
    await store.store_punches([punch("A1", 50)])  # a later batch lists after all of them
    assert await keys(after_id=everything[-1].id) == [("A1", 50)]


async def test_list_punches_pages_with_the_last_id_as_cursor(store):
    await _punches_of_two_projects(store)
    pages: list[list[int]] = []
    after = 0
    while True:
        page = await store.list_punches(project_code="PA", after_id=after, limit=7)
        pages.append([p.id for p in page])
        if len(page) < 7:
            break
        after = page[-1].id
    assert [len(p) for p in pages] == [7, 7, 6]
    listed = [i for page in pages for i in page]
    assert listed == [p.id for p in await store.list_punches(project_code="PA")]
    assert await store.list_punches(limit=0) == []


async def test_list_punches_limit_and_arguments_are_checked(store):
    assert await store.list_punches(limit=MAX_PUNCH_PAGE) == []
    with pytest.raises(ValueError, match="limit 10001"):
        await store.list_punches(limit=MAX_PUNCH_PAGE + 1)
    with pytest.raises(ValueError, match="limit"):
        await store.list_punches(limit=-1)
    with pytest.raises(ValueError, match="since_ms"):
        await store.list_punches(since_ms="yesterday")
    with pytest.raises(ValueError, match="after_id"):
        await store.list_punches(after_id=None)


# ------------------------------------------------------------------------------ audit


async def test_list_audit_filters_and_pages_newest_first(backend):
    clock = [T0]
    store = await backend.open(clock_ms=lambda: clock[0])
    ids = {}
    for n, (event, subject) in enumerate([("auth_failed", "LMG1"), ("device_added", "LMG2"),
                                          ("auth_failed", "LMG2"), ("token_created", "ops"),
                                          ("auth_failed", "LMG1")]):
        clock[0] = T0 + n * 1000
        ids[n] = await store.audit(event, subject, {"n": n})

    async def entries(**filters) -> list[int]:
        return [e.detail["n"] for e in await store.list_audit(**filters)]

    assert await entries() == [4, 3, 2, 1, 0]
    assert await entries(limit=2) == [4, 3]  # the existing callers' form
    assert await entries(event="auth_failed") == [4, 2, 0]
    assert await entries(subject="LMG2") == [2, 1]
    assert await entries(event="auth_failed", subject="LMG1") == [4, 0]
    assert await entries(since_ms=T0 + 1000, until_ms=T0 + 3000) == [2, 1]  # since in, until out
    assert await entries(before_id=ids[3]) == [2, 1, 0]
    assert await entries(before_id=ids[4], limit=2) == [3, 2]
    assert await entries(subject="LMG1", before_id=ids[4]) == [0]
    assert await entries(subject="nobody") == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_audit(limit=-5)
    with pytest.raises(ValueError, match="before_id"):
        await store.list_audit(before_id="x")


# ------------------------------------------------------------------ opening, no create


async def test_open_without_create_refuses_a_missing_sqlite_store_and_makes_nothing(tmp_path):
    data_dir = tmp_path / "not-here"
    with pytest.raises(StoreNotFound) as missing:
        await open_store(None, data_dir=data_dir, create=False)
    message = str(missing.value)
    assert str(data_dir / "lmg.db") in message and "--data-dir or --store the server uses" in message
    assert not data_dir.exists()
    with pytest.raises(StoreNotFound):
        await open_store(f"sqlite:///{tmp_path}/other/lmg.db", data_dir=tmp_path, create=False)
    assert not (tmp_path / "other").exists()
    assert str(pickle.loads(pickle.dumps(missing.value))) == message


async def test_open_without_create_opens_an_existing_store(backend):
    first = await backend.open()
    await first.store_punches([punch(record_no=1)])
    await first.close()
    again = await backend.open(create=False)  # PostgreSQL: create is ignored
    assert await again.count_punches() == 1
