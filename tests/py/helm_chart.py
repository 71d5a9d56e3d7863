"""Render, lint and schema-check a Helm chart with Helm's own Go SDK (helm-python-sdk).

Driven by tests/chart_*.rs. Subcommands (values are a JSON file, `-` for none):

  render CHART VALUES OUTDIR [--name N] [--namespace NS] [--upgrade]
      Validates VALUES against values.schema.json, renders every template offline, and writes
      each YAML document to OUTDIR/NNN-<kind>-<name>.yaml. Prints a JSON summary on stdout:
      {"documents": [{"file", "template", "apiVersion", "kind", "name"}], "notes": "..."}.
  lint CHART VALUES [--namespace NS]
      Runs Helm's linter (strict). Prints {"ok", "charts", "problems", "report"} as JSON: the
      problems are the report's warnings and errors. Exits 1 on any problem, 2 when the SDK's
      report is not shaped as expected (so a renamed key cannot read as "no problems").
  schema CHART VALUES
      Exits 0 if VALUES pass values.schema.json, 1 with Helm's message otherwise.
"""

import argparse
import json
import os
import re
import sys

import yaml
import helm_python as helm

KUBE_VERSION = "v1.33.0"


def load_values(path):
    if path == "-":
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cmd_render(args):
    values = load_values(args.values)
    with helm.Chart.load(args.chart) as chart:
        chart.validate_schema(values)
        rendered = chart.render(
            values,
            name=args.name,
            namespace=args.namespace,
            is_install=not args.upgrade,
            is_upgrade=args.upgrade,
        )
    os.makedirs(args.outdir, exist_ok=True)
    documents = []
    notes = ""
    for template in sorted(rendered):
        text = rendered[template]
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kind = doc.get("kind", "unknown")
            name = doc.get("metadata", {}).get("name", "unnamed")
            safe = re.sub(r"[^A-Za-z0-9.-]", "_", f"{kind}-{name}")
            path = os.path.join(args.outdir, f"{len(documents):03d}-{safe}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            documents.append({
                "file": path,
                "template": template,
                "apiVersion": doc.get("apiVersion"),
                "kind": kind,
                "name": name,
            })
    json.dump({"documents": documents, "notes": notes}, sys.stdout)


# Helm's support.Severity: 1 info, 2 warning, 3 error (strict lint fails on warnings too).
WARNING = 2


def cmd_lint(args):
    values = load_values(args.values)
    report = helm.lint(args.chart, values, strict=True, namespace=args.namespace, kube_version=KUBE_VERSION)
    shaped = (
        isinstance(report, dict)
        and isinstance(report.get("total_charts_linted"), int)
        and isinstance(report.get("messages"), list)
        and isinstance(report.get("errors"), list)
        and all(isinstance(m, dict) and isinstance(m.get("severity"), int) for m in report["messages"])
    )
    if not shaped:
        json.dump({"ok": False, "charts": 0, "problems": ["unexpected lint report shape"], "report": report},
                  sys.stdout, indent=2, default=str)
        sys.exit(2)
    problems = [f"{m.get('path')}: {m.get('error')}" for m in report["messages"] if m["severity"] >= WARNING]
    problems += [str(e) for e in report["errors"]]
    charts = report["total_charts_linted"]
    ok = not problems and charts >= 1
    json.dump({"ok": ok, "charts": charts, "problems": problems, "report": report}, sys.stdout, indent=2)
    sys.exit(0 if ok else 1)


def cmd_schema(args):
    values = load_values(args.values)
    with helm.Chart.load(args.chart) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmError as e:
            print(str(e))
            sys.exit(1)
    print("ok")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("chart")
    r.add_argument("values")
    r.add_argument("outdir")
    r.add_argument("--name", default="secretmode")
    r.add_argument("--namespace", default="secretmode")
    r.add_argument("--upgrade", action="store_true")
    r.set_defaults(func=cmd_render)
    lint = sub.add_parser("lint")
    lint.add_argument("chart")
    lint.add_argument("values")
    lint.add_argument("--namespace", default="secretmode")
    lint.set_defaults(func=cmd_lint)
    s = sub.add_parser("schema")
    s.add_argument("chart")
    s.add_argument("values")
    s.set_defaults(func=cmd_schema)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
