"""Load test of `lopad serve` on loopback: many concurrent clients, a share of them
malformed, against a server this script starts on the demo model.

usage: python load.py LOPAD_BIN MODEL [--requests 1000] [--clients 64] [--bad 0.25]
                      [--parallel 2] [--markdown] [--rss-slack MIB]

Valid requests (completions and chat, streamed or not, over a few prompts) must return
exactly the text of `lopad run` with the same options; malformed ones (bad JSON, wrong
types, unknown options, oversized bodies, prompts past the context, bodies sent slowly
and never finished, clients leaving in the middle of a stream) must get a 4xx JSON
error (or, for the never-finished body, the connection closed by the server). The
server must still be up at the end, its RSS back within --rss-slack MiB of its level
before the load, and it must exit 0 on SIGTERM. Prints p50/p99 latency,
throughput and the server's RSS before, at the peak and after.
"""
import argparse
import concurrent.futures as cf
import http.client
import json
import os
import random
import socket
import sys
import time

from common import Checks, Server, lopad_run

PROMPTS = []


def load_prompts(src_dir, n=6):
    with open(os.path.join(src_dir, "data", "tiny-gsm", "heldout.jsonl")) as f:
        for line in f:
            PROMPTS.append(json.loads(line)["question"])
            if len(PROMPTS) == n:
                break


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def post(port, path, body, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def sse_text(data, chat):
    text = ""
    for ev in data.decode().split("\n\n"):
        if not ev.startswith("data: ") or ev == "data: [DONE]":
            continue
        ch = json.loads(ev[6:])
        for c in ch.get("choices", []):
            text += (c["delta"].get("content") or "") if chat else c["text"]
    return text


# ------------------------------------------------------------------ valid

def valid(port, i, expected):
    p = i % len(PROMPTS)
    chat = (i // len(PROMPTS)) % 2 == 1
    stream = (i // (2 * len(PROMPTS))) % 2 == 1
    if chat:
        path, body = "/v1/chat/completions", {"messages": [{"role": "user",
                                                             "content": PROMPTS[p]}]}
    else:
        path, body = "/v1/completions", {"prompt": PROMPTS[p]}
    body["stream"] = stream
    t0 = time.monotonic()
    status, data = post(port, path, json.dumps(body).encode())
    dt = time.monotonic() - t0
    if status != 200:
        return False, dt, f"valid #{i}: status {status}: {data[:200]!r}"
    text = sse_text(data, chat) if stream else (
        json.loads(data)["choices"][0]["message"]["content"] if chat
        else json.loads(data)["choices"][0]["text"])
    want = expected[(p, chat)]
    if text != want:
        return False, dt, f"valid #{i} (chat={chat} stream={stream}): {text!r} != {want!r}"
    return True, dt, ""


# -------------------------------------------------------------- malformed

def expect_4xx(status, data, what):
    try:
        err = json.loads(data)["error"]
        good = 400 <= status < 500 and err["message"] and err["type"]
    except (ValueError, KeyError, TypeError):
        good = False
    return good, f"{what}: status {status}, body {data[:200]!r}"


def raw_exchange(port, head, body=b"", read_timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    s.sendall(head + body)
    reply = b""
    try:
        while chunk := s.recv(65536):
            reply += chunk
    except OSError:
        pass
    s.close()
    return reply


def bad_json(port, i):
    return expect_4xx(*post(port, "/v1/completions", b'{"prompt": "x", "max_tokens": 8'),
                      "bad JSON")


def wrong_type(port, i):
    body = random.choice([{"prompt": 5}, {"prompt": "x", "max_tokens": "many"},
                          {"prompt": "x", "stream": "yes"},
                          {"messages": "hello"}])
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    return expect_4xx(*post(port, path, json.dumps(body).encode()), f"wrong type {body}")


def unknown_option(port, i):
    body = random.choice([{"prompt": "x", "lopa_branches": 4},
                          {"prompt": "x", "decoder": "gpt4"},
                          {"prompt": "x", "threshold": 7}])
    return expect_4xx(*post(port, "/v1/completions", json.dumps(body).encode()),
                      f"unknown option {body}")


def oversized(port, i):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (8 << 20))
    reply = raw_exchange(port, head)
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    body = reply.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in reply else b""
    return expect_4xx(status, body, "oversized body")


def past_context(port, i):
    body = {"prompt": "one two three four " * 100}
    return expect_4xx(*post(port, "/v1/completions", json.dumps(body).encode()),
                      "prompt past the context")


def slow_body(port, i):
    """Headers and half a body, then nothing: the server must close the connection."""
    body = b'{"prompt": "x", "max_tokens": 8}'
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    t0 = time.monotonic()
    reply = raw_exchange(port, head, body[:10], read_timeout=60)
    dt = time.monotonic() - t0
    ok = (reply == b"" or b" 408 " in reply.split(b"\r\n", 1)[0]) and dt < 60
    return ok, f"never-finished body: {reply[:100]!r} after {dt:.1f} s"


def leave_mid_stream(port, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": PROMPTS[0], "stream": True, "decoder": "llada", "max_tokens": 64,
         "steps": 64}).encode())
    r = c.getresponse()
    ok = r.status == 200
    r.fp.readline()
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    return ok, f"stream then leave: status {r.status}"


MALFORMED = [bad_json, wrong_type, unknown_option, oversized, past_context, slow_body,
             leave_mid_stream]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--bad", type=float, default=0.25)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--rss-slack", type=int, default=32,
                    help="MiB the server's RSS may keep after the load (sanitizers: more)")
    a = ap.parse_args()
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    load_prompts(src)
    ck = Checks("load")
    expected = {}
    for p, q in enumerate(PROMPTS):
        expected[(p, False)] = lopad_run(a.bin, q, {}, chat=False)[0]
        expected[(p, True)] = lopad_run(a.bin, q, {}, chat=True)[0]
    srv = Server(a.bin, "-m", a.model, "--parallel", str(a.parallel), "--threads", "1",
                 "--queue", "512", "--conn-timeout", "3", "--max-body", "65536")
    random.seed(1)
    kinds = ["valid" if random.random() >= a.bad else random.choice(MALFORMED)
             for _ in range(a.requests)]
    # warm up (first contexts), then the RSS before the load
    for i in range(4):
        valid(srv.port, i, expected)
    rss0, peak = rss_kb(srv.proc.pid), 0
    lat = []
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(a.clients) as ex:
        futs = {ex.submit(valid if k == "valid" else k, srv.port, i,
                          *((expected,) if k == "valid" else ())): k
                for i, k in enumerate(kinds)}
        for f in cf.as_completed(futs):
            peak = max(peak, rss_kb(srv.proc.pid))
            try:
                res = f.result()
            except Exception as e:  # a client-side failure is a failed check
                res = (False, f"{futs[f]}: {type(e).__name__}: {e}")
            if futs[f] == "valid":
                ok, dt, msg = res
                lat.append(dt)
            else:
                ok, msg = res
            ck.ok(ok, msg)
    wall = time.monotonic() - t0
    ck.ok(srv.alive(), "the server is up after the load")
    time.sleep(1)
    rss1 = rss_kb(srv.proc.pid)
    n_valid = len(lat)
    lat.sort()
    p50 = lat[len(lat) // 2] if lat else 0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0
    ck.ok(rss1 - rss0 <= a.rss_slack * 1024,
          f"RSS comes back: {rss0 // 1024} MiB before, {rss1 // 1024} MiB after")
    ck.eq(srv.stop(), 0, "exit status after SIGTERM")
    if ck.failed:
        print(srv.text()[-2000:], file=sys.stderr)
    srv.cleanup()
    print(f"load: {a.requests} requests ({n_valid} valid, {a.requests - n_valid} malformed) "
          f"from {a.clients} clients, {a.parallel} slots x 1 thread, in {wall:.1f} s: "
          f"valid p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"{n_valid / wall:.1f} valid req/s; RSS {rss0 // 1024} MiB before, "
          f"{peak // 1024} MiB peak, {rss1 // 1024} MiB after")
    if a.markdown:
        print(f"| {a.requests} | {a.clients} | {a.parallel} x 1 | {n_valid} | "
              f"{p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms | {n_valid / wall:.1f} | "
              f"{rss0 // 1024} / {peak // 1024} / {rss1 // 1024} MiB |")
    return ck.done()


if __name__ == "__main__":
    sys.exit(main())
