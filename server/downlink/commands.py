"""The operator command types: one table from a command's name to its message, arguments and reply.

Pure: no I/O, no clock (the time a message is built at is an argument). The admin API and
the CLI parse and check arguments here before a command is queued; the gateway builds the
message here when it sends one. Rules:

- `COMMAND_TYPES` is the one source of truth: a command's name (`set-time`, ...: the
  message's name in lower case with hyphens) <-> its `MessageType` <-> its message class
  <-> its arguments (type, default, limits) <-> the reply that completes it (ACK,
  CONFIG_REPLY or ROSTER_VERSION_REPLY; a NACK fails any of them). `REPLIES` extends the
  last column to every server-to-terminal message of docs/protocol.md §4.5, the roster
  changes and FACE_CHUNK included, which the roster sync sends rather than an operator.
- Arguments arrive as `key=value` words (the CLI, `parse_arguments`) or a JSON object (the
  API, `arguments_from_json`) and leave as one canonical dict, every argument present
  (defaults filled in), which is what the store keeps (`encode_arguments`, UTF-8 JSON) and
  `build_message` reads back. A wrong argument is a ValueError naming it and the form it
  takes; nothing unchecked reaches the store, and a command whose message would not fit
  in one frame (`MAX_FRAME_SIZE`) is refused when it is queued, not when it is sent.
- `set-time` without `time_ms` means "the server's time when the command is sent": the
  stored argument is null and `build_message` fills in its `now_ms`.
- The arguments and their limits follow the wire: `door` is a u8 lane number from 1,
  `duration_s` and `delay_s` are u16 seconds, configuration keys are str8 (1..255 UTF-8
  bytes, at most 255 of them), values str16.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lmg.protocol import (
    MAX_FRAME_SIZE,
    ConfigEntry,
    ConfigGet,
    ConfigKey,
    ConfigSet,
    DoorOpen,
    EncodeError,
    MessageType,
    Reboot,
    ResultCode,
    RosterVersionQuery,
    SetTime,
    encode,
)

# Unix ms of 2000-01-01T00:00:00Z: a `time_ms` below it is almost surely seconds, not ms
# (1763942520 s is 2025; as ms it would be January 1970).
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 2**63 - 1  # the store's time columns are signed 64-bit; the wire's u64 holds it
MAX_CONFIG_ROWS = 255  # key_count / entry_count are u8
MAX_KEY_BYTES = 255  # str8
MAX_VALUE_BYTES = 65_535  # str16

_REQUIRED = object()


@dataclass(frozen=True)
class Argument:
    """One argument of a command type.

    `kind` is the Python type of the checked value (int, str, list of keys, dict of
    entries); `default` is used when the argument is left out (`required` when there is
    none); `low`/`high` bound an int; `form` says how it is written, for error messages and
    `--help`.
    """

    name: str
    kind: type
    help: str
    form: str
    default: Any = _REQUIRED
    low: int | None = None
    high: int | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class CommandType:
    """One operator command type: its name, its message and what answers it."""

    name: str
    message_type: MessageType
    message_class: type
    arguments: tuple[Argument, ...]
    reply: MessageType  # the answer that completes it (a NACK fails it)
    help: str
    build: Callable[[Mapping[str, Any], int], Any]  # (checked arguments, now_ms) -> message, seq 0

    def argument(self, name: str) -> Argument | None:
        for argument in self.arguments:
            if argument.name == name:
                return argument
        return None


def _build_set_time(arguments: Mapping[str, Any], now_ms: int) -> SetTime:
    time_ms = arguments.get("time_ms")
    return SetTime(now_ms if time_ms is None else time_ms)


def _build_config_get(arguments: Mapping[str, Any], now_ms: int) -> ConfigGet:
    return ConfigGet(tuple(ConfigKey(key) for key in arguments["keys"]))


def _build_config_set(arguments: Mapping[str, Any], now_ms: int) -> ConfigSet:
    return ConfigSet(tuple(ConfigEntry(key, value) for key, value in arguments["entries"].items()))


_TIME_FORM = "Unix milliseconds (1763942520000) or ISO 8601 with a zone (2025-11-24T08:00:00+08:00)"
_KEYS_FORM = "keys=volume,relay_ms (CLI) or [\"volume\", \"relay_ms\"] (JSON): 1 to 255 keys of 1 to 255 UTF-8 bytes"
_ENTRIES_FORM = ("KEY=VALUE words (CLI: volume=5 relay_ms=3000) or {\"volume\": \"5\"} (JSON): 1 to 255 entries, "
                 "keys of 1 to 255 UTF-8 bytes, values up to 65535")

COMMAND_TYPES: dict[str, CommandType] = {
    spec.name: spec
    for spec in (
        CommandType(
            "set-time", MessageType.SET_TIME, SetTime,
            (Argument("time_ms", int, "the time to set; left out: the server's time when the command is sent",
                      _TIME_FORM, default=None, low=MIN_TIME_MS, high=MAX_TIME_MS),),
            MessageType.ACK, "set the terminal's clock", _build_set_time),
        CommandType(
            "config-get", MessageType.CONFIG_GET, ConfigGet,
            (Argument("keys", list, "configuration keys to read", _KEYS_FORM),),
            MessageType.CONFIG_REPLY, "read configuration keys (the reply's values are logged)", _build_config_get),
        CommandType(
            "config-set", MessageType.CONFIG_SET, ConfigSet,
            (Argument("entries", dict, "configuration keys and the values to set", _ENTRIES_FORM),),
            MessageType.ACK, "write configuration keys (all or none)", _build_config_set),
        CommandType(
            "reboot", MessageType.REBOOT, Reboot,
            (Argument("delay_s", int, "seconds to wait before restarting", "an integer 0..65535", default=0,
                      low=0, high=65_535),),
            MessageType.ACK, "restart the terminal", lambda a, now: Reboot(a["delay_s"])),
        CommandType(
            "door-open", MessageType.DOOR_OPEN, DoorOpen,
            (Argument("door", int, "door or lane number", "an integer 1..255", default=1, low=1, high=255),
             Argument("duration_s", int, "seconds to keep it open", "an integer 1..65535", default=5, low=1,
                      high=65_535)),
            MessageType.ACK, "open a door or turnstile lane", lambda a, now: DoorOpen(a["door"], a["duration_s"])),
        CommandType(
            "roster-version-query", MessageType.ROSTER_VERSION_QUERY, RosterVersionQuery, (),
            MessageType.ROSTER_VERSION_REPLY, "ask which roster version the terminal holds (a terminal behind its "
            "project is then brought up to date)", lambda a, now: RosterVersionQuery()),
    )
}

BY_MESSAGE_TYPE: dict[int, CommandType] = {int(spec.message_type): spec for spec in COMMAND_TYPES.values()}

#: The answer that completes each server-to-terminal message of §4.5 (a NACK fails any).
REPLIES: dict[int, MessageType] = {
    MessageType.ROSTER_ADD: MessageType.ACK,
    MessageType.ROSTER_UPDATE: MessageType.ACK,
    MessageType.ROSTER_REMOVE: MessageType.ACK,
    MessageType.FACE_CHUNK: MessageType.ACK,
    **{int(spec.message_type): spec.reply for spec in COMMAND_TYPES.values()},
}


# --- lookups -------------------------------------------------------------------------------------


def get_command_type(key: str | int) -> CommandType:
    """The command type named `key` (`set-time`) or sent as message type `key`; ValueError
    listing the names otherwise."""
    spec = COMMAND_TYPES.get(key) if isinstance(key, str) else BY_MESSAGE_TYPE.get(int(key))
    if spec is None:
        raise ValueError(f"unknown command type {key!r}: use one of {', '.join(COMMAND_TYPES)}")
    return spec


def type_name(message_type: int) -> str:
    """The command type's name for a stored `command_type` (a MessageType value); a type that is
    not an operator command shows as its message name in lower case, or its hex number."""
    spec = BY_MESSAGE_TYPE.get(int(message_type))
    if spec is not None:
        return spec.name
    try:
        return MessageType(message_type).name.lower().replace("_", "-")
    except ValueError:
        return f"0x{int(message_type):04x}"


# --- checking ---------------------------------------------------------------------------------------


def _bad(spec: CommandType, argument: Argument, why: str) -> ValueError:
    return ValueError(f"{spec.name}: {argument.name} {why}; use {argument.form}")


def _check_int(spec: CommandType, argument: Argument, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(spec, argument, f"= {value!r} is not an integer")
    if (argument.low is not None and value < argument.low) or (argument.high is not None and value > argument.high):
        raise _bad(spec, argument, f"= {value} is out of range")
    return value


def _check_text(spec: CommandType, argument: Argument, text: Any, what: str, low: int, high: int) -> str:
    if not isinstance(text, str):
        raise _bad(spec, argument, f"has a {what} {text!r} that is not text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad(spec, argument, f"has a {what} {text!r} that is not valid UTF-8") from None
    if not low <= size <= high:
        raise _bad(spec, argument, f"has a {what} of {size} bytes (from {low} to {high} allowed)")
    return text


def _check_keys(spec: CommandType, argument: Argument, value: Any) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise _bad(spec, argument, f"= {value!r} is not a list of keys")
    keys = [_check_text(spec, argument, key, "key", 1, MAX_KEY_BYTES) for key in value]
    if not 1 <= len(keys) <= MAX_CONFIG_ROWS:
        raise _bad(spec, argument, f"has {len(keys)} keys")
    return keys


def _check_entries(spec: CommandType, argument: Argument, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _bad(spec, argument, f"= {value!r} is not a set of KEY=VALUE entries")
    entries: dict[str, str] = {}
    for key, item in value.items():
        _check_text(spec, argument, key, "key", 1, MAX_KEY_BYTES)
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)  # {"volume": 5} means what {"volume": "5"} does
        entries[key] = _check_text(spec, argument, item, f"value for {key!r}", 0, MAX_VALUE_BYTES)
    if not 1 <= len(entries) <= MAX_CONFIG_ROWS:
        raise _bad(spec, argument, f"has {len(entries)} entries")
    return entries


def _check(spec: CommandType, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every argument of `spec` checked, defaults filled in; the message must fit a frame."""
    unknown = [name for name in values if spec.argument(name) is None]
    if unknown:
        known = ", ".join(a.name for a in spec.arguments) or "none"
        raise ValueError(f"{spec.name}: unknown argument {unknown[0]!r} (its arguments: {known})")
    checked: dict[str, Any] = {}
    for argument in spec.arguments:
        if argument.name not in values:
            if argument.required:
                raise _bad(spec, argument, "is required")
            checked[argument.name] = argument.default
            continue
        value = values[argument.name]
        if value is None and not argument.required and argument.default is None:
            checked[argument.name] = None
        elif argument.kind is int:
            checked[argument.name] = _check_int(spec, argument, value)
        elif argument.kind is list:
            checked[argument.name] = _check_keys(spec, argument, value)
        else:
            checked[argument.name] = _check_entries(spec, argument, value)
    try:
        size = len(encode(spec.build(checked, MIN_TIME_MS)))
    except EncodeError as exc:
        raise ValueError(f"{spec.name}: the arguments do not fit in one frame ({exc}); send fewer or shorter") from None
    assert size <= MAX_FRAME_SIZE  # encode refuses a larger frame
    return checked


def _parse_time(spec: CommandType, argument: Argument, text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(spec, argument, f"= {text!r} is neither a number nor an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise _bad(spec, argument, f"= {text!r} has no time zone (add +08:00 for China time)")
    return int(moment.timestamp() * 1000)


def parse_arguments(type_name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """Checked arguments of command type `type_name` from the CLI's `key=value` words.

    `config-set` takes every word as an entry (`volume=5 relay_ms=3000`); `config-get`
    takes `keys=a,b` (the word may repeat); numbers are decimal; `set-time`'s `time_ms` may
    also be an ISO 8601 time with a zone. Raises ValueError naming the argument and its form.
    """
    spec = get_command_type(type_name)
    words = list(pairs)
    for word in words:
        if "=" not in word:
            raise ValueError(f"{spec.name}: {word!r} is not key=value")
    if spec.message_type is MessageType.CONFIG_SET:
        entries: dict[str, str] = {}
        for word in words:
            key, _, value = word.partition("=")
            entries[key] = value
        return _check(spec, {"entries": entries} if entries else {})
    values: dict[str, Any] = {}
    for word in words:
        name, _, text = word.partition("=")
        argument = spec.argument(name)
        if argument is None:
            return _check(spec, {name: text})  # raises, naming the unknown argument
        if argument.kind is list:
            values.setdefault(name, []).extend(part.strip() for part in text.split(","))
        elif name in values:
            raise _bad(spec, argument, "is given twice")
        elif name == "time_ms":
            values[name] = _parse_time(spec, argument, text)
        else:
            try:
                values[name] = int(text.strip())
            except ValueError:
                raise _bad(spec, argument, f"= {text!r} is not an integer") from None
    return _check(spec, values)


def arguments_from_json(type_name: str, obj: Any) -> dict[str, Any]:
    """Checked arguments of command type `type_name` from the API's JSON object (None: no
    arguments). `set-time`'s `time_ms` may be a number or an ISO 8601 string with a zone.
    Raises ValueError naming the argument and its form."""
    spec = get_command_type(type_name)
    if obj is None:
        obj = {}
    if not isinstance(obj, Mapping):
        raise ValueError(f"{spec.name}: arguments must be a JSON object, not {type(obj).__name__}")
    values = dict(obj)
    time_ms = values.get("time_ms")
    if isinstance(time_ms, str) and spec.message_type is MessageType.SET_TIME:
        argument = spec.arguments[0]
        values["time_ms"] = _parse_time(spec, argument, time_ms)
    return _check(spec, values)


# --- storing and sending ------------------------------------------------------------------------------


def encode_arguments(arguments: Mapping[str, Any]) -> bytes:
    """The stored form of checked arguments: UTF-8 JSON, keys in the table's order."""
    return json.dumps(dict(arguments), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_arguments(command_type: CommandType | str | int, payload: bytes | None) -> dict[str, Any]:
    """Checked arguments from a stored payload (checked again: the row may come from an older
    version or another tool). Raises ValueError saying what is wrong."""
    spec = command_type if isinstance(command_type, CommandType) else get_command_type(command_type)
    try:
        obj = json.loads(payload.decode("utf-8")) if payload else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{spec.name}: stored arguments are not JSON ({exc})") from None
    return arguments_from_json(spec.name, obj)


def build_message(command_type: CommandType | str | int, arguments: Mapping[str, Any], now_ms: int) -> Any:
    """The message (seq 0: the session numbers it) for checked `arguments`, built at send time:
    `set-time` without `time_ms` carries `now_ms`."""
    spec = command_type if isinstance(command_type, CommandType) else get_command_type(command_type)
    return spec.build(arguments, now_ms)


def describe_arguments(arguments: Mapping[str, Any]) -> str:
    """`key=value` words for a log line or a listing (the inverse of `parse_arguments` for
    every type but config-set, whose entries are shown as `entries=...`)."""
    words: list[str] = []
    for name, value in arguments.items():
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, dict):
            value = ",".join(f"{k}:{v}" for k, v in value.items())
        words.append(f"{name}={value}")
    return " ".join(words)


def usage(spec: CommandType) -> Sequence[str]:
    """One `name=FORM` line per argument, for a command's help."""
    return [f"{a.name}: {a.help} ({a.form}{'' if a.required else ', optional'})" for a in spec.arguments]


def command_view(command: Any) -> dict[str, Any]:
    """A stored command (`lmg.storage.Command`) as the CLI and the API show it: the type by
    its name, the state as `status`, the terminal's result code by its name, and the
    arguments and the reply's data (CONFIG_REPLY's values, ROSTER_VERSION_REPLY's version)
    as JSON objects."""
    code = command.result_code
    try:
        result = ResultCode(code).name if code is not None else None
    except ValueError:
        result = str(code)
    return {"id": command.id, "device": command.device_serial, "type": type_name(command.command_type),
            "status": command.state.value, "arguments": json.loads(command.payload or b"{}"),
            "result": result, "error": command.error, "attempts": command.attempts,
            "reply": json.loads(command.reply) if command.reply else None,
            "created_at_ms": command.created_at_ms, "sent_at_ms": command.sent_at_ms,
            "completed_at_ms": command.completed_at_ms, "expires_at_ms": command.expires_at_ms,
            "created_by": command.created_by}
