"""The console's Starlette application: login, roles, CSRF, security headers, and the page routes.

State lives on ``app.state``: ``settings``, ``feed`` (the Kafka reader, started in the lifespan unless
the caller runs it) and the templates. Pages are server-rendered Jinja; the live feed is server-sent
events (``/events``) read by one small script, ``static/console.js`` (no build step). The content
security policy allows scripts, styles and images from the console itself only.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from citystream.console import auth
from citystream.console.feed import Feed
from citystream.console.labels import label, plain
from citystream.retry import Backoff
from citystream.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
COOKIE = "citystream_console"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """The request needs a logged-in user (HTML pages redirect to the login form)."""


def current_user(request: Request) -> auth.User | None:
    """The logged-in user of this request (re-read from settings, so a removed user is out at once)."""
    login = request.session.get("login")
    if not isinstance(login, str):
        return None
    return auth.user_of(request.app.state.settings.console, login)


def require(request: Request, permission: str = "view") -> auth.User:
    """The logged-in user if their role has ``permission``; otherwise 401 (LoginRequired) or 403."""
    user = current_user(request)
    if user is None:
        raise LoginRequired()
    if not user.can(permission):
        raise HTTPException(403, f"{plain('forbidden')}: {user.role} ({permission})")
    return user


async def check_csrf(request: Request) -> dict[str, Any]:
    """The POSTed form (empty for JSON/fetch posts) after checking the session's CSRF token; 403 otherwise."""
    form: dict[str, Any] = {}
    given = request.headers.get("x-csrf-token")
    if given is None and "form" in request.headers.get("content-type", ""):
        form = dict(await request.form(max_part_size=5 * 1024 * 1024))
        given = str(form.get("csrf", "")) or None
    if not auth.csrf_ok(request.session.get("csrf"), given):
        raise HTTPException(403, "CSRF token missing or wrong; reload the page")
    return form


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A page with the common context (user, CSRF token, labels)."""
    settings: Settings = request.app.state.settings
    lang = settings.console.language
    base = {"user": current_user(request), "csrf": request.session.get("csrf", ""), "lang": lang,
            "t": lambda key: label(key, lang), "tp": lambda key: plain(key, lang)}
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


async def login_form(request: Request) -> Response:
    """The login page (its form carries a CSRF token of the not-yet-logged-in session)."""
    request.session.setdefault("csrf", auth.new_csrf_token())
    return render(request, "login.html", {"error": False, "next": request.query_params.get("next", "/")})


async def login(request: Request) -> Response:
    """Check the credentials; on success start a fresh session (new CSRF token)."""
    form = dict(await request.form(max_fields=10))
    if not auth.csrf_ok(request.session.get("csrf"), str(form.get("csrf", "")) or None):
        raise HTTPException(403, "CSRF token missing or wrong; reload the login page")
    login_name, password = str(form.get("username", "")), str(form.get("password", ""))
    throttle: auth.Throttle = request.app.state.throttle
    if not throttle.allowed(login_name):
        return render(request, "login.html", {"error": "too_many", "next": "/"}, status_code=429)
    user = await run_in_threadpool(auth.authenticate, request.app.state.settings.console, login_name, password)
    if user is None:
        throttle.failed(login_name)
        return render(request, "login.html", {"error": "bad_login", "next": "/"}, status_code=401)
    throttle.succeeded(login_name)
    request.session.clear()
    request.session.update({"login": user.login, "csrf": auth.new_csrf_token()})
    target = str(form.get("next", "/"))
    return RedirectResponse(target if target.startswith("/") and not target.startswith("//") else "/", 303)


async def logout(request: Request) -> Response:
    """End the session."""
    await check_csrf(request)
    request.session.clear()
    return RedirectResponse("/login", 303)


async def home(request: Request) -> Response:
    """The camera wall is the start page."""
    require(request)
    return RedirectResponse("/cameras", 303)


async def healthz(request: Request) -> Response:
    """Liveness, and whether the feed reads Kafka."""
    feed: Feed = request.app.state.feed
    return JSONResponse({"ok": True, "feed_connected": feed.connected, "feed_items": len(feed.items)})


def _on_login_required(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith(("/api/", "/events", "/frames/")) or request.method != "GET":
        return JSONResponse({"error": "login required"}, status_code=401)
    return RedirectResponse(f"/login?next={request.url.path}", 303)


def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/") or request.headers.get("x-csrf-token"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code)


class SecurityHeaders:
    """ASGI middleware adding the content security policy and friends to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on; add the headers to the response start."""
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _v in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()
                            if k.lower().encode() not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def restore_actions(settings: Settings, feed: Feed, stop: threading.Event, retry_max_s: float = 10.0) -> None:
    """Load the console's alert acknowledgements and closures from the audit log once the store answers."""
    from citystream.audit import entries
    from citystream.console.store import check_reachable

    backoff = Backoff(1.0, retry_max_s)
    while not stop.is_set():
        try:
            check_reachable(settings)
            count = feed.restore(entries(settings, limit=10_000))
            log.info("console: alert actions restored from the audit log", extra={"count": count})
            return
        except Exception as exc:  # store not there yet (no sink), audit table missing: try again later
            log.info("console: audit log not readable yet", extra={"error": str(exc)[:200]})
        stop.wait(backoff.next())


def create_app(settings: Settings, feed: Feed | None = None, run_feed: bool = True) -> Starlette:
    """The console app on ``settings``; starts ``feed``'s Kafka reader for its lifetime when ``run_feed``."""
    from citystream.console import live, pages

    feed = feed or Feed(settings)

    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if run_feed:
            feed.start()
            threading.Thread(target=restore_actions, args=(settings, feed, stop), name="console-restore",
                             daemon=True).start()
        try:
            yield
        finally:
            stop.set()
            if run_feed:
                feed.stop()

    secret = settings.console.session_secret.get_secret_value() or secrets.token_urlsafe(32)
    routes = [
        Route("/", home), Route("/login", login_form, methods=["GET"]), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]), Route("/healthz", healthz),
        *pages.ROUTES, *live.ROUTES,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders), Middleware(SessionMiddleware, secret_key=secret, session_cookie=COOKIE,
                             max_age=settings.console.session_max_age_s, same_site="strict",
                             https_only=settings.console.tls)]
    handlers: dict[Any, Callable[[Request, Exception], Response | Awaitable[Response]]] = {
        LoginRequired: _on_login_required, HTTPException: _on_http}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.settings = settings
    app.state.feed = feed
    app.state.throttle = auth.Throttle()
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    return app
