"""The session state machine, without sockets: every (state, message) pair and the rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol import (
    Ack,
    ConfigEntry,
    ConfigReply,
    DoorOpen,
    RosterVersionQuery,
    RosterVersionReply,
    AuthResult,
    Challenge,
    Goodbye,
    Heartbeat,
    Hello,
    MessageType,
    Nack,
    PhotoChunk,
    Punch,
    PunchBatch,
    ResultCode,
    TimeSyncReply,
    TimeSyncRequest,
)
from lmg.protocol.auth import auth_mac
from lmg.protocol.errors import FrameTooLarge, MalformedBody, UnsupportedMessage
from lmg.protocol.messages import Auth, MESSAGE_CLASSES
from lmg.server.gateway.session import (
    TRANSITIONS,
    AppendPhoto,
    Authenticated,
    AuthFailed,
    Close,
    DeviceAnswer,
    DeviceView,
    LoadDevice,
    Send,
    Session,
    SessionLimits,
    State,
    StorePunches,
)
from lmg.simulators.terminal import make_punch
from tests.protocol.strategies import message_strategy

T0 = 1_763_942_400_000
SECRET = bytes(range(32))
NONCE = bytes(16)
HELLO = Hello("GS-1", "v", "m", "fw-1", 1, 0, seq=1)
DEVICE = DeviceView("GS-1", SECRET, True)


def sent(actions):
    return [a.message for a in actions if isinstance(a, Send)]


def new_session(**limits) -> Session:
    return Session(peer="10.0.0.1:5000", nonce=NONCE, connected_ms=T0, limits=SessionLimits(**limits))


def authenticated(**limits) -> Session:
    session = new_session(**limits)
    assert session.receive(HELLO, T0) == [LoadDevice("GS-1")]
    session.device_loaded(DEVICE, 0, T0)
    actions = session.receive(Auth(auth_mac(SECRET, NONCE, "GS-1", "fw-1", 1), seq=2), T0 + 10)
    assert session.state is State.AUTHENTICATED
    assert Authenticated("GS-1", "fw-1") in actions
    return session


def test_happy_path_gives_challenge_then_ok_with_session_parameters():
    session = new_session(heartbeat_interval_s=20)
    session.receive(HELLO, T0)
    challenge = sent(session.device_loaded(DEVICE, 0, T0))[0]
    assert challenge == Challenge(NONCE, T0, seq=1)
    actions = session.receive(Auth(auth_mac(SECRET, NONCE, "GS-1", "fw-1", 1), seq=2), T0 + 5)
    result = sent(actions)[0]
    assert isinstance(result, AuthResult) and result.result == ResultCode.OK
    assert result.heartbeat_interval_s == 20 and result.seq == 2


@pytest.mark.parametrize(
    "device, locked_until, reason, retry_after_s",
    [
        (None, 0, ResultCode.UNKNOWN_DEVICE, 0),
        (DeviceView("GS-1", SECRET, False), 0, ResultCode.DEVICE_DISABLED, 0),
        (DEVICE, T0 + 59_001, ResultCode.LOCKED_OUT, 60),  # the seconds left, rounded up
        (DEVICE, T0, ResultCode.OK, 0),  # a lock that ended is no lock
    ],
)
def test_refusals_before_the_challenge(device, locked_until, reason, retry_after_s):
    session = new_session()
    session.receive(HELLO, T0)
    actions = session.device_loaded(device, locked_until, T0)
    if reason is ResultCode.OK:
        assert isinstance(sent(actions)[0], Challenge)
        return
    assert (sent(actions)[0].result, sent(actions)[0].retry_after_s) == (reason, retry_after_s)
    assert AuthFailed("GS-1", reason) in actions
    assert actions[-1] == Close(reason, f"authentication refused: {reason.name}")
    assert session.state is State.CLOSED


def test_wrong_secret_is_refused_and_reported():
    session = new_session()
    session.receive(HELLO, T0)
    session.device_loaded(DEVICE, 0, T0)
    actions = session.receive(Auth(auth_mac(b"x" * 32, NONCE, "GS-1", "fw-1", 1)), T0)
    assert sent(actions)[0].result == ResultCode.BAD_SIGNATURE
    assert AuthFailed("GS-1", ResultCode.BAD_SIGNATURE) in actions
    assert session.state is State.CLOSED


def test_mac_over_another_firmware_is_refused():
    session = new_session()
    session.receive(HELLO, T0)
    session.device_loaded(DEVICE, 0, T0)
    actions = session.receive(Auth(auth_mac(SECRET, NONCE, "GS-1", "fw-2", 1)), T0)
    assert sent(actions)[0].result == ResultCode.BAD_SIGNATURE


def test_unsupported_protocol_version():
    session = new_session()
    actions = session.receive(HELLO._replace(protocol_version=9), T0)
    assert sent(actions)[0].result == ResultCode.UNSUPPORTED_VERSION
    assert session.state is State.CLOSED


def test_auth_timeout_closes_and_the_deadline_says_when():
    session = new_session(auth_timeout_s=10)
    assert session.deadline_ms() == T0 + 10_000
    assert session.tick(T0 + 9_999) == []
    actions = session.tick(T0 + 10_000)
    assert sent(actions) == [Goodbye(ResultCode.AUTH_TIMEOUT, 0, seq=1)]
    assert actions[-1] == Close(ResultCode.AUTH_TIMEOUT, "authentication not completed in time")


def test_heartbeat_is_acked_and_moves_the_deadline():
    session = authenticated(heartbeat_interval_s=30)
    actions = session.receive(Heartbeat(T0, 0, 0, seq=7), T0 + 1000)
    assert sent(actions) == [Ack(7, MessageType.HEARTBEAT, T0 + 1000, (), seq=3)]
    assert session.deadline_ms() == T0 + 1000 + 90_000
    assert session.tick(T0 + 1000 + 89_999) == []
    actions = session.tick(T0 + 1000 + 90_000)
    assert sent(actions)[0] == Goodbye(ResultCode.HEARTBEAT_TIMEOUT, 0, seq=4)
    assert session.state is State.CLOSED


def test_punch_is_stored_then_acked_with_per_record_results():
    session = authenticated()
    good = make_punch(1, 1, T0)
    actions = session.receive(Punch.of(good, seq=9), T0)
    assert actions == [StorePunches(9, MessageType.PUNCH, ((good, None),))]
    ack = sent(session.punches_stored(actions[0], [ResultCode.DUPLICATE], T0 + 3))[0]
    assert ack.ref_seq == 9 and [tuple(r) for r in ack.results] == [(1, ResultCode.DUPLICATE)]


def test_store_failure_is_a_nack_not_an_ack():
    session = authenticated()
    request = session.receive(Punch.of(make_punch(1, 1, T0), seq=9), T0)[0]
    assert sent(session.store_failed(request)) == [Nack(9, MessageType.PUNCH, ResultCode.STORE_UNAVAILABLE, seq=3)]


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"worker_id": "620102198503124517"}, ResultCode.INVALID_WORKER_ID),
        ({"punch_time_ms": T0 + 5 * 60_000 + 1}, ResultCode.TIME_IN_FUTURE),
        ({"punch_time_ms": T0 - 30 * 86_400_000 - 1}, ResultCode.TIME_TOO_OLD),
        ({"direction": 3}, ResultCode.INVALID_DIRECTION),
        ({"verify_mode": 0}, ResultCode.INVALID_VERIFY_MODE),
        ({"temperature_dc": 299}, ResultCode.INVALID_TEMPERATURE),
        ({"temperature_dc": 0}, None),
        ({"punch_time_ms": T0 + 5 * 60_000}, None),
        ({"punch_time_ms": T0 - 30 * 86_400_000}, None),
    ],
)
def test_record_validation(change, reason):
    session = authenticated()
    record = make_punch(1, 1, T0)._replace(**change)
    request = session.receive(PunchBatch((record,), seq=4), T0)[0]
    assert request.records == ((record, reason),)


def test_batch_limits():
    session = authenticated(max_batch_records=2)
    records = tuple(make_punch(i, i, T0) for i in range(3))
    assert sent(session.receive(PunchBatch(records, seq=5), T0)) == [
        Nack(5, MessageType.PUNCH_BATCH, ResultCode.BATCH_TOO_LARGE, seq=3)
    ]
    assert sent(session.receive(PunchBatch((), seq=6), T0)) == [Ack(6, MessageType.PUNCH_BATCH, T0, (), seq=4)]


def test_time_sync_reply_echoes_t1():
    session = authenticated()
    assert sent(session.receive(TimeSyncRequest(123, seq=3), T0)) == [TimeSyncReply(123, T0, T0, seq=3)]


def test_photo_chunk_becomes_an_append_action():
    session = authenticated()
    chunk = PhotoChunk(1, bytes(32), 10, 0, b"abc", seq=3)
    assert session.receive(chunk, T0) == [AppendPhoto(chunk)]


def test_before_auth_only_auth_messages_are_accepted():
    session = new_session()
    heartbeat = Heartbeat(T0, 0, 0, seq=1)
    assert sent(session.receive(heartbeat, T0)) == [Nack(1, MessageType.HEARTBEAT, ResultCode.AUTH_REQUIRED, seq=1)]
    assert session.state is State.AWAIT_HELLO


def test_unknown_message_is_nacked_and_never_disconnects():
    session = authenticated(malformed_limit=2)
    for i in range(10):
        actions = session.receive(UnsupportedMessage("x", seq=i, msg_type=0x7777), T0)
        assert sent(actions) == [Nack(i, 0x7777, ResultCode.UNSUPPORTED_MESSAGE, seq=3 + i)]
    assert session.state is State.AUTHENTICATED


def test_malformed_frames_past_the_limit_close_the_session():
    session = authenticated(malformed_limit=3, malformed_window_s=60)
    for i in range(3):
        assert not any(isinstance(a, Close) for a in session.receive(MalformedBody("short", seq=i, msg_type=0x101), T0 + i))
    actions = session.receive(MalformedBody("short", seq=9, msg_type=0x101), T0 + 5)
    assert Goodbye(ResultCode.TOO_MANY_ERRORS, 0, seq=7) in sent(actions)
    assert session.state is State.CLOSED


def test_malformed_frames_spread_over_time_are_tolerated():
    session = authenticated(malformed_limit=3, malformed_window_s=1)
    for i in range(10):
        session.receive(MalformedBody("short", seq=i, msg_type=0x101), T0 + i * 600)
    assert session.state is State.AUTHENTICATED


def test_oversize_frame_is_nacked_and_closes():
    session = authenticated()
    actions = session.receive(FrameTooLarge("big", seq=4, msg_type=0x101), T0)
    assert sent(actions) == [Nack(4, 0x101, ResultCode.FRAME_TOO_LARGE, seq=3)]
    assert actions[-1].reason == ResultCode.FRAME_TOO_LARGE


def test_takeover_and_shutdown_say_goodbye_once():
    session = authenticated()
    assert sent(session.taken_over()) == [Goodbye(ResultCode.TAKEOVER, 0, seq=3)]
    assert session.shutdown() == [] and session.receive(Heartbeat(0, 0, 0), T0) == []


def test_shutdown_tells_when_to_reconnect():
    session = authenticated(goodbye_reconnect_s=7)
    assert sent(session.shutdown()) == [Goodbye(ResultCode.SHUTTING_DOWN, 7, seq=3)]


@pytest.mark.parametrize("answer", [
    Ack(5, MessageType.DOOR_OPEN, T0, (), seq=9),
    Nack(5, MessageType.REBOOT, ResultCode.COMMAND_FAILED, seq=9),
    RosterVersionReply(5, 42, 300, seq=9),
    ConfigReply(5, (ConfigEntry("volume", "7"),), seq=9),
])
def test_a_terminal_s_answer_goes_to_the_downlink_and_is_never_answered(answer):
    session = authenticated()
    out_seq = session.out_seq
    assert session.receive(answer, T0) == [DeviceAnswer(answer)]
    assert session.out_seq == out_seq  # nothing sent: an answer is not answered


def test_commands_are_numbered_in_the_session_s_one_sequence():
    session = authenticated()
    send, seq = session.send_command(DoorOpen(1, 5))
    assert send == Send(DoorOpen(1, 5, seq=3)) and seq == 3
    assert sent(session.receive(Heartbeat(0, 0, 0, seq=4), T0))[0].seq == 4  # answers go on from there
    session.out_seq = 0xFFFFFFFF
    assert session.send_command(RosterVersionQuery()) == (Send(RosterVersionQuery(seq=0)), 0)


@pytest.mark.parametrize("state", [State.AWAIT_HELLO, State.AWAIT_DEVICE, State.AWAIT_AUTH, State.CLOSED])
def test_only_an_authenticated_session_takes_commands(state):
    session = session_in(state)
    with pytest.raises(RuntimeError, match=f"a command for a session in state {state.value}"):
        session.send_command(DoorOpen(1, 5))
    assert session.out_seq in (0, 1)  # nothing numbered


def test_outgoing_seq_wraps():
    session = authenticated()
    session.out_seq = 0xFFFFFFFF
    assert sent(session.receive(Heartbeat(0, 0, 0, seq=1), T0))[0].seq == 0


# --- every (state, message) pair ------------------------------------------------------

def session_in(state: State, **limits) -> Session:
    session = new_session(**limits)
    if state is State.AWAIT_HELLO:
        return session
    session.receive(HELLO, T0)
    if state is State.AWAIT_DEVICE:
        return session
    session.device_loaded(DEVICE, 0, T0)
    if state is State.AWAIT_AUTH:
        return session
    if state is State.AUTHENTICATED:
        session.receive(Auth(auth_mac(SECRET, NONCE, "GS-1", "fw-1", 1)), T0)
        return session
    session.abort(ResultCode.OK, "test")
    return session


ALL_MESSAGES = st.one_of([message_strategy(cls) for cls in MESSAGE_CLASSES.values()])
ANSWERS = frozenset({MessageType.ACK, MessageType.NACK, MessageType.ROSTER_VERSION_REPLY, MessageType.CONFIG_REPLY})


@settings(max_examples=400, deadline=None)
@given(state=st.sampled_from(list(State)), message=ALL_MESSAGES)
def test_every_state_and_message_pair_is_handled_by_the_table_or_refused(state, message):
    session = session_in(state)
    actions = session.receive(message, T0 + 1)
    if state is State.CLOSED:
        assert actions == []
        return
    if (state, message.msg_type) in TRANSITIONS:
        if message.msg_type in ANSWERS:  # answers to commands: handed over, never answered
            assert actions == [DeviceAnswer(message)]
        return  # the handler's own tests cover it; reaching here without an exception is the point
    expected = ResultCode.AUTH_REQUIRED if state is not State.AUTHENTICATED else ResultCode.UNEXPECTED_MESSAGE
    assert [type(a) for a in actions] == [Send]
    nack = actions[0].message
    assert (nack.ref_seq, nack.ref_type, nack.result) == (message.seq, message.msg_type, expected)
    assert session.state is state  # refusing a message never changes state


def test_the_table_only_names_real_states_and_types():
    for (state, msg_type), handler in TRANSITIONS.items():
        assert isinstance(state, State) and state is not State.CLOSED
        assert int(msg_type) in MESSAGE_CLASSES
        assert callable(handler)


@settings(max_examples=400, deadline=None)
@given(state=st.sampled_from(list(State)), message=ALL_MESSAGES)
def test_records_to_store_says_exactly_when_receive_answers_with_one_store_request(state, message):
    # The glue gathers items `records_to_store` counts into one store call and holds
    # every other item back; a wrong answer would reorder seq numbers on the wire.
    session = session_in(state)
    predicted = session.records_to_store(message)
    actions = session.receive(message, T0 + 1)
    assert bool(predicted) == ([type(a) for a in actions] == [StorePunches])
    if predicted:
        assert len(actions[0].records) == predicted
        assert session_in(state).store_request(message, T0 + 1) == actions[0]


def test_records_to_store_counts_punches_and_batches_within_the_limit_only():
    session = session_in(State.AUTHENTICATED)
    records = tuple(make_punch(n, n, T0) for n in range(1, 4))
    assert session.records_to_store(Punch.of(records[0])) == 1
    assert session.records_to_store(PunchBatch(records)) == 3
    assert session.records_to_store(PunchBatch(())) == 0  # answered at once with an empty ACK
    small = session_in(State.AUTHENTICATED, max_batch_records=2)
    assert small.records_to_store(PunchBatch(records)) == 0  # NACK BATCH_TOO_LARGE at once
    assert [a.message.result for a in small.receive(PunchBatch(records, seq=9), T0)] == [ResultCode.BATCH_TOO_LARGE]
    assert session_in(State.AWAIT_AUTH).records_to_store(Punch.of(records[0])) == 0


def test_the_frame_limit_is_a_hellos_size_until_authenticated():
    from lmg.server.gateway.session import PRE_AUTH_MAX_FRAME_SIZE

    session = new_session()
    assert session.max_frame_size == PRE_AUTH_MAX_FRAME_SIZE
    assert authenticated(max_frame_size=40_000).max_frame_size == 40_000


def test_a_punch_announcing_a_photo_above_the_limit_is_refused_and_the_rest_of_the_batch_is_not():
    from lmg.protocol import PunchBatch

    session = authenticated()
    session.max_photo_bytes = 1000
    ok = make_punch(1, 1, T0)
    big = make_punch(2, 2, T0)._replace(photo_size=1001, photo_sha256=bytes(range(32)))
    request = session.store_request(PunchBatch((ok, big)), T0)
    assert [reason for _, reason in request.records] == [None, ResultCode.PHOTO_TOO_LARGE]


def test_before_authentication_other_messages_count_as_errors_and_end_the_session():
    session = new_session(malformed_limit=3)
    for n in range(3):
        assert sent(session.receive(Heartbeat(0, 0, 0, seq=n), T0))[0].result == ResultCode.AUTH_REQUIRED
    actions = session.receive(Heartbeat(0, 0, 0, seq=4), T0)
    assert [type(m).__name__ for m in sent(actions)] == ["Nack", "Goodbye"]
    assert sent(actions)[1].reason == ResultCode.TOO_MANY_ERRORS and session.state is State.CLOSED
