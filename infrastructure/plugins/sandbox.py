"""Runs pure, CPU-bound domain functions (checking a manifest's JSON Schema, validating a configuration
against it) in worker processes, each call under a time limit and a memory ceiling.

Why processes and not threads: a plugin author controls the schema, and a small schema can ask for
exponential work (`allOf` nested through `$ref`) that no size cap prevents. In a thread that work would
hold the GIL away from the event loop and could not be stopped at the deadline: Python cannot kill a
thread, so every timed-out request would leave a core busy for good. A worker process is killed
(SIGKILL) at the deadline and replaced, so one hostile validation costs at most `timeout` seconds of one
core, never the event loop's time, and `RLIMIT_AS` bounds its memory. The price is a pipe round trip
(about a millisecond) per validation and a fresh interpreter (spawned, not forked from the threaded
server) after each kill.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import structlog

from domain.errors import DomainError

log = structlog.get_logger(__name__)

READY = "ready"
START_TIMEOUT = 60.0  # seconds a new worker may take to import its modules


def _serve(conn: Connection, memory_mb: int) -> None:
    """A worker's loop: receive (function, args), answer ("ok", result) | ("domain", ...) | ("failed", name)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server stops us
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import domain.plugins.configuration  # noqa: F401  (import the work before saying ready: timing starts then)
    import domain.plugins.manifest  # noqa: F401

    conn.send(READY)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[Any, ...] = ("ok", fn(*args))
        except DomainError as exc:
            reply = ("domain", type(exc), exc.message, exc.details)
        except BaseException as exc:  # noqa: BLE001  (reported by name only: messages may quote values)
            reply = ("failed", type(exc).__name__)
        try:
            conn.send(reply)
        except BaseException as exc:  # noqa: BLE001  (a result too big to send under the memory ceiling)
            conn.send(("failed", type(exc).__name__))


class _Worker:
    def __init__(self, context: Any, memory_mb: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, memory_mb), daemon=True, name="charter-sandbox")
        self.process.start()
        child.close()
        if not self.conn.poll(START_TIMEOUT) or self.conn.recv() != READY:
            self.kill()
            raise RuntimeError("a sandbox worker did not start")

    def exchange(self, message: Any) -> Any:
        self.conn.send(message)
        return self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


def _rebuild(cls: type[DomainError], message: str, details: dict[str, Any]) -> DomainError:
    error = cls.__new__(cls)
    DomainError.__init__(error, message, **details)
    return error


class ProcessSandbox:
    """`await run(fn, *args, over_limit=...)`: `fn(*args)` in a worker process. A DomainError it raises
    is raised here; when it exceeds the time limit, the memory ceiling, or fails otherwise, the worker is
    killed and `over_limit(reason)` is raised instead (a 4xx naming the field, built by the caller)."""

    def __init__(self, workers: int = 2, timeout: float = 2.0, memory_mb: int = 1024) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self._context = multiprocessing.get_context("spawn")  # never fork a threaded server
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()  # idle and busy, so that stop() ends every one
        self._slots = asyncio.Semaphore(workers)
        self._threads = ThreadPoolExecutor(max_workers=2 * workers, thread_name_prefix="sandbox")
        self._closed = False

    async def start(self) -> None:
        """Start one worker now, so that the first validation does not wait for an interpreter."""
        worker = await self._spawn()
        if self._closed:
            await self._discard(worker)
        else:
            self._idle.append(worker)

    async def _spawn(self) -> _Worker:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._new_worker)

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._context, self.memory_mb)
        self._all.add(worker)
        if self._closed:
            worker.kill()
        return worker

    async def run(self, fn: Callable[..., Any], *args: Any, over_limit: Callable[[str], DomainError]) -> Any:
        loop = asyncio.get_running_loop()
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._spawn()
            try:
                reply = await asyncio.wait_for(loop.run_in_executor(self._threads, worker.exchange, (fn, args)), self.timeout)
            except TimeoutError:
                await self._discard(worker)
                log.warning("sandbox call over its time limit", function=fn.__name__, timeout=self.timeout)
                raise over_limit(f"took longer than the limit of {self.timeout:g} s") from None
            except (EOFError, OSError) as exc:
                await self._discard(worker)
                log.warning("sandbox worker died", function=fn.__name__, error=type(exc).__name__)
                raise over_limit("stopped the worker checking it (memory or crash)") from None
            except BaseException:
                await self._discard(worker)
                raise
            if self._closed:
                worker.kill()
            else:
                self._idle.append(worker)
        match reply:
            case ("ok", result):
                return result
            case ("domain", cls, message, details):
                raise _rebuild(cls, message, details)
            case ("failed", "MemoryError"):
                raise over_limit(f"needed more than {self.memory_mb} MiB of memory")
            case ("failed", name):
                raise over_limit(f"could not be completed ({name})")
        raise RuntimeError(f"unexpected sandbox reply {reply[0]!r}")

    async def _discard(self, worker: _Worker) -> None:
        self._all.discard(worker)
        await asyncio.get_running_loop().run_in_executor(self._threads, worker.kill)

    async def stop(self) -> None:
        """Kill every worker (a validation under way ends with its caller's error) and wait for the threads."""
        self._closed = True
        self._idle = []
        for worker in list(self._all):
            worker.kill()
        await asyncio.get_running_loop().run_in_executor(None, lambda: self._threads.shutdown(wait=True, cancel_futures=True))
        for worker in list(self._all):
            worker.kill()
        self._all.clear()
