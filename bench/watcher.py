#!/usr/bin/env python3
"""What `secretmode watch` costs a pod, beside the refresh agent, measured the same way in one run.

For each run, alternating which goes first:
  - the sidecar agent (`secretmode agent`): 20 KV v2 items from a local OpenBao dev server,
    token auth, 30 s refresh (the spec of bench/agent.sh);
  - the watcher (`secretmode watch`): a kubelet-style Secret directory (`..data` swap), the
    on-change action a POST to a loopback listener in this script; one swap is made and its
    notification awaited, so the notifier's request path has run before memory is read.
Both: time from process start (just before fork/exec) to the first `/healthz` 200, polled
every millisecond over loopback; then, after IDLE seconds, RSS (VmRSS) and peak RSS (VmHWM)
from /proc/<pid>/status, split into anonymous memory (RssAnon, the process's own) and
file-backed pages (RssFile: mostly the binary's code, page cache shared by every process that
maps the same image file), and the CPU ticks used so far; then SIGTERM and the exit code.

Usage: cargo build --release --bin secretmode && python3 bench/watcher.py [--runs 10] [--idle 10]
Needs .venv/bin/bao (scripts/test installs it). Everything runs on 127.0.0.1. Not part of scripts/test.
"""

import argparse
import http.server
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url, headers=None, data=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def healthz_up(port):
    """One GET /healthz over a raw socket (no urllib overhead in the timed loop)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_timed(cmd, env, port):
    """Starts cmd; returns (process, ms from fork/exec to the first /healthz 200)."""
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not healthz_up(port):
        if p.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{cmd[1]} did not serve /healthz (exit {p.poll()})")
        time.sleep(0.001)
    return p, (time.perf_counter_ns() - t0) / 1e6


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    kib = lambda k: int(fields[k].split()[0]) / 1024  # noqa: E731
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    ticks = int(stat[11]) + int(stat[12])  # utime + stime
    return kib("VmRSS"), kib("VmHWM"), ticks, int(fields["Threads"]), kib("RssAnon"), kib("RssFile")


def stop(p):
    t0 = time.perf_counter_ns()
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=10)
    return code, (time.perf_counter_ns() - t0) / 1e6


class App(http.server.BaseHTTPRequestHandler):
    count = 0

    def do_POST(self):  # noqa: N802
        App.count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def swap(d, n):
    name = f"..2026_12_06_10_00_00.{n:09d}"
    os.makedirs(os.path.join(d, name))
    with open(os.path.join(d, name, "password"), "w") as f:
        f.write(f"v{n}")
    old = os.readlink(os.path.join(d, "..data")) if os.path.islink(os.path.join(d, "..data")) else None
    os.symlink(name, os.path.join(d, "..data_tmp"))
    os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
    if old:
        os.remove(os.path.join(d, old, "password"))
        os.rmdir(os.path.join(d, old))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/secretmode"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--idle", type=float, default=10)
    args = ap.parse_args()
    bao = os.path.join(ROOT, ".venv/bin/bao")
    work = tempfile.mkdtemp(prefix="watcher-bench-")
    bport = free_port()
    baop = subprocess.Popen(
        [bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{bport}"],
        env={**os.environ, "HOME": work},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        addr = f"http://127.0.0.1:{bport}"
        for _ in range(150):
            try:
                if get(f"{addr}/v1/sys/health") == 200:
                    break
            except OSError:
                time.sleep(0.2)
        for i in range(1, 21):
            body = json.dumps({"data": {"value": f"bench-value-{i}"}}).encode()
            get(f"{addr}/v1/secret/data/bench/s{i:02d}", {"X-Vault-Token": "root"}, body, "POST")
        base = {**os.environ, "MIMALLOC_ARENA_EAGER_COMMIT": "0", "RUST_LOG": "warn"}
        results = {"agent": [], "watch": []}
        for run in range(args.runs):
            order = ["agent", "watch"] if run % 2 == 0 else ["watch", "agent"]
            for which in order:
                hport = free_port()
                root = os.path.join(work, f"{which}-{run}")
                if which == "agent":
                    spec = {
                        "version": 1, "providerName": "vault",
                        "provider": {"type": "vault", "address": addr, "kvMount": "secret",
                                     "auth": {"method": "token", "secretRef": {"name": "t", "key": "t"}}},
                        "items": [{"name": f"s{i:02d}", "path": f"bench/s{i:02d}", "key": "value"}
                                  for i in range(1, 21)],
                        "mountPath": "/cache", "refreshIntervalSeconds": 30, "maxStalenessSeconds": 3600,
                        "startDeadlineSeconds": 30, "healthPort": hport,
                    }
                    env = {**base, "VAULT_TOKEN": "root", "SECRETMODE_AGENT_SPEC": json.dumps(spec),
                           "SECRETMODE_AGENT_ROOT": root, "SECRETMODE_AGENT_HEALTH_ADDRESS": "127.0.0.1"}
                    p, ms = start_timed([args.bin, "agent"], env, hport)
                else:
                    d = os.path.join(root, "etc/secrets")
                    os.makedirs(d)
                    swap(d, 1)
                    os.symlink("..data/password", os.path.join(d, "password"))
                    spec = {"version": 1, "dir": "/etc/secrets", "healthPort": hport,
                            "onChange": {"http": {"method": "POST", "host": "v4",
                                                  "port": app.server_address[1], "path": "/-/reload"}}}
                    env = {**base, "SECRETMODE_WATCH_SPEC": json.dumps(spec), "SECRETMODE_WATCH_ROOT": root,
                           "SECRETMODE_WATCH_HEALTH_ADDRESS": "127.0.0.1"}
                    p, ms = start_timed([args.bin, "watch"], env, hport)
                    before = App.count
                    time.sleep(1.5)  # the first poll has remembered the initial target
                    swap(d, 2)
                    deadline = time.monotonic() + 20
                    while App.count == before:
                        if time.monotonic() > deadline:
                            raise SystemExit("the watcher did not notify")
                        time.sleep(0.05)
                time.sleep(args.idle)
                rss, hwm, ticks, threads, anon, filed = memory(p.pid)
                code, stop_ms = stop(p)
                if code != 0:
                    raise SystemExit(f"{which} exited {code} on SIGTERM")
                results[which].append((ms, rss, hwm, ticks, threads, stop_ms, anon, filed))
        med = lambda xs: statistics.median(xs)  # noqa: E731
        print(f"{args.runs} runs each, idle {args.idle:g} s, {args.bin}")
        print("| | refresh agent (20 items, OpenBao) | watcher (one swap notified) |")
        print("|---|---|---|")
        rows = [
            ("start to /healthz 200, median (min-max) ms", 0, "{:.1f}"),
            ("RSS after idle, median MiB", 1, "{:.1f}"),
            ("of which anonymous (RssAnon: the process's own), median MiB", 6, "{:.1f}"),
            ("of which file-backed (RssFile: the binary's pages, page cache), median MiB", 7, "{:.1f}"),
            ("peak RSS (VmHWM), median MiB", 2, "{:.1f}"),
            ("CPU ticks (1/100 s) from start to the end of idle, median", 3, "{:g}"),
            ("threads", 4, "{:g}"),
            ("SIGTERM to exit, median ms", 5, "{:.1f}"),
        ]
        for label, i, fmt in rows:
            cells = []
            for which in ("agent", "watch"):
                xs = [r[i] for r in results[which]]
                cell = fmt.format(med(xs))
                if i == 0:
                    cell += f" ({min(xs):.1f}-{max(xs):.1f})"
                cells.append(cell)
            print(f"| {label} | {cells[0]} | {cells[1]} |")
    finally:
        baop.terminate()
        baop.wait()
        app.shutdown()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
