"""The dispatcher decides a command again when another writer moved its stream on (no I/O: an in-memory store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from application.commands import InstallPlugin, RestartPlugin, UninstallPlugin
from application.context import CommandContext
from application.errors import ConcurrencyError, IdempotencyKeyReused, PreconditionFailed
from application.plugins.handlers import PluginServices
from application.ports import AppendRequest, AppendResult, Idempotency, StoredEvent
from application.bus import Application, RetryPolicy
from domain.plugins.errors import PluginAlreadyInstalled, PluginNotInstalled
from infrastructure.eventlog.repository import AggregateRepository

PLUGIN = "retried"
STREAM = f"plugin:{PLUGIN}"


class MemoryStore:
    """The event store's contract in memory: an append lands at its expected version or raises
    ConcurrencyError; an Idempotency-Key is recorded with its events, and a known key answers its
    first result. Every read and append yields to the loop, as a round trip would."""

    def __init__(self) -> None:
        self.streams: dict[str, list[StoredEvent]] = {}
        self.keys: dict[str, tuple[str, AppendResult]] = {}
        self.position = 0
        self.appends = 0
        self.rival: Callable[[], Awaitable[None]] | None = None  # runs once, just before the next append

    async def read_stream(self, stream_id: str) -> list[StoredEvent]:
        await asyncio.sleep(0)
        return list(self.streams.get(stream_id, []))

    async def idempotent_result(self, idempotency: Idempotency) -> AppendResult | None:
        await asyncio.sleep(0)
        if idempotency.key not in self.keys:
            return None
        fingerprint, result = self.keys[idempotency.key]
        if fingerprint != idempotency.fingerprint:
            raise IdempotencyKeyReused(idempotency.key)
        return AppendResult(result.stream_id, result.version, result.position, duplicate=True)

    async def append(self, request: AppendRequest) -> AppendResult:
        rival, self.rival = self.rival, None
        if rival is not None:
            await rival()
        await asyncio.sleep(0)
        self.appends += 1
        stream = self.streams.setdefault(request.stream_id, [])
        key = request.idempotency
        if key is not None and key.key in self.keys:
            return await self.idempotent_result(key)
        if request.expected_version != len(stream):
            raise ConcurrencyError(request.stream_id, request.expected_version, len(stream))
        for event in request.events:
            self.position += 1
            stream.append(
                StoredEvent(
                    position=self.position,
                    transaction_id=self.position,
                    event_id=event.event_id,
                    stream_id=event.stream_id,
                    stream_type=event.stream_type,
                    stream_version=event.stream_version,
                    event_type=event.event_type,
                    schema_version=event.schema_version,
                    payload=event.payload,
                    metadata=event.metadata,
                    site_id=event.site_id,
                    recorded_at=event.recorded_at,
                    hash=b"",
                )
            )
        result = AppendResult(request.stream_id, len(stream), self.position)
        if key is not None:
            self.keys[key.key] = (key.fingerprint, result)
        return result

    async def append_all(self, requests: list[AppendRequest]) -> list[AppendResult]:
        """Several streams at once, all or none (only the first carries the command's key)."""
        if len(requests) > 1:
            for request in requests:
                current = len(self.streams.get(request.stream_id, []))
                if request.expected_version != current:
                    raise ConcurrencyError(request.stream_id, request.expected_version, current)
        return [await self.append(request) for request in requests]

    def event_types(self, stream_id: str = STREAM) -> list[str]:
        return [e.event_type.split(".", 1)[1] for e in self.streams.get(stream_id, [])]


class InlineSandbox:
    """Runs the pure function in place: these manifests carry no schema, so nothing can run long."""

    async def run(self, fn, *args, over_limit):
        return fn(*args)


class Harness:
    def __init__(self, retries: int = 5) -> None:
        self.store = MemoryStore()
        self.retried: list[str] = []
        self.waits: list[float] = []
        services = PluginServices(
            repository=AggregateRepository(self.store),  # type: ignore[arg-type]
            cipher=None,  # type: ignore[arg-type]  # no secrets in these manifests
            archives=None,  # type: ignore[arg-type]  # no archives uploaded
            host_version="1.0.0",
            sandbox=InlineSandbox(),
        )
        self.app = Application(
            self.store,  # type: ignore[arg-type]
            services,
            fingerprint_key=b"test fingerprint key",
            retry=RetryPolicy(retries=retries, backoff=0.002),
            on_retry=self.retried.append,
            sleep=self.wait,
        )

    async def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)

    async def install(self, plugin_id: str = PLUGIN, **ctx: Any):
        manifest = {"id": plugin_id, "name": plugin_id.title(), "version": "1.0.0"}
        return await self.app.execute(InstallPlugin(manifest=manifest, source={"kind": "test"}), CommandContext(**ctx))

    def rival_writes(self, command: Any, times: int = 1) -> None:
        """Another writer gets its command in just before each of our next `times` appends."""

        async def write() -> None:
            nonlocal times
            times -= 1
            await self.app.execute(command, CommandContext(actor="rival"))
            if times:
                self.store.rival = write  # armed again for our next append, not for the rival's own

        self.store.rival = write


@pytest.fixture
async def harness() -> Harness:
    h = Harness()
    await h.install()
    return h


class TestRacingCommandsWithoutIfMatch:
    async def test_thirty_restarts_of_one_plugin_all_succeed(self, harness: Harness) -> None:
        results = await asyncio.gather(
            *(harness.app.execute(RestartPlugin(plugin_id=PLUGIN, reason=f"r{i}"), CommandContext()) for i in range(30))
        )

        assert sorted(r.version for r in results) == list(range(2, 32))
        assert harness.store.event_types() == ["Installed"] + ["Restarted"] * 30
        assert len(harness.retried) >= 29, "the restarts did not race, the test proves nothing"

    async def test_a_command_that_lost_its_race_is_decided_again_on_the_new_version(self, harness: Harness) -> None:
        harness.rival_writes(RestartPlugin(plugin_id=PLUGIN, reason="rival"), times=2)

        result = await harness.app.execute(RestartPlugin(plugin_id=PLUGIN, reason="mine"), CommandContext())

        assert result.version == 4
        assert harness.store.event_types() == ["Installed", "Restarted", "Restarted", "Restarted"]
        assert harness.retried == ["RestartPlugin", "RestartPlugin"]

    async def test_the_retried_decision_answers_the_domains_refusal(self, harness: Harness) -> None:
        harness.rival_writes(UninstallPlugin(plugin_id=PLUGIN))

        with pytest.raises(PluginNotInstalled):
            await harness.app.execute(RestartPlugin(plugin_id=PLUGIN), CommandContext())

        assert harness.store.event_types() == ["Installed", "Uninstalled"]

    async def test_gives_up_with_a_version_conflict_after_the_bounded_retries(self) -> None:
        harness = Harness(retries=3)
        await harness.install()
        harness.rival_writes(RestartPlugin(plugin_id=PLUGIN, reason="rival"), times=4)

        with pytest.raises(ConcurrencyError) as refused:
            await harness.app.execute(RestartPlugin(plugin_id=PLUGIN, reason="mine"), CommandContext())

        assert refused.value.code == "VERSION_CONFLICT"
        assert len(harness.retried) == 3
        assert all(0 <= wait <= 0.002 * 2**n for n, wait in enumerate(harness.waits, start=1)), harness.waits
        assert harness.store.event_types() == ["Installed"] + ["Restarted"] * 4  # the rivals' only


class TestIfMatch:
    async def test_a_conflict_at_append_is_a_failed_precondition_without_retry(self, harness: Harness) -> None:
        harness.rival_writes(RestartPlugin(plugin_id=PLUGIN, reason="rival"))

        with pytest.raises(PreconditionFailed) as refused:
            await harness.app.execute(RestartPlugin(plugin_id=PLUGIN), CommandContext(expected_version=1))

        assert refused.value.code == "PRECONDITION_FAILED"
        assert (refused.value.details["expected_version"], refused.value.details["current_version"]) == (1, 2)
        assert harness.retried == []
        assert harness.store.event_types() == ["Installed", "Restarted"]

    async def test_racing_writers_naming_one_version_one_wins_the_rest_fail_the_precondition(self, harness: Harness) -> None:
        outcomes = await asyncio.gather(
            *(harness.app.execute(RestartPlugin(plugin_id=PLUGIN), CommandContext(expected_version=1)) for _ in range(10)),
            return_exceptions=True,
        )

        assert len([o for o in outcomes if not isinstance(o, BaseException)]) == 1
        assert [type(o) for o in outcomes if isinstance(o, BaseException)] == [PreconditionFailed] * 9
        assert harness.retried == []


class TestIdempotencyKeyAcrossRetries:
    async def test_a_retried_command_records_its_key_once(self, harness: Harness) -> None:
        harness.rival_writes(RestartPlugin(plugin_id=PLUGIN, reason="rival"))
        ctx = CommandContext(idempotency_key="restart-once")
        command = RestartPlugin(plugin_id=PLUGIN, reason="mine")

        first = await harness.app.execute(command, ctx)
        again = await harness.app.execute(command, ctx)

        assert (first.version, first.duplicate) == (3, False)
        assert (again.version, again.position, again.duplicate) == (3, first.position, True)
        assert harness.store.event_types() == ["Installed", "Restarted", "Restarted"]
        assert list(harness.store.keys) == ["restart-once"]

    async def test_a_retry_finding_its_key_taken_by_a_twin_answers_the_twins_result(self, harness: Harness) -> None:
        ctx = CommandContext(idempotency_key="twins")
        command = RestartPlugin(plugin_id=PLUGIN, reason="twin")

        outcomes = await asyncio.gather(*(harness.app.execute(command, ctx) for _ in range(2)))

        assert sorted(o.duplicate for o in outcomes) == [False, True]
        assert {o.version for o in outcomes} == {2}
        assert harness.store.event_types() == ["Installed", "Restarted"]


class TestNewStreams:
    async def test_installing_one_plugin_twice_at_once_is_refused_as_already_installed(self) -> None:
        harness = Harness()

        outcomes = await asyncio.gather(harness.install("twice"), harness.install("twice"), return_exceptions=True)

        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert [type(o) for o in refused] == [PluginAlreadyInstalled], outcomes
        assert harness.store.event_types("plugin:twice") == ["Installed"]


def test_the_retry_waits_grow_and_stay_bounded() -> None:
    policy = RetryPolicy(retries=5, backoff=0.002)

    for n in range(1, 6):
        assert all(0 <= policy.delay(n) <= 0.002 * 2**n for _ in range(50))
