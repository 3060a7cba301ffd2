"""`/api/v1/devices`: terminals, their state, provisioning and revocation.

Disabling a device, rotating its secret or closing its session ends its open session at
once, on this node and every other one: the store records a session end with the change
(in the same transaction) and every gateway process acts on it (server/gateway/
signals.py); this process also acts on it directly, without waiting for its poll.
The device gets GOODBYE DEVICE_DISABLED, CREDENTIALS_CHANGED or CLOSED_BY_OPERATOR.
Secrets are shown once, when made; every change is audited with the token's name.
A supervisor's token sees and changes only the devices its region covers (a device's
region is its own `region`); any other serial answers 404, as an unknown one does.
"""

from __future__ import annotations

from pydantic import Field, JsonValue

from lmg.protocol.regions import all_regions
from lmg.server.admin.api import ApiError, ApiRequest, ApiRoutes, Output, Page, PageQuery, Strict
from lmg.storage import Device, DeviceExists, SessionEndReason, UnknownDevice

routes = ApiRoutes()
TAG = "devices"

SERIAL = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$", description="device serial")
# The schema lists the codes (lmg.protocol.regions, 103 nodes) so a client sees which are
# taken; the store checks them again.
REGION = Field(pattern=r"^\d{6}$", description="GB/T 2260 region code of Gansu (lmg.protocol.regions)",
               json_schema_extra={"enum": list[JsonValue](sorted(r.code for r in all_regions()))})


class DevicePath(Strict):
    serial: str = SERIAL


class DeviceQuery(PageQuery):
    after: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
                              description="the `next` of the previous page (a serial)")
    project: str | None = Field(None, min_length=1, max_length=64, description="only this project's devices")
    region: str | None = Field(None, pattern=r"^\d{6}$", description="only devices of this region code")
    online: bool | None = Field(None, description="only online (true) or offline (false) devices")


class DeviceOut(Output):
    serial: str
    project: str
    region: str
    enabled: bool
    online: bool
    last_seen_ms: int | None = Field(description="Unix ms the device was last heard, null if never")
    address: str | None = Field(description="peer address of its last session")
    firmware: str
    roster_version: int
    session_open_here: bool = Field(description="this node holds an authenticated session of the device")


class DeviceCreate(Strict):
    serial: str = SERIAL
    project: str = Field(min_length=1, max_length=64, description="project code (项目编码)")
    region: str = REGION


class DeviceCreated(Output):
    serial: str
    project: str
    region: str
    secret: str = Field(description="the device's 32-byte secret as hex; shown this once, configure it on the terminal")


class DeviceChange(Strict):
    enabled: bool = Field(description="false disables the device and ends its open session at once")


class SecretOut(Output):
    serial: str
    secret: str = Field(description="the new secret as hex; shown this once")


class SessionClosed(Output):
    serial: str
    closed_here: bool = Field(description="this node held a session and closed it (other nodes close theirs too)")


def device_out(device: Device, request: ApiRequest) -> DeviceOut:
    return DeviceOut(serial=device.serial, project=device.project_code, region=device.region_code,
                     enabled=device.enabled, online=device.online, last_seen_ms=device.last_seen_ms,
                     address=device.last_address, firmware=device.firmware, roster_version=device.roster_version,
                     session_open_here=device.serial in request.gateway.sessions)


def no_device(serial: str) -> ApiError:
    """The one answer for a serial that is unknown or outside the token's region."""
    return ApiError(404, "not_found", f"no device {serial}; GET /api/v1/devices lists them")


async def scoped_device(request: ApiRequest, serial: str) -> Device:
    """The device, if it exists and the token's region covers it; else the 404 of `no_device`."""
    device = await request.store.get_device(serial)
    if device is None or not request.sees(device.region_code):
        raise no_device(serial)
    return device


@routes.route("GET", "/api/v1/devices", scope="read", tag=TAG, summary="list devices",
              query_model=DeviceQuery, response_model=Page[DeviceOut], errors=(400,),
              description="Ordered by serial; filter by project, region and online state.")
async def list_devices(request: ApiRequest) -> Page[DeviceOut]:
    q: DeviceQuery = request.query
    after = q.after or ""
    scope = request.list_scope()  # the token's region, or None
    devices = await request.store.list_devices(after_serial=after, limit=q.limit, project_code=q.project,
                                               region_code=q.region, online=q.online, region_scope=scope)
    items = [device_out(d, request) for d in devices]
    return Page[DeviceOut](items=items, next=devices[-1].serial if len(devices) == q.limit else None)


@routes.route("GET", "/api/v1/devices/{serial}", scope="read", tag=TAG, summary="one device",
              path_model=DevicePath, response_model=DeviceOut, errors=(404,))
async def get_device(request: ApiRequest) -> DeviceOut:
    return device_out(await scoped_device(request, request.path.serial), request)


@routes.route("POST", "/api/v1/devices", scope="write", tag=TAG, summary="provision a device",
              body_model=DeviceCreate, response_model=DeviceCreated, status=201, errors=(400, 409, 415),
              description="Returns the device's secret this once. A supervisor's token provisions only in "
                          "the regions it covers (403 otherwise).")
async def add_device(request: ApiRequest) -> DeviceCreated:
    body: DeviceCreate = request.body
    request.may_create_in(body.region)
    try:
        device = await request.store.add_device(body.serial, project_code=body.project, region_code=body.region)
    except DeviceExists:
        raise ApiError(409, "conflict", f"device {body.serial} already exists; POST /api/v1/devices/{body.serial}"
                                        "/secret gives it a new secret") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    await request.store.audit("device_added", device.serial, {"project": body.project, "by": request.actor},
                              request.peer)
    return DeviceCreated(serial=device.serial, project=device.project_code, region=device.region_code,
                         secret=device.secret.hex())


@routes.route("PATCH", "/api/v1/devices/{serial}", scope="write", tag=TAG, summary="enable or disable a device",
              path_model=DevicePath, body_model=DeviceChange, response_model=DeviceOut, errors=(400, 404, 415),
              description="Disabling ends the device's open session at once with GOODBYE DEVICE_DISABLED.")
async def change_device(request: ApiRequest) -> DeviceOut:
    serial, enabled = request.path.serial, request.body.enabled
    await scoped_device(request, serial)
    try:
        if enabled:
            await request.store.enable_device(serial)
        else:
            await request.store.disable_device(serial)
    except UnknownDevice:
        raise no_device(serial) from None
    if not enabled:
        request.gateway.end_device_session(serial, SessionEndReason.DISABLED)
    await request.store.audit("device_enabled" if enabled else "device_disabled", serial, {"by": request.actor},
                              request.peer)
    return device_out(await scoped_device(request, serial), request)


@routes.route("POST", "/api/v1/devices/{serial}/secret", scope="write", tag=TAG, summary="rotate the secret",
              path_model=DevicePath, response_model=SecretOut, status=201, errors=(404,),
              description="The old secret stops working at once: the open session ends with GOODBYE "
                          "CREDENTIALS_CHANGED. The new secret is shown this once.")
async def rotate_secret(request: ApiRequest) -> SecretOut:
    serial = request.path.serial
    await scoped_device(request, serial)
    try:
        secret = await request.store.rotate_device_secret(serial)
    except UnknownDevice:
        raise no_device(serial) from None
    request.gateway.end_device_session(serial, SessionEndReason.SECRET_ROTATED)
    await request.store.audit("device_rotate_secret", serial, {"by": request.actor}, request.peer)
    return SecretOut(serial=serial, secret=secret.hex())


@routes.route("DELETE", "/api/v1/devices/{serial}/session", scope="write", tag=TAG,
              summary="close the device's open session", path_model=DevicePath, response_model=SessionClosed,
              errors=(404,), description="GOODBYE CLOSED_BY_OPERATOR on every node holding a session of the "
                                         "device; the device may reconnect at once.")
async def close_session(request: ApiRequest) -> SessionClosed:
    serial = request.path.serial
    await scoped_device(request, serial)
    try:
        await request.store.end_device_sessions(serial, SessionEndReason.CLOSED_BY_OPERATOR)
    except UnknownDevice:
        raise no_device(serial) from None
    closed = request.gateway.end_device_session(serial, SessionEndReason.CLOSED_BY_OPERATOR)
    await request.store.audit("device_session_closed", serial, {"by": request.actor}, request.peer)
    return SessionClosed(serial=serial, closed_here=closed)

