#!/usr/bin/env python3
"""Summarises one bench/load.sh run: reads <dir>/runs.tsv (one line per oha run) and the oha
JSON files beside it, prints a table, the secretmode/ceiling throughput ratio and the verdict
on each target, and writes the same text to <dir>/summary.txt.

Server `ceiling-sized` is the ceiling answering with secretmode's own answer for the mode: the
ratio ceiling-sized/ceiling is what the size of the answer alone costs; `ceiling-busyN` is the
ceiling plus N microseconds of busy work per request; `ceiling-review` is the ceiling's handler
running secretmode's whole review (review::review) and answering with its answer: the ratio
ceiling-review/ceiling is what the review costs, and secretmode/ceiling-review what `serve` adds
around it (body cap and timeout, query, metrics, log line, panic guard); `ceiling-naive-kube`
and `ceiling-naive-value` are the ceiling's handler running the naive parse-clone-diff handler
(bench/naive.rs, with kube-rs's admission types or serde_json::Value throughout) the target is
calibrated on ("a naive parse-clone-diff handler lands near 0.4"): naive/ceiling says whether
this ceiling is the one that calibration assumed, secretmode/naive what the rework gained;
`ceiling-value` is the ceiling building the whole review as a serde_json::Value (the other
reading of "parse it as JSON"), against which both are given too. The target's ratio is always
secretmode against the plain ceiling."""
import json
import os
import pathlib
import re
import statistics
import sys

d = pathlib.Path(sys.argv[1])
TICKS = os.sysconf("SC_CLK_TCK")
rows = []
for line in (d / "runs.tsv").read_text().splitlines():
    server, phase, mode, conns, rate, rep, rss_kb, path, *cpu = line.split("\t")
    client_ms = cpu[1] if len(cpu) > 1 else ""
    switches = cpu[2] if len(cpu) > 2 else ""
    data = json.loads(pathlib.Path(path).read_text())
    summary = data["summary"]
    codes = data.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    errors = sum(data.get("errorDistribution", {}).values()) + sum(v for k, v in codes.items() if k != "200")
    pct = data.get("latencyPercentiles", {})
    rows.append(
        dict(
            server=server,
            phase=phase,
            mode=mode,
            conns=int(conns),
            rate=rate,
            rep=int(rep),
            rps=ok / summary["total"] if summary["total"] else 0.0,
            p50=(pct.get("p50") or 0) * 1000,
            p99=(pct.get("p99") or 0) * 1000,
            p999=(pct.get("p99.9") or 0) * 1000,
            errors=errors,
            ok=ok,
            hwm_mb=int(rss_kb) / 1024,
            # The server's CPU time per answered request, all threads (older runs lack it).
            cpu_us=int(cpu[0]) / TICKS * 1e6 / ok if cpu and ok else 0.0,
            # The load generator's CPU time per answered request (older runs lack it).
            client_us=int(client_ms) * 1e3 / ok if client_ms and ok else 0.0,
            # The server's context switches per answered request, all threads (older runs
            # lack it): how often its workers slept on an empty event queue or were preempted.
            cs=int(switches) / ok if switches and ok else None,
        )
    )

lines = []
say = lines.append
say(f"{'server':<19} {'phase':<10} {'mode':<8} {'conns':>5} {'rate':>6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} {'errors':>6} {'VmHWM MB':>8} {'CPU us/req':>10} {'oha us/req':>10} {'cs/req':>6}")


def med(group, key):
    return statistics.median(r[key] for r in group)


keys = []
for r in rows:
    k = (r["server"], r["phase"], r["mode"], r["conns"], r["rate"])
    if k not in keys:
        keys.append(k)
agg = {}
for k in keys:
    group = [r for r in rows if (r["server"], r["phase"], r["mode"], r["conns"], r["rate"]) == k]
    a = {f: med(group, f) for f in ["rps", "p50", "p99", "p999", "cpu_us", "client_us"]}
    a["cs"] = med(group, "cs") if all(r["cs"] is not None for r in group) else None
    a["errors"] = sum(r["errors"] for r in group)
    a["hwm_mb"] = max(r["hwm_mb"] for r in group)
    a["n"] = len(group)
    agg[k] = a
    cs_text = "-" if a["cs"] is None else f"{a['cs']:.3f}"
    say(
        f"{k[0]:<19} {k[1]:<10} {k[2]:<8} {k[3]:>5} {k[4]:>6} {a['rps']:>8.0f} {a['p50']:>7.2f} {a['p99']:>7.2f} "
        f"{a['p999']:>7.2f} {a['errors']:>6} {a['hwm_mb']:>8.1f} {a['cpu_us']:>10.1f} {a['client_us']:>10.1f} {cs_text:>6}"
    )
# bench/load.sh records the CPU placement (SERVER_CPUS / CLIENT_CPUS) in machine.txt.
machine = (d / "machine.txt").read_text() if (d / "machine.txt").exists() else ""
server_cpus, client_cpus = (
    (m.group(1) if (m := re.search(rf"\b{name}=(\S*)", machine)) else "") for name in ("SERVER_CPUS", "CLIENT_CPUS")
)
if server_cpus or client_cpus:
    placement = f"servers pinned to CPUs {server_cpus or 'any'}, oha to CPUs {client_cpus or 'any'} (taskset)"
else:
    placement = "oha shared the cores with the servers"
say("(medians over %d repetition(s); VmHWM is the server's peak RSS so far; CPU is the server's, all\n"
    " threads; oha is the load generator's CPU; cs/req is the server's context switches per request,\n"
    " all threads; %s)" % (max(r["rep"] for r in rows), placement))

verdicts = []
ratios = {}
for (server, phase, mode, conns, rate), a in agg.items():
    if server == "secretmode" and phase == "saturate":
        c = agg.get(("ceiling", phase, mode, conns, rate))
        if c and c["rps"]:
            ratios[mode] = a["rps"] / c["rps"]
if ratios:
    say("")
    for mode, r in ratios.items():
        say(f"ratio {mode:<8} secretmode/ceiling = {r:.2f}")
    worst = min(ratios.values())
    mean = statistics.mean(ratios.values())
    verdicts.append(("throughput >= 0.6 x ceiling at saturation (worst mode)", worst >= 0.6, f"{worst:.2f}"))
    say(f"RATIO secretmode/ceiling at saturation: {mean:.2f} (mean over modes), {worst:.2f} (worst mode)")
    for field, label, fmt in [("cpu_us", "server CPU per request at saturation (ceiling / secretmode, us)", ".1f"),
                              ("cs", "server context switches per request at saturation (ceiling / secretmode)", ".3f")]:
        pairs = {m: (agg[("ceiling", "saturate", m, c, r)][field], a[field])
                 for (s_, p_, m, c, r), a in agg.items() if s_ == "secretmode" and p_ == "saturate"
                 and ("ceiling", "saturate", m, c, r) in agg}
        if pairs and all(ce and sm for ce, sm in pairs.values()):
            say(f"{label}: "
                + ", ".join(f"{m} {ce:{fmt}} / {sm:{fmt}}" for m, (ce, sm) in pairs.items()))
    def against(other):
        """mode -> (other / ceiling, secretmode / other), where all three ran."""
        out = {}
        for mode in ratios:
            key = next(k for k in agg if k[:3] == ("secretmode", "saturate", mode))
            plain, that = agg.get(("ceiling",) + key[1:]), agg.get((other,) + key[1:])
            if plain and that and plain["rps"] and that["rps"]:
                out[mode] = (that["rps"] / plain["rps"], agg[key]["rps"] / that["rps"])
        return out
    def per_mode(label, pairs, which, mean=True):
        """One line: each mode's ratio from `against` (which: 0 = other / ceiling,
        1 = secretmode / other), and their mean."""
        values = {m: p[which] for m, p in pairs.items()}
        say(f"{label}: " + ", ".join(f"{m} {v:.2f}" for m, v in values.items())
            + (f" (mean {statistics.mean(values.values()):.2f})" if mean else ""))
    sized = against("ceiling-sized")
    if sized:
        per_mode("the answer's size alone (ceiling with secretmode's answer / ceiling)", sized, 0, mean=False)
        per_mode("secretmode / ceiling with secretmode's answer", sized, 1)
    review = against("ceiling-review")
    if review:
        per_mode("the review alone (ceiling's handler running review::review / ceiling)", review, 0)
        per_mode("what serve adds around the review (secretmode / ceiling running the review)", review, 1)
    value = against("ceiling-value")
    if value:
        per_mode("the ceiling building the review as a serde_json::Value / the ceiling", value, 0)
        per_mode("secretmode / the ceiling building a Value", value, 1)
    for flavour in ("kube", "value"):
        naive = against(f"ceiling-naive-{flavour}")
        if naive:
            per_mode(f"the naive parse-clone-diff handler, {flavour} (its ratio to the ceiling; the target "
                     "assumes about 0.4)", naive, 0)
            per_mode(f"secretmode / the naive handler, {flavour} (the target assumes 0.6 / 0.4 = 1.5)", naive, 1)
            if value:
                per_mode(f"the naive handler, {flavour} / the ceiling building a Value",
                         {m: (a / value[m][0],) for m, (a, _) in naive.items() if m in value}, 0, mean=False)
    busy = sorted({k[0] for k in agg if k[0].startswith("ceiling-busy")}, key=lambda s: int(s[len("ceiling-busy"):]))
    for server in busy:
        parts = []
        for (s_, p_, m, c, r), a in agg.items():
            plain = agg.get(("ceiling", p_, m, c, r))
            if s_ == server and plain and plain["rps"]:
                parts.append(f"{m} {a['rps'] / plain['rps']:.2f} ({a['cpu_us']:.0f} us/req)")
        say(f"ceiling + {server[len('ceiling-busy'):]} us busy work per request / ceiling: " + ", ".join(parts))

fixed = [a for (s, p, m, c, r), a in agg.items() if s == "secretmode" and p == "fixed"]
if fixed:
    worst_p99 = max(a["p99"] for a in fixed)
    verdicts.append(("p99 < 5 ms at 1,000 req/s (worst mode)", worst_p99 < 5.0, f"{worst_p99:.2f} ms"))
many = [a for (s, p, m, c, r), a in agg.items() if s == "secretmode" and p == "conns500"]
if many:
    hwm = max(a["hwm_mb"] for a in many)
    verdicts.append(("RSS < 50 MB at 500 concurrent connections", hwm < 50.0, f"{hwm:.1f} MB"))
errors = sum(a["errors"] for (s, *_), a in agg.items() if s == "secretmode")
verdicts.append(("zero errors (secretmode, all runs)", errors == 0, str(errors)))
say("")
for name, ok, value in verdicts:
    say(f"{'PASS' if ok else 'MISS'}  {name}: {value}")

text = "\n".join(lines)
print(text)
(d / "summary.txt").write_text(text + "\n")
