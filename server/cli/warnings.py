"""`lmg warnings list|show|close`: the warnings of the supervision of key personnel.

    lmg warnings list [--region R] [--level N] [--rule R] [--state S] [--project P]
                      [--worker ID] [--from D] [--to D] [--limit N] [--pii] [--json]
    lmg warnings show ID [--pii] [--json]                      with its history and the owner per level
    lmg warnings close ID --disposition D [--note TEXT] [--by NAME] [--json]

The filters are the API's (`GET /api/v1/warnings`): `--region` keeps what that node of
lmg.protocol.regions covers (a city and its counties; 兰州新区 620171 is its own, never a
code prefix), `--from`/`--to` the periods that overlap those days. Resident ID numbers are
masked unless `--pii`, which is audited. `close` records a supervisor's disposition
(interview 约谈, rectification 责令整改, penalty-points 记分, public-notice 通报, false-alarm
误报 with a `--note` saying why); a closure is final and is appended to the warning's
history with `--by` (default `cli:<user>`), and audited. The CLI is the operator's
console on the store: it is not limited to a region (the API's region-scoped tokens are,
docs/supervision.md "API and CLI").
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import Any

import orjson

from lmg.protocol.identity import mask_id_number
from lmg.server.cli import CommandFailed, UsageError, actor, add_store_options, run_on_store

STATES = ("open", "resolved", "closed")
PAGE = 1000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("warnings", help="key-personnel warnings: list, show, close")
    group = parser.add_subparsers(dest="warnings_command", metavar="ACTION")
    group.required = True

    lst = group.add_parser("list", help="warnings in id order, filtered")
    lst.add_argument("--region", help="this region and below (620100: 兰州市 and its counties)")
    lst.add_argument("--level", type=int, choices=(1, 2, 3), help="1 county, 2 city, 3 province")
    lst.add_argument("--rule", help="low-presence, consecutive-absence, not-committed, committed-absent, double-post")
    lst.add_argument("--state", choices=STATES)
    lst.add_argument("--project", help="project code")
    lst.add_argument("--worker", metavar="ID_NUMBER", help="only this person's (the full resident ID number)")
    lst.add_argument("--from", dest="period_from", type=_date, help="periods ending on or after this day")
    lst.add_argument("--to", dest="period_to", type=_date, help="periods starting on or before this day")
    lst.add_argument("--limit", type=int, default=PAGE, help=f"at most this many (default {PAGE})")
    lst.add_argument("--pii", action="store_true", help="resident ID numbers in full (audited)")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(_list, a, create=False))

    show = group.add_parser("show", help="one warning with its history")
    show.add_argument("id", type=int)
    show.add_argument("--pii", action="store_true", help="the resident ID number in full (audited)")
    add_store_options(show)
    show.set_defaults(handler=lambda a: run_on_store(_show, a, create=False))

    close = group.add_parser("close", help="close a warning with a disposition (final)")
    close.add_argument("id", type=int)
    close.add_argument("--disposition", required=True,
                       help="interview (约谈), rectification (责令整改), penalty-points (记分), public-notice (通报), "
                            "false-alarm (误报: needs --note)")
    close.add_argument("--note", default="", help="what was done, or why it is a false alarm")
    close.add_argument("--by", help="the supervisor who decided (default cli:<your user name>)")
    add_store_options(close)
    close.set_defaults(handler=lambda a: run_on_store(_close, a, create=False))


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


def warning_json(w: Any, pii: bool) -> dict[str, Any]:
    from lmg.protocol.regions import bureau_for

    owner = bureau_for(w.region_code, w.level)
    return {"id": w.id, "rule": w.rule, "project": w.project_code, "region": w.region_code,
            "worker_id": w.worker_id if pii or w.worker_id is None else mask_id_number(w.worker_id),
            "post": w.post, "period_start": w.period_start.isoformat(), "period_end": w.period_end.isoformat(),
            "figures": w.figures, "level": w.level, "owner": {"region": owner.code, "name": owner.name},
            "state": str(w.state), "opened_at_ms": w.opened_at_ms, "level_since_ms": w.level_since_ms,
            "resolved_at_ms": w.resolved_at_ms, "closed_at_ms": w.closed_at_ms,
            "disposition": None if w.disposition is None else str(w.disposition), "note": w.note,
            "closed_by": w.closed_by, "version": w.version}


def _history_json(events: list[Any]) -> list[dict[str, Any]]:
    return [{"id": e.id, "at_ms": e.at_ms, "event": str(e.kind), "level": e.level, "state": str(e.state),
             "by": e.by, "detail": e.detail} for e in events]


async def _list(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.regions import is_known

    if not 1 <= args.limit <= 100_000:
        raise UsageError("--limit must be 1..100000")
    if args.region is not None and not is_known(args.region):
        raise UsageError(f"--region {args.region}: not a region of Gansu (a 6-digit code of lmg.protocol.regions: "
                         "620102 a county, 620100 a city, 620000 the province)")
    found: list[Any] = []
    after = 0
    while len(found) < args.limit:
        try:
            page = await store.list_warnings(region_scope=args.region, project_code=args.project,
                                             worker_id=args.worker.strip().upper() if args.worker else None,
                                             rule=args.rule,
                                             state=args.state, level=args.level, period_from=args.period_from,
                                             period_to=args.period_to, after_id=after,
                                             limit=min(PAGE, args.limit - len(found)))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        found += page
        if len(page) < PAGE:
            break
        after = page[-1].id
    if args.pii:
        await store.audit("warnings_shown", args.region or "all", {"pii": True, "count": len(found), "by": actor()})
    rows = [warning_json(w, args.pii) for w in found]
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no warnings")
        return 0
    print(f"{'id':>7}  {'rule':<20} {'project':<20} {'post':<24} {'person':<18} {'period':<23} lvl state")
    for r in rows:
        print(f"{r['id']:>7}  {r['rule']:<20} {r['project']:<20} {r['post'] or '-':<24} {r['worker_id'] or '-':<18} "
              f"{r['period_start']}..{r['period_end']} {r['level']:>3} {r['state']}")
    return 0


async def _warning(store: Any, warning_id: int) -> Any:
    warning = await store.get_warning(warning_id)
    if warning is None:
        raise UsageError(f"no warning {warning_id}; `lmg warnings list` shows them")
    return warning


async def _print_warning(store: Any, warning: Any, args: argparse.Namespace, pii: bool) -> None:
    from lmg.protocol.regions import bureau_for

    row = warning_json(warning, pii)
    row["bureaus"] = [{"level": n, "region": bureau_for(warning.region_code, n).code,
                       "name": bureau_for(warning.region_code, n).name} for n in (1, 2, 3)]
    row["history"] = _history_json(await store.warning_history(warning.id))
    if args.json:
        print(orjson.dumps(row).decode())
        return
    for key, value in row.items():
        if key not in ("history", "bureaus", "figures"):
            print(f"{key:>15}: {value}")
    print(f"{'figures':>15}: {orjson.dumps(row['figures']).decode()}")
    print(f"{'bureaus':>15}: " + ", ".join(f"{b['level']} {b['region']} {b['name']}" for b in row["bureaus"]))
    print("history:")
    for e in row["history"]:
        print(f"  {e['at_ms']:>14}  {e['event']:<16} level {e['level']}  {e['state']:<9} by {e['by']}"
              + (f"  {orjson.dumps(e['detail']).decode()}" if e["detail"] else ""))


async def _show(store: Any, args: argparse.Namespace) -> int:
    warning = await _warning(store, args.id)
    if args.pii:
        await store.audit("warning_shown", str(args.id), {"pii": True, "by": actor()})
    await _print_warning(store, warning, args, args.pii)
    return 0


async def _close(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.warning_codes import Disposition
    from lmg.storage import UnknownWarning, WarningClosed

    await _warning(store, args.id)
    try:
        disposition = Disposition.parse(args.disposition)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    by = args.by.strip() if args.by and args.by.strip() else f"cli:{actor()}"
    try:
        closed = await store.close_warning(args.id, disposition, note=args.note, by=by,
                                           now_ms=time.time_ns() // 1_000_000)
    except UnknownWarning:
        raise UsageError(f"no warning {args.id}; `lmg warnings list` shows them") from None
    except WarningClosed as exc:
        raise CommandFailed(str(exc)) from None
    except ValueError as exc:
        raise UsageError(f"{exc} (--note, --by)") from None
    await store.audit("warning_closed", str(args.id), {"disposition": str(disposition), "level": closed.level,
                                                       "by": by})
    if args.json:
        await _print_warning(store, closed, args, False)
    else:
        print(f"warning {args.id} closed ({disposition.value} {disposition.name_zh}) by {by}")
    return 0
