"""The read cache's generations (infrastructure/eventlog/read_cache.py): a batch that changed a read model
drops its kept answers; a batch with none of its streams' events (`unchanged`) keeps them and moves the
generation's cursor, so the poll behind the notifications does not drop them either."""

from __future__ import annotations

import asyncio

from infrastructure.eventlog.read_cache import Answer, ReadCache


def kept_after(cache: ReadCache, payload: str) -> bool:
    async def run() -> bool:
        async def build() -> Answer:
            return Answer(b"{}")

        await cache.answer("plugins", "key", build)
        cache.on_notification(payload)
        return cache.kept("plugins", "key") is not None

    return asyncio.run(run())


def test_a_batch_that_changed_the_read_model_drops_its_answers() -> None:
    assert not kept_after(ReadCache(None), "plugins 10 5")


def test_a_batch_of_other_streams_keeps_the_answers_and_moves_the_cursor() -> None:
    cache = ReadCache(None)
    assert kept_after(cache, "plugins 10 5 unchanged")
    assert cache._current("plugins").cursor == (10, 5)


def test_another_read_model_moving_keeps_this_ones_answers() -> None:
    assert kept_after(ReadCache(None), "identity 10 5")


def test_a_reconnection_drops_every_answer() -> None:
    cache = ReadCache(None)

    async def run() -> bool:
        async def build() -> Answer:
            return Answer(b"{}")

        await cache.answer("plugins", "key", build)
        cache.on_notification(None)
        return cache.kept("plugins", "key") is None

    assert asyncio.run(run())
