"""The interface contract: docs/province-api.md's worked examples and tables against the code."""

from __future__ import annotations

import pathlib
import re

import pytest

from lmg.protocol import province as api
from lmg.protocol.province import ProvinceCode, ProvinceError
from tests.protocol.test_purity import imported_roots

REPO = pathlib.Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "province-api.md").read_text(encoding="utf-8")


def doc_section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)\n```", text, flags=re.S)


# the worked example's inputs, as the document states them
APP_KEY = "gs-lmg-demo-0001"
APP_SECRET = "demo-secret-0123456789abcdef"
TIMESTAMP = 1767225600000
NONCE = "7f3c2a9d4b1e8f6a0c5d3e2b1a9f8e7d"


def test_the_worked_example_inputs_are_the_documents():
    example = doc_section("### 2.1 Worked example")
    for value in (APP_KEY, APP_SECRET, str(TIMESTAMP), NONCE):
        assert value in example


def test_signing_reproduces_the_documents_worked_example():
    example = doc_section("### 2.1 Worked example")
    body_text, canonical_text = code_blocks(example)
    body = body_text.encode("utf-8")
    assert f"{len(body)} bytes" in example
    assert api.body_sha256_hex(body) in example
    assert api.canonical_string("POST", api.PATH_ATTENDANCE, APP_KEY, TIMESTAMP, NONCE, body) == canonical_text
    signature = re.search(r"X-Lmg-Signature: ([0-9a-f]{64})", example).group(1)
    assert api.sign(APP_SECRET, "POST", api.PATH_ATTENDANCE, APP_KEY, TIMESTAMP, NONCE, body) == signature
    headers = api.signed_headers(APP_KEY, APP_SECRET, "POST", api.PATH_ATTENDANCE, body, timestamp_ms=TIMESTAMP,
                                 nonce=NONCE)
    auth = api.parse_auth_headers(headers)
    api.verify_request(auth, APP_SECRET, "POST", api.PATH_ATTENDANCE, body, TIMESTAMP)


def test_the_example_body_is_what_the_sender_builds():
    from lmg.storage.api import Punch

    body_text = code_blocks(doc_section("### 2.1 Worked example"))[0]
    punch = Punch("GS-DEMO-000001", 17, "620102198503000011", 1767225540000, 1, 1, 365, None, 0, 1767225541234)
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    record = api.attendance_record(punch, "P-620100-0001", cipher, bytes(range(12)))
    assert api.attendance_batch_body("gw01-17-1", [api.encode_record(record)]).decode() == body_text


def test_id_encryption_reproduces_the_documents_example():
    section = doc_section("## 3. Resident ID numbers")
    key_hex = re.search(r"derived key is\s+`([0-9a-f]{64})`", section).group(1)
    token = re.search(r"gives `([A-Za-z0-9+/=]+)`", section).group(1)
    assert api.derive_id_key(APP_SECRET, APP_KEY).hex() == key_hex
    cipher = api.WorkerIdCipher(bytes.fromhex(key_hex))
    assert cipher.encrypt("620102198503000011", "GS-DEMO-000001:17", bytes.fromhex("000102030405060708090a0b")) == token
    assert cipher.decrypt(token, "GS-DEMO-000001:17") == "620102198503000011"
    assert len(token) == 64
    assert api.HKDF_SALT.decode() in section and api.HKDF_INFO_PREFIX.decode() in section


def test_a_ciphertext_moved_to_another_record_or_altered_does_not_decrypt():
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    token = cipher.encrypt("620102198503000011", "GS-A:1", bytes(12))
    with pytest.raises(ValueError, match="does not decrypt"):
        cipher.decrypt(token, "GS-A:2")
    raw = bytearray(__import__("base64").b64decode(token))
    raw[20] ^= 1
    with pytest.raises(ValueError, match="does not decrypt"):
        cipher.decrypt(__import__("base64").b64encode(bytes(raw)).decode(), "GS-A:1")
    with pytest.raises(ValueError, match="does not decrypt"):
        api.WorkerIdCipher.for_app("another secret", APP_KEY).decrypt(token, "GS-A:1")
    with pytest.raises(ValueError, match="not base64"):
        cipher.decrypt("***", "GS-A:1")
    with pytest.raises(ValueError, match="12 bytes"):
        cipher.encrypt("620102198503000011", "GS-A:1", bytes(8))


def test_fresh_nonces_give_different_ciphertexts_of_the_same_id():
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    a = cipher.encrypt("620102198503000011", "GS-A:1", bytes(12))
    b = cipher.encrypt("620102198503000011", "GS-A:1", bytes(11) + b"\x01")
    assert a != b and cipher.decrypt(a, "GS-A:1") == cipher.decrypt(b, "GS-A:1")


@pytest.mark.parametrize("change", ["body", "secret", "target", "method", "nonce", "timestamp", "key"])
def test_any_change_to_a_signed_part_breaks_the_signature(change):
    body = b'{"batch_id":"x","records":[]}'
    headers = api.signed_headers(APP_KEY, APP_SECRET, "POST", api.PATH_ATTENDANCE, body, timestamp_ms=TIMESTAMP,
                                 nonce=NONCE)
    args = {"secret": APP_SECRET, "method": "POST", "target": api.PATH_ATTENDANCE, "body": body}
    if change == "body":
        args["body"] = body + b" "
    elif change == "secret":
        args["secret"] = APP_SECRET + "x"
    elif change == "target":
        args["target"] = api.PATH_DEVICE_STATUS
    elif change == "method":
        args["method"] = "PUT"
    elif change == "nonce":
        headers[api.HEADER_NONCE] = NONCE[::-1]
    elif change == "timestamp":
        headers[api.HEADER_TIMESTAMP] = str(TIMESTAMP + 1)
    elif change == "key":
        headers[api.HEADER_APP_KEY] = APP_KEY + "x"
    auth = api.parse_auth_headers(headers)
    with pytest.raises(ProvinceError) as info:
        api.verify_request(auth, args["secret"], args["method"], args["target"], args["body"], TIMESTAMP)
    assert info.value.code is ProvinceCode.BAD_SIGNATURE and info.value.http_status == 401


def test_the_replay_window_is_300_s_either_way():
    body = b"{}"
    headers = api.signed_headers(APP_KEY, APP_SECRET, "POST", api.PATH_ATTENDANCE, body, timestamp_ms=TIMESTAMP,
                                 nonce=NONCE)
    auth = api.parse_auth_headers(headers)
    for now in (TIMESTAMP - 300_000, TIMESTAMP + 300_000):
        api.verify_request(auth, APP_SECRET, "POST", api.PATH_ATTENDANCE, body, now)
    for now in (TIMESTAMP - 300_001, TIMESTAMP + 300_001):
        with pytest.raises(ProvinceError) as info:
            api.verify_request(auth, APP_SECRET, "POST", api.PATH_ATTENDANCE, body, now)
        assert info.value.code is ProvinceCode.STALE_TIMESTAMP
        assert "synchronise" in str(info.value)


@pytest.mark.parametrize("headers, fragment", [
    ({}, "missing header"),
    ({api.HEADER_APP_KEY: "k", api.HEADER_TIMESTAMP: "12x", api.HEADER_NONCE: NONCE, api.HEADER_SIGNATURE: "ab"},
     "Unix milliseconds"),
    ({api.HEADER_APP_KEY: "k", api.HEADER_TIMESTAMP: "1", api.HEADER_NONCE: "short", api.HEADER_SIGNATURE: "ab"},
     "characters"),
])
def test_malformed_auth_headers_are_a_bad_signature(headers, fragment):
    with pytest.raises(ProvinceError, match=fragment) as info:
        api.parse_auth_headers(headers)
    assert info.value.code is ProvinceCode.BAD_SIGNATURE


def test_the_documents_error_table_is_the_code_table():
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([A-Z_]+) \|", doc_section("## 8. Errors"), flags=re.M)
    documented = {int(code): (int(status), name) for code, status, name in rows}
    in_code = {int(c): (api.HTTP_STATUS.get(c, 200), c.name) for c in ProvinceCode}
    assert documented == in_code


def test_the_documents_limits_are_the_codes():
    limits = doc_section("### 4.3 Limits")
    assert f"| records per batch | {api.MAX_BATCH_RECORDS} |" in limits
    assert f"| body bytes per batch | {api.MAX_BATCH_BYTES:,} |" in limits
    assert f"| devices per status request | {api.MAX_DEVICE_STATUS:,} |" in limits
    assert f"| bytes per photo | {api.MAX_PHOTO_BYTES:,} |" in limits
    assert f"±{api.REPLAY_WINDOW_MS // 1000} s" in limits


def test_batch_body_size_predicts_the_body_exactly():
    records = [api.encode_record({"record_id": f"S:{i}", "x": "y" * i}) for i in range(5)]
    for n in range(0, 6):
        body = api.attendance_batch_body("batch-7", records[:n])
        assert len(body) == api.batch_body_size("batch-7", sum(map(len, records[:n])), n)


def test_parse_batch_results_refuses_what_the_document_does_not_allow():
    good = b'{"code":0,"results":[{"record_id":"a:1","result":"stored","code":0}]}'
    assert api.parse_batch_results(good)["a:1"].accepted
    for bad in (b"nope", b'{"code":0}', b'{"code":1001,"results":[]}',
                b'{"code":0,"results":[{"record_id":"a:1","result":"maybe","code":0}]}',
                b'{"code":0,"results":[{"record_id":"a:1","result":"invalid","code":5000}]}'):
        with pytest.raises(ValueError):
            api.parse_batch_results(bad)


def test_retry_after_as_seconds_or_http_date():
    assert api.parse_retry_after_ms("3", 0) == 3000
    assert api.parse_retry_after_ms(None, 0) is None
    assert api.parse_retry_after_ms("soon", 0) is None
    now = 1767225600000  # Thu, 01 Jan 2026 00:00:00 GMT
    assert api.parse_retry_after_ms("Thu, 01 Jan 2026 00:00:07 GMT", now) == 7000


FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "uvloop", "threading", "subprocess", "time", "datetime",
             "logging", "sqlite3", "asyncpg", "aiohttp", "http", "urllib", "storage", "simulators", "server", "random",
             "os"}


@pytest.mark.parametrize("path", ["protocol/province.py", "server/forwarding/policy.py"])
def test_the_pure_modules_import_nothing_that_does_io(path):
    assert imported_roots(REPO / path) & FORBIDDEN == set()


# ------------------------------------------------------------------------------ warnings

WARNING_TIMESTAMP = 1775701860000
WARNING_NONCE = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def example_warning():
    """The warning of §7.3 as the store holds it: (WarningRecord, its events)."""
    from datetime import date

    from lmg.storage import Disposition, WarningEvent, WarningEventKind, WarningRecord, WarningState

    opened, escalated, closed = 1774976400000, 1775581200000, 1775701800000
    figures = {"construction_days": 22, "rate": 0.4545, "required_share": 0.8, "valid_days": 10}
    warning = WarningRecord(42, "low-presence|P-620100-0001|project-manager|620102198503000011|2026-03-01",
                            "low-presence", "P-620100-0001", "620102", "620102198503000011", "project-manager",
                            date(2026, 3, 1), date(2026, 3, 31), figures, 2, WarningState.CLOSED, opened, escalated,
                            closed, None, closed, Disposition.INTERVIEW, "约谈项目经理", "ops-620100", 3, 0)
    events = [
        WarningEvent(1, 42, opened, WarningEventKind.OPENED, 1, WarningState.OPEN, "lmg",
                     {"figures": figures, "period_end": "2026-03-31"}),
        WarningEvent(2, 42, escalated, WarningEventKind.ESCALATED, 2, WarningState.OPEN, "lmg",
                     {"due_at_ms": escalated, "from": 1, "to": 2}),
        WarningEvent(3, 42, closed, WarningEventKind.CLOSED, 2, WarningState.CLOSED, "ops-620100",
                     {"disposition": "interview", "note": "约谈项目经理"}),
    ]
    return warning, events


def test_the_warnings_worked_example_signs_as_the_document_says():
    example = doc_section("### 7.3 Worked example")
    body_text, canonical_text = code_blocks(example)
    body = body_text.encode("utf-8")
    assert f"{len(body)} bytes" in example
    assert api.body_sha256_hex(body) in example
    assert str(WARNING_TIMESTAMP) in example and WARNING_NONCE in example
    assert api.canonical_string("POST", api.PATH_WARNINGS, APP_KEY, WARNING_TIMESTAMP, WARNING_NONCE,
                                body) == canonical_text
    signature = re.search(r"X-Lmg-Signature: ([0-9a-f]{64})", example).group(1)
    assert api.sign(APP_SECRET, "POST", api.PATH_WARNINGS, APP_KEY, WARNING_TIMESTAMP, WARNING_NONCE, body) == signature


def test_the_warnings_example_body_is_what_the_sender_builds_and_the_province_reads():
    from lmg.simulators.province import check_warning

    body_text = code_blocks(doc_section("### 7.3 Worked example"))[0]
    warning, events = example_warning()
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    record = api.warning_record(warning, events, "张经理", cipher, bytes(range(12)))
    encoded = api.encode_warning(record, warning.worker_id)
    assert api.warnings_batch_body("gw01-w42-1", [encoded]).decode() == body_text
    # and back: the province decrypts the number, bound to this warning
    import orjson

    [row] = orjson.loads(body_text)["warnings"]
    code, reason, clean = check_warning(row, cipher)
    assert (code, reason) == (0, "") and clean["worker_id"] == "620102198503000011"
    assert clean["history"] == record["history"] and "worker_id_enc" not in clean
    assert "620102198503000011" not in body_text
    # a ciphertext moved to another warning does not decrypt
    code, _, _ = check_warning({**row, "warning_id": 43}, cipher)
    assert code == ProvinceCode.UNDECRYPTABLE_WORKER_ID
    token = re.search(r"gives `([A-Za-z0-9+/=]+)`", doc_section("## 3. Resident ID numbers")).group(1)
    assert row["worker_id_enc"][:40] == token[:40] and row["worker_id_enc"] != token


def test_a_warning_sends_only_the_events_of_its_version():
    warning, events = example_warning()
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    later = events + [events[-1]]  # appended after the warning was read: a later version's
    assert len(api.warning_record(warning, later, "", cipher, bytes(12))["history"]) == 3
    with pytest.raises(ValueError, match="version 3 but has 2 events"):
        api.warning_record(warning, events[:2], "", cipher, bytes(12))


def test_a_warning_quoting_its_id_number_in_clear_is_not_encoded():
    from dataclasses import replace

    warning, events = example_warning()
    cipher = api.WorkerIdCipher.for_app(APP_SECRET, APP_KEY)
    quoted = replace(warning, note="约谈 620102198503000011")
    record = api.warning_record(quoted, events, "张经理", cipher, bytes(12))
    with pytest.raises(ValueError, match="in clear"):
        api.encode_warning(record, quoted.worker_id)
    about_project = replace(warning, worker_id=None, post=None)
    record = api.warning_record(about_project, events, "", cipher, bytes(12))
    assert record["worker_id_enc"] is None and api.encode_warning(record, None)


def test_the_warning_tables_are_the_stores():
    from lmg.protocol.posts import KEY_POSTS
    from lmg.protocol.regions import WARNING_LEVELS
    from lmg.storage import Disposition, WarningEventKind, WarningState
    from lmg.storage.supervision import BY_CHARS, NOTE_CHARS

    assert api.WARNING_STATES == tuple(s.value for s in WarningState) == ("open", "resolved", "closed")
    assert api.WARNING_EVENTS == tuple(e.value for e in WarningEventKind)
    assert api.DISPOSITIONS == tuple(d.value for d in Disposition)
    assert api.WARNING_LEVELS == WARNING_LEVELS == (1, 2, 3)
    assert (api.NOTE_MAX_CHARS, api.BY_MAX_CHARS) == (NOTE_CHARS, BY_CHARS)
    section = doc_section("## 7. Supervision warnings")
    for value in (*api.WARNING_STATES, *api.WARNING_EVENTS, *api.DISPOSITIONS):
        assert f"`{value}`" in section, value
    assert {"project-manager", "chief-supervisor"} <= {p.code for p in KEY_POSTS}  # the doc's examples of posts
    assert f"| warnings per batch | {api.MAX_WARNING_BATCH} |" in doc_section("### 4.3 Limits")
    assert f"`{api.PATH_WARNINGS}`" in doc_section("## 1. Endpoints")


def test_warnings_body_size_predicts_the_body_exactly():
    warnings = [api.orjson.dumps({"warning_id": i, "x": "y" * i}) for i in range(5)]
    for n in range(0, 6):
        body = api.warnings_batch_body("batch-7", warnings[:n])
        assert len(body) == api.warnings_body_size("batch-7", sum(map(len, warnings[:n])), n)


def test_parse_warning_results_refuses_what_the_document_does_not_allow():
    good = b'{"code":0,"results":[{"warning_id":4,"version":2,"result":"duplicate","code":1}]}'
    assert api.parse_warning_results(good)[(4, 2)].accepted
    for bad in (b"nope", b'{"code":0}', b'{"code":0,"results":[{"warning_id":"4","version":2,"result":"stored",'
                b'"code":0}]}', b'{"code":0,"results":[{"warning_id":4,"result":"stored","code":0}]}',
                b'{"code":0,"results":[{"warning_id":4,"version":2,"result":"invalid","code":5000}]}'):
        with pytest.raises(ValueError):
            api.parse_warning_results(bad)
