"""IP forwarding: host A - router R - host B, three stacks in one process on a manual clock.

Each link is a pair of in-memory ChannelEndpoints that the test pumps by hand, so every run is the
same. What the router sends is parsed with scapy (never with the stack's own decoders), and the
hosts are real stacks: their sockets, ICMP handling and path MTU caches show the effect of what the
router did.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable

import gevent
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR
from scapy.layers.inet6 import (HBHOptUnknown, ICMPv6DestUnreach, ICMPv6ND_NS, ICMPv6PacketTooBig, ICMPv6ParamProblem,
                                ICMPv6TimeExceeded, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, PadN, RouterAlert)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from netsock.header.checksum import checksum, pseudo_header_checksum
from netsock.header.gso import segment_tcp
from netsock.link.channel import ChannelEndpoint
from netsock.link.wire import Wire
from netsock.network.arp import ARPProtocol
from netsock.network.ipv4 import IPv4Protocol
from netsock.network.ipv6 import ALL_ROUTERS_GROUPS, IPv6Protocol
from netsock.stack import ManualClock, PacketBuffer, Stack
from netsock.tcpip import (ARP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER,
                           UDP_PROTOCOL_NUMBER, Address, ErrConnectStarted, ErrNotSupported, ErrUnknownProtocol,
                           ErrWouldBlock, FullAddress, Route, ShutdownFlags, SockOpt, WriteOptions)
from netsock.transport.icmp import ICMPv4Protocol, ICMPv6Protocol
from netsock.transport.tcp import TCPProtocol
from netsock.transport.udp import UDPProtocol
from netsock.waiter import WaiterQueue

V4, V6 = IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER
# Per protocol: host A, the router on A's link, the router on B's link, host B.
A, RA, RB, B = 0, 1, 2, 3
HOSTS = {V4: ("192.0.2.2", "192.0.2.1", "198.51.100.1", "198.51.100.2"),
         V6: ("2001:db8:1::2", "2001:db8:1::1", "2001:db8:2::1", "2001:db8:2::2")}
SUBNETS = {V4: ("192.0.2.0/24", "198.51.100.0/24", "0.0.0.0/0"), V6: ("2001:db8:1::/64", "2001:db8:2::/64", "::/0")}
UNROUTED = {V4: "203.0.113.5", V6: "2001:db8:3::5"}
MACS = ("02:00:00:00:00:0a", "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:0b")
PORT = 7000
BOTH = pytest.mark.parametrize("proto", [V4, V6], ids=["ipv4", "ipv6"])


def wire(text: str) -> bytes:
    return bytes(Address.parse(text))


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def new_stack(clock: ManualClock | None) -> Stack:
    return Stack([IPv4Protocol, IPv6Protocol, ARPProtocol], [UDPProtocol, TCPProtocol, ICMPv4Protocol, ICMPv6Protocol],
                 clock=clock)


def connect(a: Stack, r: Stack, b: Stack, ends: list[ChannelEndpoint]) -> None:
    """NICs on the four link ends (A's, the router's two, B's), with the addresses and routes of ``HOSTS``."""
    a.create_nic(1, ends[0])
    r.create_nic(1, ends[1])
    r.create_nic(2, ends[2])
    b.create_nic(1, ends[3])
    routes: dict[Stack, list[Route]] = {a: [], r: [], b: []}
    for proto, hosts in HOSTS.items():
        prefix = 24 if proto == V4 else 64
        net_a, net_b, default = SUBNETS[proto]
        a.add_address(1, proto, f"{hosts[A]}/{prefix}")
        r.add_address(1, proto, f"{hosts[RA]}/{prefix}")
        r.add_address(2, proto, f"{hosts[RB]}/{prefix}")
        b.add_address(1, proto, f"{hosts[B]}/{prefix}")
        routes[a] += [Route.parse(net_a, 1), Route.parse(default, 1, hosts[RA])]
        routes[r] += [Route.parse(net_a, 1), Route.parse(net_b, 2)]
        routes[b] += [Route.parse(net_b, 1), Route.parse(default, 1, hosts[RB])]
    for stack, table in routes.items():
        stack.set_route_table(table)


class Net:
    """A (NIC 1) -- (NIC 1) R (NIC 2) -- (NIC 1) B, both hosts routing everything else through R.

    ``received[end]`` keeps what each link end was handed, as (ethertype, packet, frame): the packet
    without the link header, the frame with it (the same bytes on a link without one).
    """

    def __init__(self, *, ethernet: bool = False, mtu_b: int = 1500, queue_b: int = 1 << 14,
                 forwarding: bool = True, gso_b: bool = False) -> None:
        self.clock = ManualClock()
        self.a, self.r, self.b = (new_stack(self.clock) for _ in range(3))
        self.ethernet = ethernet
        ends = [ChannelEndpoint(size=size, mtu=mtu, ethernet=ethernet, link_address=mac(m) if ethernet else b"",
                                gso=gso)
                for m, mtu, size, gso in zip(MACS, (1500, 1500, mtu_b, mtu_b), (1 << 14, 1 << 14, queue_b, 1 << 14),
                                             (False, False, gso_b, False))]
        self.a_end, self.ra_end, self.rb_end, self.b_end = ends
        self.wires = ((self.a_end, self.ra_end), (self.rb_end, self.b_end))
        self.received: dict[ChannelEndpoint, list[tuple[int, bytes, bytes]]] = {end: [] for end in ends}
        connect(self.a, self.r, self.b, ends)
        if forwarding:
            self.r.set_forwarding(V4, True)
            self.r.set_forwarding(V6, True)
        if ethernet:   # duplicate address detection: addresses are tentative for a second
            self.run(lambda: not any(nic.tentative for s in (self.a, self.r, self.b) for nic in s.nics.values()),
                     tick=0.1, limit=5)
            self.pump()
            self.clear()

    def pump(self) -> int:
        """Carry frames both ways over both links until all are quiet; returns how many moved."""
        moved = 0
        while True:
            batch = 0
            for x, y in self.wires:
                for src, dst in ((x, y), (y, x)):
                    for info in src.drain():
                        packet = info.data[14:] if self.ethernet else info.data
                        self.received[dst].append((info.protocol, packet, info.data))
                        dst.inject(info.protocol, info.data)
                        batch += 1
            if not batch:
                return moved
            moved += batch

    def run(self, done: Callable[[], bool], step: Callable[[], None] = lambda: None, *, tick: float = 0.001,
            limit: float = 120.0) -> None:
        start = self.clock.now()
        while True:
            step()
            if done():
                return
            if not self.pump():
                assert self.clock.now() - start < limit, "no progress within the time limit"
                self.clock.advance(tick)

    def clear(self) -> None:
        for log in self.received.values():
            log.clear()

    def ip(self, end: ChannelEndpoint, proto: int) -> list[Packet]:
        """The packets of ``proto`` that ``end`` received, parsed by scapy."""
        layer = IP if proto == V4 else IPv6
        return [layer(raw) for ethertype, raw, _ in self.received[end] if ethertype == proto]

    def from_a(self, packet: Packet | bytes) -> None:
        """Hand the router a packet as if host A had sent it, and let everything settle."""
        raw = bytes(packet)
        proto = V4 if raw[0] >> 4 == 4 else V6
        self.ra_end.inject(proto, raw)
        self.pump()


def udp_socket(stack: Stack, proto: int, port: int = 0):  # noqa: ANN201 - a UDPEndpoint
    ep = stack.new_endpoint(UDP_PROTOCOL_NUMBER, proto, WaiterQueue())
    ep.bind(FullAddress(0, b"", port))
    return ep


def to(proto: int, host: int | str, port: int = PORT) -> WriteOptions:
    text = HOSTS[proto][host] if isinstance(host, int) else host
    return WriteOptions(to=FullAddress(0, wire(text), port))


def ip_packet(proto: int, src: str, dst: str, payload: bytes = b"x" * 32, **fields: int) -> Packet:
    """A UDP datagram to B's port, built by scapy."""
    layer = IP(src=src, dst=dst, **fields) if proto == V4 else IPv6(src=src, dst=dst, **fields)
    return layer / UDP(sport=4000, dport=PORT) / payload


def forwarding_stats(stack: Stack) -> dict[str, int]:
    return stack.stats().ip.forwarding.as_dict()


# --- the switch ---------------------------------------------------------------------------------


def test_forwarding_is_off_by_default_and_set_per_protocol_and_per_nic():
    net = Net(forwarding=False)
    r = net.r
    assert not r.forwarding(V4) and not r.forwarding(V6)
    assert not r.nic_forwarding(1, V4) and not r.nic_forwarding(2, V6)

    r.set_forwarding(V6, True)
    assert r.forwarding(V6) and not r.forwarding(V4)
    assert r.nic_forwarding(1, V6) and r.nic_forwarding(2, V6) and not r.nic_forwarding(1, V4)
    # RFC 4291 §2.8: a router's interfaces answer to the all-routers groups.
    assert all(r.nics[n].is_in_group(V6, g) for n in (1, 2) for g in ALL_ROUTERS_GROUPS)

    r.create_nic(3, ChannelEndpoint())                    # NICs created later take the default
    assert r.nic_forwarding(3, V6) and not r.nic_forwarding(3, V4)

    assert r.set_nic_forwarding(2, V6, False) is True      # the previous setting
    assert r.set_nic_forwarding(2, V6, False) is False
    assert not r.nic_forwarding(2, V6) and r.nic_forwarding(1, V6)
    assert not any(r.nics[2].is_in_group(V6, g) for g in ALL_ROUTERS_GROUPS)

    r.set_forwarding(V6, False)
    assert not r.forwarding(V6) and not any(r.nic_forwarding(n, V6) for n in (1, 2, 3))
    assert not r.nics[1].is_in_group(V6, ALL_ROUTERS_GROUPS[1])

    with pytest.raises(ErrNotSupported):
        r.set_forwarding(ARP_PROTOCOL_NUMBER, True)
    with pytest.raises(ErrNotSupported):
        r.set_nic_forwarding(1, ARP_PROTOCOL_NUMBER, True)
    with pytest.raises(ErrUnknownProtocol):
        r.set_forwarding(0x1234, True)


@BOTH
def test_without_forwarding_packets_for_others_are_dropped_and_counted(proto):
    net = Net(forwarding=False)
    receiver = udp_socket(net.b, proto, PORT)
    udp_socket(net.a, proto).write(b"hello", to(proto, B))
    net.pump()
    assert net.r.stats().ip.invalid_addresses_received.value == 1
    assert not net.received[net.b_end] and not net.ip(net.a_end, proto)
    assert not any(forwarding_stats(net.r).values())
    with pytest.raises(ErrWouldBlock):
        receiver.read()


@BOTH
def test_forwarding_follows_the_nic_the_packet_arrives_on(proto):
    net = Net(forwarding=False)
    net.r.set_nic_forwarding(1, proto, True)
    at_a, at_b = udp_socket(net.a, proto, PORT), udp_socket(net.b, proto, PORT)
    at_a.write(b"there", to(proto, B))
    net.pump()
    assert at_b.read().data == b"there"
    at_b.write(b"back", to(proto, A))        # arrives on NIC 2, which does not forward
    net.pump()
    with pytest.raises(ErrWouldBlock):
        at_a.read()
    assert net.r.stats().ip.invalid_addresses_received.value == 1


# --- forwarded traffic ------------------------------------------------------------------------------


@BOTH
def test_udp_both_ways_through_the_router(proto):
    net = Net()
    at_a, at_b = udp_socket(net.a, proto, PORT), udp_socket(net.b, proto, PORT)
    at_a.write(b"ping", to(proto, B))
    net.pump()
    got = at_b.read()
    assert got.data == b"ping" and bytes(got.sender.addr) == wire(HOSTS[proto][A])   # the source is kept
    at_b.write(b"pong", to(proto, A))
    net.pump()
    assert at_a.read().data == b"pong"

    [seen_by_b] = net.ip(net.b_end, proto)
    if proto == V4:
        assert seen_by_b.ttl == 63 and scapy_checksum(bytes(seen_by_b)[:20]) == 0
    else:
        assert seen_by_b.hlim == 63
    assert seen_by_b.src == HOSTS[proto][A] and seen_by_b.dst == HOSTS[proto][B]
    assert forwarding_stats(net.r)["packets_forwarded"] == 2 and forwarding_stats(net.r)["errors"] == 0


@BOTH
def test_tcp_transfer_through_the_router(proto):
    net = Net()
    listener = net.b.new_endpoint(TCP_PROTOCOL_NUMBER, proto, WaiterQueue())
    listener.bind(FullAddress(0, b"", 5001))
    listener.listen(4)
    client = net.a.new_endpoint(TCP_PROTOCOL_NUMBER, proto, WaiterQueue())
    try:
        client.connect(FullAddress(0, wire(HOSTS[proto][B]), 5001))
    except ErrConnectStarted:
        pass
    accepted = []

    def accept() -> None:
        try:
            accepted.append(listener.accept()[0])
        except ErrWouldBlock:
            pass

    net.run(lambda: bool(accepted), accept)
    server = accepted[0]
    upload, download = random.Random(1).randbytes(600_000), random.Random(2).randbytes(300_000)
    streams = [[client, server, upload, 0, bytearray(), False], [server, client, download, 0, bytearray(), False]]

    def step() -> None:
        for stream in streams:
            src, dst, data, written, received, _ = stream
            if written < len(data):
                try:
                    stream[3] = written = written + src.write(memoryview(data)[written:written + 65536])
                except ErrWouldBlock:
                    pass
                if written == len(data):
                    src.shutdown(ShutdownFlags.WRITE)
            while not stream[5]:
                try:
                    chunk = dst.read(1 << 20)
                except ErrWouldBlock:
                    break
                stream[5] = not chunk
                received += chunk

    net.run(lambda: all(s[5] for s in streams), step)
    for _, _, data, _, received, _ in streams:
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    assert forwarding_stats(net.r)["packets_forwarded"] > 100
    assert forwarding_stats(net.r)["errors"] == 0


@BOTH
def test_ethernet_router_resolves_the_next_hop_from_its_own_address(proto):
    net = Net(ethernet=True)
    at_a, at_b = udp_socket(net.a, proto, PORT), udp_socket(net.b, proto, PORT)
    at_a.write(b"over ethernet", to(proto, B))
    net.pump()
    assert at_b.read().data == b"over ethernet"
    at_b.write(b"and back", to(proto, A))
    net.pump()
    assert at_a.read().data == b"and back"

    router_b = HOSTS[proto][RB]
    if proto == V4:
        [request] = [ARP(raw) for ethertype, raw, _ in net.received[net.b_end] if ethertype == ARP_PROTOCOL_NUMBER]
        assert request.op == 1 and request.psrc == router_b and request.pdst == HOSTS[V4][B]
    else:
        [solicit] = [p for p in net.ip(net.b_end, V6) if ICMPv6ND_NS in p]
        assert solicit.src == router_b and solicit[ICMPv6ND_NS].tgt == HOSTS[V6][B]
    neighbor = net.r.nics[2].neighbors[proto].get(wire(HOSTS[proto][B]))
    assert neighbor is not None and neighbor.link_address == mac(MACS[B])
    [frame] = [f for f in (Ether(frame) for _, _, frame in net.received[net.b_end]) if UDP in f]
    assert frame.dst == MACS[B] and frame.src == MACS[RB] and frame[UDP].dport == PORT


@BOTH
def test_udp_through_the_router_on_gevent_wires(proto):
    """The same network on ``link.wire.Wire``s, delivering from the gevent hub as in-process
    private networks do."""
    first, second = Wire(), Wire()
    a, r, b = (new_stack(None) for _ in range(3))
    connect(a, r, b, [*first.ends, *second.ends])
    r.set_forwarding(proto, True)
    at_a, at_b = udp_socket(a, proto, PORT), udp_socket(b, proto, PORT)
    try:
        at_a.write(b"through the hub", to(proto, B))
        with gevent.Timeout(5):
            while True:
                try:
                    got = at_b.read()
                    break
                except ErrWouldBlock:
                    gevent.sleep(0.001)
        assert got.data == b"through the hub"
        assert r.stats().ip.forwarding.packets_forwarded.value == 1
    finally:
        for stack in (a, r, b):
            stack.close()


def test_full_outgoing_queue_is_counted():
    net = Net(queue_b=1)
    udp_socket(net.b, V4, PORT)
    sender = udp_socket(net.a, V4)
    for _ in range(3):           # all three reach the router before anything drains B's link
        sender.write(b"queued", to(V4, B))
    net.pump()
    assert len(net.ip(net.b_end, V4)) == 1
    stats = forwarding_stats(net.r)
    assert (stats["outgoing_device_no_buffer_space"], stats["errors"], stats["packets_forwarded"]) == (2, 2, 1)


# --- errors back to the sender ------------------------------------------------------------------------


@BOTH
def test_expiring_ttl_is_answered_with_time_exceeded(proto):
    net = Net()
    sender = udp_socket(net.a, proto)
    sender.connect(FullAddress(0, wire(HOSTS[proto][B]), PORT))
    sender.set_sock_opt(SockOpt.TTL, 1)
    sender.write(b"short lived")
    net.pump()
    assert not net.ip(net.b_end, proto)
    [error] = net.ip(net.a_end, proto)
    assert error.src == HOSTS[proto][RA] and error.dst == HOSTS[proto][A]
    if proto == V4:
        assert (error[ICMP].type, error[ICMP].code) == (11, 0)
        quoted = error[ICMP].payload
        received = net.a.stats().icmp.v4_packets_received
    else:
        assert ICMPv6TimeExceeded in error and error[ICMPv6TimeExceeded].code == 0
        quoted = error[ICMPv6TimeExceeded].payload
        received = net.a.stats().icmp.v6_packets_received
    assert quoted.src == HOSTS[proto][A] and quoted.dst == HOSTS[proto][B]   # the datagram, as it came
    assert received.time_exceeded.value == 1
    with pytest.raises(ErrWouldBlock):              # transient: the connected socket is not told, as on Linux
        sender.read()
    assert forwarding_stats(net.r)["exhausted_ttl"] == 1 and forwarding_stats(net.r)["errors"] == 1

    sender.set_sock_opt(SockOpt.TTL, 2)             # one hop left: it arrives with one
    receiver = udp_socket(net.b, proto, PORT)
    sender.write(b"just enough")
    net.pump()
    assert receiver.read().data == b"just enough"
    [arrived] = net.ip(net.b_end, proto)
    assert (arrived.ttl if proto == V4 else arrived.hlim) == 1


@BOTH
def test_no_route_is_answered_with_destination_unreachable(proto):
    net = Net()
    sender = udp_socket(net.a, proto)
    sender.connect(FullAddress(0, wire(UNROUTED[proto]), PORT))
    sender.write(b"nowhere")
    net.pump()
    [error] = net.ip(net.a_end, proto)
    if proto == V4:
        assert (error[ICMP].type, error[ICMP].code) == (3, 0)      # network unreachable
    else:
        assert ICMPv6DestUnreach in error and error[ICMPv6DestUnreach].code == 0   # no route
    with pytest.raises(ErrWouldBlock):              # transient: the connected socket is not told, as on Linux
        sender.read()
    assert forwarding_stats(net.r)["unrouteable"] == 1
    assert not net.received[net.b_end]


def test_dont_fragment_too_big_is_answered_with_fragmentation_needed():
    net = Net(mtu_b=1000)
    hosts = HOSTS[V4]
    net.from_a(ip_packet(V4, hosts[A], hosts[B], b"d" * 1200, flags="DF"))
    assert not net.received[net.b_end]
    [error] = net.ip(net.a_end, V4)
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 1000)
    assert error.src == hosts[RA] and error[ICMP].payload.dst == hosts[B]
    assert net.a.path_mtu.get(wire(hosts[B])) == 1000          # host A learned the path MTU
    assert forwarding_stats(net.r)["packet_too_big"] == 1

    # A now fragments for that path itself, so the router forwards its fragments untouched.
    net.clear()
    receiver = udp_socket(net.b, V4, PORT)
    udp_socket(net.a, V4).write(b"e" * 1200, to(V4, B))
    net.pump()
    assert receiver.read().data == b"e" * 1200
    assert [len(p) for p in net.ip(net.ra_end, V4)] == [len(p) for p in net.ip(net.b_end, V4)]
    assert max(len(p) for p in net.ip(net.b_end, V4)) <= 1000


def super_segment(proto: int, size: int = 5000, ttl: int = 64) -> PacketBuffer:
    """A TCP super-segment from A to B as a TUN with offloads or link.gro hands it up: segments of 1448
    (IPv4) or 1440 (IPv6) bytes, full-sized frames at MTU 1500."""
    layer = IP(src=HOSTS[V4][A], dst=HOSTS[V4][B], ttl=ttl, flags="DF", id=9) if proto == V4 else \
        IPv6(src=HOSTS[V6][A], dst=HOSTS[V6][B], hlim=ttl)
    pkt = PacketBuffer.inbound(bytes(layer / TCP(sport=4000, dport=PORT, seq=1, ack=1, flags="PA")
                                     / Raw(random.Random(size).randbytes(size))))
    pkt.gso_size = 1448 if proto == V4 else 1440
    return pkt


@BOTH
@pytest.mark.parametrize("transport", [TCP, UDP])
def test_a_checksum_the_kernel_left_partial_is_completed_before_it_is_forwarded(proto, transport):
    """A TUN with offloads hands up small packets with the checksum partial, and netsock leaves it so
    (PacketBuffer.csum_offset): a router must complete it before it leaves, as Linux does."""
    layer = IP(src=HOSTS[V4][A], dst=HOSTS[V4][B]) if proto == V4 else IPv6(src=HOSTS[V6][A], dst=HOSTS[V6][B])
    whole = bytes(layer / transport(sport=4000, dport=PORT) / Raw(b"partial until forwarded"))
    start, field = (20 if proto == V4 else 40), (16 if transport is TCP else 6)
    packet = bytearray(whole)
    src, dst = (whole[12:16], whole[16:20]) if proto == V4 else (whole[8:24], whole[24:40])
    packet[start + field:start + field + 2] = pseudo_header_checksum(
        6 if transport is TCP else 17, src, dst, len(whole) - start).to_bytes(2, "big")
    pkt = PacketBuffer.inbound(packet)            # (writable, as what a link reads into)
    pkt.csum_offset, pkt.checksum_verified = field, True
    net = Net()
    net.ra_end.inject(proto, pkt)
    net.pump()
    [forwarded] = net.ip(net.b_end, proto)
    layer = IP if proto == V4 else IPv6
    expected = layer(whole)
    if proto == V4:
        expected.ttl -= 1
        del expected.chksum
    else:
        expected.hlim -= 1
    assert bytes(forwarded) == bytes(layer(bytes(expected)))


@BOTH
@pytest.mark.parametrize("gso", [False, True], ids=["cut by the router", "cut by the next link"])
def test_a_super_segment_is_forwarded_as_its_wire_segments(proto, gso):
    net = Net(gso_b=gso)
    pkt = super_segment(proto)
    expected = segment_tcp(bytes(super_segment(proto, ttl=63).data), pkt.gso_size)
    net.ra_end.inject(proto, pkt)
    net.pump()
    assert [bytes(p) for p in net.ip(net.b_end, proto)] == expected        # TTL 63, every checksum fresh
    replies = len(net.ip(net.a_end, proto))                                 # (B's resets, routed back)
    assert forwarding_stats(net.r)["packets_forwarded"] == (1 if gso else len(expected)) + replies


def big_super_segment(ttl: int) -> PacketBuffer:
    """Three 64 KB super-segments merged by a TUN link's reader (BIG TCP: IPv4 total length 0)."""
    size = 3 * 40 * 1448
    packet = bytearray(bytes(IP(src=HOSTS[V4][A], dst=HOSTS[V4][B], ttl=ttl, flags="DF", id=9)
                             / TCP(sport=4000, dport=PORT, seq=1, ack=1, flags="A") / Raw(bytes(8))))
    packet[2:4] = b"\x00\x00"
    packet[10:12] = b"\x00\x00"
    packet[10:12] = (~checksum(packet[:20]) & 0xFFFF).to_bytes(2, "big")
    pkt = PacketBuffer.inbound(bytes(packet[:40]) + random.Random(size).randbytes(size))
    pkt.gso_size = 1448
    return pkt


@pytest.mark.parametrize("gso", [False, True], ids=["cut by the router", "cut by the next link"])
def test_a_big_tcp_super_segment_leaves_as_the_wire_segments_it_stands_for(gso):
    """Over 64 KB, no link takes it whole: it leaves in 64 KB super-segments or, cut, as wire segments."""
    net = Net(gso_b=gso)
    net.ra_end.inject(V4, big_super_segment(64))
    net.pump()
    expected = segment_tcp(bytes(big_super_segment(63).data), 1448)
    assert len(expected) == 120
    assert [bytes(p) for p in net.ip(net.b_end, V4)] == expected
    replies = len(net.ip(net.a_end, V4))
    assert forwarding_stats(net.r)["packets_forwarded"] == (3 if gso else len(expected)) + replies  # 45 + 45 + 30


def test_a_super_segment_whose_pieces_are_too_big_for_the_next_hop_is_refused_piece_by_piece():
    net = Net(mtu_b=1000, gso_b=True)
    net.ra_end.inject(V4, super_segment(V4))               # 3 segments of 1448 bytes and one of 656
    net.pump()
    assert [len(p[Raw].load) for p in net.ip(net.b_end, V4)] == [656]
    assert {(e[ICMP].type, e[ICMP].code, e[ICMP].nexthopmtu) for e in net.ip(net.a_end, V4) if ICMP in e} == {
        (3, 4, 1000)}
    assert forwarding_stats(net.r)["packet_too_big"] == 3


def test_too_big_without_dont_fragment_is_fragmented_by_the_router():
    net = Net(mtu_b=1000)
    receiver = udp_socket(net.b, V4, PORT)
    payload = random.Random(3).randbytes(3000)
    udp_socket(net.a, V4).write(payload, to(V4, B))
    net.pump()
    assert receiver.read().data == payload
    sent, arrived = net.ip(net.ra_end, V4), net.ip(net.b_end, V4)
    assert len(sent) == 3 and len(arrived) == 5     # A's 1500-byte fragments, cut again at 1000
    for fragment in arrived:
        raw = bytes(fragment)
        assert len(raw) <= 1000 and fragment.ttl == 63 and scapy_checksum(raw[:20]) == 0
        assert fragment.id == sent[0].id
    assert forwarding_stats(net.r)["packets_forwarded"] == 3 and not net.ip(net.a_end, V4)


def test_router_fragments_carry_only_the_copied_options_after_the_first():
    net = Net(mtu_b=1000)
    hosts = HOSTS[V4]
    packet = ip_packet(V4, hosts[A], hosts[B], bytes(range(256)) * 6, id=0x4242,
                       options=[IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"] * 2)])
    net.from_a(packet)
    fragments = net.ip(net.b_end, V4)
    assert len(fragments) == 2
    first, second = fragments
    options = [[o.option for o in f.options if o.option] for f in fragments]   # END padding left out
    assert options == [[20, 7], [20]]       # router alert (copied) in both, record route in the first only
    assert first.flags == "MF" and second.flags == 0 and second.frag * 8 == len(first.payload)
    assert {f.id for f in fragments} == {0x4242} and all(scapy_checksum(bytes(f)[:f.ihl * 4]) == 0 for f in fragments)
    raw = bytes(packet)
    assert bytes(first.payload) + bytes(second.payload) == raw[IP(raw).ihl * 4:]


@pytest.mark.parametrize("incoming", [0xFEFF, 0x0000, 0x0100, 0xFFFE], ids=hex)
def test_ttl_decrement_keeps_the_header_checksum_valid_at_its_edges(incoming):
    net = Net()
    hosts = HOSTS[V4]
    template = IP(bytes(ip_packet(V4, hosts[A], hosts[B], id=0)))
    ident = (template.chksum - incoming) % 0xFFFF    # one's complement: the checksum falls as the id rises
    packet = IP(bytes(ip_packet(V4, hosts[A], hosts[B], id=ident)))
    assert packet.chksum == incoming
    net.from_a(packet)
    [forwarded] = net.ip(net.b_end, V4)
    assert forwarded.ttl == packet.ttl - 1 and scapy_checksum(bytes(forwarded)[:20]) == 0


@settings(max_examples=150, deadline=None)
@given(ident=st.integers(0, 0xFFFF), ttl=st.integers(2, 255), tos=st.integers(0, 255))
def test_ttl_decrement_keeps_the_header_checksum_valid(ident, ttl, tos):
    net = Net()
    hosts = HOSTS[V4]
    net.from_a(ip_packet(V4, hosts[A], hosts[B], id=ident, ttl=ttl, tos=tos))
    [forwarded] = net.ip(net.b_end, V4)
    assert forwarded.ttl == ttl - 1 and scapy_checksum(bytes(forwarded)[:20]) == 0


def test_ipv6_too_big_is_answered_with_packet_too_big():
    net = Net(mtu_b=1280)
    receiver = udp_socket(net.b, V6, PORT)
    sender = udp_socket(net.a, V6)
    sender.write(b"f" * 1400, to(V6, B))
    net.pump()
    assert not net.received[net.b_end]
    [error] = net.ip(net.a_end, V6)
    assert ICMPv6PacketTooBig in error and error[ICMPv6PacketTooBig].mtu == 1280
    assert error.src == HOSTS[V6][RA]
    assert net.a.path_mtu.get(wire(HOSTS[V6][B])) == 1280
    assert forwarding_stats(net.r)["packet_too_big"] == 1

    sender.write(b"f" * 1400, to(V6, B))     # the retry is fragmented by its source, as IPv6 wants
    net.pump()
    assert receiver.read().data == b"f" * 1400
    assert all(len(p) <= 1280 for p in net.ip(net.b_end, V6))


@BOTH
def test_icmp_errors_from_forwarding_are_rate_limited_but_path_mtu_discovery_is_not(proto):
    net = Net(mtu_b=1280)
    hosts = HOSTS[proto]
    ttl = {"ttl": 1} if proto == V4 else {"hlim": 1}
    for _ in range(10):
        net.from_a(ip_packet(proto, hosts[A], hosts[B], **ttl))
    assert len(net.ip(net.a_end, proto)) == 6          # the per-destination burst
    sent = net.r.stats().icmp.v4_packets_sent if proto == V4 else net.r.stats().icmp.v6_packets_sent
    assert sent.time_exceeded.value == 6 and sent.rate_limited.value == 4
    assert forwarding_stats(net.r)["exhausted_ttl"] == 10

    net.clear()
    big = {"flags": "DF"} if proto == V4 else {}
    for _ in range(10):
        net.from_a(ip_packet(proto, hosts[A], hosts[B], b"g" * 1300, **big))
    assert len(net.ip(net.a_end, proto)) == 10
    assert (sent.dst_unreachable if proto == V4 else sent.packet_too_big).value == 10


# --- what is never forwarded --------------------------------------------------------------------------

NOT_FORWARDED = [
    (V4, "169.254.1.1", HOSTS[V4][B], "link_local_source"),
    (V4, HOSTS[V4][A], "169.254.1.2", "link_local_destination"),
    (V4, "0.0.0.0", HOSTS[V4][B], "initializing_source"),
    (V4, "0.1.2.3", HOSTS[V4][B], "initializing_source"),
    (V4, "127.0.0.1", HOSTS[V4][B], "invalid_addresses_received"),
    (V4, HOSTS[V4][A], "127.0.0.1", "invalid_addresses_received"),
    (V4, HOSTS[V4][RB], HOSTS[V4][B], "invalid_addresses_received"),      # our own address as source
    (V4, HOSTS[V4][A], "239.1.2.3", "invalid_addresses_received"),        # multicast: no multicast routing
    (V4, HOSTS[V4][A], "198.51.100.255", "invalid_addresses_received"),   # directed broadcast
    (V6, "fe80::1", HOSTS[V6][B], "link_local_source"),
    (V6, HOSTS[V6][A], "fe80::99", "link_local_destination"),
    (V6, "::", HOSTS[V6][B], "initializing_source"),
    (V6, "::1", HOSTS[V6][B], "invalid_addresses_received"),
    (V6, HOSTS[V6][RB], HOSTS[V6][B], "invalid_addresses_received"),
    (V6, HOSTS[V6][A], "ff0e::1", "invalid_addresses_received"),
]


@pytest.mark.parametrize("proto,src,dst,counter", NOT_FORWARDED,
                         ids=[f"{src}->{dst}" for _, src, dst, _ in NOT_FORWARDED])
def test_addresses_that_are_never_forwarded(proto, src, dst, counter):
    net = Net()
    net.from_a(ip_packet(proto, src, dst))
    assert not net.received[net.b_end] and not net.received[net.a_end]   # dropped without a word
    ip_stats = net.r.stats().ip
    if counter == "invalid_addresses_received":
        assert ip_stats.invalid_addresses_received.value == 1 and not any(forwarding_stats(net.r).values())
    else:
        assert forwarding_stats(net.r) == {**dict.fromkeys(forwarding_stats(net.r), 0), counter: 1, "errors": 1}


def test_frames_not_sent_to_the_routers_link_address_are_not_forwarded():
    net = Net(ethernet=True)
    hosts = HOSTS[V4]
    invalid = net.r.stats().ip.invalid_addresses_received
    before = invalid.value
    for dst_mac in ("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:99"):
        net.ra_end.inject(V4, bytes(Ether(dst=dst_mac, src=MACS[A]) / ip_packet(V4, hosts[A], hosts[B])))
    net.pump()
    assert not net.ip(net.b_end, V4)
    assert invalid.value - before == 2


# --- IPv6 hop-by-hop options ----------------------------------------------------------------------------


def _v6(*headers: Packet) -> Packet:
    hosts = HOSTS[V6]
    packet = IPv6(src=hosts[A], dst=hosts[B])
    for header in headers:
        packet = packet / header
    return packet / UDP(sport=4000, dport=PORT) / (b"h" * 16)


def test_hop_by_hop_options_are_processed_and_kept():
    net = Net()
    receiver = udp_socket(net.b, V6, PORT)
    net.from_a(_v6(IPv6ExtHdrHopByHop(options=[RouterAlert(value=2), PadN(optdata=b"")])))
    [forwarded] = net.ip(net.b_end, V6)
    assert IPv6ExtHdrHopByHop in forwarded and forwarded.hlim == 63
    assert receiver.read().data == b"h" * 16
    assert forwarding_stats(net.r)["packets_forwarded"] == 1


def test_destination_options_are_left_to_the_destination():
    net = Net()
    # An unrecognised option that demands an error: the router does not look, the destination does.
    net.from_a(_v6(IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x80, optdata=b"\0" * 4)])))
    assert len(net.ip(net.b_end, V6)) == 1
    [error] = net.ip(net.a_end, V6)
    assert error.src == HOSTS[V6][B] and error[ICMPv6ParamProblem].code == 2
    assert forwarding_stats(net.r)["packets_forwarded"] == 2 and forwarding_stats(net.r)["errors"] == 0


@pytest.mark.parametrize("option_type,answered", [(0x80, True), (0xC0, True), (0x40, False)],
                         ids=["discard-and-answer", "discard-and-answer-unless-multicast", "discard"])
def test_hop_by_hop_option_that_forbids_forwarding(option_type, answered):
    net = Net()
    net.from_a(_v6(IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=option_type, optdata=b"\0" * 4)])))
    assert not net.received[net.b_end]
    errors = net.ip(net.a_end, V6)
    if answered:
        [error] = errors
        problem = error[ICMPv6ParamProblem]
        assert (problem.code, problem.ptr) == (2, 42)      # unrecognised option, at its offset
    else:
        assert not errors
    assert forwarding_stats(net.r)["extension_header_problem"] == 1


def test_truncated_hop_by_hop_header_is_dropped():
    net = Net()
    hosts = HOSTS[V6]
    net.from_a(bytes(IPv6(src=hosts[A], dst=hosts[B], nh=0, plen=4)) + b"\x11\x04\x00\x00")
    assert not net.received[net.b_end]
    assert net.r.stats().ip.malformed_packets_received.value == 1
    assert forwarding_stats(net.r)["extension_header_problem"] == 1


# --- hostile input ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([4, 6]), ttl=st.integers(0, 3), flags=st.sampled_from([0, 0x4000, 0x2000, 0x2010]),
       header=st.binary(min_size=1, max_size=41), padding=st.integers(0, 1500))
def test_malformed_packets_never_escape_the_router(version, ttl, flags, header, padding):
    """Arbitrary IPv4 options or IPv6 extension headers, of any length, in packets of any size."""
    net = Net(mtu_b=1280)
    hosts = HOSTS[V4 if version == 4 else V6]
    src, dst = wire(hosts[A]), wire(hosts[B])
    if version == 4:
        options = header[1:1 + 4 * (header[0] % 11)]
        options += bytes(-len(options) % 4)
        hlen = 20 + len(options)
        raw = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | hlen >> 2, 0, hlen + padding, 1, flags, ttl, 17, 0,
                                    src, dst) + options + bytes(padding))
        raw[10:12] = struct.pack("!H", scapy_checksum(bytes(raw[:hlen])))
    else:
        chain = header[1:]
        raw = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(chain) + padding, header[0] % 64, ttl, src, dst)
                        + chain + bytes(padding))
    net.from_a(bytes(raw))
    # Whatever was forwarded went on as it came (perhaps in pieces); what came back is the router's
    # ICMP error, or B's answer to what was forwarded. (Read from the bytes: scapy trips over some.)
    length = len(src)
    at = 12 if version == 4 else 8

    def addresses(raw: bytes) -> tuple[bytes, bytes]:
        return raw[at:at + length], raw[at + length:at + 2 * length]

    assert all(addresses(raw) == (src, dst) for _, raw, _ in net.received[net.b_end])
    assert all(addresses(raw)[0] in (wire(hosts[RA]), dst) and addresses(raw)[1] == src
               for _, raw, _ in net.received[net.a_end])
