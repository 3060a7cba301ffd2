"""The files bid awards (中标通知书) are imported from (`lmg bid import FILE`): CSV or JSON.

Pure: the caller reads the file and passes its text; nothing here touches a disk.

**CSV**, UTF-8 (a byte-order mark is allowed), a header row naming its columns in any
order, in English or Chinese; one row per committed person, the award's columns repeated
on each row of the award (rows with the same `notice_no` make one award):

| column | also | required | meaning |
|---|---|---|---|
| `notice_no` | 中标通知书编号 | yes | the notice number; one award per number |
| `project` | 项目编码 | yes | the project's code (it must exist) |
| `enterprise` | 中标企业 | yes | the winning enterprise |
| `uscc` | 统一社会信用代码 | yes | its unified social credit code, 18 characters (GB 32100) |
| `award_date` | 中标日期 | yes | YYYY-MM-DD |
| `post` | 岗位 | yes | a key post, by code or Chinese name (lmg.protocol.posts: 项目经理, 总监理工程师, ...) |
| `id_number` | 身份证号 | yes | resident ID number, GB 11643 check digit verified |
| `name` | 姓名 | yes | the person's name |
| `certificate_no` | 证书编号 | no | e.g. the 注册建造师 certificate |

**JSON**, UTF-8: one award or a list of awards, each as the API takes it
(`POST /api/v1/bid-awards`): `{"notice_no", "project", "enterprise", "uscc", "award_date",
"personnel": [{"post", "id_number", "name", "certificate_no"}]}`.

Rules: a bad row (CSV) or a bad award (JSON) becomes a `RowError` with its line number
(the CSV header is line 1; for JSON, the line where the award's object starts) and the
reason. An award is a document: one with a bad row is not imported at all (importing part
of it would replace a stored award with fewer people), and its other rows are reported as
held back with it; the other awards of the file are kept. The same file imported twice
changes nothing (the store's import is idempotent by notice number).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.posts import Post
from lmg.protocol.roster_file import FileError, RowError, _rows, _text

AWARD_COLUMNS = {
    "notice_no": ("中标通知书编号", True), "project": ("项目编码", True), "enterprise": ("中标企业", True),
    "uscc": ("统一社会信用代码", True), "award_date": ("中标日期", True), "post": ("岗位", True),
    "id_number": ("身份证号", True), "name": ("姓名", True), "certificate_no": ("证书编号", False),
}
_USCC = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")  # GB 32100: 18 characters, no I, O, S, V, Z
MAX_PERSONNEL = 200  # as the store: a large project names a few dozen key people


@dataclass(frozen=True, slots=True)
class PersonRow:
    post: str  # a key post's code
    id_number: str
    name: str
    certificate_no: str


@dataclass(frozen=True, slots=True)
class AwardRow:
    """One award of the file, with the line it starts on (for the store's reasons)."""

    line: int
    notice_no: str
    project: str
    enterprise: str
    uscc: str
    award_date: date
    personnel: tuple[PersonRow, ...]


def _key_post(text: str) -> str:
    post = Post.parse(text)
    if not post.info.key_post:
        raise ValueError(f"post {text.strip() or '(empty)'!r} is not a key post; use one of "
                         + ", ".join(f"{p.code} ({p.info.name_zh})" for p in Post if p.info.key_post))
    return post.code


def _award_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"award_date {text.strip()!r} is not a date: write YYYY-MM-DD") from None


def _person(cells: dict[str, Any]) -> PersonRow:
    id_number = str(cells.get("id_number") or "").strip().upper()
    if not is_valid_id_number(id_number):
        raise ValueError(f"id_number {id_number!r} is not a valid resident ID number (18 characters, GB 11643 "
                         "check digit)")
    return PersonRow(_key_post(str(cells.get("post") or "")), id_number,
                     _text(str(cells.get("name") or ""), "name", required=True),
                     _text(str(cells.get("certificate_no") or ""), "certificate_no"))


def _head(cells: dict[str, Any]) -> tuple[str, str, str, str, date]:
    uscc = str(cells.get("uscc") or "").strip().upper()
    if not _USCC.fullmatch(uscc):
        raise ValueError(f"uscc {uscc!r} is not a unified social credit code (18 characters, GB 32100)")
    return (_text(str(cells.get("notice_no") or ""), "notice_no", required=True),
            _text(str(cells.get("project") or ""), "project", required=True),
            _text(str(cells.get("enterprise") or ""), "enterprise", required=True), uscc,
            _award_date(str(cells.get("award_date") or "")))


def parse_awards_csv(lines: Iterable[str], source: str) -> tuple[list[AwardRow], list[RowError]]:
    """The good awards of a CSV file and the errors of the bad rows. FileError for the header."""
    heads: dict[str, tuple[int, tuple[str, str, str, str, date]]] = {}
    people: dict[str, list[tuple[int, PersonRow]]] = {}
    bad: dict[str, int] = {}  # notice -> its first bad line
    errors: list[RowError] = []
    lines_of: dict[str, list[int]] = {}
    for line, cells in _rows(lines, AWARD_COLUMNS, source):
        notice = cells.get("notice_no", "").strip()
        try:
            if "" in cells:
                raise ValueError(cells[""])
            head = _head(cells)
            person = _person(cells)
            if notice in heads and heads[notice][1] != head:
                raise ValueError(f"award {notice}: its project, enterprise, uscc or award_date differ from line "
                                 f"{heads[notice][0]}; every row of one award repeats the same values")
            for seen_line, seen in people.get(notice, []):
                if (seen.post, seen.id_number) == (person.post, person.id_number):
                    raise ValueError(f"this person is listed in this post already on line {seen_line}")
        except ValueError as exc:
            errors.append(RowError(line, str(exc)))
            if notice:
                bad.setdefault(notice, line)
            continue
        heads.setdefault(notice, (line, head))
        people.setdefault(notice, []).append((line, person))
        lines_of.setdefault(notice, []).append(line)
    good: list[AwardRow] = []
    for notice, (first, head) in heads.items():
        if notice in bad:
            errors += [RowError(line, f"award {notice} not imported: its line {bad[notice]} is wrong; fix it and "
                                      "import the file again") for line in lines_of[notice]]
            continue
        rows = people[notice]
        if len(rows) > MAX_PERSONNEL:
            errors.append(RowError(first, f"award {notice}: {len(rows)} people; at most {MAX_PERSONNEL}"))
            continue
        good.append(AwardRow(first, *head, tuple(p for _, p in rows)))
    errors.sort(key=lambda e: e.line)
    return good, errors


def _json_items(text: str, source: str) -> list[tuple[int, Any]]:
    """The top-level awards of a JSON text with the line each starts on."""
    decoder = json.JSONDecoder()
    body = text.lstrip("\ufeff")
    start = len(body) - len(body.lstrip())
    if not body.strip():
        raise FileError(f"{source} is empty: give an award or a list of awards")
    if body[start] != "[":
        try:
            value, _ = decoder.raw_decode(body, start)
        except json.JSONDecodeError as exc:
            raise FileError(f"{source}: line {exc.lineno}: not JSON: {exc.msg}") from None
        return [(body.count("\n", 0, start) + 1, value)]
    items: list[tuple[int, Any]] = []
    at = start + 1
    while True:
        while at < len(body) and body[at] in " \t\r\n,":
            at += 1
        if at >= len(body):
            raise FileError(f"{source}: the list of awards is not closed with ]")
        if body[at] == "]":
            return items
        try:
            value, end = decoder.raw_decode(body, at)
        except json.JSONDecodeError as exc:
            raise FileError(f"{source}: line {exc.lineno}: not JSON: {exc.msg}") from None
        items.append((body.count("\n", 0, at) + 1, value))
        at = end


def parse_awards_json(text: str, source: str) -> tuple[list[AwardRow], list[RowError]]:
    """The good awards of a JSON file and the errors of the bad ones. FileError if it is not JSON."""
    good: list[AwardRow] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for line, item in _json_items(text, source):
        try:
            if not isinstance(item, dict):
                raise ValueError("an award is an object with notice_no, project, enterprise, uscc, award_date and "
                                 "personnel")
            unknown = sorted(set(item) - {"notice_no", "project", "enterprise", "uscc", "award_date", "personnel"})
            if unknown:
                raise ValueError(f"unknown field {', '.join(unknown)}")
            head = _head(item)
            personnel = item.get("personnel")
            if not isinstance(personnel, list) or not personnel:
                raise ValueError("personnel: a list of the committed people, at least one")
            if len(personnel) > MAX_PERSONNEL:
                raise ValueError(f"personnel: {len(personnel)} people; at most {MAX_PERSONNEL}")
            people = []
            for n, cells in enumerate(personnel, 1):
                if not isinstance(cells, dict):
                    raise ValueError(f"personnel {n}: an object with post, id_number, name and certificate_no")
                try:
                    people.append(_person(cells))
                except ValueError as exc:
                    raise ValueError(f"personnel {n}: {exc}") from None
            if head[0] in seen:
                raise ValueError(f"award {head[0]} is listed already on line {seen[head[0]]}")
        except ValueError as exc:
            errors.append(RowError(line, str(exc)))
            continue
        seen[head[0]] = line
        good.append(AwardRow(line, *head, tuple(people)))
    return good, errors


def parse_awards(text: str, source: str) -> tuple[list[AwardRow], list[RowError]]:
    """A bid-award file, CSV or JSON (by its first character: `{` or `[` is JSON)."""
    stripped = text.lstrip("\ufeff").lstrip()
    if stripped[:1] in ("{", "["):
        return parse_awards_json(text, source)
    return parse_awards_csv(text.lstrip("\ufeff").splitlines(keepends=True), source)
