"""UDP endpoints as a socket user sees them: binding and port sharing, connecting, sending and
receiving (checksums, buffers, broadcast), ICMP errors, shutdown, close and readiness."""

from __future__ import annotations

import errno

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Raw

from netsock.ports import EPHEMERAL_FIRST, EPHEMERAL_LAST
from netsock.stack.interfaces import LinkCapabilities
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, ErrAlreadyBound, ErrBadLocalAddress, ErrBroadcastDisabled,
                           ErrClosedForReceive, ErrClosedForSend, ErrConnectionRefused, ErrDestinationRequired,
                           ErrInvalidEndpointState, ErrMessageTooLong, ErrNetworkUnreachable, ErrNotConnected,
                           ErrInvalidOptionValue, ErrPortInUse, ErrWouldBlock, FullAddress, SendableControlMessages,
                           ShutdownFlags, SockOpt, WriteOptions)
from netsock.waiter import EventMask

from conftest import (LIMITED_BROADCAST, LOCAL, NIC_ID, OTHER_PEER, PEER, REMOTE, SUBNET_BROADCAST, StackHarness,
                      addr, checksums_valid, received, to)


def datagram(dport: int, payload: bytes = b"data", src: str = PEER, sport: int = 40000, dst: str = LOCAL,
             **udp_fields) -> IP:
    return IP(src=src, dst=dst) / UDP(sport=sport, dport=dport, **udp_fields) / Raw(payload)


def nothing_to_read(ep) -> bool:
    try:
        ep.read()
    except ErrWouldBlock:
        return True
    return False


def full(host: str, port: int) -> FullAddress:
    return FullAddress(0, addr(host), port)


# --- binding ----------------------------------------------------------------------------------------

def test_bound_to_any_address_receives(harness: StackHarness) -> None:
    ep = harness.udp(7)
    harness.inject(datagram(7, b"hello"))
    result = ep.read()
    assert result.data == b"hello"
    assert result.sender == FullAddress(NIC_ID, addr(PEER), 40000)
    assert ep.get_local_address() == FullAddress(0, b"", 7)


def test_bound_to_a_specific_address_receives_only_for_it(harness: StackHarness) -> None:
    harness.stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, "192.0.2.9/24")
    ep = harness.udp(7, "192.0.2.9")

    harness.inject(datagram(7, b"to .2"))
    assert nothing_to_read(ep)
    assert harness.sent_one()[ICMP].type == 3                  # nobody listens on 192.0.2.2:7

    harness.inject(datagram(7, b"to .9", dst="192.0.2.9"))
    assert ep.read().data == b"to .9"


def test_bind_to_a_non_local_address_is_refused(harness: StackHarness) -> None:
    with pytest.raises(ErrBadLocalAddress) as info:
        harness.udp(7, REMOTE)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert len(harness.stack.ports) == 0


def test_bind_twice_is_refused(harness: StackHarness) -> None:
    ep = harness.udp(7)
    with pytest.raises(ErrAlreadyBound) as info:
        ep.bind(FullAddress(0, b"", 8))
    assert info.value.errno == errno.EINVAL
    assert ep.get_local_address().port == 7


@pytest.mark.parametrize("first, second", [("", ""), ("", LOCAL), (LOCAL, ""), (LOCAL, LOCAL)])
def test_conflicting_bind_is_address_in_use(harness: StackHarness, first: str, second: str) -> None:
    harness.udp(7, first)
    ep = harness.udp()
    with pytest.raises(ErrPortInUse) as info:
        ep.bind(FullAddress(0, addr(second) if second else b"", 7))
    assert info.value.errno == errno.EADDRINUSE
    ep.bind(FullAddress(0, b"", 8))                            # the endpoint is still usable


def test_same_port_on_different_local_addresses(harness: StackHarness) -> None:
    harness.stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, "192.0.2.9/24")
    on_2, on_9 = harness.udp(7, LOCAL), harness.udp(7, "192.0.2.9")

    harness.inject(datagram(7, b"two"))
    harness.inject(datagram(7, b"nine", dst="192.0.2.9"))
    assert on_2.read().data == b"two"
    assert on_9.read().data == b"nine"
    with pytest.raises(ErrPortInUse):
        harness.udp(7)                                         # the wildcard overlaps both


def test_reuse_address_shares_a_port(harness: StackHarness) -> None:
    """SO_REUSEADDR on both: both bind; unicast goes to the newest, broadcast to all (as Linux)."""
    older, newer = harness.udp(), harness.udp()
    for ep in (older, newer):
        ep.set_sock_opt(SockOpt.REUSE_ADDRESS, True)
        ep.bind(FullAddress(0, b"", 67))

    harness.inject(datagram(67, b"unicast"))
    assert newer.read().data == b"unicast"
    assert nothing_to_read(older)

    harness.inject(datagram(67, b"broadcast", dst=LIMITED_BROADCAST))
    assert older.read().data == newer.read().data == b"broadcast"

    plain = harness.udp()
    with pytest.raises(ErrPortInUse):
        plain.bind(FullAddress(0, b"", 67))                    # only endpoints that set it may share

    newer.close()
    harness.inject(datagram(67, b"after close"))
    assert older.read().data == b"after close"


def reuse_port_group(h: StackHarness, size: int, port: int = 53) -> list:
    group = []
    for _ in range(size):
        ep = h.udp()
        ep.set_sock_opt(SockOpt.REUSE_PORT, True)
        ep.bind(FullAddress(0, b"", port))
        group.append(ep)
    return group


def test_reuse_port_spreads_flows_and_keeps_each_on_one_member(harness: StackHarness) -> None:
    group = reuse_port_group(harness, 4)
    flows = range(20000, 20200)
    for sport in flows:
        harness.inject(datagram(53, str(sport).encode(), sport=sport))
    counts = [len(received(ep)) for ep in group]
    assert sum(counts) == len(flows)
    assert all(counts), counts                                 # every member takes a share

    for _ in range(3):                                         # a flow sticks to its member
        for sport in flows:
            harness.inject(datagram(53, str(sport).encode(), sport=sport))
    owners = {}
    for index, ep in enumerate(group):
        for data in received(ep):
            owners.setdefault(data, set()).add(index)
    assert len(owners) == len(flows) and all(len(o) == 1 for o in owners.values())


def test_reuse_port_group_all_receive_broadcast(harness: StackHarness) -> None:
    group = reuse_port_group(harness, 3, port=67)
    harness.inject(datagram(67, b"everyone", dst=SUBNET_BROADCAST))
    assert [ep.read().data for ep in group] == [b"everyone"] * 3


def test_reuse_port_needs_every_member_to_set_it(harness: StackHarness) -> None:
    reuse_port_group(harness, 2)
    with pytest.raises(ErrPortInUse):
        harness.udp(53)


def test_ephemeral_port_on_first_write(harness: StackHarness) -> None:
    ep = harness.udp()
    assert ep.get_local_address().port == 0
    ep.write(b"x", to(PEER, 9))
    port = ep.get_local_address().port
    assert EPHEMERAL_FIRST <= port <= EPHEMERAL_LAST
    assert harness.sent_one()[UDP].sport == port
    ep.write(b"y", to(PEER, 9))
    assert harness.sent_one()[UDP].sport == port               # and it stays


def test_bind_to_port_zero_picks_an_ephemeral_port(harness: StackHarness) -> None:
    ports = {harness.udp(0).get_local_address().port for _ in range(50)}
    assert len(ports) == 50
    assert all(EPHEMERAL_FIRST <= p <= EPHEMERAL_LAST for p in ports)


# --- connecting -------------------------------------------------------------------------------------

def test_connect_filters_other_senders(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.connect(full(PEER, 9))
    assert ep.get_remote_address() == full(PEER, 9)
    assert ep.get_local_address().addr == addr(LOCAL)

    harness.inject(datagram(5000, b"other host", src=OTHER_PEER, sport=9))
    harness.inject(datagram(5000, b"other port", sport=10))
    harness.inject(datagram(5000, b"the peer", sport=9))
    assert received(ep) == [b"the peer"]


def test_reconnect_moves_the_filter_to_the_new_peer(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.connect(full(PEER, 9))
    ep.connect(full(OTHER_PEER, 10))
    harness.inject(datagram(5000, b"old peer", sport=9))
    harness.inject(datagram(5000, b"new peer", src=OTHER_PEER, sport=10))
    assert received(ep) == [b"new peer"]
    assert ep.get_local_address().port == 5000
    assert len(harness.stack.ports) == 1 and len(harness.stack.demux) == 1


def test_connect_then_write_without_destination(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.connect(full(PEER, 9))
    assert ep.write(b"connected") == len(b"connected")
    packet = harness.sent_one()
    assert (packet.dst, packet[UDP].dport, packet[Raw].load) == (PEER, 9, b"connected")
    assert EPHEMERAL_FIRST <= packet[UDP].sport <= EPHEMERAL_LAST


def test_disconnect_accepts_everyone_again(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.connect(full(PEER, 9))
    ep.connect(FullAddress())                                  # AF_UNSPEC
    with pytest.raises(ErrNotConnected):
        ep.get_remote_address()
    harness.inject(datagram(5000, b"anyone", src=OTHER_PEER))
    assert ep.read().data == b"anyone"
    with pytest.raises(ErrDestinationRequired):
        ep.write(b"x")


def test_write_without_destination_when_unconnected(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    with pytest.raises(ErrDestinationRequired) as info:
        ep.write(b"x")
    assert info.value.errno == errno.EDESTADDRREQ
    assert harness.sent() == []


def test_sendto_on_a_connected_endpoint(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.connect(full(PEER, 9))
    ep.write(b"elsewhere", to(REMOTE, 10))
    packet = harness.sent_one()
    assert (packet.src, packet.dst, packet[UDP].sport, packet[UDP].dport) == (LOCAL, REMOTE, 5000, 10)


def test_connect_to_unreachable_network(harness: StackHarness) -> None:
    harness.stack.set_route_table([])
    ep = harness.udp()
    with pytest.raises(ErrNetworkUnreachable) as info:
        ep.connect(full(REMOTE, 9))
    assert info.value.errno == errno.ENETUNREACH


# --- checksums --------------------------------------------------------------------------------------

def test_outbound_checksum_is_valid(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    for payload in (b"", b"a", b"odd length", bytes(range(256)) * 4):
        ep.write(payload, to(PEER, 9))
        raw = harness.sent_raw()[0]
        assert checksums_valid(raw)
        assert IP(raw)[UDP].len == 8 + len(payload)


def test_computed_zero_checksum_is_sent_as_all_ones(harness: StackHarness) -> None:
    """RFC 768: zero means "no checksum", so a sum that comes out as zero goes as 0xFFFF."""
    ep = harness.udp(5000)
    # A 2-byte payload equal to the checksum of the empty-payload datagram brings the sum to zero.
    probe = IP(bytes(IP(src=LOCAL, dst=PEER) / UDP(sport=5000, dport=9, len=10) / Raw(b"\x00\x00")))
    ep.write(probe[UDP].chksum.to_bytes(2, "big"), to(PEER, 9))
    raw = harness.sent_raw()[0]
    assert IP(raw)[UDP].chksum == 0xFFFF
    assert checksums_valid(raw)


def test_zero_checksum_is_accepted(harness: StackHarness) -> None:
    ep = harness.udp(7)
    harness.inject(datagram(7, b"no checksum", chksum=0))
    assert ep.read().data == b"no checksum"


def test_bad_checksum_is_dropped_and_counted(harness: StackHarness) -> None:
    ep = harness.udp(7)
    raw = bytearray(bytes(datagram(7, b"corrupted")))
    raw[-1] ^= 0x01
    harness.inject(bytes(raw))
    assert nothing_to_read(ep)
    assert harness.stats.udp.checksum_errors.value == 1
    assert ep.stats.receive_errors.malformed_packets_received.value == 1
    assert harness.sent() == []


@pytest.mark.parametrize("length", [7, 100])
def test_bad_length_field_is_dropped_and_counted(harness: StackHarness, length: int) -> None:
    ep = harness.udp(7)
    harness.inject(datagram(7, b"payload", len=length))
    assert nothing_to_read(ep)
    assert harness.stats.udp.malformed_packets_received.value == 1


def test_header_too_short_for_ports_is_counted(harness: StackHarness) -> None:
    harness.inject(IP(src=PEER, dst=LOCAL, proto=17) / Raw(b"\x00\x07"))
    assert harness.nic.stats.malformed_l4_rcvd_packets.value == 1
    assert harness.sent() == []


def test_length_field_shorter_than_the_packet_trims_it(harness: StackHarness) -> None:
    ep = harness.udp(7)
    harness.inject(datagram(7, b"keepTRAILER", len=8 + 4, chksum=0))
    assert ep.read().data == b"keep"


# --- receive buffer ---------------------------------------------------------------------------------

def test_receive_buffer_overflow_drops_and_counts(harness: StackHarness) -> None:
    ep = harness.udp(7)
    ep.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 4096)         # the minimum
    assert ep.get_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE) == 4096
    for i in range(20):
        harness.inject(datagram(7, bytes([i]) * 1000))
    got = received(ep)
    assert 4 <= len(got) < 20
    assert got == [bytes([i]) * 1000 for i in range(len(got))]   # the oldest were kept
    assert ep.stats.receive_errors.receive_buffer_overflow.value == 20 - len(got)
    assert harness.stats.udp.receive_buffer_errors.value == 20 - len(got)

    harness.inject(datagram(7, b"room again"))                # reading made room
    assert ep.read().data == b"room again"


# --- broadcast --------------------------------------------------------------------------------------

@pytest.mark.parametrize("destination", [LIMITED_BROADCAST, SUBNET_BROADCAST])
def test_broadcast_needs_the_broadcast_option(harness: StackHarness, destination: str) -> None:
    ep = harness.udp(68)
    with pytest.raises(ErrBroadcastDisabled) as info:
        ep.write(b"hello all", to(destination, 67))
    assert info.value.errno == errno.EACCES
    assert harness.sent() == []
    with pytest.raises(ErrBroadcastDisabled):
        ep.connect(full(destination, 67))

    ep.set_sock_opt(SockOpt.BROADCAST, True)
    ep.write(b"hello all", to(destination, 67))
    packet = harness.sent_one()
    assert (packet.src, packet.dst, packet[Raw].load) == (LOCAL, destination, b"hello all")
    assert checksums_valid(packet.original)


def test_broadcast_is_received_by_wildcard_not_unicast_bound_endpoints(harness: StackHarness) -> None:
    wildcard = harness.udp(67)
    harness.inject(datagram(67, b"all", dst=SUBNET_BROADCAST))
    assert wildcard.read().data == b"all"
    wildcard.close()

    unicast_bound = harness.udp(67, LOCAL)
    harness.inject(datagram(67, b"all", dst=LIMITED_BROADCAST))
    assert nothing_to_read(unicast_bound)
    assert harness.sent() == []


# --- ICMP errors ------------------------------------------------------------------------------------

def port_unreachable_for(sent: IP) -> IP:
    """What the peer's stack answers: an ICMP port unreachable quoting our datagram's header + 8 bytes."""
    quote = bytes(sent)[:sent.ihl * 4 + 8]
    return IP(src=sent.dst, dst=sent.src) / ICMP(type=3, code=3) / Raw(quote)


def test_port_unreachable_refuses_the_connected_endpoint(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.connect(full(PEER, 9))
    errors = []
    ep.waiter_queue.register(errors.append, EventMask.ERR)
    ep.write(b"anyone?")

    harness.inject(port_unreachable_for(harness.sent_one()))

    assert errors == [EventMask.ERR]
    assert ep.readiness(EventMask.IN | EventMask.ERR) == EventMask.IN | EventMask.ERR
    with pytest.raises(ErrConnectionRefused) as info:
        ep.read()
    assert info.value.errno == errno.ECONNREFUSED
    assert not ep.readiness(EventMask.IN | EventMask.ERR)   # reported once
    with pytest.raises(ErrWouldBlock):
        ep.read()
    ep.write(b"again")                                        # the endpoint still works
    assert len(harness.sent()) == 1


def test_port_unreachable_does_not_affect_unconnected_endpoints(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.write(b"anyone?", to(PEER, 9))
    harness.inject(port_unreachable_for(harness.sent_one()))
    assert not ep.readiness(EventMask.IN | EventMask.ERR)
    assert nothing_to_read(ep)


def test_port_unreachable_for_another_flow_is_ignored(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.connect(full(PEER, 9))
    other = harness.udp(6000)
    other.write(b"x", to(PEER, 9))
    harness.inject(port_unreachable_for(harness.sent_one()))
    assert not ep.readiness(EventMask.ERR)


def test_pending_error_is_readable_as_so_error(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.connect(full(PEER, 9))
    ep.write(b"x")
    harness.inject(port_unreachable_for(harness.sent_one()))
    assert isinstance(ep.get_sock_opt(SockOpt.ERROR), ErrConnectionRefused)
    assert ep.get_sock_opt(SockOpt.ERROR) is None
    assert nothing_to_read(ep)


# --- shutdown ---------------------------------------------------------------------------------------

def test_shutdown_needs_a_connected_endpoint(harness: StackHarness) -> None:
    with pytest.raises(ErrNotConnected) as info:
        harness.udp(5000).shutdown(ShutdownFlags.READ)
    assert info.value.errno == errno.ENOTCONN


def test_shutdown_read(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.connect(full(PEER, 9))
    harness.inject(datagram(5000, b"before", sport=9))
    ep.shutdown(ShutdownFlags.READ)

    assert ep.readiness(EventMask.IN) == EventMask.IN          # reads do not block any more
    assert ep.read().data == b"before"                         # what had arrived is still readable
    harness.inject(datagram(5000, b"after", sport=9))
    assert ep.stats.receive_errors.closed_receiver.value == 1
    with pytest.raises(ErrClosedForReceive):
        ep.read()
    ep.write(b"still sending")
    assert harness.sent_one()[Raw].load == b"still sending"


def test_shutdown_write(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.connect(full(PEER, 9))
    ep.shutdown(ShutdownFlags.WRITE)
    assert ep.readiness(EventMask.OUT)      # Linux's datagram_poll ignores shutdown for output
    with pytest.raises(ErrClosedForSend) as info:
        ep.write(b"x")
    assert info.value.errno == errno.EPIPE
    with pytest.raises(ErrClosedForSend):
        ep.write(b"x", to(REMOTE, 1))
    assert harness.sent() == []
    harness.inject(datagram(5000, b"still receiving", sport=9))
    assert ep.read().data == b"still receiving"

    ep.shutdown(ShutdownFlags.READ)
    assert ep.readiness(EventMask.HUP) == EventMask.HUP


# --- close ------------------------------------------------------------------------------------------

def test_close_releases_the_port(harness: StackHarness) -> None:
    ep = harness.udp(7)
    hangups = []
    ep.waiter_queue.register(hangups.append, EventMask.HUP)
    ep.close()
    assert hangups and hangups[0] & EventMask.HUP

    harness.inject(datagram(7, b"nobody home"))
    assert harness.sent_one()[ICMP].type == 3                  # port unreachable: nothing listens
    again = harness.udp(7)
    harness.inject(datagram(7, b"new owner"))
    assert again.read().data == b"new owner"


def test_closed_endpoint_refuses_io(harness: StackHarness) -> None:
    ep = harness.udp(7)
    ep.close()
    with pytest.raises(ErrClosedForReceive):
        ep.read()
    with pytest.raises(ErrInvalidEndpointState):
        ep.write(b"x", to(PEER, 9))
    with pytest.raises(ErrInvalidEndpointState):
        ep.bind(FullAddress(0, b"", 8))
    ep.close()                                                 # idempotent


def test_many_endpoints_leave_nothing_behind(harness: StackHarness) -> None:
    stack = harness.stack
    endpoints = [harness.udp(0) for _ in range(5000)]
    for i in range(5000):
        ep = harness.udp()
        if i % 2:
            ep.connect(full(PEER, 1 + i))
        else:
            ep.write(b"x", to(PEER, 9))
            harness.sent_raw()
        endpoints.append(ep)
    assert len({ep.get_local_address().port for ep in endpoints}) == 10000
    assert len(stack.demux) == 10000

    for ep in endpoints:
        ep.close()
    assert len(stack.ports) == 0
    assert len(stack.demux) == 0
    assert stack.demux.all_endpoints() == []
    assert len(stack.timers) == 0


# --- reading and readiness --------------------------------------------------------------------------

def test_datagram_arrival_notifies_readers(harness: StackHarness) -> None:
    ep = harness.udp(7)
    events = []
    ep.waiter_queue.register(events.append, EventMask.IN)
    assert ep.readiness(EventMask.IN | EventMask.OUT) == EventMask.OUT

    harness.inject(datagram(7, b"wake up"))

    assert events == [EventMask.IN]
    assert ep.readiness(EventMask.IN | EventMask.OUT) == EventMask.IN | EventMask.OUT
    ep.read()
    assert ep.readiness(EventMask.IN) == 0


def test_unregistered_waiter_is_not_notified(harness: StackHarness) -> None:
    ep = harness.udp(7)
    events = []
    entry = ep.waiter_queue.register(events.append, EventMask.IN)
    ep.waiter_queue.unregister(entry)
    harness.inject(datagram(7))
    assert events == []


def test_peek_does_not_consume(harness: StackHarness) -> None:
    ep = harness.udp(7)
    harness.inject(datagram(7, b"first"))
    harness.inject(datagram(7, b"second"))
    assert ep.read(peek=True).data == b"first"
    assert ep.read(peek=True).data == b"first"
    assert ep.get_sock_opt(SockOpt.RECEIVE_QUEUE_SIZE) == len(b"first")
    assert ep.read().data == b"first"
    assert ep.read().data == b"second"


def test_datagram_boundaries_are_kept(harness: StackHarness) -> None:
    ep = harness.udp(7)
    for payload in (b"", b"a", b"bc"):
        harness.inject(datagram(7, payload))
    assert received(ep) == [b"", b"a", b"bc"]


def test_largest_payload(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    with pytest.raises(ErrMessageTooLong) as info:
        ep.write(bytes(65508), to(PEER, 9))
    assert info.value.errno == errno.EMSGSIZE
    assert ep.stats.write_errors.invalid_args.value == 1

    big = StackHarness(mtu=65535)
    sender = big.udp(5000)
    assert sender.write(bytes(65507), to(PEER, 9)) == 65507
    assert big.sent_one().len == 65535


def test_receive_timestamp_option(harness: StackHarness) -> None:
    ep = harness.udp(7)
    ep.set_sock_opt(SockOpt.TIMESTAMP, True)
    harness.clock.advance(2.5)
    harness.inject(datagram(7))
    assert ep.read().control.timestamp == harness.clock.now_ns()


# --- UDP_SEGMENT (GSO) ------------------------------------------------------------------------------

def test_udp_segment_cuts_a_write_into_datagrams_of_that_size(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.set_sock_opt(SockOpt.UDP_SEGMENT, 1000)
    payload = bytes(range(256)) * 10
    assert ep.write(payload, to(PEER, 9)) == 2560
    datagrams = harness.sent()
    assert [len(d[Raw].load) for d in datagrams] == [1000, 1000, 560]
    assert b"".join(d[Raw].load for d in datagrams) == payload
    assert all(checksums_valid(bytes(d)) and d[UDP].sport == 5000 for d in datagrams)
    assert ep.stats.packets_sent.value == 3 and harness.stats.udp.packets_sent.value == 3
    ep.write(b"short", to(PEER, 9))                 # no more than one segment: one datagram
    assert harness.sent_one()[Raw].load == b"short"


def test_a_per_write_segment_size_overrides_the_socket_option(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.set_sock_opt(SockOpt.UDP_SEGMENT, 1000)
    ep.write(b"x" * 900, WriteOptions(to=full(PEER, 9), control=SendableControlMessages(gso_size=300)))
    assert [len(d[Raw].load) for d in harness.sent()] == [300, 300, 300]
    ep.write(b"x" * 900, WriteOptions(to=full(PEER, 9), control=SendableControlMessages(gso_size=0)))
    assert len(harness.sent_one()[Raw].load) == 900


@pytest.mark.parametrize(("gso_size", "size", "error"), [
    (1473, 3000, ErrMessageTooLong),        # a datagram would not fit the 1,500-byte MTU (Linux: EMSGSIZE)
    (3000, 1473, ErrMessageTooLong),        # ... even a single one, which without GSO would be fragmented
    (100, 12900, ErrInvalidOptionValue),    # more than 128 datagrams (EINVAL)
    (1472, 65508, ErrMessageTooLong),       # more than one IP packet holds
])
def test_udp_segment_refuses_what_linux_refuses(harness: StackHarness, gso_size: int, size: int, error: type) -> None:
    ep = harness.udp(5000)
    ep.set_sock_opt(SockOpt.UDP_SEGMENT, gso_size)
    with pytest.raises(error):
        ep.write(b"x" * size, to(PEER, 9))
    assert harness.sent() == []


def test_udp_segment_edges_that_linux_accepts(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    for gso_size, size, count in ((1472, 1473, 2), (1473, 1472, 1), (100, 12800, 128)):
        ep.set_sock_opt(SockOpt.UDP_SEGMENT, gso_size)
        assert ep.write(b"x" * size, to(PEER, 9)) == size
        assert len(harness.sent()) == count
    for bad in (-1, 65536):
        with pytest.raises(ErrInvalidOptionValue):
            ep.set_sock_opt(SockOpt.UDP_SEGMENT, bad)
    assert ep.get_sock_opt(SockOpt.UDP_SEGMENT) == 100


def test_a_link_that_cuts_udp_gets_one_super_datagram_that_cuts_into_the_same_datagrams() -> None:
    software, offloaded = StackHarness(), StackHarness(capabilities=LinkCapabilities.HARDWARE_GSO_UDP)
    gso_sizes = []
    offloaded.link.write_packet = (lambda original: lambda remote, protocol, pkt: (
        gso_sizes.append(pkt.gso_size), original(remote, protocol, pkt)))(offloaded.link.write_packet)
    payload = bytes(range(256)) * 40
    for harness in (software, offloaded):
        ep = harness.udp(5000)
        ep.set_sock_opt(SockOpt.UDP_SEGMENT, 1200)
        assert ep.write(payload, to(PEER, 9)) == len(payload)
        assert ep.stats.packets_sent.value == 9
    assert gso_sizes == [1200]             # one super-datagram went to the link, which cut it
    cut, sent = offloaded.sent(), software.sent()
    assert [bytes(d[UDP]) for d in cut] == [bytes(d[UDP]) for d in sent]
    assert all(checksums_valid(bytes(d)) for d in cut)


def test_the_stack_counts_its_udp_gro_sockets_for_the_links(harness: StackHarness) -> None:
    """Links mark the UDP flows of their batches only while a UDP_GRO socket is open (NIC.udp_gro)."""
    first, second = harness.udp(7), harness.udp(8)
    nic = harness.stack.nics[NIC_ID]
    counts = [nic.udp_gro]
    for ep, value in ((first, True), (second, True), (first, True), (first, False), (first, True)):
        ep.set_sock_opt(SockOpt.UDP_GRO, value)
        counts.append(harness.stack.udp_gro_sockets)
    second.close()
    first.close()
    first.set_sock_opt(SockOpt.UDP_GRO, False)
    assert counts + [harness.stack.udp_gro_sockets, nic.udp_gro] == [False, 1, 2, 2, 1, 2, 0, False]
