"""TaskRun: given its events, when the scheduler decides, then new events or a refusal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.tasks.errors import RunFinished, RunNotStartable
from domain.tasks.run import TaskRun, run_id

NOW = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def requested(max_attempts: int = 2) -> TaskRun:
    rid = run_id("t", NOW)
    run = TaskRun(run_id=rid, task_id="t", site_id=None, trigger="schedule", tick=NOW.isoformat(), actor="scheduler",
                  action="test.noop", payload={}, timeout=5.0, max_attempts=max_attempts, backoff=1.0)
    run.collect_events()
    return run


def names(run: TaskRun) -> list[str]:
    return [type(e).__name__ for e in run.collect_events()]


class TestRunIds:
    def test_the_same_tick_of_the_same_task_is_the_same_run_everywhere(self) -> None:
        assert run_id("t", NOW) == run_id("t", NOW.astimezone(timezone(timedelta(hours=3))))
        assert run_id("t", NOW) != run_id("t", NOW + timedelta(milliseconds=1))

    def test_equal_decisions_make_equal_event_ids(self) -> None:
        a, b = requested(), requested()

        assert a.event_id_for(2, "Started") == b.event_id_for(2, "Started")
        assert a.event_id_for(3, "Succeeded") != a.event_id_for(3, "TimedOut")


class TestStart:
    def test_starts_with_a_lease_of_its_timeout(self) -> None:
        run = requested()
        run.start("r1", NOW)

        assert names(run) == ["Started"] and run.lease_until == NOW + timedelta(seconds=5)

    def test_refuses_to_start_twice(self) -> None:
        run = requested()
        run.start("r1", NOW)

        with pytest.raises(RunNotStartable):
            run.start("r2", NOW)


class TestTimeOut:
    def test_an_expired_lease_is_timed_out_and_retried_while_attempts_are_left(self) -> None:
        run = requested(max_attempts=2)
        run.start("r1", NOW)
        run.collect_events()
        run.time_out(NOW + timedelta(seconds=6))

        assert names(run) == ["TimedOut", "Retried"] and run.status == "retrying"
        assert not run.startable(NOW + timedelta(seconds=6)) and run.startable(NOW + timedelta(seconds=7))

    def test_the_last_attempt_ends_timed_out(self) -> None:
        run = requested(max_attempts=1)
        run.start("r1", NOW)
        run.collect_events()
        run.time_out(NOW + timedelta(seconds=6))

        assert names(run) == ["TimedOut"] and run.finished

    def test_refuses_while_the_lease_holds(self) -> None:
        run = requested()
        run.start("r1", NOW)

        with pytest.raises(RunNotStartable):
            run.time_out(NOW + timedelta(seconds=1))


class TestOutcome:
    def test_a_failure_is_retried_after_the_backoff(self) -> None:
        run = requested(max_attempts=3)
        run.start("r1", NOW)
        run.collect_events()
        run.fail(10, "boom", NOW)

        assert names(run) == ["Failed", "Retried"] and run.not_before == NOW + timedelta(seconds=1)

    def test_a_cancelled_run_records_no_outcome(self) -> None:
        run = requested()
        run.start("r1", NOW)
        run.cancel("alice")
        run.collect_events()

        with pytest.raises(RunFinished):
            run.succeed(1, "done")
