"""TCP's cost per segment inside the stack: what each step of a short connection takes, without a link.

    python bench/segment_costs.py [--quick] [--connections N] [--json FILE]

A scripted peer, written as Linux's TCP would send (SYN with MSS, SACK-permitted, timestamps and window
scale; then 64 bytes, the ACK of the answer, a FIN, the last ACK), talks to a listening TCP endpoint of a
stack whose only link is an in-memory channel: the stack's own work per step, from the segment handed to
the link's inject to its answer queued on the link, with no device, no system call and no scheduler in
between. Each step is timed over every connection (µs per step, the connection's sum, and the connection
rate that sum would allow one CPU); one connection's steps are also traced for the Python functions each
calls (in a mypyc build, only those into modules left interpreted: netsock/_compiled_modules.py). Issue 7's
connection rate needs about 200 µs a connection for everything; the kernel has no counterpart to measure in
the same way. Needs no
root; the peer's sequence numbers start near 2**32, so every connection wraps.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent

from netsock.header.checksum import checksum, pseudo_header_checksum
from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import Stack
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, FullAddress, Route
from netsock.transport.tcp import TCPProtocol
from netsock.waiter import WaiterQueue

from common import Figure, exit_on_sigterm, write_figures

CLIENT, SERVER = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
PORT = 80
PAYLOAD = b"x" * 64
SYN_OPTIONS = struct.pack("!BBH", 2, 4, 1460) + bytes([4, 2]) + struct.pack("!BBII", 8, 10, 1, 0) + bytes([1, 3, 3, 7])
STEPS = ("SYN in, SYN-ACK out", "handshake ACK in", "accept", "64 bytes in", "read", "64 bytes written, out",
         "pure ACK in", "FIN in", "close, FIN out", "last ACK in")
SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08


def segment(sport: int, seq: int, ack: int, flags: int, options: bytes = b"", data: bytes = b"",
            window: int = 502) -> bytes:
    """An IPv4 datagram with a TCP segment from the peer, checksums whole."""
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, PORT, seq, ack, (20 + len(options)) // 4 << 4, flags, window,
                                0, 0) + options + data)
    tcp[16:18] = struct.pack("!H", ~checksum(bytes(tcp), pseudo_header_checksum(TCP_PROTOCOL_NUMBER, CLIENT, SERVER,
                                                                                len(tcp))) & 0xFFFF)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, TCP_PROTOCOL_NUMBER, 0,
                               CLIENT, SERVER))
    ip[10:12] = struct.pack("!H", ~checksum(bytes(ip)) & 0xFFFF)
    return bytes(ip + tcp)


def timestamp(value: int) -> bytes:
    return struct.pack("!BBBBII", 1, 1, 8, 10, value, 0)


class Bench:
    def __init__(self) -> None:
        self.stack = Stack([IPv4Protocol], [TCPProtocol])
        self.link = ChannelEndpoint(size=1 << 16, mtu=1500)
        self.stack.create_nic(1, self.link)
        self.stack.add_address(1, IPV4_PROTOCOL_NUMBER, "192.0.2.2/24")
        self.stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
        self.listener = self.stack.new_endpoint(TCP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER, WaiterQueue())
        self.listener.bind(FullAddress(0, b"", PORT))
        self.listener.listen(1024)

    def connection(self, number: int, step: Callable[[str, Callable[[], Any]], Any]) -> None:
        """One connection, each step run through ``step(name, action)``."""
        inject, link = self.link.inject, self.link
        sport = 10000 + number % 50000
        client = (0xFFFFFFF0 + number * 7919) & 0xFFFFFFFF        # near 2**32: the numbers wrap in the connection
        syn = segment(sport, client, 0, SYN, SYN_OPTIONS, window=64240)
        step(STEPS[0], lambda: inject(0x800, syn))
        server = struct.unpack_from("!I", link.read().data, 24)[0]
        c1, s1 = (client + 1) & 0xFFFFFFFF, (server + 1) & 0xFFFFFFFF
        handshake = segment(sport, c1, s1, ACK, timestamp(2))
        step(STEPS[1], lambda: inject(0x800, handshake))
        endpoint, _ = step(STEPS[2], self.listener.accept)
        data = segment(sport, c1, s1, ACK | PSH, timestamp(3), PAYLOAD)
        step(STEPS[3], lambda: inject(0x800, data))
        received = step(STEPS[4], lambda: endpoint.read(65536))
        step(STEPS[5], lambda: endpoint.write(received))
        link.read()
        c2, s2 = (c1 + 64) & 0xFFFFFFFF, (s1 + 64) & 0xFFFFFFFF
        pure, fin = segment(sport, c2, s2, ACK, timestamp(4)), segment(sport, c2, s2, ACK | FIN, timestamp(5))
        step(STEPS[6], lambda: inject(0x800, pure))
        step(STEPS[7], lambda: inject(0x800, fin))
        assert endpoint.read(65536) == b""
        step(STEPS[8], endpoint.close)
        link.read()
        last = segment(sport, (c2 + 1) & 0xFFFFFFFF, (s2 + 1) & 0xFFFFFFFF, ACK, timestamp(6))
        step(STEPS[9], lambda: inject(0x800, last))
        for _ in range(4):
            gevent.sleep(0)             # the timers the connection leaves run
        assert len(link) == 0, "a segment the peer did not expect"


def measure(connections: int) -> list[Figure]:
    bench = Bench()
    seconds: Counter[str] = Counter()

    def timed(name: str, action: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = action()
        seconds[name] += time.perf_counter() - start
        return result
    for number in range(connections):
        bench.connection(number, timed)
    calls: Counter[str] = Counter()

    def traced(name: str, action: Callable[[], Any]) -> Any:
        def count(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                calls[name] += 1
        sys.setprofile(count)
        try:
            return action()
        finally:
            sys.setprofile(None)
    bench.connection(connections, traced)
    figures = [Figure(f"TCP step: {name}", "us", seconds[name] / connections * 1e6, None,
                      detail={"python_calls": calls[name]}) for name in STEPS]
    total = sum(seconds.values()) / connections
    figures += [Figure("TCP connection, every step", "us", total * 1e6, None,
                       detail={"python_calls": sum(calls.values()), "connections": connections}),
                Figure("connections/s that would allow one CPU", "conn/s", 1 / total, None)]
    for figure in figures[:-1]:
        figure.name += f" ({figure.detail['python_calls']} Python calls)"
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="5,000 connections instead of 20,000")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    exit_on_sigterm()
    print("TCP per-segment cost in the stack (a scripted peer over an in-memory channel; no kernel counterpart)")
    write_figures(args.json, measure(5000 if args.quick else args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
