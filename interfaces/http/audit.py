"""Tamper evidence for auditors: the sealer's public key (`GET /api/v1/audit/public-key`) and the online
check of chains, checkpoints and signatures (`GET /api/v1/audit/verify`), bounded per request."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from interfaces.http import dependencies as services
from interfaces.http.errors import ApiError
from interfaces.http.security import PUBLIC, rule
from interfaces.runtime import AuditService, RangeNotFound, VerificationBusy

DEFAULT_EVENTS = 50_000
MAX_EVENTS = 200_000  # one request checks at most about this many events (a page past it at most)
MAX_CHECKPOINT = 2**31 - 1
MAX_FINDINGS = 1_000  # listed in a response; `findings_total` counts them all


class AuditPublicKey(msgspec.Struct):
    algorithm: str
    public_key_pem: str
    fingerprint: str


class AuditFinding(msgspec.Struct):
    kind: str
    position: int | None
    stream_id: str | None
    stream_version: int | None
    detail: str


class AuditVerification(msgspec.Struct):
    ok: bool
    complete: bool  # the run reached the end of the log
    from_checkpoint: int
    last_checkpoint: int | None  # pass it as from_checkpoint to go on where this run stopped
    last_position: int | None
    events: int
    streams: int
    checkpoints: int
    sealed_to_position: int | None
    unsealed: int
    findings: list[AuditFinding]
    findings_total: int


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]
    dependencies = services.AUDIT

    @get("/public-key", operation_id="auditPublicKey", opt=PUBLIC, summary="The sealer's Ed25519 public key (PEM) and its fingerprint")
    async def public_key(self, audit: NamedDependency[AuditService]) -> AuditPublicKey:
        key = audit.public_key()
        return AuditPublicKey(key.algorithm, key.public_key_pem, key.fingerprint)

    @get(
        "/verify",
        operation_id="auditVerify",
        opt=rule("audit:read"),
        summary="Check hash chains, checkpoints and signatures over a bounded range of the log, online",
    )
    async def verify(
        self,
        audit: NamedDependency[AuditService],
        from_checkpoint: FromQuery[int] = 0,
        max_events: FromQuery[int] = DEFAULT_EVENTS,
    ) -> AuditVerification:
        if not 0 <= from_checkpoint <= MAX_CHECKPOINT:
            raise ApiError(400, "VALIDATION_FAILED", f"from_checkpoint must be between 0 and {MAX_CHECKPOINT}", field="from_checkpoint")
        if not 1 <= max_events <= MAX_EVENTS:
            raise ApiError(400, "VALIDATION_FAILED", f"max_events must be between 1 and {MAX_EVENTS}", field="max_events")
        try:
            report, progress = await audit.verify(from_checkpoint, max_events)
        except RangeNotFound as exc:
            raise ApiError(404, "CHECKPOINT_NOT_FOUND", str(exc), field="from_checkpoint") from None
        except VerificationBusy as exc:
            raise ApiError(429, "VERIFICATION_BUSY", str(exc)) from None
        findings = [AuditFinding(f.kind, f.position, f.stream_id, f.stream_version, f.detail) for f in report.findings[:MAX_FINDINGS]]
        return AuditVerification(
            ok=report.ok, complete=progress.complete, from_checkpoint=from_checkpoint,
            last_checkpoint=progress.last_checkpoint, last_position=progress.last_position, events=report.events,
            streams=report.streams, checkpoints=report.checkpoints, sealed_to_position=report.sealed_to_position,
            unsealed=report.unsealed, findings=findings, findings_total=report.findings_total,
        )  # fmt: skip
