"""Each feature's services, wired into a starting runtime (interfaces/runtime.py calls these): sites, tasks and
the audit sealer."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from application.sites.handlers import HANDLERS as SITE_HANDLERS
from application.sites.ports import ArchivedReport
from application.sites.proposals import SiteServices
from application.tasks.handlers import HANDLERS as TASK_HANDLERS
from application.tasks.handlers import TaskServices
from application.tasks.ports import RunContext
from infrastructure.audit.sealer import Sealer
from infrastructure.audit.service import AuditService
from infrastructure.audit.signing import Signer
from infrastructure.eventlog.rebuild import rebuild
from infrastructure.identity.keys import CONFIGURATION_HASH, server_key
from infrastructure.identity.reauthentication import SignerReauthentication
from infrastructure.settings import Settings
from infrastructure.tasks.actions import AllowList, builtin_registry
from infrastructure.tasks.scheduler import Scheduler, SchedulerSettings
from interfaces import reporting
from projections.tasks.queries import Catalog

if TYPE_CHECKING:
    from interfaces.runtime import Runtime


def start_audit(runtime: Runtime, settings: Settings) -> None:
    """The sealer's key (made on first start) and, unless its interval is 0, the sealer itself."""
    signer = Signer.load_or_create(settings.audit_key_file())
    runtime.audit = AuditService(runtime.pool, signer)
    if settings.audit_seal_interval > 0:
        sealer = Sealer(
            runtime.pool, runtime.store, signer, interval=settings.audit_seal_interval,
            max_events=settings.audit_checkpoint_events,
        )  # fmt: skip
        runtime.tasks.append(asyncio.create_task(sealer.run(), name="sealer"))


async def start_sites(runtime: Runtime) -> None:
    """The sites feature's services (signers re-authenticate with the access tokens' service)."""
    authority = runtime.authority
    reauthentication = SignerReauthentication(
        runtime.repository, runtime.passwords, authority.tokens, dummy_hash=runtime.dummy_hash,
        revoked=authority.session_revoked,
    )
    runtime.sites = SiteServices(
        repository=runtime.repository,
        cipher=runtime.cipher,
        sandbox=runtime.sandbox,
        reauthentication=reauthentication,
        hash_key=await server_key(runtime.pool, CONFIGURATION_HASH),
    )
    runtime.application.register(SITE_HANDLERS, runtime.sites)


def start_tasks(runtime: Runtime) -> None:
    """The tasks feature: built-in actions, the handlers, and this replica's scheduler (every replica may
    run one: a tick is requested by all and run by one)."""
    settings = runtime.settings

    async def nats() -> Any:
        if runtime.task_nats is None:
            import nats as nats_client

            runtime.task_nats = await nats_client.connect(settings.nats_url)
        return runtime.task_nats

    async def rebuild_one(name: str) -> int:
        return await rebuild(settings.database_url, [runtime.projections[name]], chunk=settings.rebuild_chunk)

    async def verify(from_checkpoint: int, max_events: int | None) -> tuple[Any, Any]:
        return await runtime.audit.verify(from_checkpoint, max_events)  # the audit service starts after this

    archive = runtime.report_archive  # made with the runtime, before its features start

    async def archive_report(site_id: str, fmt: str, run: RunContext) -> ArchivedReport:
        generated = await reporting.compliance(runtime.history, site_id, None, None, fmt, datetime.now(timezone.utc))
        report, rendered = generated.report, generated.rendered
        return await archive.keep(
            site_id, fmt, report["as_of"], report["position"], rendered.sha256, rendered.document, run.task_id, run.run_id
        )

    actions = builtin_registry(
        AllowList.parse(settings.task_url_allowlist), projections=list(runtime.projections), rebuild=rebuild_one,
        nats=nats if settings.nats_url else None, reserved_subject=settings.nats_subject_prefix,
        verify=verify, archive_report=archive_report,
    )
    scheduler = Scheduler(
        runtime.repository, Catalog(runtime.pool), actions, replica=f"{socket.gethostname()}:{os.getpid()}",
        settings=SchedulerSettings(tick=settings.task_tick, refresh=settings.task_refresh, reload=settings.task_reload,
                                   misfire_grace=settings.task_misfire_grace),
    )
    runtime.task_services = TaskServices(runtime.repository, actions, scheduler if settings.run_scheduler else None)
    runtime.application.register(TASK_HANDLERS, runtime.task_services)
    if settings.run_scheduler:
        runtime.scheduler = scheduler
        runtime.tasks.append(asyncio.create_task(scheduler.run(), name="task-scheduler"))
