"""Structured logs (server/logs.py): the two formats, masking of ID numbers and tokens, the
context of a connection's lines, rate-limited repeats, and what a session logs."""

from __future__ import annotations

import io
import json
import logging
import sys
import time

import pytest

from lmg.protocol import Ack, Punch, PunchBatch
from lmg.protocol.identity import is_valid_id_number
from lmg.server.logs import (
    JsonLinesFormatter,
    KeyValueFormatter,
    RepeatedWarnings,
    formatter_for,
    mask_id_number,
    redact,
    setup_logging,
)
from lmg.simulators.terminal import make_punch, worker_id_for

from tests.server import log_scan
from tests.server.conftest import provision, wait_for

ID = worker_id_for(4516)  # 620102198503045167-like: valid check digit
TOKEN = "lmg_" + "Ab3_-" * 8 + "xyz"  # the admin API's form: lmg_ and 43 URL-safe characters


def record(msg: str, *args, level=logging.INFO, exc_info=None, **extra) -> logging.LogRecord:
    return logging.getLogger("lmg.test").makeRecord("lmg.test", level, __file__, 1, msg, args, exc_info,
                                                    extra=extra or None)


def test_an_id_number_is_masked_to_its_first_six_and_last_four():
    assert is_valid_id_number(ID)
    assert mask_id_number(ID) == ID[:6] + "********" + ID[-4:]
    assert redact(f"worker {ID}, again:{ID}.") == f"worker {mask_id_number(ID)}, again:{mask_id_number(ID)}."
    wrong = ID[:17] + ("0" if ID[17] != "0" else "1")  # a bad check digit still names a person
    assert redact(wrong) == mask_id_number(wrong)
    assert redact("62010219850300001x") == "620102********001x"
    assert redact("1" * 19) == "1" * 19 and redact("1" * 17) == "1" * 17  # not an ID's length
    assert redact(f"token={TOKEN}") == "token=lmg_<hidden>"
    assert redact("lmg_punches_stored_total") == "lmg_punches_stored_total"  # metric names are not tokens


@pytest.mark.parametrize("formatter", [JsonLinesFormatter(), KeyValueFormatter()], ids=["json", "text"])
def test_both_formats_mask_every_part_of_the_line(formatter):
    try:
        raise ValueError(f"bad worker {ID}")
    except ValueError:
        exc_info = sys.exc_info()
    rec = record("refused %s", ID, level=logging.WARNING, exc_info=exc_info, serial="GS-1", session="0a1b2c3d",
                 peer="10.0.0.7:5123", records=[{"worker": ID}], secret=b"\x01" * 32, api_token=TOKEN,
                 note=f"token {TOKEN}")
    line = formatter.format(rec)
    assert ID not in line and TOKEN not in line and "\\x01" not in line
    assert line.count(mask_id_number(ID)) >= 3  # message, field, traceback
    assert "<hidden>" in line


def test_a_line_that_cannot_be_formatted_is_still_masked():
    line = JsonLinesFormatter().format(record("worker %d", ID))  # %d of a str: a bug in the call
    assert "could not be formatted" in line and ID not in line and mask_id_number(ID) in line


def test_json_lines_carry_the_context_first_and_leave_out_what_is_none():
    line = JsonLinesFormatter().format(record("session closed", serial="GS-1", session="0a1b2c3d",
                                              peer="10.0.0.7:5123", reason="heartbeat_timeout", detail=None))
    data = json.loads(line)
    assert list(data)[:7] == ["ts", "level", "logger", "msg", "serial", "session", "peer"]
    assert data["reason"] == "heartbeat_timeout" and "detail" not in data
    assert data["level"] == "info" and data["ts"].endswith("Z") and "\n" not in line


def test_text_lines_are_key_value_with_quotes_where_needed():
    line = KeyValueFormatter().format(record("session closed", serial="GS-1", session="0a1b2c3d", peer="10.0.0.7:5",
                                             detail="silent since 1763942430000"))
    assert " INFO    lmg.test session closed serial=GS-1 session=0a1b2c3d peer=10.0.0.7:5 " in line
    assert line.endswith('detail="silent since 1763942430000"')


def test_auto_means_text_on_a_terminal_and_json_lines_otherwise():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(formatter_for("auto", Terminal()), KeyValueFormatter)
    assert isinstance(formatter_for("auto", io.StringIO()), JsonLinesFormatter)
    assert isinstance(formatter_for("json", Terminal()), JsonLinesFormatter)
    assert isinstance(formatter_for("text", io.StringIO()), KeyValueFormatter)
    with pytest.raises(ValueError, match="log_format"):
        formatter_for("xml", io.StringIO())


def test_setup_logging_leaves_a_configured_root_alone(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    assert setup_logging("debug", "json", io.StringIO()) is None
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    level = root.level
    stream = io.StringIO()
    try:
        handler = setup_logging("info", "json", stream)
        assert handler is not None
        logging.getLogger("lmg.test").info("worker %s", ID)
    finally:
        root.handlers = []
        root.setLevel(level)
    assert json.loads(stream.getvalue())["msg"] == f"worker {mask_id_number(ID)}"


def test_repeated_warnings_write_one_line_per_interval_and_count_the_rest(caplog):
    clock = [100.0]
    repeats = RepeatedWarnings(5.0, clock=lambda: clock[0])
    logger = logging.getLogger("lmg.test.repeats")
    caplog.set_level(logging.WARNING, logger="lmg.test.repeats")
    assert repeats.warning(logger, "store", "store failed: %s", "disk full")
    for _ in range(3):
        clock[0] += 1.0
        assert not repeats.warning(logger, "store", "store failed: %s", "disk full")
    assert repeats.warning(logger, "other", "another kind")  # keys are independent
    clock[0] += 2.0  # 5 s after the first line
    assert repeats.warning(logger, "store", "store failed: %s", "disk full")
    lines = [r.getMessage() for r in caplog.records if r.name == "lmg.test.repeats"]
    assert lines == ["store failed: disk full", "another kind",
                     "store failed: disk full (3 more like this since the last one)"]
    assert caplog.records[-1].left_out == 3


async def test_a_session_logs_three_info_lines_and_masked_ids_at_debug(gw, no_secret_in_logs):
    # The focused test of the issue: punches of known IDs at debug; the masked forms are in
    # the lines, the full ones nowhere; at info, only the session's three lines.
    lines = no_secret_in_logs.catcher  # every lmg record at DEBUG, through both formatters
    client = await gw.raw_authenticated()
    t = time.time_ns() // 1_000_000
    ids = [worker_id_for(n) for n in (101, 202, 303)]
    wrong = ids[2][:17] + ("0" if ids[2][17] != "0" else "1")  # a wrong check digit: refused, still a person's
    client.send(Punch.of(make_punch(1, 101, t)))
    await client.expect(Ack)
    client.send(PunchBatch((make_punch(2, 202, t), make_punch(3, 303, t)._replace(worker_id=wrong))))
    await client.expect(Ack)
    await client.close()
    await wait_for(lambda: not gw.gateway.links, what="the session to close")
    text = "\n".join(lines.lines)
    for worker in ids[:2]:
        assert worker not in text and mask_id_number(worker) in text
    assert wrong not in text and mask_id_number(wrong) in text  # the refused one, masked too
    info = [json.loads(line) for line in lines.lines if line.startswith("{") and '"level":"info"' in line
            and '"logger":"lmg.' in line]
    assert [(i["logger"], i["msg"]) for i in info] == [
        ("lmg.session", "session opened"), ("lmg.session", "authenticated"), ("lmg.session", "session closed")]
    assert all(i["session"] == info[0]["session"] and i["peer"] == info[0]["peer"] for i in info)
    assert info[1]["serial"] == info[2]["serial"] == gw.device.serial and info[1]["result"] == "ok"
    assert info[2]["reason"] == "peer_closed"


async def test_lmg_serve_writes_json_lines_with_the_sessions_context(tmp_path, server_process):
    (device,) = await provision(tmp_path / "data", ["GS-LOG-0001"])
    server = await server_process(tmp_path / "data", "--log-level", "info")
    from tests.server.conftest import RawClient

    client = await RawClient.connect("127.0.0.1", server.ports["tcp"])
    assert (await client.authenticate(device)).result == 0
    client.send(Punch.of(make_punch(1, 1, time.time_ns() // 1_000_000)))
    await client.expect(Ack)
    await client.close()

    def session_lines() -> list[dict]:
        lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "lmg.session"]

    await wait_for(lambda: len(session_lines()) == 3, what="three session lines in the server's log")
    opened, authenticated, closed = session_lines()
    assert (opened["msg"], authenticated["msg"], closed["msg"]) == ("session opened", "authenticated", "session closed")
    assert authenticated["serial"] == closed["serial"] == device.serial
    assert opened["session"] == closed["session"] and opened["peer"] == closed["peer"]


def test_the_log_scan_finds_an_id_a_token_and_a_secret(tmp_path):
    scan = log_scan.LogScan()
    leak = tmp_path / "leak.log"
    secret = bytes(range(32))
    scan.device_secrets.add(secret)
    scan.files.append(leak)
    leak.write_text(f"worker {ID}\nmasked {mask_id_number(ID)}\nauth {TOKEN}\nkey {secret.hex()}\n"
                    f"19 digits {'1' + ID}\n")
    findings = scan.findings()
    assert len(findings) == 3, findings
    assert [f.split(": ")[1] for f in findings] == ["a full resident ID number", "an API token", "a secret"]
