"""`/api/v1/punches`: stored punches by project, device, worker and time; their photos.

Personal data is scoped: a resident ID number is shown as its first 6 and last 4
characters unless the token has `pii`, and a punch's photo (a face) needs `pii`. A
worker filter takes the full number either way: it finds records, it shows nothing.
A supervisor's token sees the punches of the devices its region covers; a photo of any
other punch answers 404, as a missing one does.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from lmg.protocol.identity import mask_id_number
from lmg.server.admin.api import ApiError, ApiRequest, ApiRoutes, Output, Page, PageQuery, Strict, cursor_value
from lmg.server.admin.devices import SERIAL
from lmg.storage import PunchListing

routes = ApiRoutes()
TAG = "punches"


class PunchQuery(PageQuery):
    project: str | None = Field(None, min_length=1, max_length=64, description="project code")
    device: str | None = Field(None, min_length=1, max_length=64, description="device serial")
    worker: str | None = Field(None, pattern=r"^\d{17}[\dX]$", description="resident ID number (full)")
    since: int | None = Field(None, ge=0, le=2**63 - 1, description="punch time from (Unix ms, inclusive)")
    until: int | None = Field(None, ge=0, le=2**63 - 1, description="punch time to (Unix ms, exclusive)")


class PunchOut(Output):
    id: int = Field(description="arrival order; the cursor")
    device: str
    project: str
    record_no: int
    worker_id: str = Field(description="resident ID number, masked (620102********4516) without the pii scope")
    punch_time_ms: int
    direction: int = Field(description="1 in, 2 out")
    verify_mode: int = Field(description="1 face, 2 card, 3 ID card, 4 fingerprint")
    temperature_dc: int = Field(description="0.1 °C; 0 not measured")
    photo_sha256: str | None = Field(description="hex; the photo is at .../photo with the pii scope")
    photo_size: int
    received_at_ms: int


class PhotoPath(Strict):
    serial: str = SERIAL
    record_no: int = Field(ge=0, le=2**32 - 1, description="the device's record number")


def punch_out(row: PunchListing, pii: bool) -> PunchOut:
    p = row.punch
    return PunchOut(id=row.id, device=p.device_serial, project=row.project_code, record_no=p.record_no,
                    worker_id=p.worker_id if pii else mask_id_number(p.worker_id), punch_time_ms=p.punch_time_ms,
                    direction=p.direction, verify_mode=p.verify_mode, temperature_dc=p.temperature_dc,
                    photo_sha256=p.photo_sha256.hex() if p.photo_sha256 else None, photo_size=p.photo_size,
                    received_at_ms=p.received_at_ms)


@routes.route("GET", "/api/v1/punches", scope="read", tag=TAG, summary="list punches",
              query_model=PunchQuery, response_model=Page[PunchOut], errors=(400,),
              description="In the order they were stored (on PostgreSQL, the punches of one commit ordered by "
                          "device and record number). Resident ID numbers are masked unless the token has `pii`.")
async def list_punches(request: ApiRequest) -> Page[PunchOut]:
    q: PunchQuery = request.query
    if q.since is not None and q.until is not None and q.until <= q.since:
        raise ApiError(400, "bad_request", "until must be after since")
    scope = request.list_scope()  # the token's region, or None
    rows = await request.store.list_punches(project_code=q.project, device_serial=q.device, worker_id=q.worker,
                                            since_ms=q.since, until_ms=q.until, after_id=cursor_value(q.after),
                                            limit=q.limit, region_scope=scope)
    pii = request.has_scope("pii")
    return Page[PunchOut](items=[punch_out(r, pii) for r in rows],
                          next=str(rows[-1].id) if len(rows) == q.limit else None)


@routes.route("GET", "/api/v1/punches/{serial}/{record_no}/photo", scope="pii", tag=TAG,
              summary="a punch's photo", path_model=PhotoPath, response_content="image/jpeg", errors=(404,),
              description="The face snapshot as the terminal sent it (JPEG or PNG). Needs `read` and `pii`.")
async def punch_photo(request: ApiRequest) -> web.Response:
    if not request.has_scope("read"):
        raise ApiError(403, "forbidden", "this token lacks the read scope; a photo needs read and pii")
    device = await request.store.get_device(request.path.serial) if request.region is not None else None
    visible = request.region is None or (device is not None and request.sees(device.region_code))
    photo = await request.store.get_punch_photo(request.path.serial, request.path.record_no) if visible else None
    if photo is None:
        raise ApiError(404, "not_found", "no photo for that punch (no such punch, or its photo was never uploaded)")
    kind = "image/png" if photo.startswith(b"\x89PNG") else "image/jpeg"
    return web.Response(body=photo, content_type=kind, headers={"Cache-Control": "no-store"})
