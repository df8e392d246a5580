"""Path MTU discovery (RFC 8201, RFC 1191): ICMPv6 packet too big and ICMPv4 fragmentation needed
lower the MTU towards one destination (never below 1280 / 552 bytes), what is sent there afterwards
is fragmented or segmented to fit, and the learned MTU ages out after 10 minutes."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6, defragment6
from scapy.packet import Raw

from netsock.tcpip import (IPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, ErrInvalidOptionValue, ErrMessageTooLong,
                           ErrNotConnected, FullAddress, SockOpt)
from netsock.tcpip.options import (PMTUDISC_DO, PMTUDISC_DONT, PMTUDISC_INTERFACE, PMTUDISC_OMIT, PMTUDISC_PROBE,
                                   PMTUDISC_WANT)
from netsock.waiter import EventMask

from conftest import LOCAL as LOCAL4
from conftest import PEER as PEER4
from conftest import REMOTE as REMOTE4
from conftest import StackHarness, addr, to
from tcp_context import TCPContext, icmp_unreachable
from test_ipv6 import LOCAL, PEER, REMOTE, V6Harness, a6, to6, upper_layer_checksum_valid

OTHER_REMOTE = "2001:db8:2::1"


@pytest.fixture
def h() -> V6Harness:
    return V6Harness()


def packet_too_big(quoted: bytes, mtu: int) -> IPv6:
    """What a router on the way sends back: as much of our packet as fits in 1280 bytes."""
    return IPv6(src=PEER, dst=LOCAL) / ICMPv6PacketTooBig(mtu=mtu) / Raw(quoted[:1232])


def send_udp(h: V6Harness, size: int, destination: str = REMOTE) -> list[bytes]:
    h.udp().write(bytes(size), to6(destination, 9))
    return h.sent_raw()


# --- IPv6 -------------------------------------------------------------------------------------------

def test_packet_too_big_lowers_the_path_mtu_of_that_destination(h: V6Harness) -> None:
    [first] = send_udp(h, 1400)
    assert len(first) == 1448

    h.inject(packet_too_big(first, 1300))

    assert h.stack.path_mtu.get(a6(REMOTE)) == 1300
    assert h.stats.icmp.v6_packets_received.packet_too_big.value == 1
    fragments = send_udp(h, 1400)
    assert len(fragments) == 2 and all(len(raw) <= 1300 for raw in fragments)
    whole = bytes(defragment6([IPv6(raw) for raw in fragments]))
    assert IPv6(whole)[UDP].payload.load == bytes(1400) and upper_layer_checksum_valid(whole)
    assert [len(raw) for raw in send_udp(h, 1400, OTHER_REMOTE)] == [1448]   # other paths keep theirs


@pytest.mark.parametrize("advertised", [1279, 600, 68, 0])
def test_path_mtu_never_drops_below_1280(h: V6Harness, advertised: int) -> None:
    [first] = send_udp(h, 1400)
    h.inject(packet_too_big(first, advertised))
    assert h.stack.path_mtu.get(a6(REMOTE)) == 1280
    fragments = send_udp(h, 1300)
    assert len(fragments) == 2 and max(len(raw) for raw in fragments) == 1280


def test_larger_mtu_in_packet_too_big_does_not_raise_the_path_mtu(h: V6Harness) -> None:
    [first] = send_udp(h, 1400)
    h.inject(packet_too_big(first, 1300))
    h.inject(packet_too_big(first, 1400))
    assert h.stack.path_mtu.get(a6(REMOTE)) == 1300
    h.inject(packet_too_big(first, 9000))       # beyond the link's: still the smallest counts
    assert [len(raw) <= 1300 for raw in send_udp(h, 1400)] == [True, True]


def test_learned_path_mtu_expires_after_10_minutes(h: V6Harness) -> None:
    [first] = send_udp(h, 1400)
    h.inject(packet_too_big(first, 1300))
    h.clock.advance(599)
    assert len(send_udp(h, 1400)) == 2
    h.clock.advance(1)
    assert h.stack.path_mtu.get(a6(REMOTE)) == 0
    assert [len(raw) for raw in send_udp(h, 1400)] == [1448]
    assert len(h.stack.timers) == 0                 # entries age out lazily: no timer per destination


def test_packet_too_big_reaches_a_connected_udp_endpoint(h: V6Harness) -> None:
    ep = h.udp(5000)
    ep.connect(FullAddress(0, a6(REMOTE), 9))
    ep.write(bytes(1400))
    [first] = h.sent_raw()
    h.inject(packet_too_big(first, 1280))
    assert ep.readiness(EventMask.ERR)
    with pytest.raises(ErrMessageTooLong):
        ep.read()


def test_packet_too_big_quoting_garbage_is_counted_invalid(h: V6Harness) -> None:
    h.inject(IPv6(src=PEER, dst=LOCAL) / ICMPv6PacketTooBig(mtu=1280) / Raw(b"\x45" + bytes(40)))
    h.inject(IPv6(src=PEER, dst=LOCAL) / ICMPv6PacketTooBig(mtu=1280) / Raw(bytes(12)))
    assert h.stats.icmp.v6_packets_received.invalid.value == 2
    assert len(h.stack.path_mtu) == 0


def test_tcp_segments_shrink_after_packet_too_big(h: V6Harness) -> None:
    listener = h.stack.new_endpoint(TCP_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER)
    listener.bind(FullAddress(0, b"", 80))
    listener.listen(1)
    h.inject(IPv6(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=65535,
                                               options=[("MSS", 1440)]))
    syn_ack = h.sent_one()[TCP]
    h.inject(IPv6(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=syn_ack.seq + 1,
                                               window=65535))
    ep, _ = listener.accept()
    assert ep.get_sock_opt(SockOpt.MAX_SEG) == 1440

    ep.write(bytes(30000))
    first_flight = h.sent_raw()
    assert max(len(raw) for raw in first_flight) == 1500
    h.inject(packet_too_big(first_flight[0], 1280))

    assert ep.get_sock_opt(SockOpt.MAX_SEG) == 1280 - 60
    acked = max(IPv6(raw)[TCP].seq + len(IPv6(raw)[TCP].payload) for raw in first_flight)
    h.inject(IPv6(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=acked, window=65535))
    second_flight = h.sent_raw()
    assert second_flight and all(len(raw) <= 1280 for raw in second_flight)
    assert all(upper_layer_checksum_valid(raw) for raw in second_flight)


def test_packet_too_big_for_a_sequence_number_not_in_flight_is_ignored(h: V6Harness) -> None:
    """RFC 5927 §4.1: a forged error must quote a segment we actually have in flight."""
    listener = h.stack.new_endpoint(TCP_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER)
    listener.bind(FullAddress(0, b"", 80))
    listener.listen(1)
    h.inject(IPv6(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=65535,
                                               options=[("MSS", 1440)]))
    syn_ack = h.sent_one()[TCP]
    h.inject(IPv6(src=REMOTE, dst=LOCAL) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=syn_ack.seq + 1,
                                               window=65535))
    ep, _ = listener.accept()
    forged = bytes(IPv6(src=LOCAL, dst=REMOTE) / TCP(sport=80, dport=40000, seq=(syn_ack.seq + 999_999) & 0xFFFFFFFF))
    h.inject(packet_too_big(forged, 1280))
    assert ep.get_sock_opt(SockOpt.MAX_SEG) == 1440


# --- IPv4 -------------------------------------------------------------------------------------------

def fragmentation_needed(quoted: bytes, mtu: int) -> IP:
    return IP(src=PEER4, dst=LOCAL4) / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(quoted[:28])


def send_udp4(h: StackHarness, size: int, destination: str = REMOTE4) -> list[bytes]:
    h.udp().write(bytes(size), to(destination, 9))
    return h.sent_raw()


def test_fragmentation_needed_lowers_the_ipv4_path_mtu(harness: StackHarness) -> None:
    [first] = send_udp4(harness, 1400)
    assert len(first) == 1428
    harness.inject(fragmentation_needed(first, 1000))
    assert harness.stack.path_mtu.get(addr(REMOTE4)) == 1000
    fragments = send_udp4(harness, 1400)
    assert len(fragments) == 2 and all(len(raw) <= 1000 for raw in fragments)
    assert [len(raw) for raw in send_udp4(harness, 1400, "198.51.100.2")] == [1428]
    harness.clock.advance(600)
    assert [len(raw) for raw in send_udp4(harness, 1400)] == [1428]


@pytest.mark.parametrize("advertised", [551, 68])
def test_ipv4_path_mtu_never_drops_below_552(harness: StackHarness, advertised: int) -> None:
    [first] = send_udp4(harness, 1400)
    harness.inject(fragmentation_needed(first, advertised))
    assert harness.stack.path_mtu.get(addr(REMOTE4)) == 552
    fragments = send_udp4(harness, 1400)
    assert all(len(raw) <= 552 for raw in fragments) and max(len(raw) for raw in fragments) > 500
    assert IP(fragments[0]).frag == 0 and IP(fragments[1]).frag * 8 == len(fragments[0]) - 20



# --- IP_MTU_DISCOVER and IP_MTU (what a socket makes of the path MTU) -------------------------------

@pytest.mark.parametrize(("mode", "df"), [(PMTUDISC_DONT, False), (PMTUDISC_WANT, True), (PMTUDISC_DO, True),
                                          (PMTUDISC_PROBE, True), (PMTUDISC_INTERFACE, False),
                                          (PMTUDISC_OMIT, False)])
def test_mtu_discover_decides_the_dont_fragment_bit_of_what_fits(harness: StackHarness, mode: int,
                                                                 df: bool) -> None:
    udp = harness.udp()
    udp.set_sock_opt(SockOpt.MTU_DISCOVER, mode)
    udp.write(bytes(100), to(REMOTE4, 9))
    [sent] = harness.sent()
    assert bool(sent[IP].flags.DF) is df


def test_do_refuses_a_datagram_over_the_path_mtu_where_want_fragments_it(harness: StackHarness) -> None:
    [first] = send_udp4(harness, 1400)
    harness.inject(fragmentation_needed(first, 1000))       # the path's MTU is 1000 now
    udp = harness.udp()
    udp.set_sock_opt(SockOpt.MTU_DISCOVER, PMTUDISC_DO)
    with pytest.raises(ErrMessageTooLong):
        udp.write(bytes(1000 - 28 + 1), to(REMOTE4, 9))
    udp.write(bytes(1000 - 28), to(REMOTE4, 9))               # what fits goes, with DF
    [fits] = harness.sent()
    assert len(bytes(fits)) == 1000 and fits[IP].flags.DF
    udp.set_sock_opt(SockOpt.MTU_DISCOVER, PMTUDISC_PROBE)   # PROBE measures against the device's 1500
    udp.write(bytes(1400), to(REMOTE4, 9))
    [probe] = harness.sent_raw()
    assert len(probe) == 1428 and IP(probe).flags.DF
    udp.set_sock_opt(SockOpt.MTU_DISCOVER, PMTUDISC_WANT)
    assert len(send_udp4(harness, 1400)) == 2                # fragments, as before


def test_ip_mtu_is_the_connected_path_mtu(harness: StackHarness) -> None:
    udp = harness.udp()
    with pytest.raises(ErrNotConnected):
        udp.get_sock_opt(SockOpt.PATH_MTU)
    udp.connect(FullAddress(0, addr(REMOTE4), 9))
    assert udp.get_sock_opt(SockOpt.PATH_MTU) == 1500
    [first] = send_udp4(harness, 1400)
    harness.inject(fragmentation_needed(first, 1000))
    assert udp.get_sock_opt(SockOpt.PATH_MTU) == 1000


def test_mtu_discover_accepts_linuxs_six_modes_only(harness: StackHarness) -> None:
    udp = harness.udp()
    for bad in (-1, 6):
        with pytest.raises(ErrInvalidOptionValue):
            udp.set_sock_opt(SockOpt.MTU_DISCOVER, bad)
    assert udp.get_sock_opt(SockOpt.MTU_DISCOVER) == PMTUDISC_WANT


def test_tcp_with_dont_sends_segments_without_df_and_keeps_its_mss_on_frag_needed() -> None:
    ctx = TCPContext()
    ep, ctx.wq = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.MTU_DISCOVER, PMTUDISC_DONT)
    syn = ctx.connect(ep=ep)
    assert not IP(syn.raw).flags.DF
    ep.write(b"x" * 1000)
    [data] = ctx.sent()
    assert not IP(data.raw).flags.DF
    mss = ep.get_sock_opt(SockOpt.MAX_SEG)
    ctx.inject(icmp_unreachable(data, 4, mtu=600))
    assert ep.get_sock_opt(SockOpt.MAX_SEG) == mss
    assert ep.get_sock_opt(SockOpt.PATH_MTU) == 600           # (the path's MTU is learned all the same)
