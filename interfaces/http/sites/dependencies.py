"""What the sites controllers use, as Litestar dependencies: the bus, the validation queries bound to the
sites feature's services, the sites read model, and the authority (for the caller's grants)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from application.sites import validation
from application.sites.proposals import SiteServices
from application.sites.validation import Validation
from interfaces.http.dependencies import PLUGINS, REPORTS
from projections.sites.queries import SiteQueries


@dataclass(frozen=True)
class SiteChecks:
    """Validation without recording anything (application/sites/validation.py), from the streams."""

    services: SiteServices

    async def activation(self, site_id: str, plugin_id: str, version: str | None, configuration: dict[str, Any]) -> Validation:
        return await validation.validate_activation(self.services, site_id, plugin_id, version, configuration)

    async def combination(self, site_id: str, extensions: list[tuple[str, str | None]]) -> Validation:
        return await validation.validate_combination(self.services, site_id, extensions)


@dataclass(frozen=True)
class SiteReads:
    """The sites read model's queries, and how to wait until the projection reached a position."""

    queries: SiteQueries
    wait_for: Callable[[str, int | None], Awaitable[None]]


def provide_checks(state: State) -> SiteChecks:
    return SiteChecks(state.runtime.sites)


def provide_reads(state: State) -> SiteReads:
    runtime = state.runtime
    return SiteReads(SiteQueries(runtime.pool), runtime.wait_for)


SITES = {
    "commands": PLUGINS["commands"],
    "authority": PLUGINS["authority"],
    "checks": Provide(provide_checks, sync_to_thread=False),
    "reads": Provide(provide_reads, sync_to_thread=False),
    "history": REPORTS["history"],  # ?as_of=: the log replayed as of a point
}
