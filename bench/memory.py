"""Memory per idle established TCP connection, with 10,000 connections open.

    sudo python bench/memory.py [--quick] [--connections N] [--json FILE]

netsock: two stacks in this process joined by an in-memory wire (``link.wire``); the client stack
opens the connections one after another to a listener on the other, which accepts each. The
figure is the growth of this process's RSS from before the connections to after them (gc run and
the stacks idle for half a second at both points, and a few hundred connections already open
at the first, so one-time costs are not counted), divided by the number of connection ends: two
per connection, both held here. What one end costs is what a server pays per connected client.

kernel: the same number of connections over loopback in a namespace of their own (peers.py hold-connections: one
process holds the connecting ends, another the accepted ones). The kernel's memory for them is the growth of its
slab caches meanwhile (/proc/slabinfo: slabs x pages per slab x page size) in the caches that grew by at least
one object per two connections — the TCP socks, socket inodes, files, dentries, LSM blobs and bind buckets
(merged caches show under one name: the bind buckets under eventpoll_epi here) — divided by the number of ends;
the median of three runs, since the slab caches are machine-wide and other work moves them too. Idle sockets
hold no buffers (/proc/net/sockstat "mem" stays flat). The kernel figure leaves out the process's own socket
objects, as the netsock figure includes no socket-API objects (it holds the stack's endpoints directly).
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

import gevent

from netsock.link.wire import Wire
from netsock.scheduler import wait_for
from netsock.tcpip import ErrWouldBlock
from netsock.transport.tcp import TCPEndpoint, TCPState
from netsock.waiter import EventMask, WaiterQueue

from common import (KIB, TUN_KERNEL, TUN_NETSOCK, Figure, at_most, exit_on_sigterm, namespace, peer, require_root,
                    rss_bytes, run_json, write_figures)
from tcp_bulk import connect, listen, netsock_stack

PORT = 5001
BASELINE_CONNECTIONS = 200
SETTLE_SECONDS = 0.5
KERNEL_RUNS = 3


def idle_rss() -> int:
    gevent.sleep(SETTLE_SECONDS)        # delayed ACKs out, queues drained
    gc.collect()
    return rss_bytes()


def netsock_memory(connections: int) -> dict[str, Any]:
    server_link, client_link = Wire().ends
    server, client = netsock_stack(server_link, TUN_KERNEL), netsock_stack(client_link, TUN_NETSOCK)
    listener, listener_queue = listen(server, PORT)
    accepted: list[tuple[TCPEndpoint, WaiterQueue]] = []
    opened: list[tuple[TCPEndpoint, WaiterQueue]] = []

    def accept_all(count: int) -> None:
        while len(accepted) < count:
            wait_for(listener_queue, EventMask.IN, lambda: bool(listener.readiness(EventMask.IN)))
            try:
                accepted.append(listener.accept())
            except ErrWouldBlock:
                continue

    def open_connections(count: int) -> None:
        accepting = gevent.spawn(accept_all, len(accepted) + count)
        opened.extend(connect(client, TUN_KERNEL, PORT) for _ in range(count))
        accepting.get()

    try:
        open_connections(BASELINE_CONNECTIONS)
        before = idle_rss()
        open_connections(connections)
        after = idle_rss()
        established = sum(endpoint.state is TCPState.ESTABLISHED for endpoint, _ in (*opened, *accepted))
        if established != 2 * (BASELINE_CONNECTIONS + connections):
            raise RuntimeError(f"only {established} of {2 * (BASELINE_CONNECTIONS + connections)} ends established")
        return {"connections": connections, "ends": 2 * connections, "rss_before": before, "rss_after": after,
                "bytes_per_end": (after - before) / (2 * connections)}
    finally:
        client.close()
        server.close()


def kernel_memory(connections: int) -> dict[str, Any]:
    """The median of KERNEL_RUNS measurements (other work on the machine moves the slab caches too)."""
    runs = []
    for _ in range(KERNEL_RUNS):
        with namespace() as ns:
            runs.append(run_json(ns, peer("hold-connections", "--connections", str(connections),
                                          "--settle", str(SETTLE_SECONDS)), cpu=None))
    runs.sort(key=lambda run: run["slab_bytes"])
    median = runs[len(runs) // 2]
    return {**median, "bytes_per_end": median["slab_bytes"] / median["sockets"],
            "bytes_per_end_of_each_run": [run["slab_bytes"] / run["sockets"] for run in runs]}


def measure(connections: int) -> list[Figure]:
    netsock = netsock_memory(connections)
    kernel = kernel_memory(connections)
    return [Figure(f"memory per idle connection end ({connections:,} open)", "bytes", netsock["bytes_per_end"],
                   kernel["bytes_per_end"], "<= 10 KiB", at_most(netsock["bytes_per_end"], 10 * KIB),
                   {"netsock": netsock, "kernel": kernel})]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="connections to open (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 connections")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.connections = 2000
    require_root(parser)
    exit_on_sigterm()
    print("Memory per idle established connection end (netsock: RSS growth; kernel: slab growth)")
    write_figures(args.json, measure(args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
