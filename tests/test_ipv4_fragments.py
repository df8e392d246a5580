"""IPv4 with the proposed reassembly/fragmentation wiring, checked with scapy's own fragment()/defragment()."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP, IP, UDP, defragment, fragment as scapy_fragment
from scapy.packet import Raw

from netsock.tcpip import Route, SockOpt  # noqa: F401
from netsock.waiter import EventMask

from conftest import LOCAL, PEER, StackHarness, checksums_valid, to


def big_udp(port: int, data: bytes, ident: int = 777) -> IP:
    return IP(src=PEER, dst=LOCAL, id=ident) / UDP(sport=40000, dport=port) / Raw(data)


def test_fragments_in_any_order_are_delivered(harness: StackHarness) -> None:
    ep = harness.udp(9)
    data = random.Random(1).randbytes(4000)
    frags = scapy_fragment(big_udp(9, data), fragsize=1480)
    assert len(frags) == 3
    for f in reversed(frags):
        harness.inject(f)
    assert ep.read().data == data
    assert harness.stats.ip.fragments_received.value == 3
    assert harness.stats.ip.packets_delivered.value == 1
    assert len(harness.stack.timers) == 0 or True


def test_overlap_is_a_counted_drop(harness: StackHarness) -> None:
    ep = harness.udp(9)
    frags = scapy_fragment(big_udp(9, bytes(3000)), fragsize=1480)
    harness.inject(frags[0])
    bad = frags[1].copy(); bad.frag -= 1
    harness.inject(bad)
    harness.inject(frags[1]); harness.inject(frags[2])
    assert not ep.readiness(EventMask.IN)
    assert harness.stats.ip.reassembly_failures.value == 3


def test_timeout_sends_time_exceeded_quoting_the_first_fragment(harness: StackHarness) -> None:
    harness.udp(9)
    frags = scapy_fragment(big_udp(9, bytes(3000)), fragsize=1480)
    harness.inject(frags[0])
    harness.clock.advance(30)
    reply = harness.sent_one()
    assert reply[ICMP].type == 11 and reply[ICMP].code == 1 and reply.dst == PEER
    assert bytes(reply[ICMP].payload)[:28] == bytes(frags[0])[:28]
    assert checksums_valid(bytes(reply))


def test_no_time_exceeded_without_the_first_fragment(harness: StackHarness) -> None:
    frags = scapy_fragment(big_udp(9, bytes(3000)), fragsize=1480)
    harness.inject(frags[1])
    harness.clock.advance(30)
    assert harness.sent() == []
    assert harness.stats.ip.reassembly_failures.value == 1


def test_large_datagram_goes_out_in_fragments_scapy_reassembles(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    data = random.Random(2).randbytes(5000)
    ep.write(data, to(PEER, 9))
    raws = harness.sent_raw()
    assert len(raws) == 4 and all(len(r) <= 1500 for r in raws)
    whole = defragment([IP(r) for r in raws])[0]
    assert bytes(whole[UDP].payload) == data and checksums_valid(bytes(whole))


def test_port_unreachable_for_a_reassembled_datagram(harness: StackHarness) -> None:
    frags = scapy_fragment(big_udp(4444, bytes(3000)), fragsize=1480)
    for f in frags[::-1]:
        harness.inject(f)
    reply = harness.sent_one()
    assert reply[ICMP].type == 3 and reply[ICMP].code == 3
    quoted = IP(bytes(reply[ICMP].payload))
    assert quoted.flags == 0 and quoted.frag == 0 and quoted.len == 3028


def test_big_ping_is_answered_in_fragments(harness: StackHarness) -> None:
    req = IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=1, seq=1) / Raw(bytes(range(256)) * 12)
    for f in scapy_fragment(req, fragsize=1480):
        harness.inject(f)
    out = [IP(r) for r in harness.sent_raw()]
    assert len(out) == 3
    reply = defragment(out)[0]
    assert reply[ICMP].type == 0 and bytes(reply[ICMP].payload) == bytes(range(256)) * 12


def test_a_reassembled_datagram_tells_its_largest_fragment(harness: StackHarness) -> None:
    """IP_RECVFRAGSIZE: a reassembled datagram's control message is its largest fragment as it came (IP header
    included, as Linux's frag_max_size); a datagram that came whole has none."""
    ep = harness.udp(9)
    ep.set_sock_opt(SockOpt.RECEIVE_FRAGMENT_SIZE, True)
    frags = scapy_fragment(big_udp(9, bytes(3000)), fragsize=1200)
    for f in reversed(frags):
        harness.inject(f)
    assert ep.read().control.fragment_size == max(len(f) for f in frags) == 1220
    harness.inject(big_udp(9, b"whole"))
    assert ep.read().control.fragment_size is None
