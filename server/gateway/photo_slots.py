"""Photo uploads in progress per device: a bound on the photo bytes one device makes a node hold.

Pure (time is an argument). A photo must be announced by a stored punch of its device
(link.py checks that at every chunk), so a device cannot upload what it likes; but it can
announce many photos and start them all. Here a device may have at most `per_device`
uploads in progress at once; a chunk of another photo is refused (PHOTO_UPLOADS_BUSY) until
one finishes, fails its hash, or goes `idle_ms` without a chunk (an abandoned upload frees
its slot without waiting for the partial sweep). The partial bytes a device holds on disk
through new chunks are thus at most `per_device` x photo_max_bytes (4 x 2 MiB by default).
A terminal uploads one photo at a time (docs/protocol.md 6.5), so 4 never stops one.

Memory: one small dict per device with an upload in progress, emptied as uploads end.
"""

from __future__ import annotations


class UploadSlots:
    def __init__(self, per_device: int, idle_ms: int):
        if per_device <= 0 or idle_ms <= 0:
            raise ValueError("photo_uploads_per_device and photo_upload_idle_s must be greater than 0")
        self.per_device = per_device
        self.idle_ms = idle_ms
        self._uploads: dict[str, dict[bytes, int]] = {}  # serial -> {sha256: last chunk ms}

    def admit(self, serial: str, sha256: bytes, now_ms: int) -> bool:
        """True if a chunk of `sha256` may go to the store now (its upload holds a slot, or a
        slot is free and it takes it)."""
        uploads = self._uploads.setdefault(serial, {})
        if sha256 not in uploads and len(uploads) >= self.per_device:
            for held, last in list(uploads.items()):
                if now_ms - last >= self.idle_ms:
                    del uploads[held]
            if len(uploads) >= self.per_device:
                return False
        uploads[sha256] = now_ms
        return True

    def done(self, serial: str, sha256: bytes) -> None:
        """The upload completed or was discarded: its slot is free."""
        uploads = self._uploads.get(serial)
        if uploads is not None:
            uploads.pop(sha256, None)
            if not uploads:
                del self._uploads[serial]

    def in_progress(self, serial: str) -> int:
        return len(self._uploads.get(serial, ()))
