"""Latency: 1-byte TCP ping-pong round trips, p50 and p99, over a TUN device vs over a veth pair.

    sudo python bench/latency.py [--quick] [--json FILE]

netsock: the ``tun_tcp_echo`` sample on a TUN device; kernel: the same echo server (peers.py
echo-server) on the kernel's sockets across a veth pair; the client (peers.py ping-pong, kernel
sockets, TCP_NODELAY) sends one byte and waits for it, over and over on one connection. Each is
measured with client and server pinned to the same CPU (0) and to different CPUs (client 0,
server 1): a round trip across CPUs pays two cross-CPU wake-ups, which dominate here, so netsock
is compared with the kernel on the same placement only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import (ECHO_PORT, Figure, at_most, exit_on_sigterm, kernel_echo, netsock_echo, peer, require_root,
                    run_json, write_figures)

CLIENT_CPU = 0
PLACEMENTS = {"same CPU": 0, "different CPUs": 1}       # name -> the server's CPU


def measure(quick: bool) -> list[Figure]:
    count = 2000 if quick else 20000
    figures = []
    with tempfile.TemporaryDirectory(prefix="netsock-bench-") as tmp:
        workdir = Path(tmp)
        for placement, server_cpu in PLACEMENTS.items():
            results = {}
            for stack, echo in (("netsock", netsock_echo), ("kernel", kernel_echo)):
                with echo(workdir, server_cpu) as (ns, host):
                    results[stack] = run_json(ns, peer("ping-pong", f"{host}:{ECHO_PORT}", "--count", str(count)),
                                              cpu=CLIENT_CPU)
            netsock, kernel = results["netsock"], results["kernel"]
            detail = {"round_trips": count, "client_cpu": CLIENT_CPU, "server_cpu": server_cpu, **results}
            p50 = Figure(f"1-byte ping-pong p50 ({placement})", "us", netsock["p50_us"], kernel["p50_us"],
                         "<= 3x kernel", None, detail)
            p50.met = at_most(p50.ratio, 3)
            figures += [p50, Figure(f"1-byte ping-pong p99 ({placement})", "us", netsock["p99_us"], kernel["p99_us"])]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 round trips per run instead of 20,000")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    require_root(parser)
    exit_on_sigterm()
    print("1-byte TCP ping-pong (client on CPU 0; server on CPU 0 = same CPU, on CPU 1 = different CPUs)")
    write_figures(args.json, measure(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
