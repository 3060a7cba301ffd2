"""`lmg roster import|show|remove`: who works on a project's site, pushed to its terminals.

    lmg roster import PROJECT workers.csv [--photos DIR]   add or update workers (and their faces)
    lmg roster show PROJECT [--all] [--pii] [--json]        the roster (resident ID numbers masked)
    lmg roster remove PROJECT ID_NUMBER [--exit-date D]     a worker leaves (today by default)

`import` reads the roster file of lmg.protocol.roster_file. With `--photos DIR` a worker's
face is the file named after their ID number (`DIR/<ID>.jpg`, `.jpeg` or `.png`), checked
to be a JPEG or PNG within the size bounds, and stored once by its SHA-256. The whole file
is one transaction: running it again changes nothing; a bad row (or a bad photo) is
reported with its line and reason and left out, the good rows are kept, and the exit
status is then 1. Every change raises the project's roster version, and running gateways
push the changes to the project's terminals within seconds (docs/downlink.md).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from typing import Any

import orjson

from lmg.protocol.identity import is_valid_id_number, mask_id_number
from lmg.protocol.roster_file import FileError, RowError, WorkerRow, china_date, parse_workers
from lmg.server.cli import UsageError, actor, add_store_options, run_on_store
from lmg.server.cli.project import report

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("roster", help="a project's workers (人员): import, show, remove")
    group = parser.add_subparsers(dest="roster_command", metavar="ACTION")
    group.required = True

    imp = group.add_parser("import", help="add or update workers from a CSV file, with their faces")
    imp.add_argument("project", help="project code")
    imp.add_argument("file", help="roster CSV: id_number,name,card_no,enterprise,team,post,entry_date,exit_date")
    imp.add_argument("--photos", help="folder of face photos named by ID number (<ID>.jpg or .png)")
    add_store_options(imp)
    imp.set_defaults(handler=lambda a: run_on_store(_import, a, create=False))

    show = group.add_parser("show", help="the project's roster")
    show.add_argument("project")
    show.add_argument("--all", action="store_true", help="also the workers who have left")
    show.add_argument("--pii", action="store_true", help="resident ID numbers in full (audited)")
    add_store_options(show)
    show.set_defaults(handler=lambda a: run_on_store(_show, a, create=False))

    remove = group.add_parser("remove", help="a worker leaves the site")
    remove.add_argument("project")
    remove.add_argument("id_number")
    remove.add_argument("--exit-date", type=_date, help="the last day is the day before this (default: today)")
    add_store_options(remove)
    remove.set_defaults(handler=lambda a: run_on_store(_remove, a, create=False))


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


def today() -> date:
    return china_date(time.time_ns() // 1_000_000)


async def _project(store: Any, code: str) -> Any:
    project = await store.get_project(code)
    if project is None:
        raise UsageError(f"no project {code}; `lmg project list` shows them, `lmg project add` makes one")
    return project


def _photo_of(folder: str, id_number: str) -> str | None:
    for name in (id_number, id_number.lower()):
        for suffix in PHOTO_SUFFIXES:
            path = os.path.join(folder, name + suffix)
            if os.path.isfile(path):
                return path
    return None


async def _import(store: Any, args: argparse.Namespace) -> int:
    from lmg.storage import WorkerIn

    await _project(store, args.project)
    if args.photos and not os.path.isdir(args.photos):
        raise UsageError(f"--photos {args.photos}: no such folder")
    try:
        with open(args.file, newline="", encoding="utf-8-sig") as fh:
            rows, errors = parse_workers(fh, args.file)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{args.file} is not UTF-8 text (save it as CSV UTF-8)") from None
    except FileError as exc:
        raise UsageError(str(exc)) from None
    workers: list[Any] = []
    faces = 0
    for row in rows:
        face = None
        if args.photos:
            try:
                face = await _face(store, args.photos, row)
            except ValueError as exc:
                errors.append(RowError(row.line, str(exc)))
                continue
            faces += face is not None
        workers.append(WorkerIn(worker_id=row.id_number, name=row.name, card_no=row.card_no,
                                enterprise=row.enterprise, team=row.team, post=row.post.code,
                                entry_date=row.entry_date, exit_date=row.exit_date, face_sha256=face))
    result = await store.import_workers(args.project, workers, today=today())
    errors.sort(key=lambda e: e.line)
    counts = {"added": result.added, "updated": result.updated, "unchanged": result.unchanged}
    await store.audit("roster_imported", args.project, {**counts, "refused": len(errors), "faces": faces,
                                                        "roster_version": result.roster_version, "by": actor(),
                                                        "file": os.path.basename(args.file)})
    report(args, counts, errors, {"roster_version": result.roster_version, "faces": faces})
    return 1 if errors else 0


async def _face(store: Any, folder: str, row: WorkerRow) -> bytes | None:
    """The stored face of `row` from `folder`, or None without one; ValueError saying what is wrong."""
    path = _photo_of(folder, row.id_number)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ValueError(f"photo {os.path.basename(path)}: {exc.strerror}") from None
    try:
        sha: bytes = await store.put_face(data)
    except ValueError as exc:
        raise ValueError(f"photo {os.path.basename(path)}: {exc}") from None
    return sha


def worker_json(worker: Any, pii: bool) -> dict[str, Any]:
    return {"id_number": worker.worker_id if pii else mask_id_number(worker.worker_id), "name": worker.name,
            "card_no": worker.card_no, "enterprise": worker.enterprise, "team": worker.team, "post": worker.post,
            "entry_date": worker.entry_date.isoformat(),
            "exit_date": worker.exit_date.isoformat() if worker.exit_date else None,
            "face_sha256": worker.face_sha256.hex() if worker.face_sha256 else None,
            "on_roster": worker.on_roster, "version": worker.version}


async def _show(store: Any, args: argparse.Namespace) -> int:
    project = await _project(store, args.project)
    if args.pii:
        await store.audit("roster_shown", args.project, {"pii": True, "by": actor()})
    workers, after = [], ""
    while True:
        page = await store.list_workers(args.project, on_roster_only=not args.all, after_worker_id=after, limit=1000)
        workers += page
        if len(page) < 1000:
            break
        after = page[-1].worker_id
    if args.json:
        print(orjson.dumps({"project": project.code, "roster_version": project.roster_version,
                            "workers": [worker_json(w, args.pii) for w in workers]}).decode())
        return 0
    print(f"project {project.code} ({project.name}), roster version {project.roster_version}, "
          f"{sum(w.on_roster for w in workers)} on the roster")
    for w in workers:
        number = w.worker_id if args.pii else mask_id_number(w.worker_id)
        state = "" if w.on_roster else f"  (left {w.exit_date})" if w.exit_date else "  (not yet entered)"
        print(f"{number}  {w.name:<8} {w.post:<22} {w.team:<10} {'face' if w.face_sha256 else '':<4}{state}")
    return 0


async def _remove(store: Any, args: argparse.Namespace) -> int:
    number = args.id_number.strip().upper()
    if not is_valid_id_number(number):
        raise UsageError(f"{args.id_number!r} is not a valid resident ID number")
    await _project(store, args.project)
    day = today()
    if not await store.remove_worker(args.project, number, exit_date=args.exit_date or day, today=day):
        raise UsageError(f"{mask_id_number(number)} is not on project {args.project}'s roster "
                         "(`lmg roster show` lists it)")
    await store.audit("roster_worker_removed", args.project, {"worker": mask_id_number(number), "by": actor()})
    done = {"project": args.project, "worker": mask_id_number(number), "exit_date": (args.exit_date or day).isoformat()}
    print(orjson.dumps(done).decode() if args.json else f"{done['worker']} leaves {args.project} on {done['exit_date']}")
    return 0
