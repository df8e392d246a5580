"""Per-datagram cost of netsock's UDP path, beside the kernel's for the same work in the same run.

netsock: a datagram injected at the link (channel endpoint), through IPv4 and UDP validation into
an endpoint's queue, read, written back through UDP and IPv4 to the link: one echo, in-process.
kernel: sendto + recvfrom + sendto + recvfrom between two UDP sockets on 127.0.0.1 (the same
application work, with two system-call round trips: the kernel's floor for an echo).

    python bench/udp_echo.py [--count N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import socket
import time

from netsock.header import ipv4, udp
from netsock.header.checksum import USING_NATIVE, checksum, combine, pseudo_header_checksum
from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import ManualClock, Stack
from netsock.tcpip import FullAddress, Route, WriteOptions
from netsock.transport.udp import UDPProtocol

CLIENT = bytes([192, 0, 2, 1])
SERVER = bytes([192, 0, 2, 2])


def datagram(size: int) -> bytes:
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    buf = bytearray(28 + size)
    length = 8 + size
    udp.build(memoryview(buf)[20:28], 5000, 7, length)
    csum = ~combine(pseudo_header_checksum(17, CLIENT, SERVER, length), checksum(bytes(buf[20:28]) + payload)) & 0xFFFF
    buf[26:28] = csum.to_bytes(2, "big")
    buf[28:] = payload
    ipv4.build(buf, src=CLIENT, dst=SERVER, protocol=17, total_length=len(buf))
    return bytes(buf)


def bench_netsock(count: int, size: int) -> float:
    stack = Stack([IPv4Protocol], [UDPProtocol], clock=ManualClock())
    link = ChannelEndpoint(size=count + 1)
    stack.create_nic(1, link)
    stack.add_address(1, 0x0800, "192.0.2.2/24")
    stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
    ep = stack.new_endpoint(17, 0x0800)
    ep.bind(FullAddress(0, b"", 7))
    frame = datagram(size)
    start = time.perf_counter()
    for _ in range(count):
        link.inject(0x0800, frame)
        got = ep.read()
        ep.write(got.data, WriteOptions(to=got.sender))
    elapsed = time.perf_counter() - start
    assert len(link.drain()) == count
    return elapsed / count


def bench_kernel(count: int, size: int) -> float:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    payload = b"x" * size
    start = time.perf_counter()
    for _ in range(count):
        a.sendto(payload, b.getsockname())
        data, peer = b.recvfrom(65536)
        b.sendto(data, peer)
        a.recvfrom(65536)
    elapsed = time.perf_counter() - start
    a.close()
    b.close()
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    ns = bench_netsock(args.count, args.size)
    k = bench_kernel(args.count, args.size)
    print(f"UDP echo, {args.size}-byte payload, {args.count} datagrams (native checksum: {USING_NATIVE})")
    print(f"  netsock in-process echo : {ns * 1e6:7.2f} µs/datagram  ({1 / ns:9.0f}/s)")
    print(f"  kernel loopback echo    : {k * 1e6:7.2f} µs/datagram  ({1 / k:9.0f}/s)")
    print(f"  ratio netsock/kernel    : {ns / k:7.2f}x the time")


if __name__ == "__main__":
    main()
