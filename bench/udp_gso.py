"""UDP send throughput with and without UDP_SEGMENT (UDP GSO), and receive with and without UDP_GRO, netsock
beside the kernel.

    sudo python bench/udp_gso.py [--bytes N] [--quick] [--json FILE]

Each run sends ``--bytes`` as 1,472-byte datagrams (1,500-byte IP packets) to a kernel receiver
(peers.py udp-sink, which counts what arrives), either one datagram per write or, with UDP_SEGMENT
1472, 44 datagrams per 64,768-byte write. netsock: a UDP endpoint of a stack in this process on a
TUN device with the virtio-net offloads (``fdbased``: a UDP_SEGMENT write crosses the device whole
and the kernel cuts it; without them, UDP would cut it). kernel: the same writes from peers.py
udp-send over a veth pair. Reported: the rate the sender pushed out, its CPU seconds per GB (the
sender's process, its system calls included) and the share the receiver counted (a UDP sender may
outrun its receiver; nothing paces it).

Receive: the kernel's udp-send pushes ``--bytes`` as 1,472-byte datagrams, each alone, to a netsock UDP
endpoint on the TUN (offloads on), read as they come, and again with UDP_GRO (a batch's datagrams of the
flow joined, as Linux's GRO joins them); kernel: udp-sink reading the same over a veth pair, without and
with UDP_GRO. Reported: the rate received, the receiver's CPU seconds per GB, and datagrams per read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent

from netsock.link.fdbased import FdEndpoint
from netsock.link.netns import inside
from netsock.network.ipv4 import IPv4Protocol
from netsock.scheduler import blocking
from netsock.stack import Stack
from netsock.stack.interfaces import LinkCapabilities
from netsock.tcpip import UDP_PROTOCOL_NUMBER, Address, FullAddress, Route, SockOpt, WriteOptions
from netsock.transport.udp import UDPProtocol
from netsock.waiter import EventMask, WaiterQueue

from common import (MIB, TUN_KERNEL, TUN_NETSOCK, VETH_CLIENT, VETH_SERVER, Figure, NetNS, cpu_seconds,
                    exit_on_sigterm, peer, require_root, run_json, start, tun_host, veth_hosts, write_figures)

PORT = 6000
DATAGRAM = 1472                         # a 1,500-byte IP packet
WRITE_WITH_GSO = 44 * DATAGRAM          # 64,768 bytes: as many as one 64 KB IP packet carries
GBIT = 1e9


class Sink:
    """peers.py udp-sink in ``ns`` on ``address``: started before a run, its count read after."""

    def __init__(self, ns: NetNS, address: str, workdir: Path) -> None:
        self.log = workdir / f"sink-{address}-{time.monotonic_ns()}.log"
        self.process = start(ns, peer("udp-sink", f"{address}:{PORT}", "--idle", "0.5"), self.log, cpu=None)
        deadline = time.monotonic() + 10
        while b"ready" not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"udp-sink did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.01)

    def result(self) -> dict[str, Any]:
        self.process.wait(timeout=60)
        return json.loads(self.log.read_text().splitlines()[-1])


@contextmanager
def netsock_on_tun(ns: NetNS) -> Iterator[tuple[Stack, FdEndpoint]]:
    """A netsock stack with UDP on ns's tun0 (offloads on), its address TUN_NETSOCK; closed after."""
    with inside(ns.name):
        link = FdEndpoint.open_tun("tun0")
    stack = Stack([IPv4Protocol], [UDPProtocol])
    try:
        stack.create_nic(1, link)
        stack.add_address(1, 0x0800, f"{TUN_NETSOCK}/24")
        stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
        yield stack, link
    finally:
        stack.close()
        link.close()


def netsock_send(ns: NetNS, size: int, segment: int) -> dict[str, Any]:
    """Send from a netsock stack on ns's tun0 (offloads on); seconds and CPU seconds of the writes."""
    with netsock_on_tun(ns) as (stack, link):
        endpoint = stack.new_endpoint(UDP_PROTOCOL_NUMBER, 0x0800, WaiterQueue())
        if segment:
            endpoint.set_sock_opt(SockOpt.UDP_SEGMENT, segment)
        write = WRITE_WITH_GSO if segment else DATAGRAM
        block = os.urandom(write)
        to = WriteOptions(to=FullAddress(0, Address.parse(TUN_KERNEL), PORT))
        start_time, cpu = time.perf_counter(), cpu_seconds()
        for _ in range(size // write):
            endpoint.write(block, to)
        seconds, cpu = time.perf_counter() - start_time, cpu_seconds() - cpu
        return {"bytes": size // write * write, "seconds": seconds, "cpu_seconds": cpu,
                "udp_gso_offloaded": bool(link.capabilities() & LinkCapabilities.HARDWARE_GSO_UDP),
                "link": link.stats.as_dict()}


def netsock_receive(ns: NetNS, size: int, gro: bool, workdir: Path) -> dict[str, Any]:
    """Receive the kernel's 1,472-byte datagrams on a netsock stack on ns's tun0 (offloads on) until none came
    for half a second: bytes, reads, datagrams, the seconds from the first to the last, CPU seconds."""
    with netsock_on_tun(ns) as (stack, link):
        queue = WaiterQueue()
        endpoint = stack.new_endpoint(UDP_PROTOCOL_NUMBER, 0x0800, queue)
        endpoint.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 64 << 20)
        endpoint.set_sock_opt(SockOpt.UDP_GRO, gro)
        endpoint.bind(FullAddress(0, b"", PORT))
        sender = start(ns, peer("udp-send", f"{TUN_NETSOCK}:{PORT}", "--bytes", str(size), "--segment", "0",
                                "--write", str(DATAGRAM)), workdir / f"udp-send-{gro}.log", cpu=None)
        received = reads = 0
        first = last = cpu = 0.0
        while True:
            data = None
            with gevent.Timeout(0.5 if reads else 10, False):      # (False: running out ends the block quietly)
                data = blocking(endpoint, queue, EventMask.IN, endpoint.read).data
            if data is None:
                break
            last = time.perf_counter()
            if not reads:
                first, cpu = last, cpu_seconds()
            received += len(data)
            reads += 1
        cpu = cpu_seconds() - cpu
        sender.wait(timeout=60)
        return {"bytes": received, "reads": reads, "datagrams": stack.stats().udp.packets_received.value,
                "seconds": last - first, "cpu_seconds": cpu, "link": link.stats.as_dict()}


def kernel_receive(size: int, gro: bool, workdir: Path) -> dict[str, Any]:
    """The same datagrams sent and read by the kernel over a veth pair (udp-sink, with UDP_GRO if ``gro``)."""
    with veth_hosts() as (client, server):
        log = workdir / f"udp-sink-{gro}.log"
        sink = start(server, peer("udp-sink", f"{VETH_SERVER}:{PORT}", "--idle", "0.5", *(["--gro"] if gro else [])),
                     log, cpu=None)
        deadline = time.monotonic() + 10
        while b"ready" not in log.read_bytes():
            if sink.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"udp-sink did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.01)
        run_json(client, peer("udp-send", f"{VETH_SERVER}:{PORT}", "--bytes", str(size), "--segment", "0",
                              "--write", str(DATAGRAM)), cpu=None)
        sink.wait(timeout=60)
        result = json.loads(log.read_text().splitlines()[-1])
        return {**result, "reads": result["datagrams"]}


def receive_figures(size: int, workdir: Path) -> list[Figure]:
    figures = []
    for gro in (False, True):
        with tun_host() as ns:
            ours = netsock_receive(ns, size, gro, workdir)
        theirs = kernel_receive(size, gro, workdir)
        label = "UDP receive, 1,472-byte datagrams" + (", UDP_GRO" if gro else "")
        detail = {"netsock": ours, "kernel": theirs}
        figures += [
            Figure(label, "Gbit/s", rate(ours), rate(theirs), detail=detail),
            Figure(f"CPU per GB, {label}", "CPU s/GB", ours["cpu_seconds"] / (ours["bytes"] / 1e9),
                   theirs["cpu_seconds"] / (theirs["bytes"] / 1e9)),
            Figure(f"datagrams per read, {label}", "datagrams", ours["bytes"] / DATAGRAM / ours["reads"],
                   theirs["bytes"] / DATAGRAM / theirs["reads"]),
        ]
    return figures


def measure(size: int, workdir: Path) -> list[Figure]:
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for segment in (0, DATAGRAM):
        with tun_host() as ns:
            sink = Sink(ns, TUN_KERNEL, workdir)
            sent = netsock_send(ns, size, segment)
            runs[("netsock", segment)] = {**sent, "received": sink.result()}
        with veth_hosts() as (client, server):
            sink = Sink(server, VETH_SERVER, workdir)
            sent = run_json(client, peer("udp-send", f"{VETH_SERVER}:{PORT}", "--bytes", str(size), "--segment",
                                         str(segment), "--write", str(WRITE_WITH_GSO if segment else DATAGRAM)),
                            cpu=None)
            runs[("kernel", segment)] = {**sent, "received": sink.result(), "from": VETH_CLIENT}
    figures = []
    for segment, label in ((0, "1,472-byte writes"), (DATAGRAM, "UDP_SEGMENT 1472, 64 KB writes")):
        ours, theirs = runs[("netsock", segment)], runs[("kernel", segment)]
        detail = {"netsock": ours, "kernel": theirs}
        figures += [
            Figure(f"UDP send, {label}", "Gbit/s", rate(ours), rate(theirs), detail=detail),
            Figure(f"CPU per GB, UDP send, {label}", "CPU s/GB", ours["cpu_seconds"] / (ours["bytes"] / 1e9),
                   theirs["cpu_seconds"] / (theirs["bytes"] / 1e9)),
            Figure(f"share received, UDP send, {label}", "fraction", ours["received"]["bytes"] / ours["bytes"],
                   theirs["received"]["bytes"] / theirs["bytes"]),
        ]
    return figures + receive_figures(size // 4, workdir)


def rate(run: dict[str, Any]) -> float:
    return run["bytes"] * 8 / run["seconds"] / GBIT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bytes", type=int, default=512 * MIB, help="bytes each run sends (default 512 MiB)")
    parser.add_argument("--quick", action="store_true", help="64 MiB a run")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    require_root(parser)
    if args.quick:
        args.bytes = 64 * MIB
    exit_on_sigterm()
    print("UDP send with and without UDP_SEGMENT (netsock: TUN with offloads; kernel: veth)")
    with tempfile.TemporaryDirectory() as workdir:
        write_figures(args.json, measure(args.bytes, Path(workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
