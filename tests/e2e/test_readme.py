"""The README says what the code does: its settings table, its links, and its curl session, which runs
here against a live server, each curl answering the status its `# -> NNN` comment promises."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from infrastructure.settings_doc import settings_markdown, undocumented
from interfaces.app import create_app
from interfaces.cli import parser
from tests.e2e.conftest import make_settings, serve_live

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SESSION_ADMIN = "admin@charter.local"  # the embedded default's first administrator, as the README signs in


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 3)
    return README[start : end if end > 0 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def expected_statuses(script: str) -> list[int | None]:
    """One entry per curl invocation, in order: the status its `# -> NNN` comment promises."""
    lines = script.splitlines()
    logical: list[str] = []
    for line in lines:
        if logical and logical[-1].endswith("\\"):
            logical[-1] = logical[-1][:-1] + " " + line.strip()
        else:
            logical.append(line)
    expected: list[int | None] = []
    for index, line in enumerate(logical):
        if line.lstrip().startswith(("#", "alias ")):
            continue
        for _ in re.finditer(r"(?:^|[\s($])curl\s", line.split(" # ")[0]):
            promise = re.search(r"#\s*->\s*(\d{3})", line)
            if promise is None and index + 1 < len(logical):
                promise = re.match(r"\s*#\s*->\s*(\d{3})", logical[index + 1])
            expected.append(int(promise.group(1)) if promise else None)
    return expected


def test_every_setting_is_documented_and_the_readme_table_is_generated() -> None:
    assert undocumented() == []
    table = README.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table == settings_markdown(), "README settings table is stale: run `charter settings --markdown`"


def test_every_command_help_shows_its_defaults_and_serve_lists_the_settings() -> None:
    root = parser()
    commands = root._subparsers._group_actions[0].choices  # argparse keeps subcommands here
    for name, command in commands.items():
        text = command.format_help()
        for action in command._actions:
            if action.help and action.default not in (None, False, "==SUPPRESS==") and action.option_strings:
                assert "default" in text, (name, action.dest)
    serve_help = commands["serve"].format_help()
    for field in ("CHARTER_DATABASE_URL", "CHARTER_NATS_URL", "CHARTER_PORT", "CHARTER_READY_CHECK_TIMEOUT"):
        assert field in serve_help


def test_the_consumer_example_points_at_the_embedded_nats_port() -> None:
    from interfaces.cli import PREFERRED_NATS_PORT

    examples = (ROOT / "ops" / "examples" / "README.md").read_text() + (ROOT / "ops/examples/consume_events.py").read_text()
    for text in (README, examples):
        ports = set(re.findall(r"nats://127\.0\.0\.1:(\d+)", text.split("## Benchmarks")[0]))
        assert ports <= {str(PREFERRED_NATS_PORT), "4222"}, ports  # 4222 only where a standalone server is started
    assert f"nats://127.0.0.1:{PREFERRED_NATS_PORT} --durable" in README


def test_relative_links_point_at_files() -> None:
    for target in re.findall(r"\]\(((?!https?:|#|mailto:)[^)\s]+)\)", README):
        assert (ROOT / target.split("#")[0]).exists(), target


def test_every_curl_in_the_session_promises_a_status() -> None:
    script = "\n".join(shell_blocks(section("A session with curl")))
    expected = expected_statuses(script)
    assert len(expected) >= 20
    assert expected[0] is None  # the sign-in inside TOKEN=$(...)
    assert all(status is not None for status in expected[1:]), expected


CURL_RECORDER = r"""
shopt -s expand_aliases
curl() {
  local out rc
  out=$(command curl -sS -w '\n%{http_code}' "$@"); rc=$?
  printf '%s\n' "${out##*$'\n'}" >> "$CHARTER_README_STATUSES"
  printf '%s\n' "${out%$'\n'*}"
  return $rc
}
"""


async def test_the_curl_session_runs_against_a_live_server(
    databases, nats_url: str, jetstream_streams, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(12)
    stream = jetstream_streams.new("readme")
    settings = make_settings(
        await databases.create("readme"),
        tmp_path / "server",
        nats_url=nats_url,
        nats_stream=stream.name,
        nats_subject_prefix=stream.prefix,
        bootstrap_admin_email=SESSION_ADMIN,
        bootstrap_admin_password=password,
    )
    app = create_app(settings)
    server, task, url = await serve_live(app)
    try:
        work = tmp_path / "session"
        (work / ".charter").mkdir(parents=True)
        (work / ".charter" / "admin-credentials").write_text(f"{SESSION_ADMIN}\n{password}\n")
        script = "\n".join(shell_blocks(section("A session with curl"))).replace("localhost:8000", url.removeprefix("http://"))
        statuses = work / "statuses"
        env = {**os.environ, "CHARTER_README_STATUSES": str(statuses), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        result = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-e", "-c", CURL_RECORDER + script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr + result.stdout
        got = [int(line) for line in statuses.read_text().split()]
        expected = expected_statuses(script)
        assert len(got) == len(expected), (got, expected)
        assert got[0] == 200, result.stdout
        mismatches = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e is not None and e != g]
        assert not mismatches, (mismatches, result.stdout)
    finally:
        server.should_exit = True
        await task
