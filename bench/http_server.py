"""Unmodified ``http.server`` under ``netsock run`` vs the same server on the kernel: requests/s and
latency percentiles, 1 KB and 1 MB responses.

    sudo python bench/http_server.py [--quick] [--json FILE]

The server is ``python -m http.server`` (ThreadingHTTPServer, SimpleHTTPRequestHandler: HTTP/1.0,
one connection per request, a thread per connection) serving a directory with the two files.
netsock: run by ``python -m netsock run --tun tun0`` (every socket on netsock's stack, threads as
greenlets); kernel: run as it is, across a veth pair. The load generator is wrk on the kernel side
(``--latency``: p50/p75/p90/p99 of each request, reconnecting per request as HTTP/1.0 requires),
pinned to CPU 0, the server to CPU 1. Each measurement follows a one-second warm-up.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (KIB, LOAD_CPU, MIB, SERVER_CPU, TUN_NETSOCK, VETH_SERVER, Figure, NetNS, at_least,
                    exit_on_sigterm, pinned, require_root, start, tun_host, veth_hosts, wait_listening,
                    write_figures)

PORT = 8000
FILES = {"1 KB": ("1k.bin", KIB), "1 MB": ("1m.bin", MIB)}
CONNECTIONS = 8
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(ns: NetNS, url: str, seconds: int) -> dict[str, Any]:
    """wrk's figures for ``seconds`` of load on url, from ns (pinned to LOAD_CPU)."""
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    done = ns.run(pinned(LOAD_CPU, argv), check=False, timeout=seconds + 60)
    if done.returncode:
        raise RuntimeError(f"wrk exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> dict[str, Any]:
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    percentiles = {f"p{q}_ms": round(float(value) * _UNIT_SECONDS[unit] * 1e3, 3)
                   for q, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text,
                                                    re.MULTILINE)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    requests = re.search(r"^\s+(\d+) requests in", text, re.MULTILINE)
    return {"requests_per_second": float(rate.group(1)), **percentiles,
            "requests": int(requests.group(1)) if requests else None,
            "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups())))
            if errors else {}, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def load(ns: NetNS, host: str, seconds: int) -> dict[str, dict[str, Any]]:
    """Per response size: wrk's figures, after a warm-up."""
    results = {}
    for size, (name, _) in FILES.items():
        url = f"http://{host}:{PORT}/{name}"
        wrk(ns, url, 1)
        results[size] = wrk(ns, url, seconds)
    return results


def serve(webroot: Path, bind: str) -> list[str]:
    return [sys.executable, "-m", "http.server", str(PORT), "--bind", bind, "--directory", str(webroot)]


def measure(quick: bool) -> list[Figure]:
    seconds = 2 if quick else 8
    with tempfile.TemporaryDirectory(prefix="netsock-bench-") as tmp:
        workdir = Path(tmp)
        webroot = workdir / "www"
        webroot.mkdir()
        for name, length in FILES.values():
            (webroot / name).write_bytes(bytes(range(256)) * (length // 256))
        with tun_host() as ns:
            log = workdir / "netsock-http.log"
            server = start(ns, [sys.executable, "-m", "netsock", "run", "--tun", "tun0", "--address",
                                f"{TUN_NETSOCK}/24", "--", *serve(webroot, TUN_NETSOCK)[1:]], log)
            wait_listening(ns, TUN_NETSOCK, PORT, server, log)
            netsock = load(ns, TUN_NETSOCK, seconds)
        with veth_hosts() as (client, server_ns):
            log = workdir / "kernel-http.log"
            server = start(server_ns, serve(webroot, VETH_SERVER), log)
            wait_listening(client, VETH_SERVER, PORT, server, log)
            kernel = load(client, VETH_SERVER, seconds)
    placement = f"server on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}"
    figures = []
    for size in FILES:
        ours, theirs = netsock[size], kernel[size]
        detail = {"seconds": seconds, "connections": CONNECTIONS, "placement": placement, "netsock": ours,
                  "kernel": theirs}
        rate = Figure(f"http.server {size} requests/s", "req/s", ours["requests_per_second"],
                      theirs["requests_per_second"], ">= 80% of kernel", None, detail)
        rate.met = at_least(rate.ratio, 0.8)
        figures += [rate, *(Figure(f"http.server {size} latency {q}", "ms", ours.get(f"{q}_ms"), theirs.get(f"{q}_ms"))
                            for q in ("p50", "p99"))]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per measurement instead of 8")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    require_root(parser)
    exit_on_sigterm()
    try:
        subprocess.run(["wrk", "--version"], capture_output=True, check=False)
    except FileNotFoundError:
        parser.error("needs wrk (Debian package wrk)")
    print(f"http.server ({CONNECTIONS} connections from wrk on CPU {LOAD_CPU}, server on CPU {SERVER_CPU})")
    write_figures(args.json, measure(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
