"""PunchIn: its layout is the punches row, and every way of building one is checked."""

from __future__ import annotations

import pytest

from lmg.storage import PunchIn
from lmg.storage.backend import PUNCH_COLUMNS, REJECTED_COLUMNS

SHA = bytes(32)


def test_the_fields_before_the_reject_reason_are_the_punches_columns_in_order():
    # storage/sqlite.py copies a record's fields up to the reject reason straight into the
    # INSERT parameters, and a rejected record's fields whole into rejected_punches
    row = PunchIn._fields.index("reject_reason")
    assert row == 9
    assert PunchIn._fields[:row] + ("received_at_ms",) == tuple(c.strip() for c in PUNCH_COLUMNS.split(","))
    assert PunchIn._fields + ("received_at_ms",) == tuple(c.strip() for c in REJECTED_COLUMNS.split(","))


def test_keywords_and_positions_build_the_same_record():
    a = PunchIn("GS-1", 1, "620102198503124516", 0, 1, 1, 0, None, 0)
    b = PunchIn(device_serial="GS-1", record_no=1, worker_id="620102198503124516", punch_time_ms=0,
                direction=1, verify_mode=1, temperature_dc=0, photo_sha256=None, photo_size=0)
    assert a == b and a.reject_reason is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"record_no": -1}, "record_no"),
        ({"record_no": 1 << 32}, "record_no"),
        ({"device_serial": ""}, "device_serial"),
        ({"photo_sha256": b"short"}, "photo_sha256"),
        ({"direction": 3}, "direction"),
        ({"worker_id": "123"}, "worker_id"),
        ({"temperature_dc": 1 << 40}, "temperature_dc"),
    ],
)
def test_values_no_device_can_send_are_refused_also_through_replace(change, message):
    good = PunchIn("GS-1", 1, "620102198503124516", 0, 1, 1, 0, SHA, 10)
    with pytest.raises(ValueError, match=message):
        PunchIn(**{**good._asdict(), **change})
    with pytest.raises(ValueError, match=message):
        good._replace(**change)


def test_a_rejected_record_may_carry_the_values_it_was_rejected_for():
    record = PunchIn("GS-1", 1, "bad id", 0, 3, 9, 0, None, 0, reject_reason=0x20)
    assert record.reject_reason == 0x20
