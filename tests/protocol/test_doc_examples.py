"""Every hex example in docs/protocol.md obeys the document's own field rules.

The examples are parsed from the document itself (as test_doc.py finds them), decoded, and
checked against the rules the document states: ID numbers carry a valid GB 11643 check
digit, punch times lie within the accepted window (5 minutes ahead, 30 days back) of the
server clock that answers them, and an ACK example answers each record of a punch example
as the server would. Before this test, the `ack_batch` example answered record 2003
(`620102198503124524`, a valid check digit) with INVALID_WORKER_ID, and answered records
six hours ahead of its own clock with OK.
"""

from __future__ import annotations

import re

from lmg.protocol import Ack, Punch, PunchBatch, ResultCode, decode_frame
from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.messages import PunchRecord, RosterAdd, RosterRemove, RosterUpdate
from lmg.server.gateway.session import SessionLimits, _validate

from tests.protocol.test_doc import doc_text

LIMITS = SessionLimits()  # the defaults the document states
PHOTO_MAX_BYTES = 2 * 1024 * 1024  # "2 MiB by default" (docs/protocol.md 6.5)
REMOVE_EVERY_WORKER = "0" * 18  # section 6.7: never a valid ID number, on purpose


def examples() -> dict[str, object]:
    found = re.findall(r"Example `(\w+)`.*?```hex\n(.*?)```", doc_text(), re.S)
    return {name: decode_frame(bytes.fromhex(hex_text.replace(" ", "").replace("\n", ""))) for name, hex_text in found}


def punch_records(messages) -> dict[int, PunchRecord]:
    records: dict[int, PunchRecord] = {}
    for message in messages:
        if isinstance(message, Punch):
            records[message.record_no] = message.record
        elif isinstance(message, PunchBatch):
            records.update((r.record_no, r) for r in message.records)
    return records


def test_the_document_has_examples_to_check():
    messages = examples()
    assert {"punch", "punch_batch", "ack_batch", "roster_add"} <= messages.keys()


def test_every_ack_example_answers_its_records_as_the_server_would():
    messages = examples()
    records = punch_records(messages.values())
    answered = set()
    for name, message in messages.items():
        if not isinstance(message, Ack) or not message.results:
            continue
        for row in message.results:
            record = records.get(row.record_no)
            assert record is not None, f"{name} answers record {row.record_no}, which no example sends"
            expected = _validate(record, message.server_time_ms, LIMITS, PHOTO_MAX_BYTES)
            if expected is None:
                assert row.result in (ResultCode.OK, ResultCode.DUPLICATE), (
                    f"{name}: record {row.record_no} is valid, but answered {ResultCode(row.result).name}")
            else:
                assert row.result == expected, (
                    f"{name}: record {row.record_no} must be answered {expected.name}, "
                    f"not {ResultCode(row.result).name}")
            answered.add(row.record_no)
    assert answered, "no ACK example answers records"


def test_punches_no_ack_example_answers_are_valid_at_the_latest_server_clock_shown():
    messages = examples()
    answered = {row.record_no for m in messages.values() if isinstance(m, Ack) for row in m.results}
    clocks = [getattr(m, "server_time_ms", 0) for m in messages.values()]
    now = max(clocks)
    for record_no, record in punch_records(messages.values()).items():
        if record_no not in answered:
            assert _validate(record, now, LIMITS, PHOTO_MAX_BYTES) is None, (
                f"record {record_no} of an example is invalid by the document's own rules")


def test_every_id_number_in_an_example_has_a_valid_check_digit_unless_it_is_answered_as_bad():
    messages = examples()
    refused = {row.record_no for m in messages.values() if isinstance(m, Ack) for row in m.results
               if row.result == ResultCode.INVALID_WORKER_ID}
    for record_no, record in punch_records(messages.values()).items():
        assert is_valid_id_number(record.worker_id) or record_no in refused, record
    for name, message in messages.items():
        if isinstance(message, (RosterAdd, RosterUpdate, RosterRemove)):
            assert is_valid_id_number(message.worker_id) or (
                isinstance(message, RosterRemove) and message.worker_id == REMOVE_EVERY_WORKER), name
