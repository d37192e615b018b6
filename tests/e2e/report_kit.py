"""The compliance story (tests/compliance_story.py) for the HTTP tests: told once per database through
the command handlers, in the test's event loop, then read through the app (which reads that database)."""

from __future__ import annotations

import pytest

from tests.compliance_story import Story, World, world  # noqa: F401  (the fixture, for the modules importing this one)

_TOLD: dict[str, Story] = {}


def report_url(site_id: str) -> str:
    return f"/api/v1/site/{site_id}/reports/compliance"


@pytest.fixture
async def told(world: World, database_url: str) -> Story:  # noqa: F811
    """The story, told once (the HTTP tests share one database and only read what it wrote)."""
    if database_url not in _TOLD:
        _TOLD[database_url] = await world.story()
    return _TOLD[database_url]
