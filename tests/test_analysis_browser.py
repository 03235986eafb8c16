"""The report in a real browser: headless Chromium, driven over the DevTools protocol.

The protocol runs over ``--remote-debugging-pipe`` (file descriptors 3 and 4, NUL-separated
JSON), so no websocket client is needed. The test fails on any uncaught exception, console
error or network request (the report must open offline), checks that every figure rendered
and that the training-curve menu works, and keeps a full-page screenshot in test-artifacts/.
"""
from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load
from analysis.report import write_report
from analysis.synthetic import write_synthetic_store
from layrot.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-unsafe-swiftshader", "--hide-scrollbars", "--remote-debugging-pipe"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="chromium is not installed")]


class Browser:
    """A headless Chromium page; events are collected while waiting for command replies."""

    def __init__(self, width: int = 1400, height: int = 1000):
        self.profile = tempfile.mkdtemp(prefix="layrot-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Park both child ends above 10 so moving them to 3 and 4 cannot clobber one another.
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)

        def wire_pipes():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire_pipes, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(child_r)
        os.close(child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)

    def send(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 90) -> None:
        """Navigate and poll until the JavaScript expression `ready` is true."""
        self.send("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + timeout
        while not self.evaluate(ready):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page not ready after {timeout} s: {ready}")
            time.sleep(0.25)

    def errors(self) -> list[str]:
        """Uncaught exceptions, console errors and error log entries seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description") or details.get("text"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    page = Browser()
    yield page
    page.close()


FIGURES_RENDERED = """
(() => {
  const plots = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return document.readyState === 'complete' && plots.length > 0 && plots.every(p => p.querySelector('.main-svg') && p._fullLayout);
})()
"""


def test_report_renders_every_figure_without_errors_offline(tmp_path, browser, capsys):
    store = tmp_path / "store"
    write_synthetic_store(str(store), "browser", tasks=("C10-CNN1", "C100-resnet", "tiny-CNN"),
                          epochs=30, layers=12, running=3)
    report = tmp_path / "report.html"
    write_report(load(str(store)), str(report))

    browser.open(report.as_uri(), FIGURES_RENDERED)
    plots = browser.evaluate("""Array.from(document.querySelectorAll('.plotly-graph-div')).map(p => ({
        id: p.id, traces: p._fullData.length, svg: !!p.querySelector('.main-svg')}))""")
    assert [p["id"] for p in plots] == [f"figure-{i}" for i in range(1, 7)]
    assert all(p["svg"] and p["traces"] > 0 for p in plots), plots

    # The training-curve menu: applying the second entry must show that trial's curves.
    switched = browser.evaluate("""(async () => {
        const gd = document.getElementById('figure-6');
        const button = gd.layout.updatemenus[0].buttons[1];
        await Plotly.update(gd, button.args[0], button.args[1]);
        return JSON.stringify(gd.data[0].y) === JSON.stringify(button.args[0].y[0])
            && gd.layout.title.text === button.args[1]['title.text'];
    })()""")
    assert switched

    # No modebar button that could send data anywhere (plotly's "Share chart...", cloud, Chart Studio).
    buttons = browser.evaluate("""Array.from(document.querySelectorAll('.modebar-btn')).map(b => b.outerHTML)""")
    assert buttons, "the modebar was not rendered"
    assert not [b for b in buttons if re.search(r"share|cloud|chart studio|sendData", b, re.I)], buttons

    # The star of each task is the best_in_setting row of `layrot summary` with the highest
    # seed-mean validation accuracy.
    stars = browser.evaluate("""Array.from(document.querySelectorAll('tr.winner')).map(r => ({
        task: r.dataset.task, setting: r.dataset.setting, alpha: Number(r.dataset.alpha),
        rho0: Number(r.dataset.rho0), text: r.textContent}))""")
    assert main(["summary", "--store", str(store), "--format", "csv"]) == 0
    summary = pd.read_csv(io.StringIO(capsys.readouterr().out))
    best = summary[summary["best_in_setting"]]
    expected = best.loc[best.groupby("task")["val_acc_mean"].idxmax()].set_index("task")
    assert sorted(s["task"] for s in stars) == sorted(expected.index)
    for star in stars:
        row = expected.loc[star["task"]]
        assert (star["setting"], star["alpha"], star["rho0"]) == (row["setting"], row["alpha"], row["rho0"])
        assert f"{100 * row['val_acc_mean']:.1f}%" in star["text"]          # the validation accuracy it used

    # The table of all configurations sorts by a clicked column.
    ordered = browser.evaluate("""(() => {
        const table = document.getElementById('configurations');
        const col = Array.from(table.tHead.rows[0].cells).findIndex(th => th.textContent === 'test %');
        table.tHead.rows[0].cells[col].click();
        return Array.from(table.tBodies[0].rows).map(r => Number(r.cells[col].dataset.value));
    })()""")
    assert len(ordered) == len(summary) and ordered == sorted(ordered)

    browser.screenshot(ARTIFACTS / "report.png")
    assert browser.errors() == []
    assert [url for url in browser.requests() if not url.startswith(("file:", "data:", "about:"))] == []


def test_error_detection_catches_a_broken_page(tmp_path, browser):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('bad figure'); undefinedFunction();</script>"
                    "<div id='done'></div></body></html>")
    browser.open(page.as_uri(), "!!document.getElementById('done')")
    errors = browser.errors()
    assert any("bad figure" in e for e in errors)
    assert any("undefinedFunction" in e for e in errors)
