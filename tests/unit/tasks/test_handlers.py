"""Task command handlers over the in-memory repository: given streams, when a command, then events or
an error."""

from __future__ import annotations

import pytest

from application.context import CommandContext
from application.tasks.commands import CancelRun, CreateTask, DeleteTask, PauseTask, ResumeTask, RunTask, UpdateTask
from application.tasks.handlers import HANDLERS, TaskServices
from domain.identity.access import Grant, resolve_access
from domain.tasks.errors import RunNotFound, TaskDeleted, TaskExists, TaskInvalid, TaskNotFound
from domain.tasks.schedule import Schedule
from infrastructure.tasks.actions import AllowList, builtin_registry
from tests.unit.fakes import MemoryRepository

EVERY = Schedule(kind="interval", every=1.0)
CTX = CommandContext(actor="alice")


class Executor:
    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []

    def submit(self, run_id: str) -> None:
        self.submitted.append(run_id)

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)


@pytest.fixture
def services() -> TaskServices:
    return TaskServices(MemoryRepository(), builtin_registry(AllowList.parse("hooks.example.com")), Executor())


async def do(services: TaskServices, command, ctx: CommandContext = CTX):
    return await HANDLERS[type(command)](command, ctx, services)


def create(task_id: str = "t1", **options) -> CreateTask:
    return CreateTask(task_id=task_id, name="Ping", schedule=EVERY, action="http.request",
                      payload={"url": "https://hooks.example.com/ping"}, **options)


def recorded(services: TaskServices, stream: str) -> list[str]:
    return [r.name for r in services.repository.streams.get(stream, [])]


class TestCreateTask:
    async def test_records_created(self, services: TaskServices) -> None:
        await do(services, create())

        assert recorded(services, "task:t1") == ["Created"]

    async def test_refuses_a_second_task_of_the_same_id(self, services: TaskServices) -> None:
        await do(services, create())

        with pytest.raises(TaskExists):
            await do(services, create())

    async def test_refuses_an_unknown_action(self, services: TaskServices) -> None:
        with pytest.raises(TaskInvalid) as refused:
            await do(services, CreateTask(task_id="t", name="x", schedule=EVERY, action="no.such"))

        assert refused.value.details["field"] == "action"

    async def test_refuses_a_payload_against_the_actions_schema(self, services: TaskServices) -> None:
        with pytest.raises(TaskInvalid) as refused:
            await do(services, CreateTask(task_id="t", name="x", schedule=EVERY, action="http.request",
                                          payload={"url": "https://hooks.example.com", "method": "BREW"}))

        assert refused.value.details["field"] == "payload.method"

    async def test_refuses_a_url_outside_the_allow_list(self, services: TaskServices) -> None:
        with pytest.raises(TaskInvalid) as refused:
            await do(services, CreateTask(task_id="t", name="x", schedule=EVERY, action="http.request",
                                          payload={"url": "http://169.254.169.254/latest/meta-data"}))

        assert refused.value.details["field"] == "payload.url"

    async def test_refuses_a_site_task_to_a_caller_without_tasks_write_there(self, services: TaskServices) -> None:
        access = resolve_access("bob", [Grant("viewer", "s1")], {"viewer": ["tasks:read"]})

        with pytest.raises(TaskNotFound):
            await do(services, create(site_id="s1"), CommandContext(actor="bob", access=access))


class TestLifecycle:
    async def test_pause_resume_update_delete(self, services: TaskServices) -> None:
        await do(services, create())
        await do(services, PauseTask(task_id="t1"))
        await do(services, ResumeTask(task_id="t1"))
        await do(services, UpdateTask(task_id="t1", name="Ping 2", schedule=EVERY, action="http.request",
                                      payload={"url": "https://hooks.example.com/ping"}))
        await do(services, DeleteTask(task_id="t1"))

        assert recorded(services, "task:t1") == ["Created", "Paused", "Resumed", "Updated", "Deleted"]

    async def test_a_deleted_task_does_not_run(self, services: TaskServices) -> None:
        await do(services, create())
        await do(services, DeleteTask(task_id="t1"))

        with pytest.raises(TaskDeleted):
            await do(services, RunTask(task_id="t1"))

    async def test_an_unknown_task_is_not_found(self, services: TaskServices) -> None:
        with pytest.raises(TaskNotFound):
            await do(services, PauseTask(task_id="nope"))


class TestRunTask:
    async def test_requests_a_manual_run_and_starts_it_here(self, services: TaskServices) -> None:
        await do(services, create())
        result = await do(services, RunTask(task_id="t1"))

        run_id = result.stream_id.split(":", 1)[1]
        assert recorded(services, result.stream_id) == ["Requested"]
        assert services.repository.streams[result.stream_id][0].data["actor"] == "alice"
        assert services.executor.submitted == [run_id]

    async def test_cancel_records_cancelled_and_stops_it_here(self, services: TaskServices) -> None:
        await do(services, create())
        result = await do(services, RunTask(task_id="t1"))
        run_id = result.stream_id.split(":", 1)[1]
        await do(services, CancelRun(run_id=run_id))

        assert recorded(services, result.stream_id) == ["Requested", "Cancelled"]
        assert services.executor.cancelled == [run_id]

    async def test_a_manual_run_records_its_reason(self, services: TaskServices) -> None:
        await do(services, create())
        result = await do(services, RunTask(task_id="t1", reason="after the outage"))

        assert services.repository.streams[result.stream_id][0].data["reason"] == "after the outage"

    async def test_a_run_named_under_another_task_is_not_found(self, services: TaskServices) -> None:
        await do(services, create())
        await do(services, create("t2"))
        result = await do(services, RunTask(task_id="t1"))

        with pytest.raises(RunNotFound):
            await do(services, CancelRun(run_id=result.stream_id.split(":", 1)[1], task_id="t2"))


class TestReasons:
    async def test_delete_and_resume_record_their_reasons(self, services: TaskServices) -> None:
        await do(services, create())
        await do(services, PauseTask(task_id="t1", reason="maintenance"))
        await do(services, ResumeTask(task_id="t1", reason="maintenance over"))
        await do(services, DeleteTask(task_id="t1", reason="replaced by t2"))

        reasons = [r.data["reason"] for r in services.repository.streams["task:t1"][1:]]
        assert reasons == ["maintenance", "maintenance over", "replaced by t2"]
