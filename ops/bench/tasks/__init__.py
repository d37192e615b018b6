"""`charter bench tasks`: the scheduler at 10,000 interval tasks due every second on one replica,
beside an idle event loop's timer jitter measured in the same run.

One PostgreSQL server (CHARTER_DATABASE_URL's, or an embedded one); a fresh database `charter_bench_<random>`
per phase, dropped at the end, holding the tasks (created through the command handlers, as HTTP
creates them; `bench.noop` as their action) and the tasks read model the scheduler reads its catalog from.

(0) idle loop   the floor: an event loop with nothing else to do wakes at every 50 ms boundary of the
                wall clock; its lateness p50/p99 and its CPU.
(a) scheduler   `--tasks` (10,000) tasks every second, the real scheduler over the real catalog (its reads
                of changes every second, a full read of the catalog within the window, its sweeps), with
                the port that starts runs (`Scheduler.launch`) replaced by an in-process recorder: this
                isolates the scheduler's own cost (heap, ticks, task creation, catalog reads) from the
                event store's. It is not a stand-in for PostgreSQL in a test: phase (b) measures the store.
                Tick-to-start latency = when the recorder is entered - the tick; CPU = process CPU time /
                wall time over the window.
(b) full path   every run recorded as events: `Requested`+`Started` in one append, the no-op action
                executed, `Succeeded` in a second append. At each size of `--full-tasks` (tasks every
                second: that many runs/s, three events each); tick-to-start = when the `Started` append
                has committed and the action is handed to the loop - the tick. A size is sustained when
                at least 95% of the offered runs started within the window; the largest sustained size is
                what this machine's store carries.

Targets: p99 tick-to-start <= 100 ms and scheduling <= 0.2 cores. Each measured value is printed beside
its floor (the idle loop's p99) and target as a ratio; the report goes to `<report>/tasks-<time>.json|md`.
"""
