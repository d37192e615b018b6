"""The composition root: `create_app(settings)` wires the event store, projectors, logging and HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from infrastructure.logging import configure_logging
from infrastructure.settings import Settings
from interfaces.http.errors import EXCEPTION_HANDLERS, envelope
from interfaces.http.middleware import request_context
from interfaces.http.events import EventController
from interfaces.http.ops import OpsController
from interfaces.http.plugins import ArchiveController, PluginController
from interfaces.runtime import ProjectionBehind, start_runtime, stop_runtime

MAX_UPLOAD = 50 * 1024 * 1024


def on_projection_behind(request: Request, exc: ProjectionBehind) -> Response:
    response = envelope(request, 503, "PROJECTION_BEHIND", str(exc), {"projection": exc.name, "position": exc.position})
    response.headers["Retry-After"] = "1"
    return response


def create_app(settings: Settings) -> Litestar:
    configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.runtime = await start_runtime(settings)
        try:
            yield
        finally:
            await stop_runtime(app.state.runtime)

    return Litestar(
        route_handlers=[PluginController, ArchiveController, EventController, OpsController],
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
