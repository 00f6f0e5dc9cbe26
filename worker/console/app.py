"""The console's routes, mounted on the read API's app: `mount_console(app, settings, policy)`.

Pages are rendered on the server (Jinja2, autoescaped); the browser adds only the countdowns and
the charts (static/console.js, uPlot). Access follows the API's rule: a merchant's key reads that
merchant only, and anything else answers 404, as for what does not exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session

from config.settings import Settings
from models.policy import Policy
from worker.api import views
from worker.api.keys import Caller, authenticate, authenticate_digest, hash_key
from worker.console import pages, session

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    # everything the pages load is served from here; no inline script or style
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class NotFound(Exception):
    """A page the caller may not see, or that does not exist: the same 404 for both."""


def mount_console(app: FastAPI, settings: Settings, policy: Policy) -> None:
    """Add /console to an app built by worker.api.app.create_app (its sessions and clock)."""
    secret = settings.console_secret
    app.state.console = Console(
        settings=settings,
        policy=policy,
        secret=(secret.get_secret_value() if secret else secrets.token_urlsafe(32)).encode(),
        templates=Environment(
            loader=PackageLoader("worker.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        ),
    )
    templates = app.state.console.templates
    templates.filters.update(iso=pages.utc_iso, when=pages.when, duration=pages.duration)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(NotFound, _not_found)
    _routes(app)


@dataclass(frozen=True)
class Console:
    settings: Settings
    policy: Policy
    secret: bytes
    """Signs the session cookies."""
    templates: Environment

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(prefix=PREFIX, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _session(request: Request) -> Any:
    with request.app.state.sessions() as db:
        yield db


Db = Annotated[Session, Depends(_session)]


def _caller(request: Request, db: Db) -> Caller:
    """The logged-in caller, or a redirect to the login page."""
    console, now = _console(request), request.app.state.clock()
    max_age = timedelta(hours=console.settings.console_session_hours)
    token = request.cookies.get(session.COOKIE, "")
    digest = session.verify(token, console.secret, max_age, now) if token else None
    operator_key = console.settings.operator_api_key
    caller = authenticate_digest(db, digest, operator_key) if digest else None
    if caller is None:
        raise HTTPException(303, "log in", {"Location": f"{PREFIX}/login"})
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]


def _not_found(request: Request, error: Exception) -> Response:
    return _console(request).render("not_found.html", status=404)


def _routes(app: FastAPI) -> None:
    @app.get(PREFIX, include_in_schema=False)
    def home(caller: CallerDep) -> Response:
        return RedirectResponse(_home_of(caller), 303)

    @app.get(f"{PREFIX}/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        return _console(request).render("login.html")

    @app.post(f"{PREFIX}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        key = parse_qs((await request.body()).decode("utf-8", "replace")).get("key", [""])[0]
        return _log_in(request, key.strip())

    @app.post(f"{PREFIX}/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(session.COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    @app.get(f"{PREFIX}/merchants/{{merchant_id}}", include_in_schema=False)
    def merchant_page(
        request: Request,
        merchant_id: str,
        caller: CallerDep,
        db: Db,
        hours: Annotated[float, Query(gt=0, le=24 * 90)] = 48,
    ) -> Response:
        if not caller.may_read(merchant_id) or not views.merchant_exists(db, merchant_id):
            raise NotFound
        console = _console(request)
        context = pages.merchant(db, console.policy, merchant_id, hours, request.app.state.clock())
        return console.render("merchant.html", caller=caller, **context)

    @app.get(f"{PREFIX}/orders/{{order_id}}", include_in_schema=False)
    def order_page(request: Request, order_id: str, caller: CallerDep, db: Db) -> Response:
        exists, merchant_id = views.order_merchant(db, order_id)
        if not exists or not caller.may_read(merchant_id):
            raise NotFound
        context = pages.order(db, order_id, request.app.state.clock())
        return _console(request).render("order.html", caller=caller, **context)

    @app.get(f"{PREFIX}/operator", include_in_schema=False)
    def operator_page(request: Request, caller: CallerDep, db: Db) -> Response:
        if not caller.operator:
            raise NotFound
        console = _console(request)
        context = pages.operator(db, console.policy, request.app.state.clock())
        return console.render("operator.html", caller=caller, **context)


def _home_of(caller: Caller) -> str:
    return f"{PREFIX}/operator" if caller.operator else f"{PREFIX}/merchants/{caller.merchant_id}"


def _log_in(request: Request, key: str) -> Response:
    console = _console(request)
    with request.app.state.sessions() as db:
        caller = authenticate(db, key, console.settings.operator_api_key) if key else None
    if caller is None:
        return console.render("login.html", status=401, error="That key is not valid.")
    now: datetime = request.app.state.clock()
    response = RedirectResponse(_home_of(caller), 303)
    response.set_cookie(
        session.COOKIE,
        session.sign(hash_key(key), now, console.secret),
        max_age=int(console.settings.console_session_hours * 3600),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=console.settings.console_secure_cookie or request.url.scheme == "https",
    )
    return response
