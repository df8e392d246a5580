"""Connection rate: connect, one 64-byte request and its echo, close — per second.

    sudo python bench/connection_rate.py [--quick] [--json FILE]

netsock: the ``tun_tcp_echo`` sample on a TUN device. kernel: the same echo server (peers.py
echo-server: gevent, a greenlet per connection, as the sample) across a veth pair. The load is
peers.py connect-rate on the kernel side: one process on epoll keeping ``--concurrency``
connections in flight, each closed by the client once its echo is back (the client holds the
TIME_WAIT). Server on CPU 1, client on CPU 0. The client's CPU share is reported: near 1.0 means
the client, not the server, set the pace (then the figure is a lower bound for that server).

Both servers run side by side and are measured in alternation, ``ROUNDS`` times each (netsock,
kernel, netsock, ...); the figures are the medians. On a shared machine the rate of either moves by
a third from one minute to the next, and a single run compares one minute of the one with another
minute of the other; every round is in the JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (ECHO_PORT, LOAD_CPU, SERVER_CPU, Figure, NetNS, at_least, exit_on_sigterm, interpreter,
                    kernel_echo, netsock_echo, peer, require_root, run_json, widen_port_range, write_figures)

CONCURRENCY = 32
ROUNDS = 3
REQUEST_BYTES = 64
WARMUP_CONNECTIONS = 300


def connect_rate(ns: NetNS, host: str, connections: int) -> dict[str, Any]:
    result = run_json(ns, peer("connect-rate", f"{host}:{ECHO_PORT}", "--connections", str(connections),
                               "--concurrency", str(CONCURRENCY), "--size", str(REQUEST_BYTES)))
    if result["failed"] or result["stalled"]:
        raise RuntimeError(f"connections failed against {host}:{ECHO_PORT}: {result}")
    return result


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median rate (its latencies with it: they were measured under that load)."""
    return sorted(rounds, key=lambda r: r["per_second"])[len(rounds) // 2]


def measure(quick: bool) -> list[Figure]:
    connections = 2000 if quick else 10000      # a round; the clients' TIME_WAITs of all rounds need ports
    runs: dict[str, list[dict[str, Any]]] = {"netsock": [], "kernel": []}
    with tempfile.TemporaryDirectory(prefix="netsock-bench-") as tmp:
        with netsock_echo(Path(tmp)) as netsock_side, kernel_echo(Path(tmp)) as kernel_side:
            sides = {"netsock": netsock_side, "kernel": kernel_side}
            for ns, _ in sides.values():
                widen_port_range(ns)
            for name, (ns, host) in sides.items():
                connect_rate(ns, host, WARMUP_CONNECTIONS)
            for _ in range(ROUNDS):
                for name, (ns, host) in sides.items():
                    runs[name].append(connect_rate(ns, host, connections))
    netsock, kernel = median_round(runs["netsock"]), median_round(runs["kernel"])
    placement = f"echo server on CPU {SERVER_CPU}, client on CPU {LOAD_CPU}"
    detail = {"connections": connections, "concurrency": CONCURRENCY, "request_bytes": REQUEST_BYTES,
              "placement": placement, "rounds": ROUNDS, "netsock": netsock, "kernel": kernel,
              "netsock_rounds": [r["per_second"] for r in runs["netsock"]],
              "kernel_rounds": [r["per_second"] for r in runs["kernel"]]}
    return [
        Figure("connection rate (connect+64 B echo+close)", "conn/s", netsock["per_second"], kernel["per_second"],
               ">= 5,000/s", at_least(netsock["per_second"], 5000), detail),
        Figure("connection time p50 (under that load)", "ms", netsock["p50_ms"], kernel["p50_ms"]),
        Figure("connection time p99 (under that load)", "ms", netsock["p99_ms"], kernel["p99_ms"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="rounds of 2,000 connections instead of 10,000")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    require_root(parser)
    exit_on_sigterm()
    print(f"Connection rate ({CONCURRENCY} in flight, median of {ROUNDS} alternated rounds; "
          f"server CPU {SERVER_CPU}, client CPU {LOAD_CPU}; {interpreter()})")
    write_figures(args.json, measure(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
