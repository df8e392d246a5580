"""Connection rate: connect, one 64-byte request and its echo, close — per second.

    sudo python bench/connection_rate.py [--quick] [--json FILE]

netsock: the ``tun_tcp_echo`` sample on a TUN device. kernel: the same echo server (peers.py
echo-server: gevent, a greenlet per connection, as the sample) across a veth pair. The load is
peers.py connect-rate on the kernel side: one process on epoll keeping ``--concurrency``
connections in flight, each closed by the client once its echo is back (the client holds the
TIME_WAIT). Server on CPU 1, client on CPU 0. The client's CPU share is reported: near 1.0 means
the client, not the server, set the pace (then the figure is a lower bound for that server).
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
REQUEST_BYTES = 64
WARMUP_CONNECTIONS = 300


def connect_rate(ns: NetNS, host: str, connections: int) -> dict[str, Any]:
    widen_port_range(ns)
    target = f"{host}:{ECHO_PORT}"
    for count in (WARMUP_CONNECTIONS, connections):
        result = run_json(ns, peer("connect-rate", target, "--connections", str(count), "--concurrency",
                                   str(CONCURRENCY), "--size", str(REQUEST_BYTES)))
    if result["failed"] or result["stalled"]:
        raise RuntimeError(f"connections failed against {target}: {result}")
    return result


def measure(quick: bool) -> list[Figure]:
    connections = 3000 if quick else 20000
    with tempfile.TemporaryDirectory(prefix="netsock-bench-") as tmp:
        with netsock_echo(Path(tmp)) as (ns, host):
            netsock = connect_rate(ns, host, connections)
        with kernel_echo(Path(tmp)) as (ns, host):
            kernel = connect_rate(ns, host, connections)
    placement = f"echo server on CPU {SERVER_CPU}, client on CPU {LOAD_CPU}"
    detail = {"connections": connections, "concurrency": CONCURRENCY, "request_bytes": REQUEST_BYTES,
              "placement": placement, "netsock": netsock, "kernel": kernel}
    return [
        Figure("connection rate (connect+64 B echo+close)", "conn/s", netsock["per_second"], kernel["per_second"],
               ">= 5,000/s", at_least(netsock["per_second"], 5000), detail),
        Figure("connection time p50 (under that load)", "ms", netsock["p50_ms"], kernel["p50_ms"]),
        Figure("connection time p99 (under that load)", "ms", netsock["p99_ms"], kernel["p99_ms"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 connections instead of 20,000")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    require_root(parser)
    exit_on_sigterm()
    print(f"Connection rate ({CONCURRENCY} in flight; server CPU {SERVER_CPU}, client CPU {LOAD_CPU}; {interpreter()})")
    write_figures(args.json, measure(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
