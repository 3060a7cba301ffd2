"""`lmg supervision`: evaluate key-personnel warnings, the monthly report, and the pauses the rules need.

    lmg supervision evaluate [--date D | --month M] [--json]
    lmg supervision report --month M --region R [--out FILE] [--pii] [--json]
    lmg supervision leave add PROJECT ID_NUMBER FIRST LAST --reference REF | list [--project P] | remove ID
    lmg supervision stop-work add PROJECT FIRST LAST --reference REF | list [--project P] | remove ID
    lmg supervision pause-day add DAY --reason TEXT | list | remove DAY

`evaluate` does what the gateway's schedule does (server/supervision/service.py), once:
without a date, yesterday's month as of yesterday (China dates; the month just over too in
a month's first days); `--date D` the month of D as of D; `--month M` that month, in full
once it is over. It applies the findings and escalates what fell due, now. The rules are
the `supervision_rules_file` setting's (`--supervision-rules-file`, LMG_..., `--config`).

`report` writes a CSV (UTF-8 with a byte-order mark, so that Excel reads the Chinese) with a
row per project of the region (`regions.covers`: a city holds its counties), key post and
committed person: the ID number masked unless `--pii` (which is audited), valid days,
construction days, the rate, the post's required share and the month's warnings by rule
(those not resolved: open or closed). Days and months are China dates; `--month` is
YYYY-MM.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from datetime import date, timedelta
from typing import Any

import orjson

from lmg.server.cli import CommandFailed, UsageError, actor, add_store_options, run_on_store, store_settings

RULES_KEYS = ("supervision_rules_file",)


def register(subparsers: Any) -> None:
    from lmg.server.settings import add_flags

    parser = subparsers.add_parser("supervision", help="key-personnel warnings: evaluate, report, leave, stop-work, "
                                                       "pause days")
    group = parser.add_subparsers(dest="supervision_command", metavar="ACTION")
    group.required = True

    evaluate = group.add_parser("evaluate", help="evaluate warnings now, as the gateway's schedule does")
    when = evaluate.add_mutually_exclusive_group()
    when.add_argument("--date", type=_day, help="evaluate the month of this day (YYYY-MM-DD) as of this day")
    when.add_argument("--month", type=_month, help="evaluate this month (YYYY-MM), in full once it is over")
    add_store_options(evaluate)
    add_flags(evaluate, RULES_KEYS)
    evaluate.set_defaults(handler=lambda a: run_on_store(_evaluate, a, create=False))

    report = group.add_parser("report", help="a month's presence and warnings per project and key post, as CSV")
    report.add_argument("--month", type=_month, required=True, help="the month, YYYY-MM")
    report.add_argument("--region", required=True, help="GB/T 2260 code of the county, city or province")
    report.add_argument("--out", help="write the CSV to this file (default: standard output)")
    report.add_argument("--pii", action="store_true", help="full ID numbers (recorded in the audit log)")
    add_store_options(report)
    add_flags(report, RULES_KEYS)
    report.set_defaults(handler=lambda a: run_on_store(_report, a, create=False))

    leave = group.add_parser("leave", help="approved leave of key personnel").add_subparsers(
        dest="leave_command", metavar="ACTION")
    leave.required = True
    add = leave.add_parser("add", help="record approved leave, both days included")
    add.add_argument("project")
    add.add_argument("id_number")
    add.add_argument("first", type=_day)
    add.add_argument("last", type=_day)
    add.add_argument("--reference", required=True, help="the approval's reference")
    add_store_options(add)
    add.set_defaults(handler=lambda a: run_on_store(_leave_add, a, create=False))
    _list_and_remove(leave, "leave", _leave_list, _leave_remove, int, "the leave's id (from list)")

    stop = group.add_parser("stop-work", help="approved stop-work periods (停工) of projects").add_subparsers(
        dest="stop_command", metavar="ACTION")
    stop.required = True
    add = stop.add_parser("add", help="record an approved stop-work period, both days included")
    add.add_argument("project")
    add.add_argument("first", type=_day)
    add.add_argument("last", type=_day)
    add.add_argument("--reference", required=True, help="the approval's reference")
    add_store_options(add)
    add.set_defaults(handler=lambda a: run_on_store(_stop_add, a, create=False))
    _list_and_remove(stop, "stop-work", _stop_list, _stop_remove, int, "the period's id (from list)")

    pause = group.add_parser("pause-day", help="province-wide days without construction (holidays)").add_subparsers(
        dest="pause_command", metavar="ACTION")
    pause.required = True
    add = pause.add_parser("add", help="make a day a pause day (or change its reason)")
    add.add_argument("day", type=_day)
    add.add_argument("--reason", required=True)
    add_store_options(add)
    add.set_defaults(handler=lambda a: run_on_store(_pause_add, a, create=False))
    _list_and_remove(pause, "pause-day", _pause_list, _pause_remove, _day, "the day, YYYY-MM-DD")


def _list_and_remove(group: Any, what: str, listing: Any, removing: Any, key_type: Any, key_help: str) -> None:
    lst = group.add_parser("list", help=f"{what} overlapping --from..--to (default: this year)")
    if what != "pause-day":
        lst.add_argument("--project", help="only this project's")
    lst.add_argument("--from", dest="first", type=_day, help="first day (default: 1 January this year)")
    lst.add_argument("--to", dest="last", type=_day, help="last day (default: 31 December this year)")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(listing, a, create=False))
    remove = group.add_parser("remove", help=f"remove a {what}")
    remove.add_argument("key", type=key_type, metavar="ID" if key_type is int else "DAY", help=key_help)
    add_store_options(remove)
    remove.set_defaults(handler=lambda a: run_on_store(removing, a, create=False))


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write a day as YYYY-MM-DD, for example 2026-03-05") from None


def _month(text: str) -> Any:
    from lmg.server.supervision.calendar import Month

    try:
        return Month.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rules(args: argparse.Namespace) -> Any:
    from lmg.server.supervision.rules import RulesError, load_rules

    settings = store_settings(args, RULES_KEYS)
    try:
        return load_rules(settings.gateway.supervision_rules_file)
    except RulesError as exc:
        raise UsageError(str(exc)) from None


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if args.json else text)


# --- evaluate ------------------------------------------------------------------------------------------------


async def _evaluate(store: Any, args: argparse.Namespace) -> int:
    from lmg.server.supervision.calendar import china_day
    from lmg.server.supervision.service import Planned, evaluate_month_run, plan

    rules = _rules(args)
    now = _now_ms()
    today = china_day(now)
    if args.date is not None:
        from lmg.server.supervision.calendar import Month

        planned = [Planned(Month.of(args.date), args.date, "--date")]
    elif args.month is not None:
        yesterday = today - timedelta(days=1)
        if args.month.first > yesterday:
            raise UsageError(f"--month {args.month}: nothing of it is over yet (yesterday was {yesterday})")
        planned = [Planned(args.month, None if args.month.last <= yesterday else yesterday, "--month")]
    else:
        planned = plan(today, backlog_days=(), completed=())
    runs: list[dict[str, Any]] = []
    for p in planned:
        run = await evaluate_month_run(store, rules, p.month, as_of=p.as_of, now_ms=now)
        runs.append({"month": str(p.month), "as_of": None if p.as_of is None else p.as_of.isoformat(),
                     "findings": run.findings, "by_rule": run.by_rule, "applied": _applied(run.applied),
                     "escalated": run.escalated})
    lines = [f"{r['month']} ({'in full' if r['as_of'] is None else 'as of ' + r['as_of']}): {r['findings']} findings; "
             + ", ".join(f"{k} {v}" for k, v in r["applied"].items()) + f"; {r['escalated']} levels rose"
             for r in runs]
    _print(args, runs, "\n".join(lines))
    return 0


def _applied(result: Any) -> dict[str, int]:
    return {name: getattr(result, name) for name in ("opened", "updated", "reopened", "resolved", "unchanged")}


# --- report --------------------------------------------------------------------------------------------------

async def _report(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.regions import UnknownRegion
    from lmg.server.supervision.calendar import china_day
    from lmg.server.supervision.monthly_report import monthly_report, report_columns

    rules = _rules(args)
    month = args.month
    yesterday = china_day(_now_ms()) - timedelta(days=1)
    as_of = None if month.last <= yesterday else yesterday
    try:
        table = await monthly_report(store, rules, month, args.region, as_of, args.pii)
    except (UnknownRegion, ValueError) as exc:
        raise UsageError(f"--region {args.region}: {exc}") from None
    if args.pii:
        await store.audit("supervision_report_pii", args.region,
                          {"month": str(month), "rows": len(table), "by": actor()})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=report_columns(), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(table)
    text = "\ufeff" + buffer.getvalue()  # the BOM: Excel reads UTF-8 only with it
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8", newline="") as out:
                out.write(text)
        except OSError as exc:
            raise CommandFailed(f"cannot write {args.out}: {exc}") from None
        summary = f"{len(table)} rows for {args.region} in {month} written to {args.out}"
        _print(args, {"rows": len(table), "out": args.out, "month": str(month), "region": args.region}, summary)
    elif args.json:
        print(orjson.dumps(table, option=orjson.OPT_INDENT_2).decode())
    else:
        sys.stdout.write(text)
    return 0


# --- leave, stop-work, pause days ------------------------------------------------------------------------------


def _span(args: argparse.Namespace) -> tuple[date, date]:
    year = date.today().year
    first = args.first or date(year, 1, 1)
    last = args.last or date(year, 12, 31)
    if last < first:
        raise UsageError(f"--to {last} is before --from {first}")
    return first, last


async def _guarded(coroutine: Any) -> Any:
    from lmg.storage import UnknownProject

    try:
        return await coroutine
    except UnknownProject as exc:
        raise UsageError(f"{exc} (lmg project list shows the projects)") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def _leave_add(store: Any, args: argparse.Namespace) -> int:
    made = await _guarded(store.add_leave(args.project, args.id_number, args.first, args.last, args.reference))
    await store.audit("leave_added", args.project, {"id": made.id, "by": actor()})
    _print(args, {"id": made.id}, f"leave {made.id} recorded: {made.first_day} to {made.last_day}")
    return 0


async def _leave_list(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.identity import mask_id_number

    first, last = _span(args)
    rows = await store.list_leave(first_day=first, last_day=last,
                                  project_codes=None if args.project is None else [args.project])
    data = [{"id": v.id, "project": v.project_code, "id_number": mask_id_number(v.id_number),
             "first_day": v.first_day.isoformat(), "last_day": v.last_day.isoformat(), "reference": v.reference}
            for v in rows]
    _print(args, data, "\n".join(f"{d['id']:>6} {d['project']:<16} {d['id_number']} {d['first_day']} "
                                 f"{d['last_day']} {d['reference']}" for d in data) or "no leave")
    return 0


async def _leave_remove(store: Any, args: argparse.Namespace) -> int:
    if not await store.delete_leave(args.key):
        raise UsageError(f"no leave {args.key} (lmg supervision leave list shows them)")
    await store.audit("leave_removed", str(args.key), {"by": actor()})
    _print(args, {"removed": args.key}, f"leave {args.key} removed")
    return 0


async def _stop_add(store: Any, args: argparse.Namespace) -> int:
    made = await _guarded(store.add_stop_work(args.project, args.first, args.last, args.reference))
    await store.audit("stop_work_added", args.project, {"id": made.id, "by": actor()})
    _print(args, {"id": made.id}, f"stop-work {made.id} recorded: {made.first_day} to {made.last_day}")
    return 0


async def _stop_list(store: Any, args: argparse.Namespace) -> int:
    first, last = _span(args)
    rows = await store.list_stop_work(first_day=first, last_day=last,
                                      project_codes=None if args.project is None else [args.project])
    data = [{"id": s.id, "project": s.project_code, "first_day": s.first_day.isoformat(),
             "last_day": s.last_day.isoformat(), "reference": s.reference} for s in rows]
    _print(args, data, "\n".join(f"{d['id']:>6} {d['project']:<16} {d['first_day']} {d['last_day']} "
                                 f"{d['reference']}" for d in data) or "no stop-work")
    return 0


async def _stop_remove(store: Any, args: argparse.Namespace) -> int:
    if not await store.delete_stop_work(args.key):
        raise UsageError(f"no stop-work {args.key} (lmg supervision stop-work list shows them)")
    await store.audit("stop_work_removed", str(args.key), {"by": actor()})
    _print(args, {"removed": args.key}, f"stop-work {args.key} removed")
    return 0


async def _pause_add(store: Any, args: argparse.Namespace) -> int:
    made = await _guarded(store.set_pause_day(args.day, args.reason))
    await store.audit("pause_day_set", made.day.isoformat(), {"by": actor()})
    _print(args, {"day": made.day.isoformat(), "reason": made.reason}, f"{made.day} is a pause day: {made.reason}")
    return 0


async def _pause_list(store: Any, args: argparse.Namespace) -> int:
    first, last = _span(args)
    data = [{"day": p.day.isoformat(), "reason": p.reason} for p in await store.list_pause_days(first, last)]
    _print(args, data, "\n".join(f"{d['day']} {d['reason']}" for d in data) or "no pause days")
    return 0


async def _pause_remove(store: Any, args: argparse.Namespace) -> int:
    if not await store.delete_pause_day(args.key):
        raise UsageError(f"{args.key} is not a pause day (lmg supervision pause-day list shows them)")
    await store.audit("pause_day_removed", args.key.isoformat(), {"by": actor()})
    _print(args, {"removed": args.key.isoformat()}, f"{args.key} is no longer a pause day")
    return 0
