"""ARP on an Ethernet link: resolving next hops (queueing what waits for them), answering for our
addresses, and neighbour unreachability detection, with the timing Linux uses."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from netsock.stack import NeighborState
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, SockOpt

from conftest import (BROADCAST_MAC, LIMITED_BROADCAST, LOCAL, LOCAL_MAC, OTHER_MAC, OTHER_PEER, PEER, PEER_MAC,
                      REMOTE, SUBNET_BROADCAST, StackHarness, addr, checksums_valid, mac, to)


def arp_reply(sender: str = PEER, sender_mac: str = PEER_MAC) -> Ether:
    return Ether(src=sender_mac, dst=LOCAL_MAC) / ARP(op=2, hwsrc=sender_mac, psrc=sender, hwdst=LOCAL_MAC, pdst=LOCAL)


def arp_request(target: str, sender: str = PEER, sender_mac: str = PEER_MAC) -> Ether:
    return Ether(src=sender_mac, dst=BROADCAST_MAC) / ARP(op=1, hwsrc=sender_mac, psrc=sender, pdst=target)


def is_request_for(frame: Ether, target: str, dst_mac: str = BROADCAST_MAC) -> bool:
    return (ARP in frame and frame[ARP].op == 1 and frame.dst == dst_mac and frame.src == LOCAL_MAC
            and frame.type == 0x0806 and frame[ARP].hwsrc == LOCAL_MAC and frame[ARP].psrc == LOCAL
            and frame[ARP].pdst == target)


def neighbor(h: StackHarness, ip: str):
    return h.nic.neighbors[IPV4_PROTOCOL_NUMBER].get(addr(ip))


# --- resolution -------------------------------------------------------------------------------------

def test_unresolved_neighbour_is_asked_for_and_the_datagram_waits(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.udp(5000).write(b"queued", to(PEER, 9))

    request = h.sent_one()
    assert is_request_for(request, PEER)
    assert neighbor(h, PEER).state is NeighborState.INCOMPLETE
    assert h.stats.arp.requests_sent.value == 1

    h.inject(arp_reply())
    frame = h.sent_one()
    assert (frame.dst, frame.src, frame.type) == (PEER_MAC, LOCAL_MAC, 0x0800)
    assert frame[Raw].load == b"queued" and checksums_valid(frame.original[14:])
    assert neighbor(h, PEER).state is NeighborState.REACHABLE
    assert neighbor(h, PEER).link_address == mac(PEER_MAC)

    h.udp(5001).write(b"direct", to(PEER, 9))                 # resolved: no more asking
    assert h.sent_one().dst == PEER_MAC


def test_off_link_destination_resolves_the_gateway(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.udp(5000).write(b"far away", to(REMOTE, 9))
    assert is_request_for(h.sent_one(), PEER)
    h.inject(arp_reply())
    frame = h.sent_one()
    assert (frame.dst, frame[IP].dst) == (PEER_MAC, REMOTE)


def test_no_reply_three_requests_a_second_apart_then_failure(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.udp(5000).write(b"lost", to(PEER, 9))
    assert is_request_for(h.sent_one(), PEER)
    start = h.clock.now()
    request_times = [0.0]
    failed_at = None
    while h.clock.now() < start + 5:
        h.clock.advance(0.25)
        for frame in h.sent():
            assert is_request_for(frame, PEER)
            request_times.append(h.clock.now() - start)
        if failed_at is None and h.stats.arp.resolution_failures.value:
            failed_at = h.clock.now() - start
    assert request_times == [0.0, 1.0, 2.0]
    assert failed_at == 3.0
    assert h.stats.arp.resolution_failures.value == 1
    assert h.stats.arp.pending_packets_dropped.value == 1
    assert neighbor(h, PEER) is None
    assert len(h.stack.timers) == 0

    h.inject(arp_reply())                                     # too late: nothing left to send
    assert h.sent() == []


def test_reply_for_unrequested_address_is_ignored(ether_harness: StackHarness) -> None:
    """Linux (arp_accept=0) does not create entries from unsolicited replies: no cache poisoning."""
    h = ether_harness
    h.inject(arp_reply(OTHER_PEER, OTHER_MAC))
    assert neighbor(h, OTHER_PEER) is None
    h.udp(5000).write(b"x", to(OTHER_PEER, 9))
    assert is_request_for(h.sent_one(), OTHER_PEER)


def test_pending_queue_is_bounded_and_keeps_the_newest(ether_harness: StackHarness) -> None:
    h = ether_harness
    ep = h.udp(5000)
    for i in range(70):
        ep.write(str(i).encode(), to(PEER, 9))
    assert is_request_for(h.sent_one(), PEER)
    assert h.stats.arp.pending_packets_dropped.value == 70 - 64

    h.inject(arp_reply())
    assert [f[Raw].load for f in h.sent()] == [str(i).encode() for i in range(6, 70)]


def test_a_waiting_datagram_leaves_as_written_whatever_its_writer_does_with_its_buffer_after(
        ether_harness: StackHarness) -> None:
    """A datagram waiting for the neighbour's address does not hold on to the writer's buffer, which the
    writer is free to reuse once the write has returned."""
    h = ether_harness
    buffer = bytearray(b"as written")
    h.udp(5000).write(buffer, to(PEER, 9))
    buffer[:] = b"overwrite!"
    assert is_request_for(h.sent_one(), PEER)
    h.inject(arp_reply())
    assert h.sent_one()[Raw].load == b"as written"


def test_packets_to_two_neighbours_resolve_independently(ether_harness: StackHarness) -> None:
    h = ether_harness
    ep = h.udp(5000)
    ep.write(b"to peer", to(PEER, 9))
    ep.write(b"to other", to(OTHER_PEER, 9))
    assert [f[ARP].pdst for f in h.sent()] == [PEER, OTHER_PEER]

    h.inject(arp_reply(OTHER_PEER, OTHER_MAC))
    assert [(f.dst, f[Raw].load) for f in h.sent()] == [(OTHER_MAC, b"to other")]
    h.inject(arp_reply())
    assert [(f.dst, f[Raw].load) for f in h.sent()] == [(PEER_MAC, b"to peer")]


# --- answering ----------------------------------------------------------------------------------------

def test_request_for_our_address_is_answered_and_the_asker_learned(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.inject(arp_request(LOCAL))

    reply = h.sent_one()
    assert (reply.dst, reply.src, reply.type) == (PEER_MAC, LOCAL_MAC, 0x0806)
    assert (reply[ARP].op, reply[ARP].hwsrc, reply[ARP].psrc) == (2, LOCAL_MAC, LOCAL)
    assert (reply[ARP].hwdst, reply[ARP].pdst) == (PEER_MAC, PEER)
    assert h.stats.arp.replies_sent.value == 1

    entry = neighbor(h, PEER)
    assert entry.state is NeighborState.STALE and entry.link_address == mac(PEER_MAC)
    h.udp(5000).write(b"no need to ask", to(PEER, 9))        # RFC 4861 §7.3.3: STALE is usable
    frame = h.sent_one()
    assert (frame.dst, frame[Raw].load) == (PEER_MAC, b"no need to ask")
    assert neighbor(h, PEER).state is NeighborState.DELAY


def test_request_for_another_address_is_not_answered(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.inject(arp_request(OTHER_PEER))
    h.inject(arp_request("203.0.113.1"))
    assert h.sent() == []
    assert h.stats.arp.requests_received.value == 2
    assert neighbor(h, PEER) is None


def test_echo_request_from_unknown_neighbour_is_answered_after_resolution(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.inject(Ether(src=PEER_MAC, dst=LOCAL_MAC) / IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=3, seq=4))
    assert is_request_for(h.sent_one(), PEER)
    h.inject(arp_reply())
    reply = h.sent_one()
    assert (reply.dst, reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (PEER_MAC, 0, 3, 4)


def test_malformed_arp_is_counted(ether_harness: StackHarness) -> None:
    h = ether_harness
    h.inject(Ether(src=PEER_MAC, dst=BROADCAST_MAC, type=0x0806) / Raw(b"\x00\x01\x08\x00"))
    h.inject(Ether(src=PEER_MAC, dst=BROADCAST_MAC) / ARP(op=1, hwtype=6, psrc=PEER, pdst=LOCAL))
    h.inject(Ether(src=PEER_MAC, dst=BROADCAST_MAC) / ARP(op=9, psrc=PEER, pdst=LOCAL))
    assert h.stats.arp.malformed_packets_received.value == 3
    assert h.sent() == []


# --- neighbour unreachability detection ----------------------------------------------------------------

def resolved(h: StackHarness) -> None:
    h.udp(4999).write(b"resolve", to(PEER, 9))
    h.inject(arp_reply())
    h.sent()


def test_reachable_goes_stale_after_the_reachable_time(ether_harness: StackHarness) -> None:
    h = ether_harness
    resolved(h)
    h.clock.advance(14.9)                                     # base 30 s, jittered to [15, 45]
    assert neighbor(h, PEER).state is NeighborState.REACHABLE
    h.clock.advance(30.2)
    assert neighbor(h, PEER).state is NeighborState.STALE
    assert h.sent() == []                                     # going stale costs no traffic
    assert len(h.stack.timers) == 0


def test_stale_use_delays_then_probes_unicast_and_a_reply_confirms(ether_harness: StackHarness) -> None:
    h = ether_harness
    resolved(h)
    h.clock.advance(46)
    ep = h.udp(5000)

    ep.write(b"while stale", to(PEER, 9))
    assert h.sent_one().dst == PEER_MAC                       # sent at once to the cached address
    assert neighbor(h, PEER).state is NeighborState.DELAY

    h.clock.advance(4.9)
    assert h.sent() == []
    h.clock.advance(0.2)                                      # delay_first_probe_time: 5 s
    assert neighbor(h, PEER).state is NeighborState.PROBE
    assert is_request_for(h.sent_one(), PEER, dst_mac=PEER_MAC)

    ep.write(b"while probing", to(PEER, 9))
    assert h.sent_one().dst == PEER_MAC                       # still usable while probing

    h.inject(arp_reply())
    assert neighbor(h, PEER).state is NeighborState.REACHABLE
    h.clock.advance(10)
    assert h.sent() == []                                     # confirmed: no more probes


def test_unanswered_probes_drop_the_entry(ether_harness: StackHarness) -> None:
    h = ether_harness
    resolved(h)
    h.clock.advance(46)
    h.udp(5000).write(b"x", to(PEER, 9))
    h.sent()
    h.clock.advance(5 + 3.5)
    probes = h.sent()
    assert len(probes) == 3 and all(is_request_for(p, PEER, dst_mac=PEER_MAC) for p in probes)
    assert neighbor(h, PEER) is None
    assert len(h.stack.timers) == 0

    h.udp(5001).write(b"y", to(PEER, 9))                      # starts over with a broadcast request
    assert is_request_for(h.sent_one(), PEER)


def test_neighbour_with_new_address_is_updated_from_its_request(ether_harness: StackHarness) -> None:
    h = ether_harness
    resolved(h)
    h.inject(arp_request(LOCAL, sender_mac=OTHER_MAC))        # the peer moved to another NIC
    assert h.sent_one().dst == OTHER_MAC
    assert neighbor(h, PEER).link_address == mac(OTHER_MAC)
    assert neighbor(h, PEER).state is NeighborState.STALE


def test_gratuitous_arp_updates_a_known_neighbour_only(ether_harness: StackHarness) -> None:
    h = ether_harness
    resolved(h)
    h.inject(arp_request(PEER, sender=PEER, sender_mac=OTHER_MAC))   # gratuitous: target is itself
    h.inject(arp_request(OTHER_PEER, sender=OTHER_PEER, sender_mac=OTHER_MAC))
    assert h.sent() == []
    assert neighbor(h, PEER).link_address == mac(OTHER_MAC)
    assert neighbor(h, OTHER_PEER) is None


# --- no resolution needed -------------------------------------------------------------------------------

@pytest.mark.parametrize("destination, dst_mac", [(LIMITED_BROADCAST, BROADCAST_MAC),
                                                  (SUBNET_BROADCAST, BROADCAST_MAC),
                                                  ("224.0.0.251", "01:00:5e:00:00:fb"),
                                                  ("239.200.1.2", "01:00:5e:48:01:02")])
def test_broadcast_and_multicast_need_no_resolution(ether_harness: StackHarness, destination: str,
                                                   dst_mac: str) -> None:
    h = ether_harness
    ep = h.udp(5353)
    ep.set_sock_opt(SockOpt.BROADCAST, True)
    ep.write(b"to many", to(destination, 5353))
    frame = h.sent_one()
    assert (frame.dst, frame[IP].dst, frame[UDP].dport) == (dst_mac, destination, 5353)
    assert len(h.nic.neighbors[IPV4_PROTOCOL_NUMBER]) == 0
    assert h.stats.arp.requests_sent.value == 0
