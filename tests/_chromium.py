"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3 in, fd 4 out),
so a test can open report.html, run script in it, press keys, take screenshots and read the console, with no
port opened and no package beyond the standard library.

    with Chromium.start(tmp_path) as browser:       # pytest.skip()s when no chromium can start here
        page = browser.open(path.as_uri() + "#epoch=last")
        page.evaluate("document.title"); page.key("ArrowLeft", 37); png = page.screenshot("#epoch-view")
        assert page.problems() == []                 # console errors, uncaught exceptions, refused loads
        page.requests()                              # every URL the tab asked for
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
         "--remote-debugging-pipe")
TIMEOUT = 60.0


class ChromiumError(RuntimeError):
    pass


class Chromium:
    """One headless browser process; `open` gives a Page per URL."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self._process, self._out, self._in = process, to_browser, from_browser
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    @classmethod
    def start(cls, profile: Path) -> "Chromium":
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            pytest.skip("chromium is not installed; scripts/system-deps.sh installs it (Debian package chromium)")
        commands_read, commands_write = os.pipe()
        replies_read, replies_write = os.pipe()

        def wire() -> None:   # in the child: the protocol's fixed descriptors 3 (commands) and 4 (replies)
            a, b = os.dup(commands_read), os.dup(replies_write)
            os.dup2(a, 3)
            os.dup2(b, 4)

        process = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   preexec_fn=wire, close_fds=False)
        os.close(commands_read)
        os.close(replies_write)
        browser = cls(process, commands_write, replies_read)
        try:
            browser.send("Browser.getVersion")
        except (ChromiumError, OSError) as error:
            browser.close()
            pytest.skip(f"chromium could not start here: {error}")
        return browser

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._write({"id": -1, "method": "Browser.close"})
        except OSError:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass

    def _write(self, message: dict) -> None:
        os.write(self._out, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise ChromiumError("no reply from chromium in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise ChromiumError(f"chromium exited: {self._process.stderr.read().decode(errors='replace')[-500:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        """Send one command and return its result; events read meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._write(message)
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        """The first event `method` of the session not yet consumed (waiting for it if need be)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def open(self, url: str, width: int = 1200, height: int = 900, scripts: bool = True) -> "Page":
        """A new tab showing `url`, loaded (its load event fired), with console and log collection on;
        scripts=False opens it as a reader without JavaScript would."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session)
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        if not scripts:
            self.send("Emulation.setScriptExecutionDisabled", session, value=True)
        page = Page(self, session)
        self.send("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)
        return page


class Page:
    """One tab: evaluate script, press keys, take screenshots, list what went wrong."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def evaluate(self, expression: str) -> Any:
        result = self.browser.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True,
                                   awaitPromise=True)
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def media(self, kind: str) -> None:
        """Lay the page out for 'print' or 'screen'."""
        self.browser.send("Emulation.setEmulatedMedia", self.session, media=kind)

    def key(self, key: str, code: int) -> None:
        """Press and release a key (e.g. 'ArrowRight', 39) on whatever has the focus."""
        for kind in ("keyDown", "keyUp"):
            self.browser.send("Input.dispatchKeyEvent", self.session, type=kind, key=key, code=key,
                              windowsVirtualKeyCode=code)

    def screenshot(self, selector: str | None = None) -> bytes:
        """PNG of the element matching `selector` (where it is on the page), else of the whole page."""
        if selector is None:
            size = self.browser.send("Page.getLayoutMetrics", self.session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        else:
            box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                                ".getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY, "
                                "width: r.width, height: r.height}; })()")
            clip = {**box, "scale": 1}
        data = self.browser.send("Page.captureScreenshot", self.session, format="png", clip=clip,
                                 captureBeyondViewport=True)["data"]
        return base64.b64decode(data)

    def requests(self) -> list[str]:
        """Every URL this tab asked for so far (the page itself included)."""
        return [event["params"]["request"]["url"] for event in self.browser.events
                if event.get("sessionId") == self.session and event.get("method") == "Network.requestWillBeSent"]

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and log entries of level error or warning
        (a refused load, a Content-Security-Policy violation) seen by this tab so far."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning",
                                                                                                "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif event.get("method") == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                found.append(f"log: {params['entry'].get('text')}")
        return found
