"""The page of `lopad serve` in headless Chromium, driven through the DevTools protocol:
the test types a question into the chat box and presses Enter, waits for the streamed
answer, and checks it equals `lopad run --chat`'s text, that the canvas view drew every
generated position, and that the statistics show TPF and tokens/s.

usage: python test_web.py LOPAD_BIN MODEL [--screenshot FILE.png]
Needs `chromium` (Debian) and the websocket-client package.
"""
import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

from common import Checks, Server, lopad_run

QUESTION = ("Tom has 13 pens. Tom buys 7 more. Then Tom gives away 10. "
            "How many pens does Tom have now?")


class Browser:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lopad-chromium-")
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.dir}", "--window-size=1280,860", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = int(m.group(1))
                break
            if not line and self.proc.poll() is not None:
                break
        if port is None:
            self.close()
            raise RuntimeError("chromium did not start")
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait(self, expr, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        return None

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("model")
    ap.add_argument("--screenshot")
    a = ap.parse_args()
    ck = Checks("web")
    want, _ = lopad_run(a.bin, QUESTION, {"decoder": "d2f", "lopa": 2}, chat=True)
    srv = Server(a.bin, "-m", a.model, "--threads", "1")
    br = None
    try:
        br = Browser()
        br.call("Page.enable")
        br.call("Page.navigate", url=srv.url + "/")
        ck.ok(br.wait("document.readyState === 'complete' && "
                      "document.getElementById('model').textContent === 'demo'"),
              "the page loads and shows the model")
        br.eval("document.getElementById('decoder').value = 'd2f';"
                "document.getElementById('lopa').value = '2'; true")
        br.eval("document.getElementById('prompt').focus(); true")
        br.call("Input.insertText", text=QUESTION)
        for kind in ("keyDown", "keyUp"):
            br.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                    windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)
        state = br.wait("['done', 'error'].includes(document.body.dataset.state) && "
                        "document.body.dataset.state")
        ck.eq(state, "done", "the answer arrives")
        answer = br.eval("document.querySelector('#answer .text').textContent")
        ck.eq(answer, want, "the page's answer is lopad run's (d2f + LoPA 2)")
        ck.ok("#### 10" in (answer or ""), f"the demo model's answer: {answer!r}")
        cells = br.eval("document.querySelectorAll('#canvas .cell').length")
        ck.eq(cells, 64, "the canvas view has every generated position")
        masked = br.eval("[...document.querySelectorAll('#canvas .cell')]"
                         ".filter(c => !c.classList.contains('set')).length")
        ck.ok(isinstance(masked, int) and masked < cells, f"the canvas shows commits "
              f"({masked} of {cells} never set)")
        stats = br.eval("document.getElementById('stats').textContent") or ""
        ck.ok("TPF" in stats and "tok/s" in stats and "LoPA" in stats,
              f"statistics: {stats!r}")
        ck.eq(br.eval("document.getElementById('prompt').value"), "", "the box is cleared")
        if a.screenshot:
            png = br.call("Page.captureScreenshot", format="png")["data"]
            with open(a.screenshot, "wb") as f:
                f.write(base64.b64decode(png))
    finally:
        if br:
            br.close()
        ck.eq(srv.stop(), 0, "server exit status")
        if ck.failed:
            print(srv.text()[-2000:], file=sys.stderr)
        srv.cleanup()
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
