"""The protocol's one error tree.

Every problem caused by a peer's bytes is a `ProtocolError` carrying the `ResultCode` to
answer with, plus the frame's `seq` and `msg_type` when they could be read, so the
session can NACK the right frame. The decoder returns these as values (it never raises
them from `feed`), so one bad frame never costs the good frames that arrived with it.
Messages are short and safe to log; they never echo more than a few bytes of input.

`EncodeError` is different: it means *our* caller built a message that cannot go on the
wire (a field out of range), which is a bug on this side, not the peer's.
"""

from __future__ import annotations

from lmg.protocol.codes import ResultCode


class ProtocolError(Exception):
    """Base of every error a peer's bytes can cause. `result_code` is what to answer."""

    result_code: ResultCode = ResultCode.MALFORMED_BODY
    #: True when the stream cannot be trusted any more and the session should close.
    fatal: bool = False

    def __init__(self, message: str, *, seq: int | None = None, msg_type: int | None = None):
        super().__init__(message)
        self.seq = seq
        self.msg_type = msg_type

    def __eq__(self, other: object) -> bool:  # value semantics make tests and fuzz reports readable
        return (
            type(other) is type(self)
            and other.args == self.args
            and other.seq == self.seq
            and other.msg_type == self.msg_type
        )

    def __hash__(self) -> int:
        return hash((type(self), self.args, self.seq, self.msg_type))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, seq={self.seq}, msg_type={self.msg_type})"


class FrameError(ProtocolError):
    """The frame itself is unusable (size, checksum, version)."""


class FrameTooLarge(FrameError):
    """Declared body length above the maximum frame size; rejected before any body byte is buffered."""

    result_code = ResultCode.FRAME_TOO_LARGE
    fatal = True


class BadChecksum(FrameError):
    """CRC-32 of header and body does not match the trailer."""

    result_code = ResultCode.BAD_CHECKSUM


class NotAFrame(FrameError):
    """A message that must hold exactly one frame (WebSocket) does not: too short, no
    magic, or its length disagrees with the header's `body_len`."""

    result_code = ResultCode.MALFORMED_BODY


class UnsupportedVersion(FrameError):
    """Frame `version` byte is not one this implementation speaks."""

    result_code = ResultCode.UNSUPPORTED_VERSION


class BodyError(ProtocolError):
    """The frame is sound but its body cannot be turned into a message."""


class UnsupportedMessage(BodyError):
    """Unknown `msg_type`: answered with NACK UNSUPPORTED_MESSAGE, never a disconnect."""

    result_code = ResultCode.UNSUPPORTED_MESSAGE


class MalformedBody(BodyError):
    """Body shorter than its fields, an impossible count, or text that is not UTF-8."""

    result_code = ResultCode.MALFORMED_BODY


class EncodeError(ValueError):
    """A message built on this side cannot be encoded (a field out of range or too long)."""


#: Every exception type a decoder may hand back; the fuzz tests accept nothing else.
DOCUMENTED_ERRORS: tuple[type[ProtocolError], ...] = (
    FrameTooLarge,
    BadChecksum,
    NotAFrame,
    UnsupportedVersion,
    UnsupportedMessage,
    MalformedBody,
)
