"""The console's aiohttp sub-application: sessions, CSRF, security headers and HTML errors.

Mounted by the admin listener (server/admin/app.py `build_app`) with
`app.add_subapp("/console/", build_console(gateway))`: one listener to secure and expose.
Its own middleware answers every request under /console/ itself, so the admin API's JSON
error middleware never sees a console error: an unknown path is this app's 404 page
(a catch-all route), a refusal its 403 page.

Rules kept here (docs/console.md "Sign-in and sessions"):

- Every page but /console/login and /console/static/ needs a session: the cookie
  `lmg_console` (32 random bytes; the store keeps their SHA-256), HttpOnly, SameSite=Strict,
  Path=/console/, Secure when the request came over TLS or `console_secure_cookies` is on.
  A session ends `console_session_idle_s` after its last request (30 min) and
  `console_session_max_s` after login (12 h), and when its account is disabled or its
  password changed. Without one a page answers 303 to the login page (an htmx request gets
  `HX-Redirect`, so the whole page goes, not a fragment).
- Every POST carries the session's synchronizer CSRF token (form field `csrf`, or the
  `X-CSRF-Token` header htmx sends from <body hx-headers>); without a matching one it is a
  403 page and an audit row. The login form, before any session, is guarded by a double
  submit: a random cookie `lmg_console_login` whose value the form must echo.
- Every answer carries `Content-Security-Policy: default-src 'self'` (and friends) and
  `X-Frame-Options: DENY`: scripts are files under /console/static/ (htmx, ECharts and
  console.js), never inline, so the policy needs no exception.
- An error page never shows internal details; an unexpected error is logged with its
  traceback and answered 500.
- Every 403 is audited as `console_forbidden` with the actor `account:NAME` (or `-`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from lmg.server.admin.api import ApiRequest
from lmg.server.console import accounts
from lmg.server.console.lockout import LockoutPolicy
from lmg.storage import ApiToken, ConsoleAccount, ConsoleSession

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway

log = logging.getLogger("lmg.console")

HERE = Path(__file__).parent
COOKIE = "lmg_console"
LOGIN_COOKIE = "lmg_console_login"
PATH = "/console/"
CSRF_FIELD, CSRF_HEADER = "csrf", "X-CSRF-Token"
# A session's idle end moves on at most once a minute: each move is a store write (on
# SQLite a writer round trip and an fsync), and a minute is 3% of the 30-minute idle limit.
TOUCH_EVERY_MS = 60_000
PUBLIC = ("/console/login", "/console/static/")
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
IMAGE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'"
CONSOLE = web.AppKey("console", object)
# Why the login page is shown, by the code in its `why` parameter: only these texts, so a
# link cannot make the page say anything else.
WHY = {"ended": "会话已结束，请重新登录 (session ended: sign in again)",
       "expired": "会话已过期，请重新登录 (session expired: sign in again)",
       "disabled": "账户已停用 (account disabled)"}


class Refused(Exception):
    """A request the console answers with an error page: `status`, a Chinese `message`
    with English where an operator needs it, and the `reason` the audit log gets (403)."""

    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason or message


@dataclass
class Console:
    """What every handler shares: the gateway (store, settings, clock) and the policies."""

    gateway: Gateway
    lockout: LockoutPolicy

    @property
    def store(self) -> Any:
        return self.gateway.store

    def now_ms(self) -> int:
        return int(self.gateway.now_ms())

    @property
    def settings(self) -> Any:
        return self.gateway.settings.gateway


@dataclass
class Signed:
    """The signed-in person of a request: the account, its session and the API principal."""

    account: ConsoleAccount
    session: ConsoleSession
    principal: ApiToken

    @property
    def actor(self) -> str:
        return f"account:{self.account.name}"


@dataclass
class ConsoleRequest(ApiRequest):
    """The API's request object for a console call: the same scope rules (`sees`,
    `list_scope`, `require_operator`), with the account as the actor in the audit log."""

    account_name: str = ""

    @property
    def actor(self) -> str:
        return f"account:{self.account_name}"


SIGNED = web.RequestKey("signed", Signed)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]  # type: ignore[return-value]


def signed(request: web.Request) -> Signed:
    found = request.get(SIGNED)
    if found is None:
        raise Refused(401, "请先登录 Please sign in")
    return found


def api_request(request: web.Request, *, path: Any = None, query: Any = None, body: Any = None) -> ConsoleRequest:
    """An `ApiRequest` for the API's own functions, as the signed-in account."""
    who = signed(request)
    return ConsoleRequest(request, console_of(request).gateway, who.principal, path, query, body,
                          account_name=who.account.name)


async def audit(request: web.Request, event: str, detail: dict[str, Any], actor: str | None = None) -> None:
    """An audit row with the actor `account:NAME` (the signed-in one unless given; `-`
    before sign-in) and the peer."""
    found = request.get(SIGNED)
    if actor is None:
        actor = found.actor if found is not None else "-"
    try:
        await console_of(request).store.audit(event, actor, detail, request.remote or "")
    except Exception as exc:  # noqa: BLE001 - the answer stands even if the audit write fails
        log.warning("audit write failed for %s: %s", event, exc)


def secure_cookies(request: web.Request) -> bool:
    return request.secure or bool(console_of(request).settings.console_secure_cookies)


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, path=PATH, httponly=True, samesite="Strict", secure=secure_cookies(request),
                        max_age=max_age)


def clear_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    response.del_cookie(name, path=PATH, httponly=True, samesite="Strict", secure=secure_cookies(request))


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _to_login(request: web.Request, message: str = "") -> web.StreamResponse:
    wanted = request.path_qs if request.method == "GET" else PATH
    location = "/console/login?next=" + quote(wanted, safe="/")
    if message:
        location += "&why=" + quote(message)
    if request.headers.get("HX-Request"):
        return web.Response(status=200, headers={"HX-Redirect": location})
    response = redirect(location)
    clear_cookie(response, request, COOKIE)
    return response


async def _load_session(request: web.Request, console: Console) -> Signed | str:
    """The signed-in person, or why there is none: a key of `WHY`, which the login page
    shows ("" for no cookie at all)."""
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or len(cookie) > 64:
        return ""
    digest = accounts.session_hash(cookie)
    session = await console.store.get_console_session(digest)
    if session is None:
        return "ended"
    now = console.now_ms()
    idle_ms = int(console.settings.console_session_idle_s * 1000)
    if now >= session.expires_at_ms or now - session.last_seen_ms >= idle_ms:
        await console.store.end_console_sessions(id_sha256=digest)
        return "expired"
    account = await console.store.get_console_account(session.account)
    if account is None or account.disabled:
        await console.store.end_console_sessions(id_sha256=digest)
        return "disabled"
    if now - session.last_seen_ms >= TOUCH_EVERY_MS:
        await console.store.touch_console_session(digest, now)
    return Signed(account, session, accounts.principal(account))


async def _csrf_ok(request: web.Request, expected: str) -> bool:
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    return accounts.same_token(presented, expected)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    found = request.get(SIGNED)
    context = {"status": status, "message": message, "signed": found,
               "csrf": found.session.csrf_token if found is not None else "",
               "is_operator": found is not None and accounts.is_operator(found.account)}
    response = aiohttp_jinja2.render_template("error.html", request, context, status=status)
    return response


@web.middleware
async def _console(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    console = console_of(request)
    try:
        if not request.path.startswith(PUBLIC):
            found = await _load_session(request, console)
            if not isinstance(found, Signed):
                return _secured(request, _to_login(request, found))
            request[SIGNED] = found
            if request.method not in ("GET", "HEAD") and not await _csrf_ok(request, found.session.csrf_token):
                raise Refused(403, "表单已失效或来源不明，请刷新页面后重试 (CSRF token missing or wrong: reload the page)",
                              "csrf token missing or wrong")
        response = await handler(request)
    except Refused as exc:
        if exc.status == 403:
            await audit(request, "console_forbidden", {"method": request.method, "path": request.path,
                                                       "reason": exc.reason})
        response = error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status == 413:
            response = error_page(request, 413, "提交的内容过大 (request body too large)")
        elif exc.status in (301, 302, 303, 307, 308):
            response = exc
        else:
            response = error_page(request, exc.status, f"请求无法处理 ({exc.status} {exc.reason})")
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a bug: log it, show nothing internal
        log.exception("console request %s %s failed", request.method, request.path)
        response = error_page(request, 500, "服务器内部错误，详情见网关日志 (internal error; the gateway log has the "
                                            "details)")
    return _secured(request, response)


def _secured(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    # a photo opened in a tab of its own is drawn by the browser's image viewer, whose inline
    # styles `default-src 'self'` blocks (errors in the browser console): an image gets only those
    response.headers["Content-Security-Policy"] = IMAGE_CSP if response.content_type.startswith("image/") else CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if "Cache-Control" not in response.headers:
        # pages hold personal data: never kept; the vendored scripts change only with a release
        static = request.path.startswith("/console/static/") and response.status == 200
        response.headers["Cache-Control"] = "public, max-age=3600" if static else "no-store"
    return response


def build_console(gateway: Gateway) -> web.Application:
    """The console sub-application; mount it at /console/ on the admin app."""
    from lmg.server.console import pages

    settings = gateway.settings.gateway
    app = web.Application(middlewares=[_console])
    app[CONSOLE] = Console(gateway, LockoutPolicy(settings.console_lockout_threshold,
                                                  int(settings.console_lockout_base_s * 1000),
                                                  int(settings.console_lockout_max_s * 1000)))
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                               autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)
    pages.add_filters(env)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    pages.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def favicon(request: web.Request) -> web.StreamResponse:
    """The site's icon at /favicon.ico, which browsers ask for by themselves (a photo opened
    on its own has no page to name one): a 404 there is an error in every browser console."""
    return web.Response(body=(HERE / "static" / "favicon.svg").read_bytes(), content_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise Refused(404, "没有这个页面 (no such page)")
