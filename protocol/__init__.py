"""陇明公 terminal protocol V1: pure message types, codes and codec (no I/O, no clock).

Import from here: `encode`, `decode_frame`, `FrameDecoder`, the message classes, the code
tables and the error tree. See docs/protocol.md for the wire format.
"""

from lmg.protocol import messages
from lmg.protocol.codec import FrameDecoder, decode_frame, encode
from lmg.protocol.codes import Capability, Direction, MessageType, ResultCode, VerifyMode, WorkerRole
from lmg.protocol.errors import (
    BadChecksum,
    EncodeError,
    FrameTooLarge,
    MalformedBody,
    NotAFrame,
    ProtocolError,
    UnsupportedMessage,
    UnsupportedVersion,
)
from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.messages import *  # noqa: F401,F403 - the message classes are the API
from lmg.protocol.messages import MESSAGE_CLASSES, PUNCH_RECORD_SIZE
from lmg.protocol.schema import MAX_FRAME_SIZE, PROTOCOL_VERSION

# The package's API, named for `import *` and for the type checker (which re-exports only
# what is listed here, and the message classes through the messages module's own list).
__all__ = [
    "encode", "decode_frame", "FrameDecoder",
    "Capability", "Direction", "MessageType", "ResultCode", "VerifyMode", "WorkerRole",
    "BadChecksum", "EncodeError", "FrameTooLarge", "MalformedBody", "NotAFrame", "ProtocolError",
    "UnsupportedMessage", "UnsupportedVersion",
    "is_valid_id_number", "MAX_FRAME_SIZE", "PROTOCOL_VERSION",
]
__all__ += messages.__all__
