"""The device credentials file: `serial,secret,project` rows, the secret as 64 hex characters.

`lmg device generate` writes it (mode 0600: it holds secrets), `lmg device import`
provisions from it, and the simulators read it to act as those devices. One parser for
all of them, pure: the caller opens the file and passes its lines. A header row (first
cell `serial`) and blank rows are skipped; any other bad row raises `CredentialsError`
naming the line and what is wrong.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable

SECRET_BYTES = 32  # HMAC-SHA256 key of the device (docs/protocol.md, authentication)
HEADER = ("serial", "secret", "project")


class CredentialsError(ValueError):
    """A row of a credentials file is malformed; the message names the line."""


def parse_credentials(lines: Iterable[str], source: str) -> list[tuple[str, bytes, str]]:
    """(serial, secret, project) for every row of `lines`; `source` names the file in errors."""
    rows = []
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or row[0].strip().lower() == HEADER[0]:
            continue
        if len(row) < 3:
            raise CredentialsError(f"{source}:{number}: expected serial,secret,project")
        serial, secret_hex, project = (cell.strip() for cell in row[:3])
        try:
            secret = bytes.fromhex(secret_hex)
        except ValueError:
            raise CredentialsError(f"{source}:{number}: secret is not hex") from None
        if len(secret) != SECRET_BYTES:
            raise CredentialsError(f"{source}:{number}: secret must be {SECRET_BYTES} bytes "
                                   f"({2 * SECRET_BYTES} hex characters)")
        rows.append((serial, secret, project))
    return rows


def format_credentials(rows: Iterable[tuple[str, bytes, str]]) -> list[list[str]]:
    """The rows of a credentials file, header first, for `csv.writer(...).writerows`."""
    return [list(HEADER), *([serial, secret.hex(), project] for serial, secret, project in rows)]
