"""`lmg account create|list|disable|unlock|passwd`: people's accounts of the supervision console.

    lmg account create NAME --department 住建|人社 --region CODE [--role supervisor|operator] [--pii]
                       [--password-stdin]
    lmg account list [--json]
    lmg account disable NAME
    lmg account unlock NAME
    lmg account passwd NAME [--password-stdin]

Accounts are separate from API tokens (`lmg token`): a person signs in at /console/ on the
admin listener with a name and a password (server/console/). The password is asked twice
at a prompt that does not echo, or read as the first line of standard input with
`--password-stdin` (for scripts; never as an argument, which `ps` and shell histories
show). A password has at least 10 characters. The store keeps its argon2id hash only.

A supervisor (the default role) sees what its region covers; an operator also works the
devices and, at the province (620000), the forwarding pages; `--pii` lets the account see
full ID numbers and punch photos (each view audited). `disable` ends the account's
sessions at once and keeps its name (names are never reused); `unlock` clears a lockout
after failed sign-ins; `passwd` sets a new password and ends the account's sessions.
Every change goes to the audit log with the operating-system user who made it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from lmg.server.cli import UsageError, actor, add_store_options, run_on_store


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("account", help="people's accounts of the supervision console (create, list, "
                                                   "disable, unlock, passwd)")
    group = parser.add_subparsers(dest="account_command", metavar="ACTION")
    group.required = True

    create = group.add_parser("create", help="create a console account (asks for its password)")
    create.add_argument("name", help="the sign-in name; it names the person in the audit log (account:NAME)")
    create.add_argument("--department", required=True, help="住建 (construction) or 人社 (labour)")
    create.add_argument("--region", required=True, help="the region the account sees: a county (620102), a city "
                                                        "(620100, with its counties), 620171 兰州新区, 629900 甘肃矿区 "
                                                        "or 620000 the province (lmg.protocol.regions)")
    create.add_argument("--role", choices=("supervisor", "operator"), default="supervisor",
                        help="supervisor (default): warnings, projects, exports; operator: also devices and, at "
                             "620000, forwarding")
    create.add_argument("--pii", action="store_true", help="full resident ID numbers and punch photos (audited)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input's "
                                                                      "first line instead of a prompt")
    add_store_options(create)
    create.set_defaults(handler=lambda a: run_on_store(_create, a, create=True))

    lst = group.add_parser("list", help="list accounts (never their passwords)")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: run_on_store(_list, a, create=False))

    for name, help_text, work in (("disable", "disable an account and end its sessions now", _disable),
                                  ("unlock", "clear a lockout after failed sign-ins", _unlock)):
        sub = group.add_parser(name, help=help_text)
        sub.add_argument("name")
        add_store_options(sub)
        sub.set_defaults(handler=lambda a, work=work: run_on_store(work, a, create=False))

    passwd = group.add_parser("passwd", help="set a new password (ends the account's sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input's "
                                                                      "first line instead of a prompt")
    add_store_options(passwd)
    passwd.set_defaults(handler=lambda a: run_on_store(_passwd, a, create=False))


def _password(args: argparse.Namespace) -> str:
    """The new password, checked (UsageError saying why it is refused)."""
    from lmg.server.console.accounts import WeakPassword, check_password_rules

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask the password at: pass --password-stdin and give it on standard input")
        password = getpass.getpass("password (10 characters at least): ")
        if getpass.getpass("the same password again: ") != password:
            raise UsageError("the two passwords differ; run the command again")
    try:
        return check_password_rules(password)
    except WeakPassword as exc:
        raise UsageError(f"password refused: {exc}") from None


def _hash(password: str) -> str:
    from lmg.server.console.accounts import hash_password

    return hash_password(password)


async def _create(store: Any, args: argparse.Namespace) -> int:
    from lmg.protocol.regions import region as region_of
    from lmg.storage import AccountExists, Department
    from lmg.storage.console import check_account_name

    try:
        name = check_account_name(args.name)
        department = Department.parse(args.department)
        place = region_of(args.region.strip())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    password_hash = _hash(_password(args))
    try:
        await store.create_console_account(name, password_hash, department=department.value, region_code=place.code,
                                           role=args.role, pii=args.pii, created_by=actor())
    except AccountExists as exc:
        raise UsageError(f"{exc}") from None
    detail = {"department": department.value, "region": place.code, "role": args.role, "pii": args.pii,
              "by": actor()}
    await store.audit("console_account_created", f"account:{name}", detail)
    if args.json:
        print(orjson.dumps({"name": name, **detail}).decode())
    else:
        print(f"account {name} created: {department.name_zh} {place.code} {place.name}, {args.role}"
              f"{', pii' if args.pii else ''}; sign in at http://<admin listener>/console/")
    return 0


async def _list(store: Any, args: argparse.Namespace) -> int:
    rows = [{"name": a.name, "department": a.department.value, "region": a.region_code, "role": a.role,
             "pii": a.pii, "disabled": a.disabled, "failed_logins": a.failed_logins,
             "locked_until_ms": a.locked_until_ms, "created_at_ms": a.created_at_ms, "created_by": a.created_by}
            for a in await store.list_console_accounts()]
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no accounts; `lmg account create NAME --department 住建 --region CODE` makes one")
        return 0
    from lmg.storage import wall_clock_ms

    now = wall_clock_ms()
    print(f"{'name':<24} {'department':<13} {'region':<7} {'role':<11} {'pii':<5} {'state':<9} created by")
    for row in rows:
        locked = row["locked_until_ms"] is not None and row["locked_until_ms"] > now
        state = "disabled" if row["disabled"] else ("locked" if locked else "active")
        print(f"{row['name']:<24} {row['department']:<13} {row['region']:<7} {row['role']:<11} "
              f"{'yes' if row['pii'] else 'no':<5} {state:<9} {row['created_by']}")
    return 0


async def _disable(store: Any, args: argparse.Namespace) -> int:
    if not await store.update_console_account(args.name, disabled=True):
        raise UsageError(f"no account named {args.name!r}; `lmg account list` shows them")
    await store.audit("console_account_disabled", f"account:{args.name}", {"by": actor()})
    print(orjson.dumps({"disabled": args.name}).decode() if args.json else f"account {args.name} disabled; its "
          "sessions ended")
    return 0


async def _unlock(store: Any, args: argparse.Namespace) -> int:
    if not await store.set_console_lockout(args.name, failed_logins=0, locked_until_ms=None, lockout_level=0):
        raise UsageError(f"no account named {args.name!r}; `lmg account list` shows them")
    await store.audit("console_account_unlocked", f"account:{args.name}", {"by": actor()})
    print(orjson.dumps({"unlocked": args.name}).decode() if args.json else f"account {args.name} unlocked")
    return 0


async def _passwd(store: Any, args: argparse.Namespace) -> int:
    if await store.get_console_account(args.name) is None:
        raise UsageError(f"no account named {args.name!r}; `lmg account list` shows them")
    password_hash = _hash(_password(args))
    if not await store.update_console_account(args.name, password_hash=password_hash):
        raise UsageError(f"no account named {args.name!r}; `lmg account list` shows them")
    await store.audit("console_account_password_changed", f"account:{args.name}", {"by": actor()})
    print(orjson.dumps({"password_changed": args.name}).decode() if args.json
          else f"account {args.name}: new password set; its sessions ended")
    return 0
