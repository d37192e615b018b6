"""One entry point for every command: HTTP, CLI and benchmarks dispatch through the same table."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.identity import HANDLERS as IDENTITY_HANDLERS
from application.identity import IdentityServices
from application.plugins import HANDLERS as PLUGIN_HANDLERS
from application.plugins import PluginServices
from application.ports import EventStore, Idempotency

Handler = Callable[[Any, CommandContext, Any], Awaitable[CommandResult]]


FINGERPRINT_SCHEME = "hmac-sha256:"


def fingerprint(command: Command, key: bytes) -> str:
    """What an Idempotency-Key was used for, keyed: commands carry passwords and secrets, and a plain
    digest of one could be confirmed by anyone guessing it offline from the stored value."""
    body = msgspec.json.encode(command, order="sorted")
    digest = hmac.new(key, type(command).__name__.encode() + b"\0" + body, hashlib.sha256).hexdigest()
    return FINGERPRINT_SCHEME + digest


class Application:
    """Dispatches commands to their handlers, answering repeated Idempotency-Keys with the first result."""

    def __init__(
        self,
        store: EventStore,
        plugins: PluginServices,
        identity: IdentityServices | None = None,
        *,
        fingerprint_key: bytes,
    ) -> None:
        self.store = store
        self.fingerprint_key = fingerprint_key
        self.handlers: dict[type[Command], tuple[Handler, Any]] = {
            cls: (handler, plugins) for cls, handler in PLUGIN_HANDLERS.items()
        }
        if identity is not None:
            self.handlers.update({cls: (handler, identity) for cls, handler in IDENTITY_HANDLERS.items()})

    async def execute(self, command: Command, ctx: CommandContext) -> CommandResult:
        handler, services = self.handlers[type(command)]
        if ctx.idempotency_key:
            idempotency = Idempotency(ctx.idempotency_key, fingerprint(command, self.fingerprint_key))
            prior = await self.store.idempotent_result(idempotency)
            if prior is not None:
                return CommandResult(prior.stream_id, prior.version, prior.position, duplicate=True)
            ctx = ctx.with_idempotency(idempotency)
        return await handler(command, ctx, services)
