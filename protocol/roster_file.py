"""The files a site's roster and projects are imported from (`lmg roster import`, `lmg project import`).

Pure: the caller opens the file and passes its lines; nothing here touches a disk.

A roster file is CSV, UTF-8 (a byte-order mark is allowed: spreadsheets write one), with a
header row naming its columns in any order, in English or Chinese:

| column | also | required | meaning |
|---|---|---|---|
| `id_number` | 身份证号 | yes | resident ID number, GB 11643 check digit verified |
| `name` | 姓名 | yes | the worker's name |
| `card_no` | 卡号 | no | IC card number |
| `enterprise` | 企业 | no | the worker's employer |
| `team` | 班组 | no | team (班组) |
| `post` | 岗位 | no | `worker` (default) or a key post, by code or Chinese name (lmg.protocol.posts) |
| `entry_date` | 进场日期 | yes | YYYY-MM-DD |
| `exit_date` | 退场日期 | no | YYYY-MM-DD; empty while the worker stays |

A project file is CSV the same way with `code` (项目编码), `name` (项目名称), `region`
(行政区划代码, 6 digits, a region of lmg.protocol.regions), `enterprise` (施工企业), `uscc` (统一社会信用代码, 18
characters), `start_date` (开工日期) and `end_date` (竣工日期).

Rules: each row is checked on its own; a bad row becomes a `RowError` with its line number
(the header is line 1) and the reason, and the good rows are kept, so one typo never
holds a whole site back. A worker listed twice in one file is an error on the second line.
An unknown column is an error of the header, as is a missing required one.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.posts import Post
from lmg.protocol.regions import UnknownRegion
from lmg.protocol.regions import is_known as is_known_region

WORKER_COLUMNS = {
    "id_number": ("身份证号", True), "name": ("姓名", True), "card_no": ("卡号", False),
    "enterprise": ("企业", False), "team": ("班组", False), "post": ("岗位", False),
    "entry_date": ("进场日期", True), "exit_date": ("退场日期", False),
}
PROJECT_COLUMNS = {
    "code": ("项目编码", True), "name": ("项目名称", True), "region": ("行政区划代码", True),
    "enterprise": ("施工企业", False), "uscc": ("统一社会信用代码", False),
    "start_date": ("开工日期", False), "end_date": ("竣工日期", False),
}
MAX_TEXT = 128  # names, teams and enterprises longer than this are a file error, not a person
WIRE_TEXT_BYTES = 255  # name and card_no travel in ROSTER_ADD as str8: at most 255 bytes of UTF-8
_USCC = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")  # GB 32100: 18 characters, no I, O, S, V, Z
_REGION = re.compile(r"\d{6}")


# Entry and exit dates are site dates, in China Standard Time (UTC+8, no daylight saving).
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def china_date(now_ms: int) -> date:
    """The date in China at Unix time `now_ms` (the roster's "today")."""
    return datetime.fromtimestamp(now_ms / 1000, CHINA_STANDARD_TIME).date()


class FileError(ValueError):
    """The file cannot be read as a whole (its header); the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class WorkerRow:
    line: int
    id_number: str
    name: str
    card_no: str
    enterprise: str
    team: str
    post: Post
    entry_date: date
    exit_date: date | None


@dataclass(frozen=True, slots=True)
class ProjectRow:
    line: int
    code: str
    name: str
    region: str
    enterprise: str
    uscc: str
    start_date: date | None
    end_date: date | None


def _header(row: list[str], columns: dict[str, tuple[str, bool]], source: str) -> dict[str, int]:
    by_name = {zh: en for en, (zh, _) in columns.items()} | {en: en for en in columns}
    where: dict[str, int] = {}
    for index, cell in enumerate(row):
        name = cell.strip().lstrip("\ufeff").lower() if cell.strip().isascii() else cell.strip().lstrip("\ufeff")
        if not name:
            continue
        if name not in by_name:
            raise FileError(f"{source}: line 1: unknown column {cell!r}; the columns are "
                            f"{', '.join(f'{en} ({zh})' for en, (zh, _) in columns.items())}")
        where[by_name[name]] = index
    missing = [f"{en} ({zh})" for en, (zh, required) in columns.items() if required and en not in where]
    if missing:
        raise FileError(f"{source}: line 1: the header lacks {', '.join(missing)} (the first row names the columns)")
    return where


def _date(text: str, column: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a date: write YYYY-MM-DD") from None


def _text(text: str, column: str, *, required: bool = False, wire: bool = False) -> str:
    text = text.strip()
    if required and not text:
        raise ValueError(f"{column} is empty")
    if len(text) > MAX_TEXT:
        raise ValueError(f"{column} is longer than {MAX_TEXT} characters")
    if wire and len(text.encode()) > WIRE_TEXT_BYTES:
        raise ValueError(f"{column} is longer than the {WIRE_TEXT_BYTES} bytes (UTF-8) a terminal takes")
    if not text.isprintable():
        raise ValueError(f"{column} holds control characters")
    return text


def _rows(lines: Iterable[str], columns: dict[str, tuple[str, bool]], source: str
          ) -> Iterable[tuple[int, dict[str, str]]]:
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise FileError(f"{source} is empty: the first row must name the columns") from None
    except csv.Error as exc:
        raise FileError(f"{source}: line 1: {exc}") from None
    where = _header(header, columns, source)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield line, {"": f"not CSV: {exc}"}
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        yield line, {name: row[index] if index < len(row) else "" for name, index in where.items()}


def parse_workers(lines: Iterable[str], source: str) -> tuple[list[WorkerRow], list[RowError]]:
    """The good rows of a roster file and the errors of the bad ones. FileError for the header."""
    good: list[WorkerRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for line, cells in _rows(lines, WORKER_COLUMNS, source):
        try:
            if "" in cells:
                raise ValueError(cells[""])
            id_number = cells["id_number"].strip().upper()
            if not is_valid_id_number(id_number):
                raise ValueError(f"id_number {cells['id_number'].strip()!r} is not a valid resident ID number "
                                 "(18 characters, GB 11643 check digit)")
            if id_number in seen:
                raise ValueError(f"this worker is listed already on line {seen[id_number]}")
            entry = _date(cells["entry_date"], "entry_date")
            if entry is None:
                raise ValueError("entry_date is empty")
            exit_ = _date(cells.get("exit_date", ""), "exit_date")
            if exit_ is not None and exit_ < entry:
                raise ValueError(f"exit_date {exit_} is before entry_date {entry}")
            row = WorkerRow(line, id_number, _text(cells["name"], "name", required=True, wire=True),
                            _text(cells.get("card_no", ""), "card_no", wire=True), _text(cells.get("enterprise", ""), "enterprise"),
                            _text(cells.get("team", ""), "team"), Post.parse(cells.get("post", "")), entry, exit_)
        except ValueError as exc:
            errors.append(RowError(line, str(exc)))
            continue
        seen[id_number] = line
        good.append(row)
    return good, errors


def parse_projects(lines: Iterable[str], source: str) -> tuple[list[ProjectRow], list[RowError]]:
    """The good rows of a project file and the errors of the bad ones. FileError for the header."""
    good: list[ProjectRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for line, cells in _rows(lines, PROJECT_COLUMNS, source):
        try:
            if "" in cells:
                raise ValueError(cells[""])
            code = _text(cells["code"], "code", required=True)
            if code in seen:
                raise ValueError(f"project {code} is listed already on line {seen[code]}")
            region = cells["region"].strip()
            if not _REGION.fullmatch(region):
                raise ValueError(f"region {region!r}: write the 6-digit GB/T 2260 code (Gansu is 62xxxx)")
            if not is_known_region(region):
                raise UnknownRegion(region)
            uscc = cells.get("uscc", "").strip().upper()
            if uscc and not _USCC.fullmatch(uscc):
                raise ValueError(f"uscc {uscc!r} is not a unified social credit code (18 characters)")
            start, end = _date(cells.get("start_date", ""), "start_date"), _date(cells.get("end_date", ""), "end_date")
            if start is not None and end is not None and end < start:
                raise ValueError(f"end_date {end} is before start_date {start}")
            row = ProjectRow(line, code, _text(cells["name"], "name", required=True), region,
                             _text(cells.get("enterprise", ""), "enterprise"), uscc, start, end)
        except ValueError as exc:
            errors.append(RowError(line, str(exc)))
            continue
        seen[code] = line
        good.append(row)
    return good, errors
