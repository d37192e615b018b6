"""What the identity controllers use, each pulled from the app state as a Litestar dependency: the
command bus, the sign-in use cases, the live sign-ins (sessions), and the identity read model (with its wait for read-your-writes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from application.commands import Command
from application.context import CommandContext, CommandResult
from application.identity.signin import SignIn
from application.ports import Session

Execute = Callable[[Command, CommandContext], Awaitable[CommandResult]]


@dataclass(frozen=True)
class IdentityReads:
    """The identity read model's connection pool, and how to wait until a projection reached a position."""

    pool: Any
    wait_for: Callable[..., Awaitable[None]]


def provide_execute(state: State) -> Execute:
    return state.runtime.execute


def provide_sign_in(state: State) -> SignIn:
    return state.runtime.sign_in


def provide_reads(state: State) -> IdentityReads:
    runtime = state.runtime
    return IdentityReads(runtime.pool, runtime.wait_for)


@dataclass(frozen=True)
class Sessions:
    """The live sign-ins (a SessionStore; wrapped, as a dependency's type must be a concrete one)."""

    store: Any

    async def of(self, user_id: str) -> list[Session]:
        return await self.store.sessions(user_id)


def provide_sessions(state: State) -> Sessions:
    return Sessions(state.runtime.refresh_tokens)


EXECUTE = {"execute": Provide(provide_execute, sync_to_thread=False)}
SIGN_IN = {"sign_in": Provide(provide_sign_in, sync_to_thread=False)}
READS = {"reads": Provide(provide_reads, sync_to_thread=False)}
SESSIONS = {"sessions": Provide(provide_sessions, sync_to_thread=False)}
