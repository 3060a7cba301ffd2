"""The storage layer's one error tree.

Every exception the store raises on purpose derives from `StoreError`, so the server can
tell "the store said no" from a bug. The split that matters to the server:

- `StoreUnavailable`: the operation was NOT committed because the database could not be
  written or reached (disk full, I/O error, read-only file, PostgreSQL down or cut off,
  store overloaded). Nothing in the failed batch was reported stored. The server answers
  the device with a nack so it resends; the store recovers by itself when the fault clears.
- everything else: the request itself was wrong (unknown device or project, bad photo
  offset, hash mismatch); retrying the same request gives the same answer. Malformed
  arguments raise ValueError naming the field, before anything is written.

Messages are written for the operator who reads them in a log: what was wrong, what to do.
Every error pickles to an equal one (`__reduce__` where the constructor takes fields, not
the message): the SQLite writer process sends them back to the caller.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class StoreUnavailable(StoreError):
    """The database could not be written or reached; nothing of this call was committed.

    Transient from the caller's point of view: nack the device, it resends, and the
    same records are then stored (or reported DUPLICATE if an earlier try did commit
    after all, e.g. an I/O error raised after the data reached the disk).
    """


class StoreClosed(StoreError):
    """The store was closed; the call was not attempted."""


class StoreUrlError(StoreError, ValueError):
    """A `--store` URL or data directory that this lmg cannot use; the message says why."""


class SchemaTooNew(StoreError):
    """The database was written by a newer lmg than this one; it is left untouched."""

    def __init__(self, found: int, known: int, where: str) -> None:
        self.found = found
        self.known = known
        self.where = where
        super().__init__(
            f"database schema at {where} is version {found} but this lmg knows up to {known}: "
            f"upgrade lmg or point --store at another database"
        )

    def __reduce__(self):
        return type(self), (self.found, self.known, self.where)


class UnknownDevice(StoreError, LookupError):
    """No device with that serial is provisioned."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(f"no device with serial {serial!r} is provisioned; add it first")

    def __reduce__(self):
        return type(self), (self.serial,)


class DeviceExists(StoreError):
    """A device with that serial is already provisioned."""

    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(
            f"a device with serial {serial!r} is already provisioned; "
            f"rotate its secret instead of adding it again"
        )

    def __reduce__(self):
        return type(self), (self.serial,)


class UnknownProject(StoreError, LookupError):
    """No project with that code exists."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"no project {code!r}; add it first (`lmg project add`)")

    def __reduce__(self) -> tuple[type[UnknownProject], tuple[str]]:
        return type(self), (self.code,)


class ProjectExists(StoreError):
    """A project with that code exists already."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"a project with code {code!r} exists already; update it with "
                         f"`lmg project import` instead of adding it again")

    def __reduce__(self) -> tuple[type[ProjectExists], tuple[str]]:
        return type(self), (self.code,)


class TokenExists(StoreError):
    """An API token with that name exists (active or revoked: names are never reused)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"an API token named {name!r} already exists (a revoked token keeps its name); "
            f"choose another name"
        )

    def __reduce__(self) -> tuple[type[TokenExists], tuple[str]]:
        return type(self), (self.name,)


class AccountExists(StoreError):
    """A console account with that name exists (disabled or not: names are never reused)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a console account named {name!r} already exists (a disabled account keeps its name); "
                         f"choose another name")

    def __reduce__(self) -> tuple[type[AccountExists], tuple[str]]:
        return type(self), (self.name,)


class UnknownAccount(StoreError, LookupError):
    """No console account has that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no console account named {name!r}; `lmg account list` shows them")

    def __reduce__(self) -> tuple[type[UnknownAccount], tuple[str]]:
        return type(self), (self.name,)


class StoreNotFound(StoreError):
    """Opened with create=False and there is no database at that path; nothing was created."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"no database at {path}: pass the --data-dir or --store the server uses "
            f"(this command does not create a store)"
        )

    def __reduce__(self) -> tuple[type[StoreNotFound], tuple[str]]:
        return type(self), (self.path,)


class PhotoError(StoreError):
    """A photo upload request that cannot be applied as sent."""


class PhotoTooLarge(PhotoError):
    """The announced photo size, or offset + chunk, exceeds what the store accepts."""


class PhotoOffsetMismatch(PhotoError):
    """The chunk does not start where the stored partial upload ends.

    `expected_offset` is where the device must resume (0 if nothing is kept).
    """

    def __init__(self, sha256_hex: str, offset: int, expected_offset: int) -> None:
        self.sha256_hex = sha256_hex
        self.offset = offset
        self.expected_offset = expected_offset
        super().__init__(
            f"photo {sha256_hex}: chunk offset {offset} is not where the upload stands; "
            f"resume at offset {expected_offset}"
        )

    def __reduce__(self):
        return type(self), (self.sha256_hex, self.offset, self.expected_offset)


class PhotoHashMismatch(PhotoError):
    """The completed upload does not hash to the announced SHA-256; the partial was discarded."""

    def __init__(self, sha256_hex: str, actual_hex: str) -> None:
        self.sha256_hex = sha256_hex
        self.actual_hex = actual_hex
        super().__init__(
            f"photo upload announced SHA-256 {sha256_hex} but the bytes received hash to {actual_hex}; "
            f"the partial upload was discarded, upload the photo again from offset 0"
        )

    def __reduce__(self):
        return type(self), (self.sha256_hex, self.actual_hex)


class UnknownWarning(StoreError, LookupError):
    """No warning (of the supervision of key personnel) has that id."""

    def __init__(self, warning_id: int) -> None:
        self.warning_id = warning_id
        super().__init__(f"no warning with id {warning_id}; `lmg warnings list` shows them")

    def __reduce__(self) -> tuple[type[UnknownWarning], tuple[int]]:
        return type(self), (self.warning_id,)


class WarningClosed(StoreError):
    """The warning was closed already, with a disposition; a closure is final."""

    def __init__(self, warning_id: int, disposition: str) -> None:
        self.warning_id = warning_id
        self.disposition = disposition
        super().__init__(f"warning {warning_id} is closed already ({disposition}); a closure is final "
                         f"and stays in its history")

    def __reduce__(self) -> tuple[type[WarningClosed], tuple[int, str]]:
        return type(self), (self.warning_id, self.disposition)
