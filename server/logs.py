"""Structured logs for a node: one line per event, context on every line, nothing a log must not hold.

`setup_logging(level, log_format)` is what `lmg serve` and `lmg forward run` call (in place
of `logging.basicConfig`): one handler on stderr whose formatter writes JSON lines
(`log_format = "json"`, or `"auto"` when stderr is not a terminal: a collector reads it)
or readable `key=value` lines (`"text"`, or `"auto"` on a terminal: a person reads it).

Rules kept here:

- Context: a line about a connection carries `serial` (once the terminal said HELLO),
  `session` (a short id per connection, `TerminalLink.session_id`) and `peer` (address:port),
  passed as `extra=link.log_fields()`. A line about a device without a connection carries
  `serial`. Fields that are None are left out.
- Masking happens in the formatter, on the whole finished line (message, every field, the
  traceback), so no caller can forget it: an 18-character resident ID number (GB 11643:
  17 digits and a check character) is shown as its first 6 and last 4 characters
  (`620102********4516`), valid check digit or not; an API token (`lmg_` and 43 URL-safe
  characters, the admin API's form) becomes `lmg_<hidden>`. Fields whose name says secret,
  token or password are written as `<hidden>` whatever their value. Device secrets are
  never passed to a log call: the types holding one (`storage.Device`,
  `session.DeviceView`) hide it in their repr.
- Repeated warnings are rate-limited at the call site (`RepeatedWarnings`): a store that
  fails every connection's commit at once logs one line per interval, and the next line
  says how many were left out. (At the call site rather than as a handler filter, so the
  count is the same whatever handlers are attached.)
- Volume: at info a connection logs three lines (session opened, authentication result,
  session closed with its reason); nothing is logged per punch at info. Debug adds one
  line per answered store call with its records (worker IDs masked) and the library's
  connection lines.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import orjson

from lmg.protocol.identity import mask_id_number
from lmg.server.admin.tokens import TOKEN_PATTERN

LOG_FORMATS = ("auto", "json", "text")
CONTEXT_FIELDS = ("serial", "session", "peer")  # written first, in this order, when present

# --- masking ------------------------------------------------------------------------------------

# 17 digits and a check character, not inside a longer run of digits (a 19-digit number is
# not an ID number). Any such run is masked, valid check digit or not: a mistyped number
# still names a person.
_ID_NUMBER = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])")
_TOKEN = TOKEN_PATTERN  # server/admin/tokens.py: `lmg_` + 43 URL-safe base64 characters
_SECRET_FIELD = re.compile(r"secret|token|password", re.IGNORECASE)
HIDDEN = "<hidden>"


def _mask_match(match: re.Match[str]) -> str:
    return mask_id_number(match.group())


def redact(text: str) -> str:
    """`text` with every resident ID number masked and every API token hidden."""
    text = _ID_NUMBER.sub(_mask_match, text)
    if "lmg_" in text:
        text = _TOKEN.sub("lmg_" + HIDDEN, text)
    return text


# --- formatters ---------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context and `extra=` fields, context first; None values left out,
    secret-named fields hidden."""
    extra = record.__dict__
    fields: dict[str, Any] = {}
    for name in CONTEXT_FIELDS:
        value = extra.get(name)
        if value is not None:
            fields[name] = value
    for name, value in extra.items():
        if name in _RECORD_ATTRIBUTES or name in fields or value is None or name.startswith("_"):
            continue
        fields[name] = HIDDEN if _SECRET_FIELD.search(name) else value
    return fields


class _MaskingFormatter(logging.Formatter):
    """Base of both formats: builds the line, then masks all of it (`redact`)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return redact(self.render(record))
        except Exception as exc:  # noqa: BLE001 - logging's own error report would print the raw arguments
            return redact(f"log line could not be formatted ({type(exc).__name__}: {exc}): "
                          f"{record.name} {record.msg!r} {record.args!r}")

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def _exception(self, record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return self.formatException(record.exc_info)
        if record.exc_text:
            return record.exc_text
        return None


class JsonLinesFormatter(_MaskingFormatter):
    """One JSON object per line: ts, level, logger, msg, the context, the extra fields, exc."""

    def render(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
                                "msg": record.getMessage()}
        line.update(_fields(record))
        exception = self._exception(record)
        if exception:
            line["exc"] = exception
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return orjson.dumps(text).decode()  # quoted, with escapes


class KeyValueFormatter(_MaskingFormatter):
    """For a person at a terminal: `2026-11-24T06:05:01.123Z INFO  lmg.session session closed serial=... reason=...`,
    a traceback on the lines after."""

    def render(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"{record.levelname:<7}", record.name, record.getMessage()]
        parts += [f"{name}={_text_value(value)}" for name, value in _fields(record).items()]
        text = " ".join(parts)
        exception = self._exception(record)
        if exception:
            text += "\n" + exception
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


def formatter_for(log_format: str, stream: TextIO) -> logging.Formatter:
    """The formatter `log_format` ("auto", "json", "text") asks for on `stream`."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be auto, json or text, got {log_format!r}")
    if log_format == "auto":
        log_format = "text" if _is_terminal(stream) else "json"
    return KeyValueFormatter() if log_format == "text" else JsonLinesFormatter()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(level: str = "info", log_format: str = "auto", stream: TextIO | None = None) -> logging.Handler | None:
    """Log to `stream` (stderr) through the formatter `log_format` asks for, at `level`.

    Like `logging.basicConfig`, does nothing when the root logger already has handlers
    (a command run in-process by a test, whose runner captures logs itself); returns the
    handler it added, or None. Uncaught exceptions are logged through it too, so their
    tracebacks are masked like every other line.
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for(log_format, stream))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)

    def log_uncaught(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
            return
        logging.getLogger("lmg").critical("uncaught exception", exc_info=(kind, value, traceback))

    sys.excepthook = log_uncaught
    return handler


# --- repeated warnings --------------------------------------------------------------------------

REPEAT_INTERVAL_S = 5.0  # one line per kind of trouble this often: a failing store fails every connection at once


class RepeatedWarnings:
    """At most one line per `key` every `interval_s`; the next line written says how many
    were left out (in its message and as the field `left_out`).

    One per owner (the gateway, a forwarder), used from its event loop; `clock` is
    monotonic seconds (a test passes its own).
    """

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}  # key -> clock of the last line written
        self._left_out: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None if a line for `key` must be left out now; else how many were left out before it."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._left_out.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: Any,
            extra: Mapping[str, Any] | None = None, exc_info: Any = None, stacklevel: int = 2) -> bool:
        """`logger.log(level, msg, *args)` unless a line for `key` was written in the last
        `interval_s`; True if written."""
        if not logger.isEnabledFor(level):
            return False
        left_out = self.allow(key)
        if left_out is None:
            return False
        fields = dict(extra or {})
        if left_out:
            msg += f" ({left_out} more like this since the last one)"
            fields["left_out"] = left_out
        logger.log(level, msg, *args, extra=fields, exc_info=exc_info, stacklevel=stacklevel)  # the caller's line
        return True

    def warning(self, logger: logging.Logger, key: str, msg: str, *args: Any,
                extra: Mapping[str, Any] | None = None) -> bool:
        return self.log(logger, logging.WARNING, key, msg, *args, extra=extra, stacklevel=3)
