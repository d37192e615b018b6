"""A headless Chromium driven over the DevTools protocol, for tests that need a real browser (CORS,
EventSource, the docs pages). Debian's `chromium` package; the tests skip, saying so, without it.

The protocol runs over a pipe (`--remote-debugging-pipe`: the browser reads commands on fd 3 and writes
answers on fd 4, each a JSON object ended by a NUL byte), so no websocket client is needed. Every call
blocks: tests serving Charter on their own event loop call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "chromium is not installed (Debian: apt-get install chromium; ops/test installs it on CI): browser tests skipped"


class BrowserError(AssertionError):
    pass


class Chromium:
    """One headless browser with one page. `offline=True`: every host but 127.0.0.1 fails to resolve, so a
    page that needs the internet shows it."""

    def __init__(self, offline: bool = True) -> None:
        if CHROMIUM is None:
            raise RuntimeError(MISSING)
        self.profile = tempfile.mkdtemp(prefix="charter-chromium-")
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        args = [
            CHROMIUM, "--headless", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}", "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        if offline:
            args.insert(1, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")

        def pipes() -> None:  # in the child: the protocol's fds are 3 (commands) and 4 (answers)
            a, b = os.dup(commands_read), os.dup(answers_write)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            args, preexec_fn=pipes, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self.console: list[str] = []  # what the page printed on its console, errors included
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Runtime.enable", session=self.session)
        self.call("Page.enable", session=self.session)

    def call(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in answer["params"]["args"]))
            elif answer.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(answer["params"]["exceptionDetails"])[:2000])
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise BrowserError("chromium did not answer in time")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise BrowserError("chromium closed its protocol pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def open(self, url: str) -> None:
        result = self.call("Page.navigate", session=self.session, url=url)
        if result.get("errorText"):
            raise BrowserError(f"{url}: {result['errorText']}")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """The value of `expression` once it is truthy (polled every 100 ms; while it throws, the page is
        taken to be loading still)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError as exc:  # the page is still loading (no body yet, a script not run yet)
                value = exc
            if value and not isinstance(value, BrowserError):
                return value
            time.sleep(0.1)
        raise BrowserError(f"waited {timeout}s for {expression!r} (last: {value!r}); console: {self.console[-10:]}")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for fd in (self._commands, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


class Pages:
    """Pages served from an origin of their own (`http://127.0.0.1:<port>`): `pages[path] = html`."""

    def __init__(self, port: int = 0) -> None:
        import http.server
        import threading

        pages: dict[str, str] = {}
        self.pages = pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                body = pages.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write((body or "not found").encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name="test-pages").start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
