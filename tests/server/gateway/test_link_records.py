"""`lmg.server.gateway.link.punch_rows` skips PunchIn's argument check; prove the check would pass.

The link builds the store's records with tuple.__new__ because every value comes from a
decoded frame and the session's validation. If either assumption broke (a schema field
widened, a validation rule dropped), a bad record would reach a group-commit batch shared
with other terminals; these tests fail first.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol import Punch, PunchBatch, decode_frame, encode
from lmg.server.gateway.link import punch_rows
from lmg.server.gateway.session import StorePunches
from lmg.simulators.terminal import make_punch
from lmg.storage import PunchIn
from tests.protocol.strategies import message_strategy

from tests.server.gateway.test_session import T0, authenticated

valid_punches = st.builds(
    lambda n, worker, dt, direction, mode, temp, photo: Punch.of(
        make_punch(n, worker, T0 + dt, photo=photo)._replace(direction=direction, verify_mode=mode, temperature_dc=temp)),
    st.integers(0, 2**32 - 1), st.integers(1, 10**6), st.integers(-10**9, 10**6), st.integers(0, 3),
    st.integers(0, 5), st.integers(0, 65535), st.one_of(st.none(), st.binary(min_size=1, max_size=64)))
any_punches = st.one_of(valid_punches, message_strategy(Punch))


def checked(rows: list) -> None:
    for row in rows:
        assert type(row) is PunchIn
        assert PunchIn(*row) == row  # raises ValueError where the check would have refused it


@settings(max_examples=300, deadline=None)
@given(punch=any_punches)
def test_a_decoded_punch_becomes_a_record_the_checked_constructor_accepts(punch):
    session = authenticated()
    [action] = session.receive(decode_frame(encode(punch)), T0)
    assert type(action) is StorePunches
    checked(punch_rows("GS-1", [action]))


@settings(max_examples=150, deadline=None)
@given(punches=st.lists(any_punches, min_size=1, max_size=20))
def test_a_decoded_batch_becomes_records_the_checked_constructor_accepts(punches):
    session = authenticated()
    batch = decode_frame(encode(PunchBatch(tuple(p.record for p in punches))))
    [action] = session.receive(batch, T0)
    rows = punch_rows("GS-1", [action, action])
    assert [r.record_no for r in rows] == [p.record_no for p in punches] * 2
    checked(rows)
