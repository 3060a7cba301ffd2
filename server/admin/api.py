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
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway
    from lmg.storage import ApiToken

PAGE_DEFAULT, PAGE_MAX = 100, 1000  # a page of 1000 devices is ~300 KB of JSON


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
              description: str = "") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            params = set(_PATH_PARAM.findall(path))
            declared = set(path_model.model_fields) if path_model else set()
            if params != declared:
                raise TypeError(f"{method} {path}: path parameters {sorted(params)} but model fields {sorted(declared)}")
            self.routes.append(Route(method, path, handler, scope, summary, tag, path_model, query_model, body_model,
                                     response_model, response_content, status, errors, description))
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
