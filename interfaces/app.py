"""The composition root: `create_app(settings)` wires the event store, projectors, logging and HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from domain.access import BUILTIN_ROLES
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings
from interfaces.http.errors import EXCEPTION_HANDLERS, envelope
from interfaces.http.middleware import request_context
from interfaces.http.admin import PermissionAdminController, RoleAdminController, UserAdminController
from interfaces.http.auth import AuthController
from interfaces.http.common import bounded_parameters
from interfaces.http.events import EventController
from interfaces.http.ops import OpsController
from interfaces.http.plugins import ArchiveController, PluginController
from interfaces.http.security import Rule, authorize, documented, rule_of
from interfaces.runtime import ProjectionBehind, bootstrap, start_runtime, stop_runtime

MAX_UPLOAD = 50 * 1024 * 1024


def on_projection_behind(request: Request, exc: ProjectionBehind) -> Response:
    response = envelope(request, 503, "PROJECTION_BEHIND", str(exc), {"projection": exc.name, "position": exc.position})
    response.headers["Retry-After"] = "1"
    return response


def route_permissions(app: Litestar) -> dict[str, str]:
    """Every permission a route asks for or a built-in role holds: the built-in permission catalog."""
    found = {
        r.permission: f"needed by {', '.join(sorted(h.operation_id or h.name or '?' for h in handlers))}"
        for r, handlers in _rules(app).items()
        if r.permission
    }
    for name, (_, permissions) in BUILTIN_ROLES.items():
        for permission in permissions:
            if "*" not in permission:
                found.setdefault(permission, f"held by the built-in role {name}")
    found.setdefault("plugins:read_secrets", "read plugin secrets in clear (include_secrets=true)")
    return found


def _rules(app: Litestar) -> dict[Rule, list[Any]]:
    rules: dict[Rule, list[Any]] = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            declared = rule_of(handler)
            if declared is not None:
                rules.setdefault(declared, []).append(handler)
    return rules


def check_every_route_has_a_rule(app: Litestar) -> None:
    missing = [
        f"{sorted(handler.http_methods)} {route.path}"
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        if rule_of(handler) is None and documented(handler)
    ]
    if missing:
        raise RuntimeError(f"routes without an access rule: {missing}")


def create_app(settings: Settings, *, authorization: bool = True) -> Litestar:
    """The app. `authorization=False` is for benchmarks measuring what authorization costs; never serve it."""
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = await start_runtime(settings)
        runtime.authority.enabled = authorization
        app.state.runtime = runtime
        try:
            await bootstrap(runtime, route_permissions(app))
            yield
        finally:
            await stop_runtime(runtime)

    app = Litestar(
        route_handlers=[
            PluginController,
            ArchiveController,
            EventController,
            AuthController,
            UserAdminController,
            RoleAdminController,
            PermissionAdminController,
            OpsController,
        ],
        guards=[bounded_parameters, authorize],
        lifespan=[lifespan],
        middleware=[request_context],
        exception_handlers={**EXCEPTION_HANDLERS, ProjectionBehind: on_projection_behind},
        request_max_body_size=MAX_UPLOAD,
        openapi_config=OpenAPIConfig(
            title="Charter",
            version="1.0.0",
            description="Event-sourced control plane for plugins and extensions",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(), ScalarRenderPlugin(path="/scalar")],
        ),
        debug=False,
    )
    check_every_route_has_a_rule(app)
    return app
