#!/usr/bin/env python3
"""Agent under load (issues 6 and 22): N real `secretmode agent` sidecars against one OpenBao.

Starts `bao server -dev` on loopback, a small counting HTTP proxy in front of it, and N sidecar
processes (token auth, one item each, refresh interval INTERVAL). Samples the provider request
count every second: first in steady state (expected about N / interval requests/s, spread by
jitter), then while the proxy answers every request with 503 (a provider outage: the agents
probe `sys/health` on a 1-5 s jittered backoff, so the rate must settle and stay flat, never
grow), then after the provider is back (every sidecar fresh within seconds). Prints the rates
and PASS/FAIL lines. Bounded in time; stops everything itself.

    python3 bench/agent_load.py --agents 200 --interval 10 [--binary target/release/secretmode]
"""
import argparse, asyncio, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.request

REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|LIST) /v1/")


class Proxy:
    """Counts HTTP requests to the provider; in outage mode answers each with a 503 itself."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.count = 0
        self.outage = False
        self.loop = asyncio.new_event_loop()
        self.port = free_port(31_000)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port, backlog=1024))
        self.loop.run_until_complete(server.serve_forever())

    async def _client(self, reader, writer):
        upstream = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if REQUEST_LINE.match(head):
                    self.count += 1
                length = int((re.search(rb"(?i)content-length: *(\d+)", head) or [b"", b"0"])[1])
                body = await reader.readexactly(length) if length else b""
                if self.outage:
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    break
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_r, up_w = upstream
                up_w.write(head + body)
                await up_w.drain()
                resp_head = await up_r.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length: *(\d+)", resp_head)
                resp_body = await up_r.readexactly(int(m[1])) if m else b""
                writer.write(resp_head + resp_body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            if upstream:
                upstream[1].close()


def free_port(start):
    for port in range(start, start + 2000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free port")


def vault(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-Vault-Token": "root", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def rate(proxy, seconds):
    """Requests per second over a window, sampled each second."""
    samples, last = [], proxy.count
    for _ in range(seconds):
        time.sleep(1)
        now = proxy.count
        samples.append(now - last)
        last = now
    return sum(samples) / len(samples), max(samples), samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--steady", type=int, default=40, help="seconds of steady-state sampling")
    ap.add_argument("--outage", type=int, default=60, help="seconds of provider outage")
    ap.add_argument("--binary", default="target/release/secretmode")
    ap.add_argument("--bao", default=shutil.which("bao") or ".venv/bin/bao")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="agent-load-")
    procs = []
    bao_port = free_port(30_000)
    bao = subprocess.Popen([args.bao, "server", "-dev", "-dev-root-token-id=root",
                            f"-dev-listen-address=127.0.0.1:{bao_port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                vault(bao_port, "GET", "sys/health")
                break
            except Exception:
                time.sleep(0.1)
        for i in range(args.agents):
            vault(bao_port, "POST", f"secret/data/load/p{i}", {"data": {"password": f"v{i}"}})
        proxy = Proxy(bao_port)
        health_base = free_port(22_000)
        for i in range(args.agents):
            spec = {
                "version": 1, "providerName": "vault",
                "provider": {"type": "vault", "address": f"http://127.0.0.1:{proxy.port}", "kvMount": "secret",
                             "auth": {"method": "token", "secretRef": {"name": "t", "key": "t"}}},
                "items": [{"name": "password", "path": f"load/p{i}", "key": "password"}],
                "mountPath": f"{work}/agent-{i}",
                "refreshIntervalSeconds": args.interval, "maxStalenessSeconds": args.interval * 30,
                "startDeadlineSeconds": 30, "healthPort": health_base + i,
            }
            # MIMALLOC_ARENA_EAGER_COMMIT=0 as the image sets it (Dockerfile).
            env = dict(os.environ, MIMALLOC_ARENA_EAGER_COMMIT=os.environ.get("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
                       SECRETMODE_AGENT_SPEC=json.dumps(spec), VAULT_TOKEN="root",
                       SECRETMODE_AGENT_HEALTH_ADDRESS="127.0.0.1", RUST_LOG="error")
            procs.append(subprocess.Popen([args.binary, "agent"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        started = time.time()
        while time.time() - started < 60:
            ready = sum(os.path.exists(f"{work}/agent-{i}/password") for i in range(args.agents))
            if ready == args.agents:
                break
            time.sleep(0.5)
        print(f"{ready}/{args.agents} sidecars synced in {time.time() - started:.1f}s")
        time.sleep(args.interval)  # let the start-up wave pass
        expected = args.agents / (args.interval * 0.95)  # refreshes come up to 10% early
        steady, steady_max, _ = rate(proxy, args.steady)
        proxy.outage = True
        outage, outage_max, outage_samples = rate(proxy, args.outage)
        n = len(outage_samples)
        tail = outage_samples[n // 2:]
        outage_tail = sum(tail) / len(tail)
        q3 = outage_samples[n // 2: 3 * n // 4]
        q4 = outage_samples[3 * n // 4:]
        q3_rate, q4_rate = sum(q3) / len(q3), sum(q4) / len(q4)
        proxy.outage = False
        recovered_at = None
        t0 = time.time()
        while time.time() - t0 < 30:
            states = []
            for i in range(args.agents):
                try:
                    with open(f"{work}/agent-{i}/.secretmode/status.json") as f:
                        states.append(json.load(f).get("state"))
                except (OSError, ValueError):
                    states.append(None)
            if all(s == "fresh" for s in states):
                recovered_at = time.time() - t0
                break
            time.sleep(0.5)
        rss = 0
        for p in procs:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    rss += int(next(l for l in f if l.startswith("VmRSS")).split()[1])
            except (OSError, StopIteration):
                pass
        print(f"steady:  {steady:.1f} req/s (max {steady_max}/s in one second); expected about {expected:.1f}")
        print(f"outage:  {outage:.1f} req/s over {args.outage}s (max {outage_max}/s); second half {outage_tail:.1f} req/s "
              f"(third quarter {q3_rate:.1f}, last quarter {q4_rate:.1f}); {outage_tail / args.agents:.2f} req/s per sidecar")
        print(f"recovery: {'all fresh after %.1fs' % recovered_at if recovered_at is not None else 'NOT all fresh'}")
        print(f"memory:  {rss / 1024:.0f} MiB RSS for {args.agents} sidecars ({rss / 1024 / args.agents:.1f} MiB each)")
        ok_steady = 0.7 * expected <= steady <= 1.3 * expected and steady_max <= 3 * expected
        # While the provider is down every sidecar probes once per max(1 s, U(0, 5 s)) once its
        # backoff is at the cap: about 0.38 probes/s each, at most 1/s. The settled rate must
        # stay below 0.5/s per sidecar and must not grow (last quarter vs third quarter).
        ok_outage = outage_tail <= 0.5 * args.agents and q4_rate <= 1.15 * q3_rate + 2
        print(f"{'PASS' if ok_steady else 'FAIL'} steady rate is items x pods / interval, spread by jitter")
        print(f"{'PASS' if ok_outage else 'FAIL'} outage rate flat (last quarter <= 1.15x the third) and below 0.5 req/s per sidecar")
        print(f"{'PASS' if recovered_at is not None else 'FAIL'} every sidecar back to fresh within 30 s")
        return 0 if ok_steady and ok_outage and recovered_at is not None else 1
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        bao.terminate()
        bao.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
