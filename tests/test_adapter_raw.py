"""NetsockSocket's raw sockets (SOCK_RAW) against the kernel's, over 127.0.0.1 and ::1: each test runs
the same calls on a NetsockSocket and, where this process may open raw sockets (root), on a kernel
socket, and checks both against what Linux does.

The kernel's raw sockets see the whole network namespace's traffic of their protocol, so the kernel's are made
in a namespace of their own (other runs of these tests go on at once in CI) and tests pick out their own
packets (by ICMP identifier, or by the experimental protocol 253)."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from netsock.adapter import NetsockSocket

from conftest import private_kernel_network

EXPERIMENTAL = 253          # RFC 3692: no one else on the host sends it
UDP_SEGMENT = 103           # a SOL_UDP option: not a raw socket's
SOL_RAW = 255
ICMP_FILTER = 1             # at SOL_RAW (IPv4) and, as ICMPV6_FILTER, at IPPROTO_ICMPV6
IDENT = (os.getpid() ^ 0x5A5A) & 0xFFFF

Factory = Callable[..., socket.socket]


@pytest.fixture(params=["netsock", pytest.param("kernel", marks=pytest.mark.skipif(
    os.geteuid() != 0, reason="kernel raw sockets need CAP_NET_RAW"))])
def make(request: pytest.FixtureRequest, stack: object) -> Iterator[Factory]:
    """socket.socket's signature, making NetsockSockets (on the test's stack) or kernel sockets (in a network
    namespace of the test's own); every socket made has a 5-second timeout and is closed after the test."""
    made: list[socket.socket] = []

    def factory(family: int, kind: int, proto: int) -> socket.socket:
        sock = NetsockSocket(family, kind, proto) if request.param == "netsock" else socket.socket(family, kind, proto)
        sock.settimeout(5)
        made.append(sock)
        return sock
    with ExitStack() as kernel:
        if request.param == "kernel":
            kernel.enter_context(private_kernel_network())
        yield factory
    for sock in made:
        sock.close()


def error_of(call: Callable[[], object]) -> int:
    with pytest.raises(OSError) as info:
        call()
    return info.value.errno


def test_icmp_echo_to_loopback_reads_request_and_reply_whole(make: Factory) -> None:
    sock = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    message = bytes(ICMP(type=8, id=IDENT, seq=1) / Raw(b"netsock raw"))   # the caller's checksum, as Linux
    assert sock.sendto(message, ("127.0.0.1", 0)) == len(message)
    seen = []
    while len(seen) < 2:        # our own request, looped back, then the host's reply
        data, sender = sock.recvfrom(65535)
        packet = IP(data)
        if ICMP in packet and packet[ICMP].id == IDENT:
            assert scapy_checksum(data[:20]) == 0 and scapy_checksum(data[20:]) == 0
            seen.append((sender, packet.version, packet.ihl, packet.len, packet.proto, packet.src, packet.dst,
                         packet.ttl, packet[ICMP].type, packet[ICMP].seq, bytes(packet[ICMP].payload)))
    common = (("127.0.0.1", 0), 4, 5, 39, 1, "127.0.0.1", "127.0.0.1", 64)
    assert seen == [common + (8, 1, b"netsock raw"), common + (0, 1, b"netsock raw")]


def test_icmpv6_echo_to_loopback_reads_payloads_with_the_checksum_filled(make: Factory) -> None:
    sock = make(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.sendto(bytes(ICMPv6EchoRequest(id=IDENT, seq=2, data=b"six", cksum=0)), ("::1", 0))
    seen = []
    while len(seen) < 2:
        data, sender = sock.recvfrom(65535)
        if data[0] in (128, 129) and struct.unpack_from("!H", data, 4)[0] == IDENT:
            seen.append((data, sender))
    loopback = "::1"
    request = bytes(IPv6(src=loopback, dst=loopback) / ICMPv6EchoRequest(id=IDENT, seq=2, data=b"six"))[40:]
    reply = bytes(IPv6(src=loopback, dst=loopback) / ICMPv6EchoReply(id=IDENT, seq=2, data=b"six"))[40:]
    assert seen == [(request, ("::1", 0, 0, 0)), (reply, ("::1", 0, 0, 0))]


def test_options_and_addresses_as_linux(make: Factory) -> None:
    icmp = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    assert icmp.getsockname() == ("0.0.0.0", 1)                     # the protocol in the port's place
    assert [icmp.getsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL),
            icmp.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL),
            icmp.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)] == [0, 1, socket.SOCK_RAW]
    icmp.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    assert icmp.getsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL) == 1
    icmp.bind(("127.0.0.1", 0))
    icmp.connect(("127.0.0.1", 7))
    assert (icmp.getsockname(), icmp.getpeername()) == (("127.0.0.1", 1), ("127.0.0.1", 7))
    assert error_of(lambda: icmp.bind(("127.0.0.1", 0))) == errno.EINVAL   # connected: no rebinding

    assert make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).getsockopt(
        socket.IPPROTO_IP, socket.IP_HDRINCL) == 1

    udp = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    assert error_of(lambda: udp.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)) == errno.ENOPROTOOPT
    assert error_of(lambda: udp.getsockopt(socket.IPPROTO_UDP, UDP_SEGMENT)) == errno.EOPNOTSUPP

    icmp6 = make(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    assert icmp6.getsockname() == ("::", 58, 0, 0)
    assert icmp6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM) == 2
    assert error_of(lambda: icmp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 4)) == errno.EINVAL
    assert error_of(lambda: icmp6.getsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL)) == errno.ENOPROTOOPT

    other6 = make(socket.AF_INET6, socket.SOCK_RAW, EXPERIMENTAL)
    assert other6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM) == -1
    assert error_of(lambda: other6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 3)) == errno.EINVAL
    other6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 4)
    assert other6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM) == 4
    assert error_of(lambda: other6.sendto(b"data", ("::1", 17))) == errno.EINVAL   # a port not the protocol

    icmp6.setsockopt(SOL_RAW, socket.IPV6_CHECKSUM, 4)                 # Linux's way round RFC 3542
    assert (icmp6.getsockopt(SOL_RAW, socket.IPV6_CHECKSUM),
            icmp6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM)) == (4, 4)
    assert error_of(lambda: icmp6.getsockopt(SOL_RAW, ICMP_FILTER)) == errno.ENOPROTOOPT

    for family in (socket.AF_INET, socket.AF_INET6):
        assert error_of(lambda: make(family, socket.SOCK_RAW, 0)) == errno.EPROTONOSUPPORT
    assert error_of(lambda: make(socket.AF_INET, socket.SOCK_RAW, 300)) == errno.EINVAL


def test_header_included_datagram_gets_length_ident_source_and_checksum(make: Factory) -> None:
    receiver = make(socket.AF_INET, socket.SOCK_RAW, EXPERIMENTAL)
    sender = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, EXPERIMENTAL, 0, bytes(4),
                         socket.inet_aton("127.0.0.1"))
    assert sender.sendto(header + b"own header", ("127.0.0.1", 0)) == 30
    data, sender_address = receiver.recvfrom(65535)
    packet = IP(data)
    assert scapy_checksum(data[:20]) == 0 and packet.id != 0
    assert (sender_address, packet.len, packet.src, packet.dst, packet.proto, packet[Raw].load) == \
        (("127.0.0.1", 0), 30, "127.0.0.1", "127.0.0.1", EXPERIMENTAL, b"own header")


def test_bound_and_connected_socket_reads_its_pair_of_addresses_only(make: Factory) -> None:
    receiver = make(socket.AF_INET, socket.SOCK_RAW, EXPERIMENTAL)
    receiver.bind(("127.0.0.1", 0))
    receiver.connect(("127.0.0.2", 0))
    for src, dst, payload in (("127.0.0.3", "127.0.0.1", b"other peer"), ("127.0.0.2", "127.0.0.4", b"other local"),
                              ("127.0.0.2", "127.0.0.1", b"the pair")):
        sender = make(socket.AF_INET, socket.SOCK_RAW, EXPERIMENTAL)
        sender.bind((src, 0))
        sender.sendto(payload, (dst, 0))
    packet = IP(receiver.recv(65535))
    assert (packet.src, packet.dst, packet[Raw].load) == ("127.0.0.2", "127.0.0.1", b"the pair")
    receiver.setblocking(False)
    assert error_of(lambda: receiver.recv(65535)) == errno.EAGAIN


def test_select_sees_raw_sockets_as_datagram_sockets(make: Factory) -> None:
    receiver = make(socket.AF_INET, socket.SOCK_RAW, EXPERIMENTAL)
    receiver.bind(("127.0.0.1", 0))
    sender = make(socket.AF_INET, socket.SOCK_RAW, EXPERIMENTAL)
    fd = receiver.fileno()
    assert select.select([fd], [fd], [], 0) == ([], [fd], [])
    sender.sendto(b"wake up", ("127.0.0.1", 0))
    assert select.select([fd], [], [], 5)[0] == [fd]
    assert IP(receiver.recv(65535))[Raw].load == b"wake up"
    assert select.select([fd], [], [], 0)[0] == []


def test_icmp_filters_as_linux(make: Factory) -> None:
    icmp = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    assert (icmp.getsockopt(SOL_RAW, ICMP_FILTER), icmp.getsockopt(SOL_RAW, ICMP_FILTER, 8)) == (0, bytes(4))
    icmp.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", 1 << 8))    # no echo requests
    icmp.setsockopt(SOL_RAW, ICMP_FILTER, b"\x02")                     # over the first byte only
    assert icmp.getsockopt(SOL_RAW, ICMP_FILTER, 4) == struct.pack("I", 1 << 8 | 2)
    assert error_of(lambda: icmp.setsockopt(SOL_RAW, 2, 1)) == errno.ENOPROTOOPT
    udp = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    assert error_of(lambda: udp.setsockopt(SOL_RAW, ICMP_FILTER, 0)) == errno.EOPNOTSUPP
    assert error_of(lambda: udp.getsockopt(SOL_RAW, ICMP_FILTER)) == errno.EOPNOTSUPP

    icmp.sendto(bytes(ICMP(type=8, id=IDENT, seq=3)), ("127.0.0.1", 0))
    while True:
        packet = IP(icmp.recv(65535))
        if packet[ICMP].id == IDENT:
            break
    assert packet[ICMP].type == 0                   # the request's own copy was filtered out

    icmp6 = make(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    assert icmp6.getsockopt(socket.IPPROTO_ICMPV6, ICMP_FILTER, 64) == bytes(32)
    icmp6.setsockopt(socket.IPPROTO_ICMPV6, ICMP_FILTER, struct.pack("8I", 0, 0, 0, 0, 1, 0, 0, 0))   # type 128
    assert icmp6.getsockopt(socket.IPPROTO_ICMPV6, ICMP_FILTER, 32) == struct.pack("8I", 0, 0, 0, 0, 1, 0, 0, 0)
    other6 = make(socket.AF_INET6, socket.SOCK_RAW, EXPERIMENTAL)
    assert error_of(lambda: other6.setsockopt(socket.IPPROTO_ICMPV6, ICMP_FILTER, bytes(32))) == errno.EOPNOTSUPP
    icmp6.sendto(bytes(ICMPv6EchoRequest(id=IDENT, seq=4)), ("::1", 0))
    while True:
        data = icmp6.recv(65535)
        if data[0] in (128, 129) and struct.unpack_from("!H", data, 4)[0] == IDENT:
            break
    assert data[0] == 129
