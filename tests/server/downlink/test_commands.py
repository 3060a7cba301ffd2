"""The command type table: names, messages, arguments from the CLI and from JSON, stored and rebuilt."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol import (
    MAX_FRAME_SIZE,
    ConfigEntry,
    ConfigGet,
    ConfigKey,
    ConfigSet,
    DoorOpen,
    MessageType,
    Reboot,
    RosterVersionQuery,
    SetTime,
    decode_frame,
    encode,
)
from lmg.protocol.messages import MESSAGE_CLASSES
from lmg.server.downlink import commands
from lmg.server.downlink.commands import (
    COMMAND_TYPES,
    REPLIES,
    arguments_from_json,
    build_message,
    decode_arguments,
    encode_arguments,
    get_command_type,
    parse_arguments,
    type_name,
)
from lmg.storage.api import OPERATOR_COMMAND_TYPES

NOW = 1_763_942_520_000


def test_names_are_the_message_names_in_lower_case_with_hyphens():
    assert list(COMMAND_TYPES) == ["set-time", "config-get", "config-set", "reboot", "door-open",
                                   "roster-version-query"]
    for name, spec in COMMAND_TYPES.items():
        assert spec.name == name == spec.message_type.name.lower().replace("_", "-")
        assert MESSAGE_CLASSES[spec.message_type] is spec.message_class
        assert get_command_type(name) is spec is get_command_type(int(spec.message_type))
        assert type_name(spec.message_type) == name


def test_the_table_names_the_store_s_operator_commands_exactly():
    assert {spec.message_type for spec in COMMAND_TYPES.values()} == set(OPERATOR_COMMAND_TYPES)


def test_every_server_to_terminal_message_of_4_5_has_its_reply():
    downlink = {t for t in MessageType if 0x0201 <= t <= 0x020C
                and t not in (MessageType.ROSTER_VERSION_REPLY, MessageType.CONFIG_REPLY)}
    assert set(REPLIES) == downlink
    assert REPLIES[MessageType.CONFIG_GET] is MessageType.CONFIG_REPLY
    assert REPLIES[MessageType.ROSTER_VERSION_QUERY] is MessageType.ROSTER_VERSION_REPLY
    assert {REPLIES[t] for t in downlink} - {MessageType.CONFIG_REPLY, MessageType.ROSTER_VERSION_REPLY} == {
        MessageType.ACK}


def test_unknown_type_names_the_known_ones():
    with pytest.raises(ValueError, match="set-time, config-get"):
        get_command_type("open-sesame")
    assert type_name(MessageType.ROSTER_ADD) == "roster-add"
    assert type_name(0x7777) == "0x7777"


@pytest.mark.parametrize(("name", "words", "expected", "message"), [
    ("set-time", [], {"time_ms": None}, SetTime(NOW)),
    ("set-time", ["time_ms=1763942400000"], {"time_ms": 1763942400000}, SetTime(1763942400000)),
    ("set-time", ["time_ms=2025-11-24T08:00:00+08:00"], {"time_ms": 1763942400000}, SetTime(1763942400000)),
    ("config-get", ["keys=volume,relay_ms"], {"keys": ["volume", "relay_ms"]},
     ConfigGet((ConfigKey("volume"), ConfigKey("relay_ms")))),
    ("config-get", ["keys=volume", "keys=音量"], {"keys": ["volume", "音量"]},
     ConfigGet((ConfigKey("volume"), ConfigKey("音量")))),
    ("config-set", ["volume=5", "relay_ms=3000"], {"entries": {"volume": "5", "relay_ms": "3000"}},
     ConfigSet((ConfigEntry("volume", "5"), ConfigEntry("relay_ms", "3000")))),
    ("config-set", ["greeting="], {"entries": {"greeting": ""}}, ConfigSet((ConfigEntry("greeting", ""),))),
    ("reboot", [], {"delay_s": 0}, Reboot(0)),
    ("reboot", ["delay_s=10"], {"delay_s": 10}, Reboot(10)),
    ("door-open", [], {"door": 1, "duration_s": 5}, DoorOpen(1, 5)),
    ("door-open", ["door=2", "duration_s=30"], {"door": 2, "duration_s": 30}, DoorOpen(2, 30)),
    ("roster-version-query", [], {}, RosterVersionQuery()),
])
def test_cli_words_become_checked_arguments_and_the_message_at_send_time(name, words, expected, message):
    arguments = parse_arguments(name, words)
    assert arguments == expected
    stored = encode_arguments(arguments)
    assert json.loads(stored) == expected
    assert decode_arguments(name, stored) == expected
    assert build_message(name, decode_arguments(COMMAND_TYPES[name], stored), NOW) == message


@pytest.mark.parametrize(("name", "words", "says"), [
    ("door-open", ["door=0"], "door = 0 is out of range; use an integer 1..255"),
    ("door-open", ["door=256"], "door = 256 is out of range"),
    ("door-open", ["duration_s=0"], "duration_s = 0 is out of range; use an integer 1..65535"),
    ("door-open", ["door=one"], "door = 'one' is not an integer"),
    ("door-open", ["door=1", "door=2"], "door is given twice"),
    ("reboot", ["delay_s=65536"], "delay_s = 65536 is out of range"),
    ("reboot", ["in=5"], "unknown argument 'in' (its arguments: delay_s)"),
    ("roster-version-query", ["x=1"], "unknown argument 'x' (its arguments: none)"),
    ("reboot", ["delay_s"], "'delay_s' is not key=value"),
    ("set-time", ["time_ms=1763942520"], "time_ms = 1763942520 is out of range; use Unix milliseconds"),
    ("set-time", ["time_ms=2025-11-24T08:00:00"], "has no time zone (add +08:00 for China time)"),
    ("set-time", ["time_ms=tomorrow"], "is neither a number nor an ISO 8601 time"),
    ("config-get", [], "keys is required; use keys=volume,relay_ms"),
    ("config-get", ["keys=a,,b"], "has a key of 0 bytes (from 1 to 255 allowed)"),
    ("config-get", ["keys=" + "k" * 256], "has a key of 256 bytes"),
    ("config-get", ["keys=" + ",".join(f"k{i}" for i in range(256))], "has 256 keys"),
    ("config-set", [], "entries is required; use KEY=VALUE words"),
    ("config-set", ["=5"], "has a key of 0 bytes"),
])
def test_cli_mistakes_name_the_argument_and_its_form(name, words, says):
    with pytest.raises(ValueError) as caught:
        parse_arguments(name, words)
    assert says in str(caught.value)
    assert str(caught.value).startswith(name + ":")


def test_json_arguments_are_checked_the_same_way():
    assert arguments_from_json("door-open", {"door": 3}) == {"door": 3, "duration_s": 5}
    assert arguments_from_json("roster-version-query", None) == {}
    assert arguments_from_json("config-set", {"entries": {"volume": 5}}) == {"entries": {"volume": "5"}}
    assert arguments_from_json("set-time", {"time_ms": "2025-11-24T00:00:00Z"}) == {"time_ms": 1763942400000}
    assert arguments_from_json("set-time", {"time_ms": None}) == {"time_ms": None}
    for bad, says in [({"door": True}, "door = True is not an integer"),
                      ({"door": "2"}, "door = '2' is not an integer"),
                      ({"door": 2.0}, "is not an integer"),
                      ([1], "arguments must be a JSON object, not list")]:
        with pytest.raises(ValueError, match=says):
            arguments_from_json("door-open", bad)
    with pytest.raises(ValueError, match="is not a list of keys"):
        arguments_from_json("config-get", {"keys": "volume"})
    with pytest.raises(ValueError, match="is not a set of KEY=VALUE entries"):
        arguments_from_json("config-set", {"entries": [["volume", "5"]]})
    with pytest.raises(ValueError, match="value for 'volume'"):
        arguments_from_json("config-set", {"entries": {"volume": None}})


def test_arguments_that_would_not_fit_one_frame_are_refused_when_queued():
    big = {f"key{i}": "v" * 1000 for i in range(70)}  # 70 KB of values: no 64 KiB frame holds it
    with pytest.raises(ValueError, match="do not fit in one frame"):
        arguments_from_json("config-set", {"entries": big})
    fits = {f"key{i}": "v" * 1000 for i in range(60)}
    message = build_message("config-set", arguments_from_json("config-set", {"entries": fits}), NOW)
    assert len(encode(message)) <= MAX_FRAME_SIZE


def test_a_corrupt_stored_payload_is_a_value_error_saying_so():
    with pytest.raises(ValueError, match="stored arguments are not JSON"):
        decode_arguments("reboot", b"{not json")
    with pytest.raises(ValueError, match="delay_s = -1 is out of range"):
        decode_arguments("reboot", b'{"delay_s": -1}')
    assert decode_arguments("reboot", b"") == {"delay_s": 0}  # an empty payload: the defaults


def test_set_time_without_a_time_is_the_time_of_sending():
    arguments = parse_arguments("set-time", [])
    assert build_message("set-time", arguments, NOW).server_time_ms == NOW
    assert build_message("set-time", arguments, NOW + 5).server_time_ms == NOW + 5


def test_usage_lists_every_argument_with_its_form():
    lines = commands.usage(COMMAND_TYPES["door-open"])
    assert lines == ["door: door or lane number (an integer 1..255, optional)",
                     "duration_s: seconds to keep it open (an integer 1..65535, optional)"]
    assert [a.required for a in COMMAND_TYPES["config-get"].arguments] == [True]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(list(COMMAND_TYPES)), data=st.data())
def test_any_checked_arguments_round_trip_through_the_store_and_the_wire(name, data):
    spec = COMMAND_TYPES[name]
    values = {}
    for argument in spec.arguments:
        if argument.kind is int:
            values[argument.name] = data.draw(st.integers(argument.low, min(argument.high, argument.low + 10**6)))
        elif argument.kind is list:
            values[argument.name] = data.draw(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5))
        else:
            values[argument.name] = data.draw(st.dictionaries(st.text(min_size=1, max_size=20),
                                                              st.text(max_size=40), min_size=1, max_size=5))
    try:
        arguments = arguments_from_json(name, values)
    except ValueError:
        return  # e.g. text that is not valid UTF-8 (lone surrogates): refused with a reason, never a crash
    stored = encode_arguments(arguments)
    again = decode_arguments(name, stored)
    assert again == arguments
    message = build_message(name, again, NOW)
    assert decode_frame(encode(message._replace(seq=7))) == message._replace(seq=7)
