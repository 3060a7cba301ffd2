"""The admin listener on aiohttp.web: health, readiness, metrics and the JSON API under /api/v1/.

Open to anyone who can reach it: `/healthz` (the process answers), `/readyz` (listeners
up, store answering and writable; 503 otherwise), `/metrics` (Prometheus text; no
personal data) and `/api/v1/openapi.json`. Everything else under `/api/v1/` needs an API
token (`Authorization: Bearer lmg_...`, see tokens.py) with the route's scope. `/console/`
is the supervision console (server/console/: HTML pages, accounts and sessions of their own).

Rules kept here:
- The listener binds loopback by default (`admin` setting). With no active token and no
  enabled console account in the store it refuses to listen on any other address, and
  says why: an API nobody can authenticate to must not face a network.
- A supervisor's token sees only what its region covers (api.py `ApiRequest`: lists are
  scoped, anything outside answers 404) and is refused the operators' routes with 403.
- 401 without a valid token, 403 without the scope; both are written to the audit log
  with the token's name (or why there was none), as is every change made through the
  API. A presented token is never logged or echoed.
- Bodies are bounded (`api_max_body_bytes`), request lines and header fields too (8 KiB,
  as aiohttp's defaults, set here explicitly). Every error is JSON with a message saying
  what to do; an unexpected error is logged with its traceback and answered 500 without
  details.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from lmg.server.admin import devices, forwarding, projects, punches, supervision, tokens
from lmg.server.admin.api import ApiError, ApiRequest, ApiRoutes, Output, Route, error_response, parse, render
from lmg.server.admin.openapi import document

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway

log = logging.getLogger("lmg.admin")

MAX_LINE_BYTES = MAX_FIELD_BYTES = 8190  # a request line or one header field; aiohttp's own defaults
GATEWAY = web.AppKey("gateway", object)

health = ApiRoutes()


class AdminRefused(Exception):
    """The admin listener will not start as configured; the message says why and what to do."""


class Health(Output):
    status: str


class Readiness(Output):
    status: str
    reason: str
    connections: int
    sessions: int


@health.route("GET", "/healthz", scope=None, tag="health", summary="the process answers", response_model=Health)
async def healthz(request: ApiRequest) -> Health:
    return Health(status="alive")


@health.route("GET", "/readyz", scope=None, tag="health", summary="ready to take terminals",
              response_model=Readiness, errors=(503,),
              description="200 when the listeners are up and the store answers and took the last write; 503 "
                          "with the reason otherwise.")
async def readyz(request: ApiRequest) -> tuple[int, Readiness]:
    gateway = request.gateway
    ok, why = await gateway.ready()
    body = Readiness(status="ready" if ok else "not ready", reason=why, connections=len(gateway.links),
                     sessions=len(gateway.sessions))
    return (200 if ok else 503), body


@health.route("GET", "/metrics", scope=None, tag="health", summary="Prometheus metrics",
              response_content="text/plain", description="Prometheus text format; docs/operations.md lists "
                                                          "every metric.")
async def metrics(request: ApiRequest) -> web.Response:
    from lmg.server.metrics import exposition

    body, content_type = exposition(request.gateway)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def all_routes() -> list[Route]:
    """Every route of the listener, in the order the document lists them."""
    return [*health.routes, *devices.routes.routes, *projects.routes.routes, *punches.routes.routes,
            *supervision.routes.routes, *forwarding.routes.routes]


def _handler(route: Route, gateway: Gateway) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        token = await _authenticate(request, route, gateway) if route.scope is not None else None
        api_request = ApiRequest(request, gateway, token)
        if route.operators_only:
            api_request.require_operator()
        await parse(route, request, api_request)
        return render(route, await route.handler(api_request))

    return handle


async def _refuse(request: web.Request, gateway: Gateway, status: int, reason: str, name: str, message: str) -> ApiError:
    try:
        await gateway.store.audit("api_auth_failed" if status == 401 else "api_forbidden", name,
                                  {"reason": reason, "method": request.method, "path": request.path},
                                  request.remote or "")
    except Exception as exc:  # noqa: BLE001 - the refusal stands even if the audit write fails
        log.warning("audit write failed for a refused API request: %s", exc)
    code = "unauthorized" if status == 401 else "forbidden"
    return ApiError(status, code, message)


async def _authenticate(request: web.Request, route: Route, gateway: Gateway) -> Any:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise await _refuse(request, gateway, 401, "no bearer token", "-",
                            "send an API token: Authorization: Bearer lmg_... (create one with `lmg token create`)")
    if not tokens.looks_like_token(presented):
        raise await _refuse(request, gateway, 401, "malformed token", "-",
                            "that is not an API token (lmg_ and 43 characters); check what you copied")
    token = await gateway.store.get_api_token_by_hash(tokens.token_hash(presented))
    if token is None or not token.active:
        raise await _refuse(request, gateway, 401, "unknown token" if token is None else "revoked token",
                            token.name if token is not None else "-",
                            "the token is unknown or revoked; `lmg token list` shows the active ones")
    if route.scope not in token.scopes:
        raise await _refuse(request, gateway, 403, f"needs scope {route.scope}", token.name,
                            f"token {token.name!r} lacks the {route.scope!r} scope this route needs; create a token "
                            f"with --scope {route.scope}")
    return token


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="lmg"'
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[GATEWAY].settings.gateway.api_max_body_bytes  # type: ignore[attr-defined]
        return error_response(413, "too_large", f"the body is over {limit} bytes (the api_max_body_bytes setting)")
    except web.HTTPMethodNotAllowed as exc:
        return error_response(405, "method_not_allowed", f"use {', '.join(sorted(exc.allowed_methods))} here")
    except web.HTTPNotFound:
        return error_response(404, "not_found", "unknown path; /api/v1/openapi.json lists the API")
    except web.HTTPException as exc:
        return error_response(exc.status, "http_error", exc.reason)
    except Exception:  # noqa: BLE001 - a bug: log it, tell the caller nothing internal
        log.exception("admin API request %s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "the gateway failed to answer; its log has the details")


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=gateway.settings.gateway.api_max_body_bytes, middlewares=[_errors])
    app[GATEWAY] = gateway
    routes = all_routes()
    spec = document(routes, version=_version())

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/api/v1/openapi.json", openapi)
    for route in routes:
        app.router.add_route(route.method, route.path, _handler(route, gateway))
    from lmg.server.console.app import build_console, favicon

    # The supervision console (issue 16): HTML pages with sessions of their own. A sub-app,
    # so its middleware answers every /console/ request (HTML errors, never this JSON).
    app.add_subapp("/console/", build_console(gateway))
    app.router.add_get("/favicon.ico", favicon)
    return app


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("longminggong-gateway")
    except metadata.PackageNotFoundError:
        return "0"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminServer:
    """The running listener, with the methods the gateway uses on its servers."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite):
        self.runner, self.site = runner, site
        self._closing = False

    def _server(self) -> asyncio.Server | None:
        return cast("asyncio.Server | None", self.site._server)  # aiohttp keeps the listening server here

    @property
    def sockets(self) -> list[Any]:
        server = self._server()
        return list(server.sockets) if server is not None else []

    def is_serving(self) -> bool:
        server = self._server()
        return not self._closing and server is not None and server.is_serving()

    def close(self) -> None:
        """Stop accepting; requests in progress finish in `wait_closed`."""
        self._closing = True
        server = self._server()
        if server is not None:
            server.close()

    async def wait_closed(self) -> None:
        await self.runner.cleanup()


async def start_admin(gateway: Gateway, host: str, port: int) -> AdminServer:
    """Listen on host:port; AdminRefused if that address is not loopback and neither a token nor an
    enabled console account exists."""
    if (not is_loopback(host) and await gateway.store.count_active_api_tokens() == 0
            and not any(not a.disabled for a in await gateway.store.list_console_accounts())):
        raise AdminRefused(
            f"the admin API would listen on {host}:{port}, beyond this machine, but no API token exists and no "
            "console account is enabled, so nobody could authenticate: create one first (`lmg token create "
            "--name NAME --scope read`, or `lmg account create NAME ...` for the console) or keep the admin "
            "listener on loopback (--admin 127.0.0.1:9180)")
    runner = web.AppRunner(build_app(gateway), access_log=None, handle_signals=False,
                           max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=128)
    await site.start()
    return AdminServer(runner, site)
