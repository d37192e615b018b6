"""(b) eventsourcing's stock PostgreSQL application recorder (psycopg 3 pool, schema `es_stock`): threads
each saving a new one-event aggregate. Events/s."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from eventsourcing.domain import Aggregate, event
from rich.progress import Progress

from ops.bench.append.phase import PhaseResult, drive_sync
from ops.bench.common import Meter, latency_summary
from ops.bench.postgres import connection_params, execute

ES_SCHEMA = "es_stock"


class BenchItem(Aggregate):
    """A one-event aggregate: created, saved, never changed."""

    @event("Created")
    def __init__(self, n: int, note: str) -> None:
        self.n = n
        self.note = note


def phase_eventsourcing(dsn: str, clients: int, pool: int, warmup: float, seconds: float, progress: Progress) -> PhaseResult:
    from eventsourcing.application import Application

    asyncio.run(execute(dsn, f'CREATE SCHEMA IF NOT EXISTS "{ES_SCHEMA}"'))
    params = connection_params(dsn)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params["dbname"],
        "POSTGRES_HOST": params["host"],
        "POSTGRES_PORT": params["port"],
        "POSTGRES_USER": params["user"],
        "POSTGRES_PASSWORD": params["password"],
        "POSTGRES_SCHEMA": ES_SCHEMA,
        "POSTGRES_POOL_SIZE": str(pool),  # one connection per thread: nobody waits for the pool
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_CONNECT_TIMEOUT": "30",
        "CREATE_TABLE": "yes",
    }

    class StockRecorderBench(Application):
        pass

    import psycopg

    impl = psycopg.pq.__impl__  # "python" (ctypes) unless psycopg[c] or psycopg[binary] is installed
    meter = Meter(progress, "(b) eventsourcing stock", "events", warmup, seconds)
    app = StockRecorderBench(env=env)
    counts = [0] * clients
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                app.save(BenchItem(n, "bench"))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
                time.sleep(0.01)
                continue
            n += 1
            counts[i] += 1
            if meter.measuring:
                latencies.append(time.perf_counter() - started)

    try:
        with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="es-bench") as executor:
            futures = [executor.submit(client, i) for i in range(clients)]
            try:
                operations, elapsed = drive_sync(meter, lambda: sum(counts), stop)
            finally:
                stop.set()
            for future in futures:
                future.result()
    finally:
        app.close()
    result = PhaseResult(
        key="eventsourcing_stock",
        name="(b) eventsourcing stock",
        title="Application.save() of a new one-event aggregate, eventsourcing 9.5's stock PostgreSQL recorder",
        method=f"eventsourcing.postgres, psycopg {psycopg.__version__} ({impl} libpq wrapper), {clients} threads, "
        f"pool {pool}, schema {ES_SCHEMA}",
        unit="events",
        rate=operations / elapsed,
        operations=operations,
        seconds=elapsed,
        clients=clients,
        errors=len(errors),
        first_error=repr(errors[0]) if errors else None,
        latency_ms=latency_summary(latencies),
        cpu=meter.cpu,
        extra={"pool_size": pool, "psycopg": psycopg.__version__, "psycopg_impl": impl},
    )
    meter.done(result)
    return result
