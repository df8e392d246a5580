"""In-process bulk TCP: two netsock hosts of a private network (``netsock.Network``) in this
process, vs the kernel's loopback carrying the same program; throughput and CPU seconds per GB.

    python bench/inprocess.py [--quick] [--bytes N] [--kernel-bytes N] [--json FILE]

One program, two socket implementations: a receiver greenlet accepts one connection and reads it
to EOF into a 1 MiB buffer (timed from the accept to EOF, as bench/tcp_bulk.py times), a sender
greenlet writes 64 KiB bytes objects, shuts down its sending side and waits for the receiver's
close. netsock: ``NetsockSocket``s of two hosts on one switch of a private network (Ethernet
switched in memory: the path ``netsock.Network`` gives tests and demos; TCP's 64 KB super-segments
of MTU-sized segments cross it whole, as over a Linux bridge or veth, and are captured), at the
switch's default MTU of 1500 and at a 64 KiB MTU; then at MTU 1500 through a router between two
switches, and through that router masquerading the sender (iptables' nat table). kernel: gevent's
kernel sockets over loopback (MTU 64 KiB) in this same process. CPU is this process's user + system
time over the whole transfer (both ends are here), per 10^9 bytes. Needs no root.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket

from netsock import Network
from netsock.adapter.socket import NetsockSocket
from netsock.stack.iptables import Masquerade, Rule

from common import MIB, Figure, at_least, cpu_seconds, exit_on_sigterm, stream_sink, stream_source, write_figures

PORT = 5001
SWITCH_MTUS = (1500, 65535)
GBIT = 1e9


def transfer(listener: Any, sender: Any, address: tuple[str, int], size: int,
             spawn: Callable[..., gevent.Greenlet]) -> dict[str, Any]:
    cpu = cpu_seconds()
    receiving = spawn(stream_sink, listener)
    sending = spawn(stream_source, sender, address, size)
    sunk = receiving.get()
    received, seconds = sunk["bytes"], sunk["seconds"]
    sending.get()
    cpu = cpu_seconds() - cpu
    listener.close()
    if received != size:
        raise RuntimeError(f"{received} bytes arrived, {size} were sent")
    return {"bytes": received, "seconds": seconds, "gbit_per_s": received * 8 / seconds / GBIT,
            "cpu_seconds": cpu, "cpu_seconds_per_gb": cpu / (received / 1e9)}


def netsock_transfer(size: int, mtu: int, path: str = "switch") -> dict[str, Any]:
    """``path``: "switch" (both hosts on one), "router" (each on its own switch, a router between) or
    "masquerade" (that router translating the sender's address, as a home router does)."""
    with Network() as net:
        lan = net.switch("lan", "192.0.2.0/24", mtu=mtu)
        if path == "switch":
            receiver, sender = net.host("receiver", lan), net.host("sender", lan)
        else:
            wan = net.switch("wan", "198.51.100.0/24", mtu=mtu)
            router = net.router("router", lan, wan)
            if path == "masquerade":
                router.stack.iptables.ipv4_nat.append("POSTROUTING", Rule(Masquerade(), out_interface="wan"))
            receiver, sender = net.host("receiver", wan), net.host("sender", lan)
        listener = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=receiver.stack)
        listener.bind((receiver.address, PORT))
        listener.listen()
        client = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=sender.stack)
        return transfer(listener, client, (receiver.address, PORT), size, gevent.spawn)


def kernel_transfer(size: int) -> dict[str, Any]:
    listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return transfer(listener, client, listener.getsockname(), size, gevent.spawn)


def measure(size: int, kernel_size: int) -> list[Figure]:
    kernel = kernel_transfer(kernel_size)
    figures = []
    for mtu in SWITCH_MTUS:
        netsock = netsock_transfer(size, mtu)
        detail = {"netsock": netsock, "kernel": kernel, "kernel_path": "gevent sockets over loopback (MTU 65536)"}
        figures += [
            Figure(f"in-process bulk TCP, switch MTU {mtu}", "Gbit/s", netsock["gbit_per_s"], kernel["gbit_per_s"],
                   ">= 2 Gbit/s", at_least(netsock["gbit_per_s"], 2), detail),
            Figure(f"CPU per GB, in-process, switch MTU {mtu}", "CPU s/GB", netsock["cpu_seconds_per_gb"],
                   kernel["cpu_seconds_per_gb"]),
        ]
    for path in ("router", "masquerade"):      # what forwarding, and then address translation, cost
        netsock = netsock_transfer(size, SWITCH_MTUS[0], path)
        detail = {"netsock": netsock, "kernel": kernel, "kernel_path": "gevent sockets over loopback (MTU 65536)"}
        figures.append(Figure(f"in-process bulk TCP, through a {'masquerading ' * (path == 'masquerade')}router, "
                              f"MTU {SWITCH_MTUS[0]}", "Gbit/s", netsock["gbit_per_s"], kernel["gbit_per_s"],
                              detail=detail))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bytes", type=int, default=1024 * MIB,
                        help="bytes netsock moves at each MTU (default 1 GiB)")
    parser.add_argument("--kernel-bytes", type=int, default=4096 * MIB,
                        help="bytes for the kernel's transfer (default 4 GiB)")
    parser.add_argument("--quick", action="store_true", help="128 MiB for netsock at each MTU, 1 GiB for the kernel")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.bytes, args.kernel_bytes = 128 * MIB, 1024 * MIB
    exit_on_sigterm()
    print("In-process bulk TCP (netsock: private network, two hosts on one switch, then through a router; "
          "kernel: loopback)")
    write_figures(args.json, measure(args.bytes, args.kernel_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
