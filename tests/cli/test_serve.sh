#!/usr/bin/env bash
# test_serve.sh - `lopad serve` end to end on the demo model, on loopback ports the
# server picks itself (--port 0): the official `openai` Python client (from PyPI, in a
# virtual environment under the build directory) checks models, completions, chat,
# streamed and not, against `lopad run` for every decoder; bad requests; the API key;
# the queue, the time limit, clients leaving, SIGTERM (tests/serve/test_openai.py);
# then a load run with malformed requests mixed in (tests/serve/load.py), and the
# page at / in headless Chromium (tests/serve/test_web.py; skipped without chromium).
# Skips, with a message, when lopad was built without libmicrohttpd or when the
# openai package cannot be installed (no network to PyPI).
# usage: bash test_serve.sh LOPAD_BIN SOURCE_DIR BINARY_DIR
set -u
BIN=$1
SRC=$2
BUILD=$3
MODEL=$SRC/models/demo
unset LOPAD_DEFAULT_MODEL LOPAD_API_KEY

if "$BIN" serve --port -1 2>&1 </dev/null | grep -q "built without libmicrohttpd"; then
    echo "SKIP: lopad was built without libmicrohttpd (install libmicrohttpd-dev, rebuild)"
    exit 0
fi
# the message without the library, and --help, are checked by the skip above; the rest
# needs Python with the openai package
VENV=$BUILD/serve-venv
PY=$VENV/bin/python
if ! "$PY" -c "import openai" 2>/dev/null; then
    python3 -m venv "$VENV" >/dev/null 2>&1 || {
        echo "SKIP: python3 -m venv failed (install python3-venv)"
        exit 0
    }
    timeout 600 "$VENV/bin/pip" install -q openai >/dev/null 2>&1 || {
        echo "SKIP: pip could not install openai (PyPI unreachable?)"
        exit 0
    }
fi
# ---- the command line: bad flags end with a message naming them
rc=0
expect() { # exit-status message-part args...
    local want=$1 part=$2 out got
    shift 2
    out=$(timeout 30 "$BIN" serve "$@" 2>&1 </dev/null)
    got=$?
    if [ $got -ne "$want" ] || ! printf '%s' "$out" | grep -qF -- "$part"; then
        echo "  FAIL: lopad serve $*: status $got (want $want), output: $out" >&2
        rc=1
    fi
}
expect 0 "--api-key KEY" --help
expect 2 "--port expects an integer" --port 70000
expect 2 "per request in the server" --json
expect 2 "option 'threshold' needs decoder fast" -m "$MODEL" --decoder llada --threshold 0.5 --port 0
expect 2 "unknown option '--bogus'" --bogus
expect 1 "nosuchhost.invalid" -m "$MODEL" --host nosuchhost.invalid --port 0
cd "$SRC/tests/serve" || exit 1
echo "== test_openai.py"
timeout 900 "$PY" test_openai.py "$BIN" "$MODEL" || rc=1
echo "== load.py"
# the load (1000 requests, 64 clients, a quarter malformed) on a release build;
# a sanitizer build, ten times slower, runs a short one
slack=32 # MiB of RSS the server may keep after the load; sanitizers keep freed memory
load=(--requests 1000 --clients 64)
grep -aqE "__asan_init|__tsan_init" "$BIN" && slack=1024 && load=(--requests 200 --clients 16)
timeout 900 "$PY" load.py "$BIN" "$MODEL" "${load[@]}" --rss-slack $slack || rc=1
echo "== test_web.py (the page in headless Chromium)"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    echo "SKIP: chromium not installed (scripts/deps.sh --test installs it)"
elif ! "$PY" -c "import websocket" 2>/dev/null &&
    ! timeout 300 "$VENV/bin/pip" install -q websocket-client >/dev/null 2>&1; then
    echo "SKIP: pip could not install websocket-client"
else
    timeout 300 "$PY" test_web.py "$BIN" "$MODEL" || rc=1
fi
exit $rc
