"""How a route of the admin API is declared, checked and answered; the OpenAPI document is
generated from the same declarations.

A route is a `Route`: method, path, the scope it needs, a summary, pydantic models for
its path parameters, query and body, and the model (or content type) of its answer. A
resource module declares its routes with `@api.route(...)` on the shared `ApiRoutes`;
`app.py` mounts them and `openapi.py` describes them, so the document cannot drift from
the code. Rules kept here:

- Input is checked before a handler runs: a bad query, path parameter or body is a 400
  whose JSON names every field that is wrong; an unknown query parameter is a 400 too.
- Every error is JSON `{"error": code, "message": ...}`, the message saying what to do,
  never internal details. The statuses a route can answer are declared with it.
- Lists are pages: `limit` (1..1000, default 100) and an opaque `after` cursor; the answer
  carries `next`, the cursor of the following page, or null at the end.
- Handlers get an `ApiRequest` (validated inputs, the token, the peer, the gateway) and
  return a model, a `(status, model)` pair or an aiohttp response (bytes of a photo).
- Region scope (issue 15, docs/supervision.md "API and CLI"): a token with a region (every
  supervisor's token, 住建 or 人社) sees what that node of lmg.protocol.regions covers, and
  nothing else; an operator's token (no department, no region) sees everything. The rule
  lives here, in `ApiRequest`: lists pass `list_scope` to the store, a read or change of
  one thing checks `sees` and answers the route's own 404 when it is outside (never 403:
  that would confirm the thing exists), a creation outside is 403 (the region is the
  caller's own input), and a route declared `operators_only` (forwarding, dead letters,
  the audit log) refuses a supervisor's token with 403 saying why.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from lmg.protocol.regions import covers, is_known

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway
    from lmg.storage import ApiToken

PAGE_DEFAULT, PAGE_MAX = 100, 1000  # a page of 1000 devices is ~300 KB of JSON
# `ApiRequest.list_scope` when the token's region and the filter's do not meet: the list is empty.
NOWHERE = ""


class ApiError(Exception):
    """An answer other than success: `status`, a short `code` and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": code, "message": message}, status)


class Strict(BaseModel):
    """Inputs: unknown fields are refused, so a misspelt filter is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Output(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorBody(Output):
    error: str = Field(description="short machine-readable code, e.g. bad_request, unauthorized, not_found")
    message: str = Field(description="what was wrong and what to do")


def one_of(values: list[Any], what: str) -> AfterValidator:
    """A check that a value is one of the schema's `enum` (which pydantic does not enforce by
    itself): a 400 naming the accepted values, instead of a store error."""
    def check(value: Any) -> Any:
        if value is not None and value not in values:
            shown = ", ".join(map(str, values)) if len(values) <= 12 else f"one of the {len(values)} the schema lists"
            raise ValueError(f"{what} {value!r}: use {shown}")
        return value

    return AfterValidator(check)


def _known_region(value: str | None) -> str | None:
    if value is not None and not is_known(value):
        raise ValueError(f"region {value!r} is not a region of Gansu (lmg.protocol.regions: 620102 a county, 620100 "
                         "a city, 620171 兰州新区, 620000 the province)")
    return value


# A region filter of a query: a node of lmg.protocol.regions (the schema lists them as its
# enum; this makes an unknown code a 400 rather than the store's UnknownRegion).
RegionFilter = Annotated[str | None, AfterValidator(_known_region)]


class PageQuery(Strict):
    """A page of a list ordered by id: `after` is the `next` of the previous page."""

    limit: int = Field(PAGE_DEFAULT, ge=1, le=PAGE_MAX, description="items per page")
    after: str | None = Field(None, pattern=r"^\d{1,18}$", description="the `next` of the previous page")


T = TypeVar("T")


class Page(Output, Generic[T]):
    items: list[T]
    next: str | None = Field(description="cursor of the following page (pass it as `after`), null at the end")


_SEAL_KEY: list[Any] = []


def seal(text: str) -> str:
    """An opaque cursor for `text` that a client cannot read (a resident ID number the token
    may not see); valid for this process's life. The key is made on first use."""
    from cryptography.fernet import Fernet

    if not _SEAL_KEY:
        _SEAL_KEY.append(Fernet(Fernet.generate_key()))
    return str(_SEAL_KEY[0].encrypt(text.encode()).decode())


def unseal(cursor: str | None) -> str:
    """The text of a `seal`ed cursor ("" for none); 400 if it is not one of this process's."""
    if not cursor:
        return ""
    from cryptography.fernet import Fernet, InvalidToken

    if not _SEAL_KEY:
        _SEAL_KEY.append(Fernet(Fernet.generate_key()))
    try:
        return str(_SEAL_KEY[0].decrypt(cursor.encode()).decode())
    except (InvalidToken, ValueError):
        raise ApiError(400, "bad_request", "after: not a cursor this gateway gave (cursors last until it "
                                           "restarts); start from the first page") from None


def cursor_value(after: str | None) -> int:
    """The id an `after` cursor stands for (0: the first page); 400 if it is not one of ours."""
    if after is None:
        return 0
    if not after.isdigit() or len(after) > 18:
        raise ApiError(400, "bad_request", "after: not a cursor this API gave; pass the `next` of the previous page")
    return int(after)


@dataclass
class ApiRequest:
    """What a handler gets: the checked inputs and who asks."""

    web: web.Request
    gateway: Gateway
    token: ApiToken | None
    path: Any = None
    query: Any = None
    body: Any = None

    @property
    def peer(self) -> str:
        return self.web.remote or ""

    @property
    def store(self) -> Any:
        return self.gateway.store

    def has_scope(self, scope: str) -> bool:
        return self.token is not None and scope in self.token.scopes

    @property
    def actor(self) -> str:
        """Who acts, for the audit log: the token's name."""
        return f"token:{self.token.name}" if self.token is not None else "anonymous"

    @property
    def region(self) -> str | None:
        """The node of lmg.protocol.regions the token is limited to; None: not limited (an
        operator's token, or a route without a token)."""
        return self.token.region_code if self.token is not None else None

    @property
    def department(self) -> str | None:
        """The supervisor's department code (construction 住建, labour 人社); None for an operator."""
        department = self.token.department if self.token is not None else None
        return None if department is None else str(department)

    def sees(self, region_code: str) -> bool:
        """Whether the token may see a thing of `region_code` (a device's, a project's, a
        warning's): its region covers it (never a code prefix: 620171 兰州新区 is not
        兰州市's), or it is not limited. The caller answers its own 404 when not."""
        return self.region is None or covers(self.region, region_code)

    def list_scope(self, wanted: str | None = None) -> str | None:
        """The region scope to list with: the narrower of the token's region and a `wanted`
        region filter (nodes of a tree either nest or are apart), None for no limit, or
        NOWHERE when the two are apart (the caller answers an empty page)."""
        mine = self.region
        if mine is None or wanted is None:
            return wanted if mine is None else mine
        if covers(mine, wanted):
            return wanted
        return mine if covers(wanted, mine) else NOWHERE

    def may_create_in(self, region_code: str) -> None:
        """403 unless the token's region covers `region_code`, where something is to be made."""
        if not self.sees(region_code):
            raise ApiError(403, "forbidden", f"this token is limited to region {self.region}, which does not "
                                             f"cover {region_code}; use a token of that region or above")

    def require_operator(self) -> None:
        """403 for a supervisor's token (one with a department or a region) on an operators' route."""
        if self.token is not None and (self.token.department is not None or self.token.region_code is not None):
            raise ApiError(403, "forbidden", f"this route is the platform operators' (forwarding to the province, "
                                             f"dead letters, the audit log), not a supervisor's; token "
                                             f"{self.token.name!r} is limited to region {self.token.region_code}: "
                                             f"use an operator's token (lmg token create without --department)")


Handler = Callable[[ApiRequest], Awaitable[Any]]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    scope: str | None  # None: no token needed (health, metrics, the document itself)
    summary: str
    tag: str
    path_model: type[BaseModel] | None = None
    query_model: type[BaseModel] | None = None
    body_model: type[BaseModel] | None = None
    response_model: Any = None  # a pydantic model class or a parametrised Page[...]
    response_content: str = "application/json"
    status: int = 200
    errors: tuple[int, ...] = ()  # answers besides success that this route gives on purpose
    description: str = ""
    name: str = ""
    operators_only: bool = False  # refused to supervisors' (region-limited) tokens: ApiRequest.require_operator

    def operation_id(self) -> str:
        return self.name or self.handler.__name__


_PATH_PARAM = re.compile(r"{(\w+)}")


@dataclass
class ApiRoutes:
    """The registry resource modules declare their routes in."""

    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, *, scope: str | None, summary: str, tag: str,
              path_model: type[BaseModel] | None = None, query_model: type[BaseModel] | None = None,
              body_model: type[BaseModel] | None = None, response_model: Any = None,
              response_content: str = "application/json", status: int = 200, errors: tuple[int, ...] = (),
              description: str = "", operators_only: bool = False) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            params = set(_PATH_PARAM.findall(path))
            declared = set(path_model.model_fields) if path_model else set()
            if params != declared:
                raise TypeError(f"{method} {path}: path parameters {sorted(params)} but model fields {sorted(declared)}")
            self.routes.append(Route(method, path, handler, scope, summary, tag, path_model, query_model, body_model,
                                     response_model, response_content, status, errors, description,
                                     operators_only=operators_only))
            return handler

        return register


def _fields_error(exc: ValidationError, where: str) -> ApiError:
    problems = []
    for error in exc.errors(include_url=False)[:10]:
        location = ".".join(str(part) for part in error["loc"])
        problems.append(f"{location}: {error['msg']}" if location else error["msg"])
    return ApiError(400, "bad_request", f"{where}: " + "; ".join(problems))


def _query_dict(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise ApiError(400, "bad_request", f"query parameter {key!r} given {len(values)} times; give it once")
        out[key] = values[0]
    return out


async def parse(route: Route, request: web.Request, req: ApiRequest) -> None:
    """Fill `req.path`, `req.query` and `req.body` from `request`, checked; ApiError if bad."""
    try:
        if route.path_model is not None:
            req.path = route.path_model.model_validate(dict(request.match_info))
    except ValidationError as exc:
        raise ApiError(404, "not_found", "no such resource: " + str(_fields_error(exc, "path"))) from None
    try:
        if route.query_model is not None:
            req.query = route.query_model.model_validate(_query_dict(request))
        elif request.query and route.scope is not None:  # probes may add cache-busters to /healthz
            raise ApiError(400, "bad_request", f"this route takes no query parameters, got {', '.join(request.query)}")
    except ValidationError as exc:
        raise _fields_error(exc, "query") from None
    if route.body_model is not None:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
        raw = await request.read()
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "bad_request", f"body is not JSON: {exc}") from None
        try:
            req.body = route.body_model.model_validate(data)
        except ValidationError as exc:
            raise _fields_error(exc, "body") from None


def render(route: Route, result: Any) -> web.StreamResponse:
    """A handler's result as the HTTP answer."""
    if isinstance(result, web.StreamResponse):
        return result
    status = route.status
    if isinstance(result, tuple):
        status, result = result
    if isinstance(result, BaseModel):
        return web.Response(body=result.model_dump_json().encode(), status=status, content_type="application/json")
    return json_response(result, status)
