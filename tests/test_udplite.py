"""UDP-Lite (RFC 3828) endpoints on the stack: the checksum coverage field both ways, the mandatory
checksum, malformed coverage, the receiver's minimum coverage, the coverage options as Linux stores
them, the protocol's own port space and counters, and ICMP errors.

The stack sits on a bare IPv4 and IPv6 link at 192.0.2.2/24 and 2001:db8::2/64; the test plays the
peer. What it injects and checks is built and summed here, with scapy's RFC 1071 checksum over a
pseudo-header written out by hand (scapy has no UDP-Lite layer), never with the stack's own code.
"""

from __future__ import annotations

import errno
import struct

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.network.ipv6 import IPv6Protocol
from netsock.stack import ManualClock, Stack
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Address,
                           ErrConnectionRefused, ErrPartialChecksumOffload, ErrUnknownProtocolOption, ErrWouldBlock,
                           FullAddress, Route, SendableControlMessages, SockOpt, WriteOptions)
from netsock.transport.icmp import ICMPv4Protocol, ICMPv6Protocol
from netsock.transport.udp import UDPProtocol
from netsock.transport.udplite import PROTOCOL_NUMBER, UDPLiteProtocol

NIC_ID = 1
LOCAL = {4: "192.0.2.2", 6: "2001:db8::2"}
PEER = {4: "192.0.2.1", 6: "2001:db8::1"}
NET_PROTO = {4: IPV4_PROTOCOL_NUMBER, 6: IPV6_PROTOCOL_NUMBER}
PAYLOAD = b"0123456789abcdefghij"         # 20 bytes: a 28-byte datagram
PORT, PEER_PORT = 7000, 40000


def packed(host: str) -> bytes:
    return bytes(Address.parse(host))


class Harness:
    """A stack with UDP, UDP-Lite and ICMP on a bare link (as a TUN device), IPv4 and IPv6, at the
    ``addresses`` (one per version)."""

    def __init__(self, addresses: dict[int, str] = LOCAL) -> None:
        self.stack = Stack((IPv4Protocol, IPv6Protocol), (UDPProtocol, UDPLiteProtocol, ICMPv4Protocol, ICMPv6Protocol),
                           clock=ManualClock())
        self.link = ChannelEndpoint()
        self.stack.create_nic(NIC_ID, self.link)
        self.stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, f"{addresses[4]}/24")
        self.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, f"{addresses[6]}/64")
        self.stack.set_route_table([Route.parse("192.0.2.0/24", NIC_ID), Route.parse("2001:db8::/64", NIC_ID)])

    @property
    def counters(self):  # noqa: ANN201 - UDPLiteStats
        return self.stack.stats().udplite

    def endpoint(self, version: int, port: int | None = PORT, transport: int = PROTOCOL_NUMBER):  # noqa: ANN201
        ep = self.stack.new_endpoint(transport, NET_PROTO[version])
        if port is not None:
            ep.bind(FullAddress(0, b"", port))
        return ep

    def inject(self, version: int, packet: Packet | bytes) -> None:
        self.link.inject(NET_PROTO[version], bytes(packet))

    def sent(self) -> list[bytes]:
        return [info.data for info in self.link.drain()]

    def sent_one(self) -> bytes:
        packets = self.sent()
        assert len(packets) == 1, packets
        return packets[0]


@pytest.fixture
def net() -> Harness:
    return Harness()


def pseudo_header(version: int, src: str, dst: str, length: int) -> bytes:
    """RFC 3828 §3.2: the IP pseudo-header with the IP payload length (not the coverage)."""
    if version == 4:
        return packed(src) + packed(dst) + struct.pack("!xBH", PROTOCOL_NUMBER, length)
    return packed(src) + packed(dst) + struct.pack("!I3xB", length, PROTOCOL_NUMBER)


def lite_datagram(version: int, payload: bytes = PAYLOAD, coverage: int | None = None, checksum: int | None = None,
                  sport: int = PEER_PORT, dport: int = PORT, src: str | None = None, dst: str | None = None) -> Packet:
    """An IP packet carrying a UDP-Lite datagram: coverage None is the whole, said as its length; the
    checksum is computed over the covered bytes unless given."""
    src, dst = src or PEER[version], dst or LOCAL[version]
    length = 8 + len(payload)
    field = length if coverage is None else coverage
    body = struct.pack("!HHHH", sport, dport, field, 0) + payload
    if checksum is None:
        covered = field if 8 <= field <= length else length
        checksum = scapy_checksum(pseudo_header(version, src, dst, length) + body[:covered]) or 0xFFFF
    body = body[:6] + struct.pack("!H", checksum) + body[8:]
    ip = IP(src=src, dst=dst, proto=PROTOCOL_NUMBER) if version == 4 else IPv6(src=src, dst=dst, nh=PROTOCOL_NUMBER)
    return ip / Raw(body)


def split(version: int, raw: bytes) -> tuple[Packet, bytes]:
    """The IP header (scapy's) and the UDP-Lite datagram of a packet the stack sent."""
    ip = IP(raw) if version == 4 else IPv6(raw)
    assert (ip.proto if version == 4 else ip.nh) == PROTOCOL_NUMBER
    return ip, bytes(ip.payload)


def checksum_verifies(version: int, ip: Packet, datagram: bytes) -> bool:
    """Does the datagram's checksum verify over the coverage its header states (scapy's sum)?"""
    coverage = int.from_bytes(datagram[4:6], "big") or len(datagram)
    return datagram[6:8] != b"\0\0" and scapy_checksum(
        pseudo_header(version, ip.src, ip.dst, len(datagram)) + datagram[:coverage]) == 0


def nothing_to_read(ep) -> bool:  # noqa: ANN001 - UDPLiteEndpoint
    try:
        ep.read()
    except ErrWouldBlock:
        return True
    return False


def corrupt(packet: Packet, offset_from_end: int) -> bytes:
    raw = bytearray(bytes(packet))
    raw[-offset_from_end] ^= 0x01
    return bytes(raw)


versions = pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])


# --- receiving --------------------------------------------------------------------------------------------

@versions
@pytest.mark.parametrize("coverage", [None, 0, 8, 12, 8 + len(PAYLOAD)],
                         ids=["length", "zero-is-whole", "header-only", "partial", "exactly-the-length"])
def test_valid_coverage_is_received(net: Harness, version: int, coverage: int | None) -> None:
    ep = net.endpoint(version)
    net.inject(version, lite_datagram(version, coverage=coverage))
    result = ep.read()
    assert result.data == PAYLOAD
    assert result.sender == FullAddress(NIC_ID, packed(PEER[version]), PEER_PORT)
    assert net.counters.packets_received.value == 1
    assert net.stack.stats().udp.packets_received.value == 0     # UDP-Lite has counters of its own


@versions
def test_damage_beyond_the_coverage_is_delivered(net: Harness, version: int) -> None:
    """The point of UDP-Lite: bytes the checksum does not cover reach the reader as they arrived."""
    ep = net.endpoint(version)
    net.inject(version, corrupt(lite_datagram(version, coverage=12), 1))
    assert ep.read().data == PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])


@versions
@pytest.mark.parametrize("coverage", [None, 12], ids=["whole", "partial"])
def test_damage_within_the_coverage_is_dropped_and_counted(net: Harness, version: int, coverage: int | None) -> None:
    ep = net.endpoint(version)
    net.inject(version, corrupt(lite_datagram(version, coverage=coverage), len(PAYLOAD)))   # payload byte 0
    assert nothing_to_read(ep)
    assert net.counters.checksum_errors.value == 1
    assert ep.stats.receive_errors.malformed_packets_received.value == 1
    assert net.sent() == []


@versions
def test_zero_checksum_is_invalid_over_ipv4_too(net: Harness, version: int) -> None:
    ep = net.endpoint(version)
    net.inject(version, lite_datagram(version, checksum=0))
    assert nothing_to_read(ep)
    assert net.counters.checksum_errors.value == 1


@versions
@pytest.mark.parametrize("coverage", [1, 7, 8 + len(PAYLOAD) + 1])
def test_coverage_outside_the_datagram_is_a_counted_malformed_drop(net: Harness, version: int,
                                                                    coverage: int) -> None:
    ep = net.endpoint(version)
    net.inject(version, lite_datagram(version, coverage=coverage))
    assert nothing_to_read(ep)
    assert net.counters.malformed_packets_received.value == 1
    assert net.counters.checksum_errors.value == 0


def test_length_comes_from_the_ip_header_not_the_udp_one(net: Harness) -> None:
    """Where UDP would trim to its length field, UDP-Lite reads that field as coverage and keeps all."""
    ep = net.endpoint(4)
    long_payload = PAYLOAD * 10
    net.inject(4, lite_datagram(4, payload=long_payload, coverage=8 + len(PAYLOAD)))
    assert ep.read().data == long_payload


@versions
def test_header_too_short_is_dropped_and_counted(net: Harness, version: int) -> None:
    ip = IP(src=PEER[4], dst=LOCAL[4], proto=PROTOCOL_NUMBER) if version == 4 else \
        IPv6(src=PEER[6], dst=LOCAL[6], nh=PROTOCOL_NUMBER)
    ep = net.endpoint(version)
    net.inject(version, ip / Raw(struct.pack("!HHH", PEER_PORT, PORT, 0)))     # ports, then 2 bytes short
    assert nothing_to_read(ep)
    assert net.counters.malformed_packets_received.value == 1


# --- the receiver's minimum coverage (UDPLITE_RECV_CSCOV) ------------------------------------------------

@versions
@pytest.mark.parametrize("minimum, coverage, delivered", [
    (20, 12, False),            # covers less than asked for
    (20, 20, True),
    (20, None, True),           # the whole datagram is always enough, whatever the minimum
    (100, 0, True),             # ... also when it is said as 0
    (0, 12, False),             # minimum 0: the whole datagram
    (0, 8 + len(PAYLOAD), True),
])
def test_receiver_refuses_less_coverage_than_its_minimum(net: Harness, version: int, minimum: int,
                                                        coverage: int | None, delivered: bool) -> None:
    ep = net.endpoint(version)
    ep.set_sock_opt(SockOpt.UDPLITE_RECEIVE_COVERAGE, minimum)
    net.inject(version, lite_datagram(version, coverage=coverage))
    assert nothing_to_read(ep) is not delivered
    assert net.counters.coverage_errors.value == (0 if delivered else 1)
    assert net.counters.packets_received.value == (1 if delivered else 0)


def test_without_a_minimum_any_valid_coverage_is_received(net: Harness) -> None:
    ep = net.endpoint(4)
    for coverage in (8, 9, 12):
        net.inject(4, lite_datagram(4, coverage=coverage))
        assert ep.read().data == PAYLOAD
    assert net.counters.coverage_errors.value == 0


# --- sending ----------------------------------------------------------------------------------------------

@versions
def test_sent_datagram_covers_all_and_states_its_length_by_default(net: Harness, version: int) -> None:
    ep = net.endpoint(version)
    ep.write(PAYLOAD, WriteOptions(to=FullAddress(0, packed(PEER[version]), PEER_PORT)))
    ip, datagram = split(version, net.sent_one())
    assert struct.unpack("!HHH", datagram[:6]) == (PORT, PEER_PORT, 8 + len(PAYLOAD))
    assert datagram[8:] == PAYLOAD
    assert checksum_verifies(version, ip, datagram)
    assert net.counters.packets_sent.value == 1 and net.stack.stats().udp.packets_sent.value == 0


@versions
@pytest.mark.parametrize("setting, field", [
    (12, 12),
    (1, 8),                             # raised to the header's 8 bytes
    (0, 0),                             # set to 0: the whole, said as 0
    (8 + len(PAYLOAD), 8 + len(PAYLOAD)),   # not short of the datagram: the whole, said as its length
    (500, 8 + len(PAYLOAD)),
])
def test_sent_coverage_follows_the_send_option(net: Harness, version: int, setting: int, field: int) -> None:
    ep = net.endpoint(version)
    ep.set_sock_opt(SockOpt.UDPLITE_SEND_COVERAGE, setting)
    ep.write(PAYLOAD, WriteOptions(to=FullAddress(0, packed(PEER[version]), PEER_PORT)))
    ip, datagram = split(version, net.sent_one())
    assert int.from_bytes(datagram[4:6], "big") == field
    assert checksum_verifies(version, ip, datagram)


def test_partial_send_coverage_leaves_the_rest_unsummed(net: Harness) -> None:
    """Only the covered bytes enter the checksum: the whole datagram's sum does not verify."""
    ep = net.endpoint(4)
    ep.set_sock_opt(SockOpt.UDPLITE_SEND_COVERAGE, 12)
    ep.write(PAYLOAD, WriteOptions(to=FullAddress(0, packed(PEER[4]), PEER_PORT)))
    ip, datagram = split(4, net.sent_one())
    assert scapy_checksum(pseudo_header(4, ip.src, ip.dst, len(datagram)) + datagram[:12]) == 0
    assert scapy_checksum(pseudo_header(4, ip.src, ip.dst, len(datagram)) + datagram) != 0


@versions
@pytest.mark.parametrize("payload", [b"", b"x", b"odd", PAYLOAD])
def test_what_is_sent_is_what_a_receiver_accepts(net: Harness, version: int, payload: bytes) -> None:
    """Across the wire to another stack: our datagrams, at any coverage, pass scapy's checks and the
    receiver's."""
    peer = Harness(PEER)
    receiver = peer.endpoint(version)
    sender = net.endpoint(version, port=PEER_PORT)
    for setting in (None, 9, 11):
        if setting is not None:
            sender.set_sock_opt(SockOpt.UDPLITE_SEND_COVERAGE, setting)
        sender.write(payload, WriteOptions(to=FullAddress(0, packed(PEER[version]), PORT)))
        raw = net.sent_one()
        assert checksum_verifies(version, *split(version, raw))
        peer.inject(version, raw)
        result = receiver.read()
        assert (result.data, result.sender) == (payload, FullAddress(NIC_ID, packed(LOCAL[version]), PEER_PORT))
    assert peer.counters.checksum_errors.value == peer.counters.malformed_packets_received.value == 0


def test_segmentation_offload_is_refused(net: Harness) -> None:
    """As Linux: UDP_SEGMENT may be set, but a UDP-Lite write with it fails (EIO)."""
    ep = net.endpoint(4)
    to = FullAddress(0, packed(PEER[4]), PEER_PORT)
    ep.set_sock_opt(SockOpt.UDP_SEGMENT, 100)
    with pytest.raises(ErrPartialChecksumOffload) as info:
        ep.write(b"x" * 50, WriteOptions(to=to))
    assert info.value.errno == errno.EIO
    ep.set_sock_opt(SockOpt.UDP_SEGMENT, 0)
    with pytest.raises(ErrPartialChecksumOffload):
        ep.write(b"x" * 50, WriteOptions(to=to, control=SendableControlMessages(gso_size=100)))
    assert net.sent() == []
    assert ep.write(b"x" * 50, WriteOptions(to=to)) == 50


# --- the coverage options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opt", [SockOpt.UDPLITE_SEND_COVERAGE, SockOpt.UDPLITE_RECEIVE_COVERAGE])
@pytest.mark.parametrize("value, stored", [(-5, 8), (0, 0), (1, 8), (7, 8), (8, 8), (9, 9), (65535, 65535),
                                           (65536, 65535), (1 << 20, 65535)])
def test_coverage_options_are_stored_as_linux_stores_them(net: Harness, opt: SockOpt, value: int,
                                                          stored: int) -> None:
    ep = net.endpoint(4)
    assert ep.get_sock_opt(opt) is None         # never set (Linux's getsockopt shows this as 0)
    ep.set_sock_opt(opt, value)
    assert ep.get_sock_opt(opt) == stored


def test_udp_endpoints_have_no_coverage_options(net: Harness) -> None:
    ep = net.endpoint(4, transport=UDP_PROTOCOL_NUMBER)
    for opt in (SockOpt.UDPLITE_SEND_COVERAGE, SockOpt.UDPLITE_RECEIVE_COVERAGE):
        with pytest.raises(ErrUnknownProtocolOption):
            ep.set_sock_opt(opt, 8)
        with pytest.raises(ErrUnknownProtocolOption):
            ep.get_sock_opt(opt)


# --- ports, unknown destinations and ICMP errors ----------------------------------------------------------

def test_udp_and_udplite_have_separate_port_spaces(net: Harness) -> None:
    lite = net.endpoint(4)
    udp = net.endpoint(4, transport=UDP_PROTOCOL_NUMBER)          # the same port: no conflict
    net.inject(4, IP(src=PEER[4], dst=LOCAL[4]) / UDP(sport=PEER_PORT, dport=PORT) / Raw(b"udp"))
    net.inject(4, lite_datagram(4, payload=b"lite"))
    assert udp.read().data == b"udp" and nothing_to_read(udp)
    assert lite.read().data == b"lite" and nothing_to_read(lite)


@versions
def test_no_listener_earns_port_unreachable(net: Harness, version: int) -> None:
    net.inject(version, lite_datagram(version))
    reply = (IP if version == 4 else IPv6)(net.sent_one())
    if version == 4:
        assert (reply[ICMP].type, reply[ICMP].code) == (3, 3)
    else:
        assert reply[ICMPv6DestUnreach].code == 4
    assert net.counters.unknown_port_errors.value == 1


def test_no_listener_and_a_bad_checksum_earns_nothing(net: Harness) -> None:
    net.inject(4, lite_datagram(4, checksum=0x1234))
    assert net.sent() == []
    assert net.counters.checksum_errors.value == 1 and net.counters.unknown_port_errors.value == 0


def test_port_unreachable_refuses_the_connected_endpoint(net: Harness) -> None:
    ep = net.endpoint(4, port=None)
    ep.connect(FullAddress(0, packed(PEER[4]), PEER_PORT))
    ep.write(b"anyone?")
    sent = IP(net.sent_one())
    quote = bytes(sent)[:sent.ihl * 4 + 8]
    net.inject(4, IP(src=PEER[4], dst=LOCAL[4]) / ICMP(type=3, code=3) / Raw(quote))
    with pytest.raises(ErrConnectionRefused):
        ep.read()


def test_receive_buffer_overflow_is_counted_as_udplite(net: Harness) -> None:
    ep = net.endpoint(4)
    ep.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 4096)
    for _ in range(10):
        net.inject(4, lite_datagram(4, payload=b"x" * 1000))
    assert net.counters.receive_buffer_errors.value > 0
    assert net.stack.stats().udp.receive_buffer_errors.value == 0
