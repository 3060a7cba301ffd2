"""`/api/v1/forwarding` and `/api/v1/audit`: the outbox to the province, and the audit log.

The same figures and actions as `lmg forward status|dead-letters|retry` and the audit
table, for operators who work through the API: every route here is `operators_only`, a
supervisor's (region-limited) token is refused with 403. Requeueing dead letters is audited with
the token's name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, RootModel

from lmg.server.admin.api import ApiError, ApiRequest, ApiRoutes, Output, Page, PageQuery, Strict, cursor_value
from lmg.storage import wall_clock_ms

routes = ApiRoutes()


class OutboxStatusOut(Output):
    pending: int = Field(description="records waiting to be forwarded")
    oldest_age_s: float = Field(description="age of the oldest waiting record, seconds")
    dead_letters: int = Field(description="records the province refused for good")


class DeadLetterOut(Output):
    id: int = Field(description="outbox id, for a requeue")
    record_id: str
    device_serial: str
    record_no: int
    punch_time_ms: int
    attempts: int
    reason: str | None = Field(description="what the province said")
    created_at_ms: int


class RequeueIds(Strict):
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(min_length=1, max_length=10_000,
                                                                  description="outbox ids of dead letters")


class RequeueAll(Strict):
    all: Literal[True] = Field(description="every dead letter")


class Requeue(RootModel[RequeueIds | RequeueAll]):
    """`{"ids": [...]}` or `{"all": true}`."""


class Requeued(Output):
    requeued: int = Field(description="dead letters pending again")


class AuditQuery(PageQuery):
    event: str | None = Field(None, min_length=1, max_length=64, description="e.g. device_disabled, auth_failed")
    subject: str | None = Field(None, min_length=1, max_length=128, description="what it is about, e.g. a serial")
    since: int | None = Field(None, ge=0, le=2**63 - 1, description="from (Unix ms, inclusive)")
    until: int | None = Field(None, ge=0, le=2**63 - 1, description="to (Unix ms, exclusive)")


class AuditOut(Output):
    id: int
    at_ms: int
    event: str
    subject: str
    detail: dict[str, Any]
    address: str | None


@routes.route("GET", "/api/v1/forwarding/status", scope="read", tag="forwarding", operators_only=True,
              summary="outbox status", response_model=OutboxStatusOut)
async def outbox_status(request: ApiRequest) -> OutboxStatusOut:
    status = await request.store.outbox_status(wall_clock_ms())
    return OutboxStatusOut(pending=status.pending, oldest_age_s=round(status.oldest_age_s, 3),
                           dead_letters=status.dead_letters)


@routes.route("GET", "/api/v1/forwarding/dead-letters", scope="read", tag="forwarding", operators_only=True,
              summary="records the province refused", query_model=PageQuery, response_model=Page[DeadLetterOut],
              errors=(400,), description="Oldest first. Fix the cause, then requeue them.")
async def dead_letters(request: ApiRequest) -> Page[DeadLetterOut]:
    from lmg.server.forwarding import summarize

    q: PageQuery = request.query
    after = cursor_value(q.after)
    items = await request.store.list_dead_letters(limit=q.limit, after_id=after)
    rows = [DeadLetterOut(**row) for row in summarize(items)]
    return Page[DeadLetterOut](items=rows, next=str(rows[-1].id) if len(rows) == q.limit else None)


@routes.route("POST", "/api/v1/forwarding/requeues", scope="write", tag="forwarding", operators_only=True,
              summary="send dead letters again", body_model=Requeue, response_model=Requeued, status=201,
              errors=(400, 415))
async def requeue(request: ApiRequest) -> Requeued:
    body = request.body.root
    ids = body.ids if isinstance(body, RequeueIds) else None
    count = await request.store.retry_dead_letters(ids)
    await request.store.audit("dead_letters_retried", "outbox",
                              {"ids": "all" if ids is None else ids, "count": count, "by": request.actor},
                              request.peer)
    return Requeued(requeued=count)


@routes.route("GET", "/api/v1/audit", scope="read", tag="audit", operators_only=True, summary="the audit log",
              query_model=AuditQuery, response_model=Page[AuditOut], errors=(400,),
              description="Newest first: logins, failed authentications, every change and who made it.")
async def audit_log(request: ApiRequest) -> Page[AuditOut]:
    q: AuditQuery = request.query
    if q.since is not None and q.until is not None and q.until <= q.since:
        raise ApiError(400, "bad_request", "until must be after since")
    before = cursor_value(q.after) or None
    entries = await request.store.list_audit(limit=q.limit, event=q.event, subject=q.subject, since_ms=q.since,
                                             until_ms=q.until, before_id=before)
    items = [AuditOut(id=e.id, at_ms=e.at_ms, event=e.event, subject=e.subject, detail=e.detail, address=e.address)
             for e in entries]
    return Page[AuditOut](items=items, next=str(items[-1].id) if len(items) == q.limit else None)
