#!/usr/bin/env python3
"""Startup (issue 6 item 5): time from process start (fork/exec of `secretmode serve`) to the
first `/readyz` 200, with the self-signed certificate made at start and with file
certificates; RUNS times each, polling /readyz every millisecond over loopback.

  bench/startup.py [--runs 20] [--bin target/release/secretmode]
"""
import argparse
import pathlib
import socket
import statistics
import subprocess
import tempfile
import time

from loopback import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def once(binary, extra):
    port, admin = free_port(), free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, "serve", "--addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}"] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 20
        while time.perf_counter() < deadline:
            if ready(admin):
                return (time.perf_counter() - t0) * 1000
            time.sleep(0.001)
        raise RuntimeError("not ready within 20 s")
    finally:
        proc.kill()
        proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--bin", default=str(ROOT / "target" / "release" / "secretmode"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = pathlib.Path(tmp) / "tls.key", pathlib.Path(tmp) / "tls.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        for name, extra in [("self-signed", []), ("file certs", ["--tls-cert", str(crt), "--tls-key", str(key)])]:
            once(args.bin, extra)  # warm the page cache
            ms = [once(args.bin, extra) for _ in range(args.runs)]
            print(f"{name:<12} start -> /readyz 200: median {statistics.median(ms):.1f} ms, "
                  f"min {min(ms):.1f}, max {max(ms):.1f} ({args.runs} runs)")


if __name__ == "__main__":
    main()
