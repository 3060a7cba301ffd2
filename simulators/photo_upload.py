"""A punch's photo upload as a terminal does it (docs/protocol.md §6.5), without I/O.

`TerminalConnection.upload_photo` (simulators/terminal.py) and the load fleet
(simulators/fleet.py) both drive a `PhotoUpload`: it makes the frames (PHOTO_QUERY,
PHOTO_CHUNK) and reads each PHOTO_STATUS into what to do next. The caller owns the socket,
the clock and the photo's bytes. Rules it keeps:

- Upload after the punch is acknowledged, one photo at a time, one frame of it in flight:
  each chunk starts at the `next_offset` of the last PHOTO_STATUS (0 at first).
- Chunk size, the document's one rule: any length that keeps the frame within
  `max_frame_size` from AUTH_RESULT, and at most 65,535 bytes (`data`'s u16 length);
  `chunk_limit` computes it. 32 KiB by default, the upper end of what the document
  recommends on 4G (a broken connection resends at most one chunk).
- After a reconnect, or a frame that went unanswered, ask with PHOTO_QUERY where to resume
  (`restart`): partial uploads survive reconnects and server restarts.
- What each result code means is one table, `STEPS`; a code not in it ends the upload.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lmg.protocol import PhotoChunk, PhotoQuery, PhotoStatus, ResultCode
from lmg.protocol.schema import FRAME_OVERHEAD

# PHOTO_CHUNK's body besides `data`: record_no 4 + photo_sha256 32 + total_size 4 + offset 4
# + data's u16 length 2 (docs/protocol.md §4.4)
CHUNK_BODY_OVERHEAD = 46
MAX_CHUNK_DATA = 0xFFFF  # `data` carries a u16 length
DEFAULT_CHUNK_BYTES = 32 * 1024  # the document: 16-32 KiB is a good choice on 4G
# A photo whose assembled bytes did not hash right is started again at 0 this often, then
# dropped: a terminal whose bytes are wrong twice has a fault no third try fixes.
HASH_RESTARTS = 2


def chunk_limit(max_frame_size: int) -> int:
    """Most `data` bytes one PHOTO_CHUNK may carry in frames of at most `max_frame_size` bytes.
    Raises ValueError when not even one byte fits."""
    limit = min(MAX_CHUNK_DATA, max_frame_size - FRAME_OVERHEAD - CHUNK_BODY_OVERHEAD)
    if limit < 1:
        raise ValueError(f"max_frame_size {max_frame_size} leaves no room for photo data in a PHOTO_CHUNK")
    return limit


class Step(enum.Enum):
    """What the terminal does after a PHOTO_STATUS."""

    SEND = "send"  # send `next_frame()`
    DONE = "done"  # the server holds the whole photo
    RETRY_LATER = "retry_later"  # nothing changed: send `next_frame()` again after a pause
    GIVE_UP = "give_up"  # do not upload this photo (refused, or its bytes are wrong)


# result code -> (step, where to continue: "server" = the status's next_offset, 0 = start over)
STEPS: dict[int, tuple[Step, str]] = {
    ResultCode.OK: (Step.SEND, "server"),  # DONE once next_offset reaches total_size
    ResultCode.PHOTO_OFFSET_MISMATCH: (Step.SEND, "server"),
    ResultCode.PHOTO_HASH_MISMATCH: (Step.SEND, "zero"),  # GIVE_UP after HASH_RESTARTS
    ResultCode.STORE_UNAVAILABLE: (Step.RETRY_LATER, "keep"),
    ResultCode.PHOTO_UPLOADS_BUSY: (Step.RETRY_LATER, "keep"),
    ResultCode.PHOTO_TOO_LARGE: (Step.GIVE_UP, "keep"),
    ResultCode.PHOTO_NOT_ANNOUNCED: (Step.GIVE_UP, "keep"),
}


@dataclass
class PhotoUpload:
    """One photo's upload. `next_frame(photo)` is the frame to send now (seq 0: the caller
    numbers it); `on_status(status)` reads its answer. Offsets and sizes in bytes."""

    record_no: int
    sha256: bytes
    total_size: int
    chunk_size: int = DEFAULT_CHUNK_BYTES
    offset: int = 0  # where the next chunk starts
    confirmed: int = 0  # bytes the server said it holds (highest next_offset answered OK)
    querying: bool = False  # the next frame is a PHOTO_QUERY
    hash_restarts: int = 0
    last_result: int = ResultCode.OK

    def __post_init__(self) -> None:
        if self.total_size < 1:
            raise ValueError(f"a photo of {self.total_size} bytes cannot be uploaded")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1 byte, got {self.chunk_size}")

    @property
    def done(self) -> bool:
        return self.confirmed >= self.total_size

    def restart(self) -> None:
        """The connection was lost or an answer did not come: ask where to resume."""
        self.querying = True

    def next_frame(self, photo: bytes) -> PhotoQuery | PhotoChunk:
        """PHOTO_QUERY after `restart`, else the chunk at `offset` from `photo` (its whole bytes)."""
        if self.querying:
            return PhotoQuery(self.record_no, self.sha256, self.total_size)
        return PhotoChunk(self.record_no, self.sha256, self.total_size, self.offset,
                          photo[self.offset:self.offset + self.chunk_size])

    def on_status(self, status: PhotoStatus) -> Step:
        """Read the server's PHOTO_STATUS for this photo; returns what to do next."""
        self.last_result = status.result
        step, where = STEPS.get(status.result, (Step.GIVE_UP, "keep"))
        if step is Step.RETRY_LATER or step is Step.GIVE_UP:
            return step
        self.querying = False
        if where == "zero":
            self.hash_restarts += 1
            if self.hash_restarts > HASH_RESTARTS:
                return Step.GIVE_UP
            self.offset = 0
            return Step.SEND
        self.offset = min(status.next_offset, self.total_size)
        if status.result == ResultCode.OK:
            self.confirmed = max(self.confirmed, self.offset)
            if self.done:
                return Step.DONE
        return Step.SEND
