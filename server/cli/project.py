"""`lmg project add|import|list`: the projects (工程项目) whose sites run terminals.

A project has its code (项目编码), name, GB/T 2260 region code, construction enterprise
(name and unified social credit code) and dates. Devices name their project by code;
a project's roster is imported with `lmg roster import`.

`import` reads the project file of lmg.protocol.roster_file and is idempotent: a project
already stored with the same values is left alone, one with other values is updated.
Bad rows are reported with their line number and reason, the good ones are kept, and
the exit status is then 1. Every change is audited.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

import orjson

from lmg.protocol.roster_file import FileError, RowError, parse_projects
from lmg.server.cli import UsageError, actor, add_store_options, run_on_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("project", help="construction projects: add, import, list")
    group = parser.add_subparsers(dest="project_command", metavar="ACTION")
    group.required = True

    add = group.add_parser("add", help="add one project")
    add.add_argument("code", help="project code (项目编码)")
    add.add_argument("--name", required=True, help="project name (项目名称)")
    add.add_argument("--region", required=True, help="GB/T 2260 region code, 6 digits (Gansu: 62xxxx)")
    add.add_argument("--enterprise", default="", help="construction enterprise (施工企业)")
    add.add_argument("--uscc", default="", help="its unified social credit code (统一社会信用代码)")
    add.add_argument("--start", type=_date, help="start date, YYYY-MM-DD")
    add.add_argument("--end", type=_date, help="end date, YYYY-MM-DD")
    add_store_options(add)
    add.set_defaults(handler=lambda a: run_on_store(_add, a, create=True))

    imp = group.add_parser("import", help="add or update projects from a CSV file (docs: lmg.protocol.roster_file)")
    imp.add_argument("file")
    add_store_options(imp)
    imp.set_defaults(handler=lambda a: run_on_store(_import, a, create=True))

    lst = group.add_parser("list", help="list projects")
    lst.add_argument("--region", default="", help="only the projects this region covers (the tree of docs/regions.md, "
                                                  "not a code prefix): 620000 Gansu, 620100 兰州市 and its counties "
                                                  "(not 兰州新区 620171), 620102 城关区")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(_list, a, create=False))


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


def project_json(project: Any) -> dict[str, Any]:
    return {"code": project.code, "name": project.name, "region": project.region_code,
            "enterprise": project.enterprise, "uscc": project.enterprise_uscc,
            "start_date": project.start_date.isoformat() if project.start_date else None,
            "end_date": project.end_date.isoformat() if project.end_date else None,
            "roster_version": project.roster_version}


async def _add(store: Any, args: argparse.Namespace) -> int:
    from lmg.storage import ProjectExists

    try:
        project = await store.add_project(args.code, name=args.name, region_code=args.region,
                                          enterprise=args.enterprise, enterprise_uscc=args.uscc.upper(),
                                          start_date=args.start, end_date=args.end)
    except ProjectExists:
        raise UsageError(f"project {args.code} exists already; `lmg project import` updates projects") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    await store.audit("project_added", project.code, {"by": actor()})
    print(orjson.dumps(project_json(project)).decode() if args.json else f"project {project.code} added")
    return 0


async def _import(store: Any, args: argparse.Namespace) -> int:
    try:
        with open(args.file, newline="", encoding="utf-8-sig") as fh:
            rows, errors = parse_projects(fh, args.file)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    except (FileError, UnicodeDecodeError) as exc:
        raise UsageError(str(exc) if isinstance(exc, FileError) else f"{args.file} is not UTF-8 text") from None
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    for row in rows:
        try:
            _, outcome = await store.upsert_project(row.code, name=row.name, region_code=row.region,
                                                    enterprise=row.enterprise, enterprise_uscc=row.uscc,
                                                    start_date=row.start_date, end_date=row.end_date)
        except ValueError as exc:
            errors.append(RowError(row.line, str(exc)))
            continue
        counts[outcome] += 1
    errors.sort(key=lambda e: e.line)
    await store.audit("projects_imported", args.file, {**counts, "refused": len(errors), "by": actor()})
    report(args, counts, errors)
    return 1 if errors else 0


def report(args: argparse.Namespace, counts: dict[str, int], errors: list[RowError],
           extra: dict[str, Any] | None = None) -> None:
    """What an import did: the counts, then each refused row (stderr), or one JSON object."""
    if args.json:
        print(orjson.dumps({**counts, **(extra or {}), "refused": [{"line": e.line, "reason": e.reason}
                                                                  for e in errors]}).decode())
        return
    print(", ".join(f"{n} {what}" for what, n in counts.items()) + (f"; {len(errors)} refused" if errors else ""))
    for error in errors:
        print(f"{args.file}:{error}", file=sys.stderr)


async def _list(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.regions import is_known

    if args.region and not is_known(args.region):
        raise UsageError(f"--region {args.region!r} is not a region of Gansu's tree (docs/regions.md): give a "
                         "6-digit code such as 620000, 620100 or 620102")
    projects, after = [], ""
    while True:
        try:
            page = await store.list_projects(after_code=after, limit=1000, region_scope=args.region or None)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        projects += page
        if len(page) < 1000:
            break
        after = page[-1].code
    if args.json:
        print(orjson.dumps([project_json(p) for p in projects]).decode())
        return 0
    if not projects:
        print("no projects" + (f" in region {args.region}" if args.region else "") + "; `lmg project add` makes one")
        return 0
    print(f"{'code':<24} {'region':<7} {'roster':>6}  name")
    for p in projects:
        print(f"{p.code:<24} {p.region_code:<7} {p.roster_version:>6}  {p.name}")
    return 0

