"""One entry point for every command: HTTP, CLI and benchmarks dispatch through the same table."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError, PreconditionFailed
from application.identity.accounts import HANDLERS as ACCOUNT_HANDLERS
from application.identity.handlers import HANDLERS as IDENTITY_HANDLERS
from application.identity.handlers import IdentityServices
from application.plugins.handlers import HANDLERS as PLUGIN_HANDLERS
from application.plugins.handlers import PluginServices
from application.sites.handlers import HANDLERS as SITE_HANDLERS
from application.sites.proposals import SiteServices
from application.ports import AppendResult, EventStore, Idempotency
from application.unit import Loaded, Repository

Handler = Callable[[Any, CommandContext, Any], Awaitable[CommandResult]]


FINGERPRINT_SCHEME = "hmac-sha256:"


def fingerprint(command: Command, key: bytes) -> str:
    """What an Idempotency-Key was used for, keyed: commands carry passwords and secrets, and a plain
    digest of one could be confirmed by anyone guessing it offline from the stored value."""
    body = msgspec.json.encode(command, order="sorted")
    digest = hmac.new(key, type(command).__name__.encode() + b"\0" + body, hashlib.sha256).hexdigest()
    return FINGERPRINT_SCHEME + digest


@dataclass(frozen=True)
class RetryPolicy:
    """How often a command without If-Match is decided again after another writer moved its stream on."""

    retries: int = 5
    backoff: float = 0.002  # seconds; retry n first waits a random time up to backoff * 2**n

    def delay(self, retry: int) -> float:
        return random.uniform(0, self.backoff * 2**retry)


class Application:
    """Dispatches commands to their handlers, answering repeated Idempotency-Keys with the first result.

    A command without If-Match that loses a race for its stream (`ConcurrencyError`) is run again from
    the start: its handler reloads the aggregate and decides anew, so two users restarting one plugin
    both succeed, and a decision the domain now refuses gets that refusal. A command with If-Match is
    never retried: the client's version is the contract, and a conflict answers PreconditionFailed.
    """

    def __init__(
        self,
        store: EventStore,
        plugins: PluginServices,
        identity: IdentityServices | None = None,
        *,
        sites: SiteServices | None = None,
        fingerprint_key: bytes,
        retry: RetryPolicy = RetryPolicy(),
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        reactions: "Reactions | None" = None,
    ) -> None:
        self.store = store
        self.reactions = reactions if reactions is not None else Reactions()
        self.fingerprint_key = fingerprint_key
        self.retry = retry
        self.on_retry = on_retry
        self.sleep = sleep
        self.handlers: dict[type[Command], tuple[Handler, Any]] = {
            cls: (handler, plugins) for cls, handler in PLUGIN_HANDLERS.items()
        }
        if identity is not None:
            self.handlers.update({cls: (handler, identity) for cls, handler in {**IDENTITY_HANDLERS, **ACCOUNT_HANDLERS}.items()})
        if sites is not None:
            self.register(SITE_HANDLERS, sites)
        # Retries of one stream take turns in this process, so they do not keep colliding with each other.
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def register(self, handlers: dict[type[Command], Handler], services: Any) -> None:
        """Add a feature's command table, its handlers given `services` (for services built after the bus)."""
        self.handlers.update({cls: (handler, services) for cls, handler in handlers.items()})

    async def execute(self, command: Command, ctx: CommandContext) -> CommandResult:
        if ctx.idempotency_key:
            ctx = ctx.with_idempotency(Idempotency(ctx.idempotency_key, fingerprint(command, self.fingerprint_key)))
        try:
            return await self._attempt(command, ctx)
        except ConcurrencyError as exc:
            conflict = self._refuse_stale(exc, ctx)
        for retry in range(1, self.retry.retries + 1):
            if self.on_retry is not None:
                self.on_retry(type(command).__name__)
            await self.sleep(self.retry.delay(retry))
            async with self._turn(conflict.details.get("stream_id", "")):
                try:
                    return await self._attempt(command, ctx)
                except ConcurrencyError as exc:
                    conflict = exc
        raise conflict

    async def _attempt(self, command: Command, ctx: CommandContext) -> CommandResult:
        """One decision: answer a known Idempotency-Key with its first result, else run the handler.

        The key is looked up again on every attempt; the store records it with the events, so an
        attempt that lost its race recorded nothing and a retry that finds the key writes nothing."""
        if ctx.idempotency is not None:
            prior = await self.store.idempotent_result(ctx.idempotency)
            if prior is not None:
                return CommandResult(prior.stream_id, prior.version, prior.position, duplicate=True)
        handler, services = self.handlers[type(command)]
        return await handler(command, ctx, services)

    @staticmethod
    def _refuse_stale(conflict: ConcurrencyError, ctx: CommandContext) -> ConcurrencyError:
        """A conflict to retry; with If-Match, PreconditionFailed raised at once, also when the stream
        moved between the handler's check and the append."""
        if ctx.expected_version is None:
            return conflict
        if isinstance(conflict, PreconditionFailed):
            raise conflict
        details = conflict.details
        raise PreconditionFailed(
            details.get("stream_id", ""), ctx.expected_version, details.get("current_version")
        ) from conflict

    def _turn(self, stream_id: str) -> asyncio.Lock:
        lock = self._turns.get(stream_id)
        if lock is None:
            lock = self._turns[stream_id] = asyncio.Lock()
        return lock


# -- after-commit reactions ------------------------------------------------------------------------

Reaction = Callable[[Any, Any, Any], Awaitable[None]]  # (event, its aggregate as saved, services)


class Reactions:
    """What follows a committed event: per domain event class, the reactions to run once an append holding
    such an event has committed (revoking a deactivated user's refresh tokens, updating the access cache).

    Each feature registers its table next to its command handlers (`register(REACTIONS, services)`); the
    repository every handler saves through (`ReactingRepository`) runs them, so the CLI, HTTP and any other
    interface get them alike. A reaction runs after the commit, never instead of it: if it fails, the
    events stay written and the caller hears of the failure."""

    def __init__(self) -> None:
        self._table: dict[type, list[tuple[Reaction, Any]]] = {}

    def register(self, table: Mapping[type, Iterable[Reaction]], services: Any) -> None:
        for event_cls, reactions in table.items():
            self._table.setdefault(event_cls, []).extend((reaction, services) for reaction in reactions)

    def registered(self, event_cls: type) -> list[Reaction]:
        return [reaction for reaction, _ in self._table.get(event_cls, [])]

    async def committed(self, aggregate: Any, events: Iterable[Any]) -> None:
        """Run, in order, the reactions to each of `events` (just committed by `aggregate`)."""
        for event in events:
            for reaction, services in self._table.get(type(event), ()):
                await reaction(event, aggregate, services)


class ReactingRepository:
    """A `Repository` whose saves, once committed, run the reactions registered for the events they held.
    An append answered as a duplicate (an Idempotency-Key seen before) wrote nothing and runs nothing."""

    def __init__(self, inner: Repository, reactions: Reactions) -> None:
        self.inner = inner
        self.reactions = reactions

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        return self.inner.new(stream_type, key)

    async def load(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: Any) -> Loaded[Any]:
        return await self.inner.load(aggregate_cls, stream_type, key, aggregate_id)

    async def save(
        self,
        loaded: Loaded[Any],
        metadata: dict[str, Any],
        idempotency: Idempotency | None = None,
        site_id: str | None = None,
    ) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(
        self,
        items: list[tuple[Loaded[Any], str | None]],
        metadata: dict[str, Any],
        idempotency: Idempotency | None = None,
    ) -> list[AppendResult]:
        pending = [(loaded.aggregate, list(getattr(loaded.aggregate, "pending_events", ()))) for loaded, _ in items]
        results = await self.inner.save_all(items, metadata, idempotency)
        for (aggregate, events), result in zip(pending, results):
            if events and not result.duplicate:
                await self.reactions.committed(aggregate, events)
        return results
