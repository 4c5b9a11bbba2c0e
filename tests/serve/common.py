"""Helpers of the `lopad serve` tests: start a server on a free loopback port, stop it,
run `lopad run` for the expected text, and count checks."""
import json
import os
import re
import signal
import subprocess
import sys
import time


class Server:
    """`lopad serve --port 0 ...` on 127.0.0.1; the port is read from its banner."""

    def __init__(self, binary, *args, env=None):
        self.log_path = f"/tmp/lopad_serve_test.{os.getpid()}.{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w+")
        cmd = [binary, "serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     env=env or os.environ.copy())
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.text())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.text()}")
        self.url = f"http://127.0.0.1:{self.port}"

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal it and wait; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def cleanup(self):
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)


def run_flags(opts):
    """Request fields (decoding options by table name) -> `lopad run` flags."""
    flags = []
    for k, v in opts.items():
        if k == "max_tokens":
            k = "gen"
        flag = "--" + k.replace("_", "-")
        if v is True:
            flags.append(flag)
        elif v is not False:
            flags += [flag, str(v)]
    return flags


def lopad_run(binary, prompt, opts, chat, threads=1, model=None):
    """`lopad run --json` with the same options: (text, n_prompt)."""
    cmd = [binary, "run", "-p", prompt, "--json", "--threads", str(threads)]
    cmd += ["-m", model] if model else []
    cmd += ["--chat"] if chat else ["--raw"]
    cmd += run_flags(opts)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr}")
    j = json.loads(out.stdout)
    return j["text"], j["n_prompt"]


class Checks:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def ok(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"  FAIL: {what}", file=sys.stderr, flush=True)
        return cond

    def eq(self, got, want, what):
        return self.ok(got == want, f"{what}: got {got!r}, want {want!r}")

    def done(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1
