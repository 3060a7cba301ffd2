"""The log scan every test under tests/server runs under (the autouse fixture in conftest.py).

While a test runs, every record of the `lmg` loggers, at DEBUG, is formatted by both of
the node's formatters (server/logs.py: JSON lines and key=value), and gateways the test
starts as processes inherit LMG_LOG_LEVEL=debug (unless a flag says otherwise) and have
their output file registered here (`watch_file`). Afterwards every line is searched for:

- a full resident ID number: an 18-character run (17 digits and a check character, not
  inside a longer run of digits) that `is_valid_id_number` accepts;
- a device secret of a device the test created, looked up or rotated (captured from the
  stores' own methods), in hex, base64 (standard or URL-safe, with or without padding)
  or as Python writes the bytes; the forwarders' app secrets, verbatim;
- an API token: `lmg_` and 43 URL-safe characters (server/admin/tokens.py's form).

Any hit fails the test, naming the line. Not covered: loggers outside `lmg` (aiohttp,
asyncio) in-process; output of subprocesses that are not gateways or forwarders (the
province simulator, `lmg device ...` commands whose stdout prints a secret on purpose);
subprocesses whose output the test does not send to a file (tests/server/gateway/
test_workers.py's supervisors write to the runner's stderr).
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

from lmg.protocol.identity import is_valid_id_number
from lmg.server.logs import JsonLinesFormatter, KeyValueFormatter

ID_CANDIDATE = re.compile(r"(?<![0-9])[0-9]{17}[0-9X](?![0-9])")
TOKEN = re.compile(r"lmg_[A-Za-z0-9_-]{43}")


class LineCatcher(logging.Handler):
    """Formats every record it gets with both node formatters and keeps the lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatters = (JsonLinesFormatter(), KeyValueFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        for formatter in self.formatters:
            self.lines.append(formatter.format(record))


class LogScan:
    """What one test logged and the secrets it made; `findings()` lists the leaks."""

    def __init__(self) -> None:
        self.catcher = LineCatcher()
        self.files: list[Path] = []
        self.device_secrets: set[bytes] = set()
        self.texts: set[str] = set()  # secrets kept as text (forwarder app secrets)

    def secret_forms(self) -> set[str]:
        forms = set(self.texts)
        for secret in self.device_secrets:
            forms |= {secret.hex(), secret.hex().upper(), repr(secret)[2:-1]}
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                text = encode(secret).decode()
                forms |= {text, text.rstrip("=")}
        return {form for form in forms if len(form) >= 8}  # a short form would match by chance

    def lines(self) -> list[tuple[str, str]]:
        """(where, line) of everything captured."""
        out = [("lmg logger", line) for line in self.catcher.lines]
        for path in self.files:
            if path.exists():
                out += [(str(path.name), line) for line in path.read_text(errors="replace").splitlines()]
        return out

    def findings(self) -> list[str]:
        forms = self.secret_forms()
        found = []
        for where, line in self.lines():
            for match in ID_CANDIDATE.finditer(line):
                if is_valid_id_number(match.group()):
                    found.append(f"{where}: a full resident ID number: {line[:300]}")
            if TOKEN.search(line):
                found.append(f"{where}: an API token: {line[:300]}")
            for form in forms:
                if form in line:
                    found.append(f"{where}: a secret: {line[:300]}")
        return found


CURRENT: LogScan | None = None  # the running test's scan (set by the conftest fixture)


def watch_file(path: Path) -> None:
    """Scan `path` (a gateway's or forwarder's output) when the running test ends."""
    if CURRENT is not None:
        CURRENT.files.append(path)


def watch_secret(secret: bytes) -> None:
    """A device secret the test knows that the stores did not hand out in this process."""
    if CURRENT is not None:
        CURRENT.device_secrets.add(secret)
