#!/usr/bin/env python3
"""Writes the load bodies: examples/admission/<mode>.json as compact JSON (the way the API
server sends them, ~2.8 KB with a ~2.1 KB pod), one file per mode, into the given directory."""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for mode in ["eso", "csi", "init", "sidecar"]:
    review = json.loads((root / "examples" / "admission" / f"{mode}.json").read_text())
    body = json.dumps(review, separators=(",", ":")).encode()
    (out / f"{mode}.json").write_bytes(body)
    print(f"{mode}: review {len(body)} bytes, pod {len(json.dumps(review['request']['object'], separators=(',', ':')))} bytes")
