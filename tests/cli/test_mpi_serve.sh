#!/usr/bin/env bash
# test_mpi_serve.sh - `mpirun -np R lopad serve` (issue 17, docs/SERVER.md "Across
# ranks"): rank 0 answers HTTP, every rank runs each request with it. On the demo model,
# on loopback, for R = 2, 3, 4: LoPA requests (D2F full and block-causal, Fast-dLLM,
# K = 2..3, text and token-id prompts) through /v1/completions, streamed and not, give
# the text and NFE of `lopad run` in one process; a stop string, a client that leaves a
# long streamed request midway, the queue's 429, and 8 clients at once with bad requests
# mixed in leave the ranks in step (every later answer is still right); SIGTERM to rank 0
# (with a request in flight: it finishes) ends the job with status 0, SIGTERM to mpirun
# ends every rank, and no rank is left either way; a follower that dies (or stops
# answering) mid-request ends the job nonzero within a time limit, with no answer
# presented as complete; a rank with another model or --tensor-parallel, or R not a
# multiple of T, is refused before the server listens. With --tensor-parallel 2 at R = 2
# and 4, when `mpirun -np 2 lopad run --tensor-parallel 2` works in this build (probed
# first): the text and NFE of `lopad run` with the same R and T. No check guesses how
# long a step takes: it waits for /metrics' gauges or for the answer (the ASan build is
# ~30x slower), and there Open MPI's own leaks are suppressed (lsan_openmpi.supp).
# Skipped (exit 0 with a message) without mpirun, python3, MPI or libmicrohttpd.
# usage: bash test_mpi_serve.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$(realpath "$1")
SRC=$2
BUILD=$3
if ! command -v mpirun >/dev/null 2>&1; then
    echo "test_mpi_serve.sh: skipped (no mpirun; apt install openmpi-bin libopenmpi-dev)"
    exit 0
fi
if ! grep -q "LOPAD_MPI:BOOL=ON" "$BUILD/CMakeCache.txt" 2>/dev/null; then
    echo "test_mpi_serve.sh: skipped (this build has no MPI: LOPAD_MPI=OFF)"
    exit 0
fi
if "$BIN" serve --port -1 2>&1 </dev/null | grep -q "built without libmicrohttpd"; then
    echo "test_mpi_serve.sh: skipped (lopad was built without libmicrohttpd)"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "test_mpi_serve.sh: skipped (no python3)"
    exit 0
fi
unset LOPAD_DEFAULT_MODEL LOPAD_API_KEY LOPAD_DIST_FAULT LOPAD_DIST_STATS
# OpenMPI on a container without a network: loopback TCP, no shared-memory checks
export OMPI_MCA_btl=self,vader,tcp OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
export LOPAD_DIST_TIMEOUT=30
# the model through a link in a fresh directory: its path marks this test's processes
WORK=$(mktemp -d /tmp/lopad_mpi_serve.XXXXXX)
ln -s "$(realpath "$SRC/models/demo")" "$WORK/demo"
trap 'rm -rf "$WORK"' EXIT
# ASan build: Open MPI's own allocations at exit are not lopad's leaks (lsan_openmpi.supp
# says why the whole stack is unwound); each process's report goes to $WORK/asan.PID, so
# that those of ranks > 0 (whose stderr is /dev/null) are shown with a failed check.
if grep -aq __asan_init "$BIN"; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0:log_path=$WORK/asan"
    export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$(realpath "$SRC/tests/cli/lsan_openmpi.supp")"
fi
timeout 900 python3 - "$BIN" "$WORK/demo" "$WORK" <<'EOF'
import http.client, json, os, re, signal, socket, subprocess, sys, time, traceback

BIN, MODEL, WORK = sys.argv[1:4]
MPI = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if os.getuid() == 0 else [])
T1 = ["--threads", "1"]
passed = failed = 0


def ok(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"  FAIL: {what}", file=sys.stderr, flush=True)
    return cond


def eq(got, want, what):
    return ok(got == want, f"{what}: got {got!r}, want {want!r}")


# ---------------------------------------------------------------- processes

def lopad_pids():
    """This test's lopad processes (not mpirun): their command line names MODEL."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0] == BIN.encode() and MODEL.encode() in argv:
            out.append(int(d))
    return out


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        return int(env.get(b"OMPI_COMM_WORLD_RANK", b"-1"))
    except OSError:
        return -1


def none_left(within):
    deadline = time.monotonic() + within
    while lopad_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not lopad_pids()


class Job:
    """`mpirun -np R lopad serve` on a port rank 0 picks, read from its banner."""

    def __init__(self, R, *args, env=None, mpi_args=()):
        self.R = R
        self.log_path = f"{WORK}/serve.{R}.{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        cmd = MPI + ["-np", str(R), *mpi_args, BIN, "serve", "-m", MODEL, "--host",
                     "127.0.0.1", "--port", "0", *T1, *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        self.port = None
        deadline = time.monotonic() + 90
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.text())
            if m:
                self.port = int(m.group(1))
            time.sleep(0.05)
        if self.port is None:
            self.wait(5)
            raise RuntimeError(f"R={R}: the server did not start: {self.text()}")
        self.pids = {pid: rank_of(pid) for pid in lopad_pids()}

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def sanitizer_reports(self):
        """The ASan / LSan reports of this job's ranks (ASan build: $WORK/asan.PID)."""
        out = ""
        for pid in self.pids:
            try:
                with open(f"{WORK}/asan.{pid}") as f:
                    out += f"--- rank {self.pids[pid]} (pid {pid}):\n" + f.read()[-3000:]
            except OSError:
                pass
        return out

    def rank0(self):
        r0 = [p for p in lopad_pids() if rank_of(p) == 0]
        return r0[0] if r0 else None

    def wait(self, timeout):
        """The exit status, or None (then ended) when it runs past timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            return None

    def close(self):
        """After a failure: mpirun ends its ranks on SIGTERM; what is left is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not none_left(5):
            for pid in lopad_pids():
                os.kill(pid, signal.SIGKILL)


def post(job, body, timeout=300):
    c = http.client.HTTPConnection("127.0.0.1", job.port, timeout=timeout)
    c.request("POST", "/v1/completions", body=json.dumps(body).encode(),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def gauges(job):
    """(busy slots, queue length) from /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", job.port, timeout=60)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    busy, queue = (int(re.search(rf"^{name} (\d+)$", text, re.M).group(1))
                   for name in ("lopad_slots_busy", "lopad_queue_length"))
    return busy, queue


def wait_for(pred, within):
    """Whether pred() holds before the deadline (polled: a bound, not a guess)."""
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def refused(job):
    """Whether rank 0 no longer accepts connections (it took the signal)."""
    try:
        socket.create_connection(("127.0.0.1", job.port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True


def complete(job, body):
    """(text, finish_reason, nfe) of a non-streamed request, or the error."""
    status, data = post(job, body)
    if status != 200:
        return ("HTTP", status, data[:300])
    j = json.loads(data)
    return j["choices"][0]["text"], j["choices"][0]["finish_reason"], j["lopad"]["nfe"]


def stream(job, body):
    """(text, finish_reason) of a streamed request; None without [DONE]."""
    status, data = post(job, dict(body, stream=True))
    if status != 200:
        return ("HTTP", status, data[:300])
    text, finish, done = "", None, False
    for ev in data.decode().split("\n\n"):
        if ev == "data: [DONE]":
            done = True
        elif ev.startswith("data: "):
            ch = json.loads(ev[6:])["choices"][0]
            text += ch["text"]
            finish = ch["finish_reason"] or finish
    return (text, finish) if done else None


def run_flags(body):
    flags = []
    for k, v in body.items():
        if k == "prompt":
            flags += ["--prompt-ids", ",".join(map(str, v))] if isinstance(v, list) \
                else ["--raw", "-p", v]
            continue
        v = {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
        flags += ["--" + ("gen" if k == "max_tokens" else k.replace("_", "-")), str(v)]
    return flags


def lopad_run(body, R=1, tp=None):
    """`lopad run --json` with the request's options (under mpirun -np R when R > 1):
    (text, finish_reason, nfe), or None when it fails."""
    cmd = [BIN, "run", "-m", MODEL, "--json", *T1, *run_flags(body)]
    cmd += ["--tensor-parallel", str(tp)] if tp else []
    cmd = MPI + ["-np", str(R)] + cmd if R > 1 else cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return None
    j = json.loads(out.stdout)
    return j["text"], j["finish_reason"], j["nfe"]


# ------------------------------------------------------------------- requests

Q = "Question: Tom has 13 pens and buys 7 more. How many pens does Tom have?\nAnswer:"
CASES = {
    "d2f lopa 2": dict(prompt=Q, max_tokens=32, block=8, lopa=2),
    "d2f lopa 3 block-causal": dict(prompt=Q, max_tokens=32, block=8, lopa=3,
                                    lopa_window_attention="block-causal"),
    "d2f lopa 3 ids": dict(prompt=[5, 9, 14, 3, 7, 11, 40, 41], max_tokens=24, block=4, lopa=3),
    "fast lopa 2": dict(prompt=Q, decoder="fast", max_tokens=32, block=8, lopa=2, threshold=0.5),
    "fast lopa 3 prefix": dict(prompt=Q, decoder="fast", cache="prefix", max_tokens=32,
                               block=8, lopa=3, threshold=0.5),
}
# 95 forwards of 4 branches: seconds (a minute in the ASan build), long enough to leave
# midway, to hold the slot while the queue fills, or for rank 1's fault; no check waits
# for its end
LONG = dict(prompt=Q, decoder="fast", cache="none", threshold=1.0, early_stop=False,
            max_tokens=200, block=4, lopa=3)
# in flight when rank 0 gets SIGTERM: it runs to its end (36 forwards)
IN_FLIGHT = dict(LONG, max_tokens=64)
REF = {name: lopad_run(b) for name, b in CASES.items()}
REF["in flight"] = lopad_run(IN_FLIGHT)
for name, ref in REF.items():
    ok(ref is not None, f"lopad run of {name} in one process")


def check_cases(job, cases, ref, tag):
    for name in cases:
        body = CASES[name]
        eq(complete(job, body), ref[name], f"{tag} {name}: completion vs lopad run")
        eq(stream(job, body), ref[name][:2], f"{tag} {name}: stream vs lopad run")


def open_stream(job, body, events):
    """A streamed request (with canvas events) read until its first few steps: (socket,
    whether they came before its end)."""
    s = socket.create_connection(("127.0.0.1", job.port), timeout=300)
    data = json.dumps(dict(body, stream=True, stream_canvas=True)).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    got = b""
    while got.count(b"event: canvas") < events:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return s, got.count(b"event: canvas") >= events and b"[DONE]" not in got


def leave_midway(job, body, events=3):
    """A streamed request whose client goes away after a few steps."""
    s, running = open_stream(job, body, events)
    s.close()
    return running


def check_rank(R):
    tag = f"R={R}"
    job = Job(R, "--queue", "1" if R == 2 else "64", "--grace", "300")
    try:
        eq(len(lopad_pids()), R, f"{tag}: ranks running")
        check_cases(job, CASES, REF, tag)
        # a stop string ends the generation early on rank 0: the ranks stop together
        st = complete(job, dict(CASES["d2f lopa 2"], stop=["\n"]))
        ok(st[0] != "HTTP" and "\n" not in st[0], f"{tag}: stop string: {st}")
        eq(complete(job, CASES["fast lopa 2"]), REF["fast lopa 2"], f"{tag}: after a stop")
        # a client that leaves a long stream midway; the next requests are still right
        ok(leave_midway(job, LONG), f"{tag}: left a long stream after 3 steps")
        eq(complete(job, CASES["d2f lopa 2"]), REF["d2f lopa 2"], f"{tag}: after a client left")
        eq(stream(job, CASES["fast lopa 3 prefix"]), REF["fast lopa 3 prefix"][:2],
           f"{tag}: stream after a client left")
        if R == 2:
            check_queue(job, tag)
        if R == 3:
            check_concurrent(job, tag)
        if R == 3:  # SIGTERM to mpirun: OpenMPI ends every rank (its own status, 1)
            job.proc.send_signal(signal.SIGTERM)
            rc = job.wait(30)
            ok(rc is not None, f"{tag}: SIGTERM to mpirun: ended ({rc})")
            ok(none_left(10), f"{tag}: SIGTERM to mpirun: no rank left: {lopad_pids()}")
        else:  # SIGTERM to rank 0, a request in flight: it finishes, status 0
            check_sigterm_rank0(job, tag, in_flight=R == 2)
    finally:
        job.close()


def check_queue(job, tag):
    """One request runs (a long stream), one waits in the queue of 1, the next gets 429;
    the running one's client leaves, and the queued one is then run right."""
    import threading
    res = {}
    s, running = open_stream(job, LONG, 1)
    ok(running, f"{tag}: the long stream runs")
    t_q = threading.Thread(target=lambda: res.setdefault("queued",
                                                          complete(job, CASES["fast lopa 2"])))
    t_q.start()
    ok(wait_for(lambda: gauges(job) == (1, 1), 60), f"{tag}: one running, one queued")
    status, data = post(job, CASES["d2f lopa 2"])
    s.close()
    t_q.join()
    eq(status, 429, f"{tag}: the queue full")
    eq(res.get("queued"), REF["fast lopa 2"], f"{tag}: the queued request")


def check_concurrent(job, tag):
    """8 clients at once, each with every case and 2 bad requests (one refused by the
    request parser, one by the decoder's own rules): the requests run one after the
    other across the ranks, every answer right, the bad ones 400 (never sent to them)."""
    import threading
    bad = [dict(prompt=Q, lopa="many"), dict(prompt=Q, decoder="d2f", max_tokens=30, block=8)]
    res, lock = [], threading.Lock()

    def client(i):
        names = list(CASES)[i % len(CASES):] + list(CASES)[:i % len(CASES)]
        for k, name in enumerate(names):
            got = complete(job, CASES[name]) if k % 2 else stream(job, CASES[name])
            want = REF[name] if k % 2 else REF[name][:2]
            with lock:
                res.append((got == want, f"{name}: {got!r} vs {want!r}"))
        for b in bad:
            status, data = post(job, b)
            with lock:
                res.append((status == 400, f"bad request {b}: {status} {data[:200]!r}"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wrong = [what for good, what in res if not good]
    ok(len(res) == 8 * (len(CASES) + len(bad)) and not wrong,
       f"{tag}: 8 clients at once: {len(res)} answers, wrong: {wrong[:3]}")


def check_sigterm_rank0(job, tag, in_flight):
    """SIGTERM to rank 0 (with a request running when in_flight): the request finishes
    within the grace, then every rank exits 0."""
    import threading
    res = {}
    t = None
    if in_flight:
        # the slot is still busy a moment after its last answer: idle first, so that the
        # busy slot seen next is this request's
        ok(wait_for(lambda: gauges(job) == (0, 0), 60), f"{tag}: the slot idle")
        t = threading.Thread(target=lambda: res.setdefault("r", complete(job, IN_FLIGHT)))
        t.start()
        ok(wait_for(lambda: gauges(job) == (1, 0), 60), f"{tag}: a request in flight")
    r0 = job.rank0()
    ok(r0 is not None, f"{tag}: rank 0 found")
    if r0:
        os.kill(r0, signal.SIGTERM)
    ok(wait_for(lambda: refused(job), 30), f"{tag}: SIGTERM: rank 0 stopped listening")
    if t:
        t.join()  # the request's own time: a slower build takes longer
        eq(res.get("r"), REF["in flight"], f"{tag}: SIGTERM: the request in flight finished")
    rc = job.wait(60)  # what is left: the quit message, MPI_Finalize
    eq(rc, 0, f"{tag}: SIGTERM to rank 0: exit status" +
       (f"; sanitizer reports:\n{job.sanitizer_reports()}" if rc else ""))
    ok("lopad serve: stopped" in job.text(), f"{tag}: SIGTERM: rank 0 stopped: {job.text()}")
    ok(none_left(10), f"{tag}: SIGTERM: no rank left: {lopad_pids()}")


def check_fault(how, n):
    """Rank 1 exits (or stops answering) at its n-th exchange, in the middle of a LoPA
    request: the job ends nonzero within the limit; the request gets no answer."""
    t0 = time.monotonic()
    env = {"LOPAD_DIST_FAULT": f"1:{n}:{how}", "LOPAD_DIST_TIMEOUT": "5"}
    job = Job(2, env=env, mpi_args=["-x", "LOPAD_DIST_FAULT", "-x", "LOPAD_DIST_TIMEOUT"])
    try:
        got = complete(job, LONG)
    except (OSError, http.client.HTTPException) as e:
        got = e
    rc = job.wait(40)
    job.close()
    dt = time.monotonic() - t0
    ok(rc not in (0, None) and dt < 45, f"rank 1 {how}s: job status {rc} after {dt:.0f} s")
    ok(not isinstance(got, tuple) or got[0] == "HTTP",
       f"rank 1 {how}s: no answer presented as complete: {got}")
    if how == "hang":
        ok("no answer from the other ranks within 5 s" in job.text(),
           f"rank 1 hangs: the deadline message: {job.text()[-600:]}")
    ok(none_left(10), f"rank 1 {how}s: no rank left: {lopad_pids()}")


def check_mismatch():
    """Ranks with another model, or another --tensor-parallel, are refused before the
    server listens (MPMD: rank 1 started with other arguments)."""
    other = os.path.join(os.path.dirname(os.path.realpath(MODEL)), "..", "tests", "fixtures",
                         "tiny-dream")
    base = ["serve", "-m", MODEL, "--port", "0", *T1]
    for what, rank1 in (("model", ["serve", "-m", other, "--port", "0", *T1]),
                        ("--tensor-parallel", base + ["--tensor-parallel", "2"])):
        cmd = MPI + ["-np", "1", BIN, *base, ":", "-np", "1", BIN, *rank1]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        ok(out.returncode != 0 and f"has another {what}" in text and "listening" not in text,
           f"rank 1 with another {what}: status {out.returncode}: {text[-400:]}")
    out = subprocess.run(MPI + ["-np", "3", BIN, *base, "--tensor-parallel", "2"],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    ok(out.returncode != 0 and "needs a job of a multiple of 2 ranks" in text and
       "listening" not in text, f"3 ranks, --tensor-parallel 2: {out.returncode}: {text[-400:]}")
    ok(none_left(10), f"mismatch: no rank left: {lopad_pids()}")


def check_tensor_parallel():
    """--tensor-parallel 2 at R = 2 and 4: the text and NFE of `lopad run` with the same
    R and T, when that runs in this tree (the forward's split may not have landed)."""
    names = ["d2f lopa 2", "fast lopa 2"]
    probe = lopad_run(CASES["d2f lopa 2"], R=2, tp=2)
    if probe is None:
        print("test_mpi_serve.sh: --tensor-parallel cases skipped (mpirun -np 2 lopad run "
              "--tensor-parallel 2 fails in this build)", flush=True)
        return
    for R in (2, 4):
        ref = {n: lopad_run(CASES[n], R=R, tp=2) for n in names}
        job = Job(R, "--tensor-parallel", "2")
        try:
            check_cases(job, names, ref, f"R={R} T=2")
            ok(leave_midway(job, LONG), f"R={R} T=2: left a long stream")
            eq(complete(job, CASES["d2f lopa 2"]), ref["d2f lopa 2"],
               f"R={R} T=2: after a client left")
            check_sigterm_rank0(job, f"R={R} T=2", in_flight=False)
        finally:
            job.close()


def section(what, fn, *args):
    """One part of the test; an exception (a server that died, a request that broke)
    is a failure of that part, and the next part still runs."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - reported as a failure
        where = traceback.extract_tb(e.__traceback__)
        ok(False, f"{what}: {type(e).__name__}: {e} (at " +
           ", ".join(f"{f.name}:{f.lineno}" for f in where[1:]) + ")")
    print(f"test_mpi_serve.sh: {what} done at {time.monotonic() - t_start:.0f} s", flush=True)


t_start = time.monotonic()
for R in (2, 3, 4):
    section(f"R={R}", check_rank, R)
section("rank 1 exits", check_fault, "exit", 8)
section("rank 1 hangs", check_fault, "hang", 8)
section("mismatched ranks", check_mismatch)
section("--tensor-parallel 2", check_tensor_parallel)
print(f"test_mpi_serve.sh: {passed} passed, {failed} failed "
      f"({time.monotonic() - t_start:.0f} s)")
sys.exit(1 if failed else 0)
EOF
