"""The Starlette application: core routes, plugin routes, lifespan and error handlers."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from runtime.config import Settings
from runtime.engine import Runtime
from runtime.errors import LoadError, MethodNotAllowed, NotFound, RuntimeFailure
from runtime.http import health, openapi
from runtime.http.functions import call_function, list_functions
from runtime.http.responses import error_response
from runtime.http.ws import websocket_endpoint

log = logging.getLogger("runtime.http")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    failure: RuntimeFailure
    if exc.status_code == 404:
        failure = NotFound(f"No route for {request.method} {request.url.path}")
    elif exc.status_code == 405:
        failure = MethodNotAllowed(f"Method {request.method} is not allowed for {request.url.path}")
    else:
        failure = RuntimeFailure(exc.detail)
        failure.status = exc.status_code  # type: ignore[misc]
        failure.code = "http_error"  # type: ignore[misc]
    response = error_response(failure)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def core_routes() -> list[BaseRoute]:
    return [
        Route("/fn/{name:str}", call_function, methods=["POST"]),
        Route("/fn", list_functions, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/version", health.version, methods=["GET"]),
        Route("/_runtime/status", health.status, methods=["GET"]),
        WebSocketRoute("/ws", websocket_endpoint),
    ]


def plugin_routes(runtime: Runtime) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    seen: dict[str, str] = {}
    for impl in reversed(runtime.plugins.hook.routes.get_hookimpls()):
        plugin = runtime.plugins.get_name(impl.plugin) or impl.plugin_name
        try:
            plugin_routes: list[BaseRoute] = impl.function() or []  # type: ignore[assignment]
        except Exception:
            raise LoadError(
                [f"plugin {plugin!r} failed in hook 'routes':\n{traceback.format_exc()}"]
            ) from None
        for route in plugin_routes:
            path = getattr(route, "path", repr(route))
            if path in seen:
                raise LoadError([f"route {path} is served by both {seen[path]!r} and {plugin!r}"])
            seen[path] = plugin
            routes.append(route)
    return routes


class FunctionCalls:
    """`POST /fn/<name>` straight to its handler, ahead of Starlette's middleware and router.

    This is the route every agent call takes; `call_function` already answers every outcome
    (errors included) itself, so the generic layers would only add their cost per call. Every
    other request goes through the Starlette app as usual.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.router = app.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/fn/") and len(path) > 4 and "/" not in path[4:]:
                scope["app"] = self.app
                scope["router"] = self.router
                scope["path_params"] = {"name": path[4:]}
                response = await call_function(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(runtime: Runtime) -> FunctionCalls:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        debug=False,
        routes=core_routes() + plugin_routes(runtime),
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception},
    )
    app.state.runtime = runtime

    def rebuild_routes() -> None:  # after a plugin reload: swap the route list at once
        app.router.routes = core_routes() + plugin_routes(runtime)

    runtime.rebuild_routes = rebuild_routes
    return FunctionCalls(app)


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FunctionCalls:
    """Build the app from settings (the environment when None)."""
    settings = settings or Settings.from_env()
    url = database_url or settings.database_url
    if not url:
        raise LoadError(
            ["DATABASE_URL is not set (swarm-runtime dev starts an embedded PostgreSQL)"]
        )
    return build_app(Runtime(settings, url))


def app_from_env() -> Any:
    """Factory for `uvicorn --factory runtime.http.app:app_from_env` (multi-worker serve)."""
    from runtime.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    return create_app(settings)
