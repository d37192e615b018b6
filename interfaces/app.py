"""The composition root: `create_app(settings)` wires the event store, projectors, logging and HTTP."""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.static_files import create_static_files_router

from domain.identity.access import BUILTIN_ROLES
from infrastructure.telemetry import tracing as telemetry
from infrastructure.telemetry.logging import configure_logging
from infrastructure.settings import Settings
from interfaces.http.errors import EXCEPTION_HANDLERS, envelope
from interfaces.http.cors import cors_config, refused_preflights_as_envelopes
from interfaces.http.kept_reads import KeptReads, kept_reads
from interfaces.http.middleware import DOCS_PATH, redact_span_url, request_context, request_ids
from interfaces.http.openapi import document_bodies, document_errors, document_security
from interfaces.http.identity.admin import PermissionAdminController, RoleAdminController, UserAdminController
from interfaces.http.identity.auth import AuthController
from interfaces.http.audit import AuditController
from interfaces.http.identity.accounts import AccountController, UserAccountAdminController
from interfaces.http.common import bounded_parameters
from interfaces.http.events import EventController
from interfaces.http.ops import OpsController
from interfaces.http.plugins import ArchiveController, PluginController
from interfaces.http.tasks import TaskController
from interfaces.http.sites.reports import ReportController
from interfaces.http.security import Rule, authorize, documented, rule_of
from interfaces.http.sites.extensions import ExtensionController
from interfaces.http.sites.site import SiteController
from interfaces.http.sites.sites import SitesController
from interfaces.http.wellformed import well_formed
from interfaces.runtime import ProjectionBehind, bootstrap, start_runtime, stop_runtime

MULTIPART_ALLOWANCE = 1024 * 1024  # the other form fields (config, auto_enable) and the multipart framing
MULTIPART_PARTS = 16  # form parts in one request; an install sends three
# Swagger UI's files come from the swagger-ui-py wheel and are served by Charter: the pages work offline
# and load nothing from another origin. (Found without importing the package, which is framework glue.)
SWAGGER_FILES = Path(importlib.util.find_spec("swagger_ui").submodule_search_locations[0]) / "static"
SWAGGER_ASSETS = f"{DOCS_PATH}/assets"


def docs_pages() -> list[SwaggerRenderPlugin]:
    return [
        SwaggerRenderPlugin(
            js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{SWAGGER_ASSETS}/favicon-32x32.png'>",
        )
    ]


def on_projection_behind(request: Request, exc: ProjectionBehind) -> Response:
    response = envelope(request, 503, "PROJECTION_BEHIND", str(exc), {"projection": exc.name, "position": exc.position})
    response.headers["Retry-After"] = "1"
    return response


async def admitted(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The one guard of every route: well-formed input, bounded parameters, then the access rule. One async
    guard, because Litestar runs a synchronous guard in a worker thread (and copies the handler per guard)."""
    well_formed(connection, handler)
    bounded_parameters(connection, handler)
    await authorize(connection, handler)


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
    found["plugins:declassify"] = "store sealed plugin configuration fields in clear (never implied by plugins:*)"
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


def http_tracing(tracing: telemetry.Tracing) -> list[OpenTelemetryPlugin]:
    """Litestar's own OpenTelemetry plugin (an HTTP server span per request, continuing the caller's
    traceparent) when tracing is on; nothing at all otherwise. Spans are named by method here and by
    route template once routed (interfaces.http.middleware), never by raw path."""
    if not tracing.enabled:
        return []
    config = OpenTelemetryConfig(
        tracer_provider=tracing.provider,
        scope_span_details_extractor=lambda scope: (str(scope.get("method", "HTTP")), {}),
        exclude_spans=["receive", "send"],  # no span per body chunk (an SSE stream sends for hours)
        server_request_hook_handler=redact_span_url,  # no access token or stream ticket in a span's URL
    )
    return [OpenTelemetryPlugin(config)]


def create_app(settings: Settings, *, authorization: bool = True, tracing: telemetry.Tracing | None = None) -> Litestar:
    """The app. `authorization=False` is for benchmarks measuring what authorization costs; never serve it.
    `tracing`: as the OTEL_* variables say unless given (tests give an in-memory exporter)."""
    try:
        configure_logging(settings.log_level, settings.log_json, settings.log_levels)
        tracing = telemetry.configure_tracing() if tracing is None else tracing
    except ValueError as exc:  # CHARTER_LOG_LEVELS or an OTEL_* variable, named in the message
        raise SystemExit(f"invalid setting: {exc}") from None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        previous = telemetry.install(tracing)
        runtime = await start_runtime(settings)
        runtime.authority.enabled = authorization
        app.state.runtime = runtime
        try:
            await bootstrap(runtime, route_permissions(app))
            # Everything made so far lives as long as the process: out of the collector's sight, a full
            # collection under load walks only what requests allocate (tens of ms less at the p99).
            gc.collect()
            gc.freeze()
            yield
        finally:
            await stop_runtime(runtime)
            tracing.flush()
            telemetry.install(previous)

    app = Litestar(
        route_handlers=[
            PluginController,
            ArchiveController,
            TaskController,
            ReportController,
            EventController,
            AuthController,
            AccountController,
            UserAdminController,
            UserAccountAdminController,
            RoleAdminController,
            PermissionAdminController,
            SitesController,
            SiteController,
            ExtensionController,
            OpsController,
            AuditController,
            create_static_files_router(
                path=SWAGGER_ASSETS, directories=[SWAGGER_FILES], include_in_schema=False, name="swagger-assets"
            ),
        ],
        guards=[admitted],
        lifespan=[lifespan],
        middleware=[request_context, kept_reads],
        plugins=http_tracing(tracing),
        exception_handlers={**EXCEPTION_HANDLERS, ProjectionBehind: on_projection_behind},
        cors_config=cors_config(
            settings.cors_origins, settings.cors_methods, settings.cors_headers, settings.cors_credentials,
            settings.cors_max_age,
        ),
        request_max_body_size=settings.archive_max_bytes + MULTIPART_ALLOWANCE,
        multipart_form_part_limit=MULTIPART_PARTS,
        openapi_config=OpenAPIConfig(
            title="Charter",
            version="1.0.0",
            description="Event-sourced control plane for plugins and extensions",
            path=DOCS_PATH,
            render_plugins=docs_pages(),
        ),
        debug=False,
    )
    app.state.kept_reads = KeptReads(settings.read_cache_entries)
    # Outside routing, CORS and the server span: unknown routes and refused preflights get a request id too.
    app.asgi_handler = request_ids(refused_preflights_as_envelopes(app.asgi_handler))
    check_every_route_has_a_rule(app)
    document_errors(app, app.openapi_schema)
    document_bodies(app, app.openapi_schema)
    document_security(app, app.openapi_schema)
    return app


def app_from_env() -> Litestar:
    """The app of one worker of `charter serve --workers N`, from the CHARTER_* variables the parent set; the
    worker ends with its supervisor (no orphan keeps the port or the leader locks)."""
    from interfaces.serving import end_with_parent

    end_with_parent()
    return create_app(Settings.from_env())
