"""`lmg bid import|list|change`: bid awards (中标通知书) and the personnel changes (变更) of key posts.

    lmg bid import FILE [--json]                       awards from CSV or JSON (lmg.protocol.bid_file)
    lmg bid list PROJECT [--pii] [--json]              the project's awards and changes (ID numbers masked)
    lmg bid change --project P --post POST --old ID --new ID --name NAME --approved-on D --reference REF
                   [--certificate C] [--json]          record an approved change of a key post's person

`import` is idempotent (by notice number: the same award again is unchanged, one with other
values replaces the stored one as a correction). A bad row is reported with its line
number and reason and its award is held back (an award is imported whole or not at all);
the other awards are kept, and the exit status is then 1. The formats are in
docs/supervision.md ("API and CLI"). A change ends the old person's obligation on its
approval date and starts the new person's (docs/supervision.md "Who is watched"). Every
change, and every `--pii` listing, is audited.
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

import orjson

from lmg.protocol.identity import mask_id_number
from lmg.server.cli import UsageError, actor, add_store_options, run_on_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bid", help="bid awards of key personnel and their changes: import, list, change")
    group = parser.add_subparsers(dest="bid_command", metavar="ACTION")
    group.required = True

    imp = group.add_parser("import", help="add or correct bid awards from a CSV or JSON file")
    imp.add_argument("file", help="CSV (one row per person) or JSON (an award or a list); docs/supervision.md")
    add_store_options(imp)
    imp.set_defaults(handler=lambda a: run_on_store(_import, a, create=False))

    lst = group.add_parser("list", help="a project's bid awards and personnel changes")
    lst.add_argument("project", help="project code")
    lst.add_argument("--pii", action="store_true", help="resident ID numbers in full (audited)")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(_list, a, create=False))

    change = group.add_parser("change", help="record an approved change (变更) of a key post's person")
    change.add_argument("--project", required=True, help="project code")
    change.add_argument("--post", required=True, help="the key post, by code or Chinese name (项目经理)")
    change.add_argument("--old", required=True, metavar="ID_NUMBER", help="the person leaving the post")
    change.add_argument("--new", required=True, metavar="ID_NUMBER", help="the person taking it")
    change.add_argument("--name", required=True, help="the new person's name")
    change.add_argument("--certificate", default="", help="the new person's certificate number")
    change.add_argument("--approved-on", required=True, type=_date, help="approval date, YYYY-MM-DD: the new person "
                                                                         "holds the post from this day")
    change.add_argument("--reference", required=True, help="the approval's reference (文号)")
    add_store_options(change)
    change.set_defaults(handler=lambda a: run_on_store(_change, a, create=False))


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


def _id(number: str, pii: bool) -> str:
    return number if pii else mask_id_number(number)


def award_json(award: Any, pii: bool) -> dict[str, Any]:
    return {"notice_no": award.notice_no, "project": award.project_code, "enterprise": award.enterprise,
            "uscc": award.enterprise_uscc, "award_date": award.award_date.isoformat(),
            "personnel": [{"post": p.post, "id_number": _id(p.id_number, pii), "name": p.name,
                           "certificate_no": p.certificate_no} for p in award.personnel]}


def change_json(change: Any, pii: bool) -> dict[str, Any]:
    return {"id": change.id, "project": change.project_code, "post": change.post,
            "old_id_number": _id(change.old_id_number, pii), "new_id_number": _id(change.new_id_number, pii),
            "new_name": change.new_name, "new_certificate_no": change.new_certificate_no,
            "approved_on": change.approved_on.isoformat(), "approval_ref": change.approval_ref}


async def _import(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.bid_file import parse_awards
    from lmg.protocol.roster_file import FileError, RowError
    from lmg.server.cli.project import report
    from lmg.storage import BidAward, KeyPerson, UnknownProject

    try:
        with open(args.file, encoding="utf-8-sig") as fh:
            awards, errors = parse_awards(fh.read(), args.file)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    except (FileError, UnicodeDecodeError) as exc:
        raise UsageError(str(exc) if isinstance(exc, FileError) else f"{args.file} is not UTF-8 text") from None
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    for row in awards:
        award = BidAward(row.notice_no, row.project, row.enterprise, row.uscc, row.award_date,
                         tuple(KeyPerson(p.post, p.id_number, p.name, p.certificate_no) for p in row.personnel))
        try:
            _, outcome = await store.import_bid_award(award)
        except UnknownProject:
            errors.append(RowError(row.line, f"award {row.notice_no}: no project {row.project}; add it first "
                                             "(`lmg project add` or `lmg project import`)"))
            continue
        except ValueError as exc:
            errors.append(RowError(row.line, f"award {row.notice_no}: {exc}"))
            continue
        counts[outcome] += 1
    errors.sort(key=lambda e: e.line)
    await store.audit("bid_awards_imported", args.file, {**counts, "refused": len(errors), "by": actor()})
    report(args, counts, errors)
    return 1 if errors else 0


async def _list(store: Any, args: argparse.Namespace) -> int:
    if await store.get_project(args.project) is None:
        raise UsageError(f"no project {args.project}; `lmg project list` shows them")
    awards = await store.list_bid_awards(args.project)
    changes = await store.list_personnel_changes(args.project)
    if args.pii:
        await store.audit("bid_awards_shown", args.project, {"pii": True, "by": actor()})
    if args.json:
        print(orjson.dumps({"awards": [award_json(a, args.pii) for a in awards],
                            "changes": [change_json(c, args.pii) for c in changes]}).decode())
        return 0
    if not awards and not changes:
        print(f"no bid award for {args.project}; `lmg bid import FILE` adds them")
        return 0
    for a in awards:
        print(f"{a.notice_no}  {a.award_date}  {a.enterprise} ({a.enterprise_uscc})")
        for p in a.personnel:
            print(f"    {p.post:<24} {_id(p.id_number, args.pii):<18}  {p.name}  {p.certificate_no}")
    for c in changes:
        print(f"change {c.id}: {c.post} {_id(c.old_id_number, args.pii)} -> {_id(c.new_id_number, args.pii)} "
              f"{c.new_name} from {c.approved_on} ({c.approval_ref})")
    return 0


async def _change(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.posts import Post
    from lmg.storage import PersonnelChange, UnknownProject

    try:
        post = Post.parse(args.post)
        change = PersonnelChange(args.project, post.code, args.old.strip().upper(), args.new.strip().upper(),
                                 args.name.strip(), args.approved_on, args.reference.strip(), args.certificate.strip())
        stored, outcome = await store.record_personnel_change(change)
    except UnknownProject:
        raise UsageError(f"no project {args.project}; `lmg project list` shows them") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    await store.audit("personnel_change_recorded", stored.project_code,
                      {"id": stored.id, "post": stored.post, "outcome": outcome,
                       "new": mask_id_number(stored.new_id_number), "by": actor()})
    if args.json:
        print(orjson.dumps({**change_json(stored, False), "outcome": outcome}).decode())
    else:
        print(f"change {stored.id} {outcome}: {stored.post} of {stored.project_code} passes to {stored.new_name} "
              f"from {stored.approved_on}")
    return 0
