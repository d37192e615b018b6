"""Plugin configuration through HTTP: validated writes, masked secrets, and secrets kept out of the log."""

from __future__ import annotations

import asyncpg

from tests.e2e.plugin_kit import (
    MASK,
    PLUGINS,
    assert_error,
    assert_written,
    current,
    event_rows,
    install,
    installed,
    last_payload,
    manifest,
    nothing_written,
    unique_id,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "endpoint": {"type": "string"},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "api_token": {"type": "string", "secret": True},
    },
    "required": ["endpoint"],
}


async def config_of(client, plugin_id: str, **params) -> dict:
    response = await client.get(f"{PLUGINS}/{plugin_id}/config", params={"consistent": "true", **params})
    assert response.status_code == 200, response.text
    return response.json()


async def put_config(client, plugin_id: str, config: dict, **kwargs):
    return await client.put(f"{PLUGINS}/{plugin_id}/config", json={"config": config}, **kwargs)


async def read_model_config_text(client, database_url: str, plugin_id: str) -> str:
    """The read model's stored configuration, once the projection has every write so far."""
    assert (await client.get(f"{PLUGINS}/{plugin_id}", params={"consistent": "true"})).status_code == 200
    conn = await asyncpg.connect(database_url)
    try:
        text = await conn.fetchval("SELECT config::text FROM rm_plugins.plugins WHERE plugin_id = $1", plugin_id)
    finally:
        await conn.close()
    assert text is not None, f"{plugin_id} is not in the read model"
    return text


class TestGetPluginConfig:
    async def test_masks_secrets_and_describes_the_schema(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": "tok-123"})

        response = await client.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true"})

        assert response.status_code == 200
        assert response.headers["etag"] == '"1"'
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body["plugin_id"] == pid
        assert body["config"] == {"endpoint": "https://a", "api_token": MASK}
        assert body["schema"] == SCHEMA
        assert body["secrets"] == ["api_token"]
        assert body["stream_version"] == 1

    async def test_shows_secrets_in_clear_when_asked(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": "tok-123"})

        body = await config_of(client, pid, include_secrets="true")

        assert body["config"] == {"endpoint": "https://a", "api_token": "tok-123"}

    async def test_plugin_details_mask_secrets_too(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": "tok-123"})

        assert (await current(client, pid))["configuration"] == {"endpoint": "https://a", "api_token": MASK}

    async def test_treats_write_only_and_password_fields_as_secrets(self, client) -> None:
        pid = unique_id()
        schema = {
            "type": "object",
            "properties": {"pin": {"type": "string", "writeOnly": True}, "password": {"type": "string", "format": "password"}},
        }
        await installed(client, manifest(pid, config_schema=schema), config={"pin": "4711", "password": "hunter2"})

        body = await config_of(client, pid)

        assert body["config"] == {"pin": MASK, "password": MASK}
        assert body["secrets"] == ["password", "pin"]

    async def test_of_an_unknown_plugin_is_not_found(self, client) -> None:
        response = await client.get(f"{PLUGINS}/{unique_id('ghost')}/config")

        assert_error(response, 404, "PLUGIN_NOT_FOUND")


class TestSetPluginConfig:
    async def test_replaces_the_configuration(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "retries": 1})

        response = await put_config(client, pid, {"endpoint": "https://b", "retries": 5})

        assert assert_written(response, pid)["stream_version"] == 2
        assert (await config_of(client, pid))["config"] == {"endpoint": "https://b", "retries": 5}
        assert [r["event_type"] for r in await event_rows(database_url, pid)][-1] == "Plugin.ConfigurationChanged"
        assert (await last_payload(database_url, pid))["changed_keys"] == ["endpoint", "retries"]

    async def test_a_masked_secret_sent_back_keeps_the_stored_value(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": "tok-keep"})
        as_read = (await config_of(client, pid))["config"]
        assert as_read["api_token"] == MASK

        response = await put_config(client, pid, {**as_read, "retries": 3})

        assert response.status_code == 200, response.text
        clear = (await config_of(client, pid, include_secrets="true"))["config"]
        assert clear == {"endpoint": "https://a", "retries": 3, "api_token": "tok-keep"}

    async def test_a_new_secret_replaces_the_stored_one(self, client) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": "tok-old"})

        assert (await put_config(client, pid, {"endpoint": "https://a", "api_token": "tok-new"})).status_code == 200

        assert (await config_of(client, pid, include_secrets="true"))["config"]["api_token"] == "tok-new"

    async def test_a_mask_for_a_secret_never_stored_is_refused(self, client, database_url) -> None:
        """The mask only stands for a stored value; with none stored it must not become the secret itself."""
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a"})

        async with nothing_written(database_url, pid):
            response = await put_config(client, pid, {"endpoint": "https://a", "api_token": MASK})

        assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.api_token")

    async def test_the_same_configuration_records_nothing(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": "tok"})

        async with nothing_written(database_url, pid):
            response = await put_config(client, pid, {"endpoint": "https://a", "api_token": MASK})

        assert response.status_code == 200, response.text
        assert response.json()["stream_version"] == 1

    async def test_of_an_uninstalled_plugin_is_refused(self, client, database_url) -> None:
        pid = unique_id()
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a"})
        await client.delete(f"{PLUGINS}/{pid}")

        async with nothing_written(database_url, pid):
            response = await put_config(client, pid, {"endpoint": "https://b"})

        assert_error(response, 409, "PLUGIN_NOT_INSTALLED")


class TestSecretsStayOutOfTheLog:
    async def test_a_secret_given_at_install_is_not_stored_in_clear(self, client, database_url) -> None:
        pid, secret = unique_id(), f"s3cr3t-{unique_id()}"
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": secret})

        rows = await event_rows(database_url, pid)

        assert rows, "the install wrote no event"
        for row in rows:
            assert secret not in row["payload"]
            assert secret not in row["metadata"]
        assert secret not in await read_model_config_text(client, database_url, pid)

    async def test_a_secret_set_later_is_not_stored_in_clear(self, client, database_url) -> None:
        pid, secret = unique_id(), f"s3cr3t-{unique_id()}"
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a"})

        assert (await put_config(client, pid, {"endpoint": "https://a", "api_token": secret})).status_code == 200

        rows = await event_rows(database_url, pid)
        assert [r["event_type"] for r in rows] == ["Plugin.Installed", "Plugin.ConfigurationChanged"]
        assert all(secret not in row["payload"] for row in rows)
        assert secret not in await read_model_config_text(client, database_url, pid)
        assert (await config_of(client, pid, include_secrets="true"))["config"]["api_token"] == secret

    async def test_a_secret_kept_through_a_masked_write_is_not_stored_in_clear(self, client, database_url) -> None:
        pid, secret = unique_id(), f"s3cr3t-{unique_id()}"
        await installed(client, manifest(pid, config_schema=SCHEMA), config={"endpoint": "https://a", "api_token": secret})

        await put_config(client, pid, {"endpoint": "https://b", "api_token": MASK})

        rows = await event_rows(database_url, pid)
        assert len(rows) == 2
        assert all(secret not in row["payload"] and MASK not in row["payload"] for row in rows)

    async def test_a_nested_secret_is_not_stored_in_clear(self, client, database_url) -> None:
        """`secret: true` marks a secret wherever the property sits in the schema, not only at the top level."""
        pid, secret = unique_id(), f"s3cr3t-{unique_id()}"
        schema = {
            "type": "object",
            "properties": {
                "database": {
                    "type": "object",
                    "properties": {"user": {"type": "string"}, "password": {"type": "string", "secret": True}},
                }
            },
        }
        response = await install(client, manifest(pid, config_schema=schema), config={"database": {"user": "app", "password": secret}})
        assert response.status_code == 201, response.text

        rows = await event_rows(database_url, pid)

        for row in rows:
            assert secret not in row["payload"], f"{row['event_type']} holds the nested secret in clear"
        config = (await config_of(client, pid))["config"]
        assert secret not in str(config)

    async def test_a_value_shaped_like_a_sealed_secret_never_breaks_the_plugin(self, client, database_url) -> None:
        """User data that looks like the internal `{"$sealed": ...}` marker must be refused or kept verbatim."""
        pid = unique_id()
        forged = {"$sealed": "not-a-fernet-token"}
        schema = {"type": "object", "properties": {"labels": {"type": "object"}}}

        response = await install(client, manifest(pid, config_schema=schema), config={"labels": forged})

        if response.status_code != 201:
            assert_error(response, 400, "PLUGIN_CONFIGURATION_ERROR", field="config.labels")
            assert await event_rows(database_url, pid) == []
            return
        clear = await client.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true", "include_secrets": "true"})
        assert clear.status_code == 200, clear.text
        assert clear.json()["config"] == {"labels": forged}
        masked = await client.get(f"{PLUGINS}/{pid}/config", params={"consistent": "true"})
        assert masked.json()["config"] == {"labels": forged}
        rewrite = await put_config(client, pid, {"labels": {"team": "ops"}})
        assert rewrite.status_code == 200, rewrite.text
