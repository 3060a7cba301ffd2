"""`lmg token create|list|revoke`: API tokens for the admin API (server/admin/tokens.py).

A token is printed once, when created; the store keeps its SHA-256 only, so a lost token
cannot be shown again: revoke it and create another. Revocation takes effect at the next
request (every request looks the token up). Every change goes to the audit log.

A supervisor's token carries a department (`--department construction|labour`, or 住建 /
人社) and a region (`--region`, a node of lmg.protocol.regions: it sees what that region
covers); an operator's token has neither. The department needs the region.
"""

from __future__ import annotations


import orjson

from lmg.server.admin import tokens
from lmg.server.cli import UsageError, actor, add_store_options, run_on_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("token", help="API tokens for the admin API (create, list, revoke)")
    group = parser.add_subparsers(dest="token_command", metavar="ACTION")
    group.required = True

    create = group.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True, help="what the token is for; it names it in the audit log")
    create.add_argument("--scope", required=True,
                        help=f"comma list of {', '.join(tokens.SCOPES)}: read = GET routes, write = changes, "
                             "pii = full resident ID numbers and photos")
    create.add_argument("--department", help="a supervisor's department: construction (住建) or labour (人社); "
                                             "needs --region")
    create.add_argument("--region", help="limit the token to what this region covers: a county (620102), a city "
                                         "(620100, with its counties), 620171 兰州新区, 629900 甘肃矿区 or 620000 "
                                         "(lmg.protocol.regions)")
    add_store_options(create)
    create.set_defaults(handler=lambda a: _run(_create, a))

    lst = group.add_parser("list", help="list tokens (never the tokens themselves)")
    add_store_options(lst)
    lst.set_defaults(handler=lambda a: _run(_list, a))

    revoke = group.add_parser("revoke", help="revoke a token: it stops working at its next request")
    revoke.add_argument("name")
    add_store_options(revoke)
    revoke.set_defaults(handler=lambda a: _run(_revoke, a))


def _run(fn, args) -> int:
    return run_on_store(fn, args, create=args.token_command == "create")  # list, revoke: an existing store



async def _create(store, args) -> int:
    from lmg.storage import TokenExists

    from lmg.protocol.regions import region as region_of
    from lmg.storage import Department

    try:
        name = tokens.check_name(args.name)
        scopes = tokens.parse_scopes(args.scope)
        department = None if args.department is None else Department.parse(args.department)
        place = None if args.region is None else region_of(args.region.strip())
        if department is not None and place is None:
            raise ValueError(f"--department {department.value} needs --region: the county, city or province "
                             f"(620000) whose supervisors use the token")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    region = None if place is None else place.code
    token, digest = tokens.new_token()
    try:
        await store.create_api_token(name, digest, scopes, created_by=actor(), region_code=region,
                                     department=department)
    except TokenExists:
        raise UsageError(f"a token named {name!r} exists already (names are never reused, even revoked ones); "
                         "choose another --name") from None
    where = {"department": None if department is None else department.value, "region": region}
    await store.audit("api_token_created", name, {"scopes": sorted(scopes), **where, "by": actor()})
    if args.json:
        print(orjson.dumps({"name": name, "scopes": sorted(scopes), **where, "token": token}).decode())
    else:
        who = f"{department.name_zh} " if department is not None else ""
        limited = "" if place is None else f", {who}{place.code} {place.name}"
        print(f"token {name} ({','.join(sorted(scopes))}{limited}), shown once; send it as "
              f"'Authorization: Bearer <token>':")
        print(token)
    return 0


async def _list(store, args) -> int:
    rows = [{"name": t.name, "scopes": sorted(t.scopes),
             "department": None if t.department is None else t.department.value, "region": t.region_code, "active": t.active, "created_at_ms": t.created_at_ms,
             "revoked_at_ms": t.revoked_at_ms, "created_by": t.created_by} for t in await store.list_api_tokens()]
    if args.json:
        print(orjson.dumps(rows).decode())
        return 0
    if not rows:
        print("no tokens; `lmg token create --name NAME --scope read` makes one")
        return 0
    print(f"{'name':<24} {'scopes':<16} {'department':<13} {'region':<7} {'active':<7} created by")
    for row in rows:
        print(f"{row['name']:<24} {','.join(row['scopes']):<16} {row['department'] or '-':<13} "
              f"{row['region'] or '-':<7} {str(row['active']):<7} {row['created_by']}")
    return 0


async def _revoke(store, args) -> int:
    if not await store.revoke_api_token(args.name):
        raise UsageError(f"no active token named {args.name!r}; `lmg token list` shows them")
    await store.audit("api_token_revoked", args.name, {"by": actor()})
    print(orjson.dumps({"revoked": args.name}).decode() if args.json else f"token {args.name} revoked")
    return 0
