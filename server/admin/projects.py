"""`/api/v1/projects` and `/api/v1/commands`: projects, their rosters, and operator commands.

The same data and actions as `lmg project`, `lmg roster show` and `lmg command`. Resident
ID numbers in a roster are masked unless the token has `pii`. A command is queued in the
store and delivered by whichever gateway holds the device's session (docs/downlink.md);
`GET /api/v1/commands/{id}` follows it through queued, sent, acked, failed, expired or
cancelled. Every change is audited with the token's name.

A supervisor's token sees the projects its region covers (a project's `region`) and the
commands of the devices it covers (a device's `region`, as /api/v1/devices); anything
else answers 404, as an unknown code or id does.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from pydantic import Field, JsonValue

from lmg.protocol.identity import mask_id_number
from lmg.protocol.regions import all_regions
from lmg.server.admin.api import (
    NOWHERE,
    ApiError,
    ApiRequest,
    ApiRoutes,
    Output,
    Page,
    PageQuery,
    RegionFilter,
    Strict,
    cursor_value,
    seal,
    unseal,
)
from lmg.server.downlink.commands import COMMAND_TYPES
from lmg.server.admin.devices import REGION, SERIAL, DevicePath, scoped_device
from lmg.storage import ProjectExists, UnknownDevice

routes = ApiRoutes()
CODE = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$", description="project code (项目编码)")
# Names as the store takes them (printable, no control or format characters): ASCII, Latin-1
# letters and signs, CJK punctuation, CJK ideographs (with extension A), full-width forms.
TEXT = r"^[\x20-\x7e\u00a1-\u00ac\u00ae-\u00ff\u3001-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff01-\uffbe\uffe0-\uffe6\uffe8-\uffee]+$"
STATES = ("queued", "sent", "acked", "failed", "expired", "cancelled")


class ProjectPath(Strict):
    code: str = CODE


class ProjectQuery(PageQuery):
    after: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                              description="the `next` of the previous page (a project code)")
    region: RegionFilter = Field(None, pattern=r"^\d{6}$", description="this region and the regions below it "
                               "(lmg.protocol.regions: 620100 兰州市 with its counties, not 620171 兰州新区)",
                               json_schema_extra={"enum": list[JsonValue](sorted(r.code for r in all_regions()))})


class ProjectOut(Output):
    code: str
    name: str
    region: str
    enterprise: str
    uscc: str
    start_date: date | None
    end_date: date | None
    roster_version: int


class ProjectCreate(Strict):
    code: str = CODE
    name: str = Field(min_length=1, max_length=128, pattern=TEXT)
    region: str = REGION
    enterprise: str = Field("", max_length=128, pattern=TEXT.replace("+$", "*$"))
    uscc: str = Field("", pattern=r"^([0-9A-HJ-NPQRTUWXY]{18})?$", description="unified social credit code")
    start_date: date | None = None
    end_date: date | None = None


class WorkerQuery(PageQuery):
    after: str | None = Field(None, min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_=-]+$",
                              description="the `next` of the previous page (opaque)")
    all: bool = Field(False, description="include workers who have left or not yet entered")


class WorkerOut(Output):
    id_number: str = Field(description="resident ID number, masked without the pii scope")
    name: str
    card_no: str
    enterprise: str
    team: str
    post: str = Field(description="worker, or a key post code (lmg.protocol.posts)")
    entry_date: date
    exit_date: date | None
    face_sha256: str | None
    on_roster: bool
    version: int = Field(description="the roster version of the worker's last change")


def _arguments_help() -> str:
    forms = "; ".join(f"{name}: " + (", ".join(f"{a.name} ({a.form}{'' if a.required else ', optional'})"
                                              for a in spec.arguments) or "none")
                      for name, spec in COMMAND_TYPES.items())
    return f"the type's arguments (checked against the type; 400 names the one that is wrong). {forms}"


class CommandCreate(Strict):
    type: str = Field(description="the command type, named after its message",
                      json_schema_extra={"enum": list[JsonValue](COMMAND_TYPES)})
    arguments: dict[str, Any] = Field(default_factory=dict, description=_arguments_help())
    expires_s: float | None = Field(None, gt=0, le=30 * 86400, description="give up after this (default one day)")


class CommandOut(Output):
    id: int
    device: str
    type: str
    status: str = Field(description="queued, sent, acked, failed, expired or cancelled")
    arguments: dict[str, Any]
    result: str | None = Field(description="the terminal's result code when it answered")
    error: str | None
    attempts: int
    reply: dict[str, Any] | None = Field(description="the data of the terminal's answer: CONFIG_REPLY's values, ROSTER_VERSION_REPLY's version and size")
    created_at_ms: int
    sent_at_ms: int | None
    completed_at_ms: int | None
    expires_at_ms: int | None
    created_by: str


class CommandPath(Strict):
    id: int = Field(ge=1, le=2**63 - 1)


class CommandQuery(PageQuery):
    device: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    status: str | None = Field(None, pattern="^(" + "|".join(STATES) + ")$")


def project_out(p: Any) -> ProjectOut:
    return ProjectOut(code=p.code, name=p.name, region=p.region_code, enterprise=p.enterprise,
                      uscc=p.enterprise_uscc, start_date=p.start_date, end_date=p.end_date,
                      roster_version=p.roster_version)


async def scoped_project(request: ApiRequest, code: str) -> Any:
    """The project, if it exists and the token's region covers it; else 404 (the same answer)."""
    project = await request.store.get_project(code)
    if project is None or not request.sees(project.region_code):
        raise ApiError(404, "not_found", f"no project {code}; GET /api/v1/projects lists them")
    return project


async def scoped_command(request: ApiRequest, command_id: int) -> Any:
    """The command, if it exists and its device is in the token's region; else 404."""
    command = await request.store.get_command(command_id)
    if command is not None and request.region is not None:
        device = await request.store.get_device(command.device_serial)
        command = command if device is not None and request.sees(device.region_code) else None
    if command is None:
        raise ApiError(404, "not_found", f"no command {command_id}")
    return command


@routes.route("GET", "/api/v1/projects", scope="read", tag="projects", summary="list projects",
              query_model=ProjectQuery, response_model=Page[ProjectOut], errors=(400,))
async def list_projects(request: ApiRequest) -> Page[ProjectOut]:
    q: ProjectQuery = request.query
    scope = request.list_scope(q.region)
    if scope == NOWHERE:
        return Page[ProjectOut](items=[], next=None)
    rows = await request.store.list_projects(after_code=q.after or "", limit=q.limit, region_scope=scope)
    return Page[ProjectOut](items=[project_out(p) for p in rows], next=rows[-1].code if len(rows) == q.limit else None)


@routes.route("GET", "/api/v1/projects/{code}", scope="read", tag="projects", summary="one project",
              path_model=ProjectPath, response_model=ProjectOut, errors=(404,))
async def get_project(request: ApiRequest) -> ProjectOut:
    return project_out(await scoped_project(request, request.path.code))


@routes.route("POST", "/api/v1/projects", scope="write", tag="projects", summary="add a project",
              body_model=ProjectCreate, response_model=ProjectOut, status=201, errors=(400, 409, 415))
async def add_project(request: ApiRequest) -> ProjectOut:
    body: ProjectCreate = request.body
    request.may_create_in(body.region)
    try:
        project = await request.store.add_project(body.code, name=body.name, region_code=body.region,
                                                  enterprise=body.enterprise, enterprise_uscc=body.uscc,
                                                  start_date=body.start_date, end_date=body.end_date)
    except ProjectExists:
        raise ApiError(409, "conflict", f"project {body.code} exists already") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    await request.store.audit("project_added", project.code, {"by": request.actor}, request.peer)
    return project_out(project)


@routes.route("GET", "/api/v1/projects/{code}/workers", scope="read", tag="projects", summary="the project's roster",
              path_model=ProjectPath, query_model=WorkerQuery, response_model=Page[WorkerOut], errors=(400, 404),
              description="Ordered by ID number. Resident ID numbers are masked unless the token has `pii`.")
async def roster(request: ApiRequest) -> Page[WorkerOut]:
    q: WorkerQuery = request.query
    await scoped_project(request, request.path.code)
    workers = await request.store.list_workers(request.path.code, on_roster_only=not q.all,
                                               after_worker_id=unseal(q.after), limit=q.limit)
    pii = request.has_scope("pii")
    items = [WorkerOut(id_number=w.worker_id if pii else mask_id_number(w.worker_id), name=w.name, card_no=w.card_no,
                       enterprise=w.enterprise, team=w.team, post=w.post, entry_date=w.entry_date,
                       exit_date=w.exit_date, face_sha256=w.face_sha256.hex() if w.face_sha256 else None,
                       on_roster=w.on_roster, version=w.version) for w in workers]
    # the page ends at a full ID number: the cursor seals it, so no token learns it from the cursor
    return Page[WorkerOut](items=items, next=seal(workers[-1].worker_id) if len(workers) == q.limit else None)


def command_out(command: Any) -> CommandOut:
    from lmg.server.downlink.commands import command_view

    return CommandOut(**command_view(command))


@routes.route("POST", "/api/v1/devices/{serial}/commands", scope="write", tag="commands", summary="queue a command",
              path_model=DevicePath, body_model=CommandCreate, response_model=CommandOut, status=201,
              errors=(400, 404, 415), description="Delivered when the device is online, tracked by its id.")
async def send_command(request: ApiRequest) -> CommandOut:
    from lmg.server.downlink.commands import COMMAND_TYPES, arguments_from_json, encode_arguments

    body: CommandCreate = request.body
    serial = request.path.serial
    spec = COMMAND_TYPES.get(body.type)
    if spec is None:
        raise ApiError(400, "bad_request", f"type {body.type!r}: use one of {', '.join(COMMAND_TYPES)}")
    try:
        arguments = arguments_from_json(body.type, body.arguments)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    await scoped_device(request, serial)
    ttl_s = body.expires_s if body.expires_s is not None else request.gateway.settings.gateway.command_ttl_s
    now = time.time_ns() // 1_000_000
    try:
        command_id = await request.store.enqueue_command(serial, int(spec.message_type), encode_arguments(arguments),
                                                         expires_at_ms=now + int(ttl_s * 1000),
                                                         created_by=request.actor)
    except UnknownDevice:
        raise ApiError(404, "not_found", f"no device {serial}; GET /api/v1/devices lists them") from None
    await request.store.audit("command_queued", serial, {"id": command_id, "type": body.type, "by": request.actor},
                              request.peer)
    command = await request.store.get_command(command_id)
    return command_out(command)


@routes.route("GET", "/api/v1/commands/{id}", scope="read", tag="commands", summary="one command",
              path_model=CommandPath, response_model=CommandOut, errors=(404,))
async def get_command(request: ApiRequest) -> CommandOut:
    return command_out(await scoped_command(request, request.path.id))


@routes.route("GET", "/api/v1/commands", scope="read", tag="commands", summary="list commands",
              query_model=CommandQuery, response_model=Page[CommandOut], errors=(400,),
              description="In id order; filter by device and status.")
async def list_commands(request: ApiRequest) -> Page[CommandOut]:
    from lmg.storage import CommandState

    q: CommandQuery = request.query
    scope = request.list_scope()  # the token's region, or None
    rows = await request.store.list_commands(device_serial=q.device, state=CommandState(q.status) if q.status else None,
                                             after_id=cursor_value(q.after), limit=q.limit, region_scope=scope)
    return Page[CommandOut](items=[command_out(c) for c in rows], next=str(rows[-1].id) if len(rows) == q.limit else None)


@routes.route("DELETE", "/api/v1/commands/{id}", scope="write", tag="commands", summary="cancel a command",
              path_model=CommandPath, response_model=CommandOut, errors=(404, 409),
              description="Only a queued or sent command can be cancelled.")
async def cancel_command(request: ApiRequest) -> CommandOut:
    command_id = request.path.id
    await scoped_command(request, command_id)
    if not await request.store.cancel_command(command_id):
        command = await request.store.get_command(command_id)
        if command is None:
            raise ApiError(404, "not_found", f"no command {command_id}")
        raise ApiError(409, "conflict", f"command {command_id} is {command.state.value} already")
    await request.store.audit("command_cancelled", str(command_id), {"by": request.actor}, request.peer)
    return command_out(await request.store.get_command(command_id))
