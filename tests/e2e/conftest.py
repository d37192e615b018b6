"""An app built through `create_app`, pointed at the test database, driven through HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from interfaces.app import create_app


def make_settings(database_url: str, data_dir: Path, **overrides) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        secret_key=Fernet.generate_key().decode(),
        log_json=True,
        log_level="warning",
        poll_interval=0.2,
        **overrides,
    )


@pytest.fixture(scope="session")
async def client(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncTestClient]:
    app = create_app(make_settings(database_url, tmp_path_factory.mktemp("charter")))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client
