"""The Stack: NIC and address administration, route selection, local delivery, promiscuous mode."""

from __future__ import annotations

import errno

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from netsock.link.channel import ChannelEndpoint
from netsock.stack.demux import TransportDemuxer, TransportEndpointID
from netsock.stack.registration import TransportEndpoint
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, ErrBadLinkEndpoint, ErrBadLocalAddress,
                           ErrDuplicateAddress, ErrDuplicateNICID, ErrNetworkUnreachable, ErrUnknownNICID,
                           ErrUnknownProtocol, ErrWouldBlock, FullAddress, Route)
from netsock.waiter import EventMask

from conftest import LOCAL, NIC_ID, OTHER_PEER, PEER, REMOTE, StackHarness, addr, to

IPV4 = IPV4_PROTOCOL_NUMBER


# --- NICs and addresses ---------------------------------------------------------------------------

def test_duplicate_nic_id_is_refused(harness: StackHarness) -> None:
    with pytest.raises(ErrDuplicateNICID) as info:
        harness.stack.create_nic(NIC_ID, ChannelEndpoint())
    assert info.value.errno == errno.EEXIST
    assert harness.stack.nics[NIC_ID] is harness.nic


def test_a_link_can_back_only_one_nic(harness: StackHarness) -> None:
    with pytest.raises(ErrBadLinkEndpoint):
        harness.stack.create_nic(2, harness.link)


UNKNOWN_NIC_OPERATIONS = {
    "add_address": lambda s: s.add_address(9, IPV4, "198.51.100.2/24"),
    "remove_address": lambda s: s.remove_address(9, addr(LOCAL)),
    "enable_nic": lambda s: s.enable_nic(9),
    "disable_nic": lambda s: s.disable_nic(9),
    "set_promiscuous_mode": lambda s: s.set_promiscuous_mode(9, True),
    "remove_nic": lambda s: s.remove_nic(9),
}


@pytest.mark.parametrize("operation", UNKNOWN_NIC_OPERATIONS.values(), ids=UNKNOWN_NIC_OPERATIONS.keys())
def test_unknown_nic_id_is_refused(harness: StackHarness, operation) -> None:
    with pytest.raises(ErrUnknownNICID):
        operation(harness.stack)


def test_address_of_unregistered_protocol_is_refused(harness: StackHarness) -> None:
    with pytest.raises(ErrUnknownProtocol):
        harness.stack.add_address(NIC_ID, 0x86DD, "2001:db8::2/64")


def test_duplicate_address_is_refused(harness: StackHarness) -> None:
    with pytest.raises(ErrDuplicateAddress) as info:
        harness.stack.add_address(NIC_ID, IPV4, f"{LOCAL}/24")
    assert info.value.errno == errno.EEXIST
    assert [str(a.address_with_prefix) for a in harness.stack.all_addresses()[NIC_ID]] == [f"{LOCAL}/24"]


def test_removed_address_is_no_longer_ours(harness: StackHarness) -> None:
    harness.stack.add_address(NIC_ID, IPV4, "192.0.2.9/24")
    harness.stack.remove_address(NIC_ID, addr("192.0.2.9"))

    assert harness.stack.local_address_nic(addr("192.0.2.9")) is None
    with pytest.raises(ErrBadLocalAddress):
        harness.stack.remove_address(NIC_ID, addr("192.0.2.9"))
    with pytest.raises(ErrBadLocalAddress):
        harness.udp(7, "192.0.2.9")
    before = harness.stats.ip.invalid_addresses_received.value
    harness.inject(IP(src=PEER, dst="192.0.2.9") / UDP(sport=1, dport=7))
    assert harness.stats.ip.invalid_addresses_received.value == before + 1
    assert harness.sent() == []


# --- routes ---------------------------------------------------------------------------------------

def two_nic_stack() -> StackHarness:
    """The harness plus NIC 2 at 198.51.100.2/24; 203.0.113.0/24 is routed via 192.0.2.1 on NIC 1,
    except its upper /25, via 198.51.100.1 on NIC 2."""
    h = StackHarness()
    h.stack.create_nic(2, ChannelEndpoint())
    h.stack.add_address(2, IPV4, "198.51.100.2/24")
    h.stack.set_route_table([
        Route.parse("192.0.2.0/24", NIC_ID),
        Route.parse("198.51.100.0/24", 2),
        Route.parse("203.0.113.0/24", NIC_ID, PEER),
        Route.parse("203.0.113.128/25", 2, "198.51.100.1"),
        Route.parse("0.0.0.0/0", NIC_ID, PEER),
    ])
    return h


@pytest.mark.parametrize("remote, nic, next_hop, local", [
    ("192.0.2.77", NIC_ID, "192.0.2.77", LOCAL),          # on-link: the destination itself
    ("198.51.100.9", 2, "198.51.100.9", "198.51.100.2"),  # on-link on the other NIC
    ("203.0.113.5", NIC_ID, PEER, LOCAL),                 # /24 via gateway
    ("203.0.113.200", 2, "198.51.100.1", "198.51.100.2"), # the longer /25 wins over the /24
    ("8.8.8.8", NIC_ID, PEER, LOCAL),                     # default route
])
def test_find_route_longest_prefix_and_next_hop(remote: str, nic: int, next_hop: str, local: str) -> None:
    h = two_nic_stack()
    route = h.stack.find_route(0, b"", addr(remote), IPV4)
    assert (route.nic.id, route.next_hop, route.local_address, route.remote_address) == \
        (nic, addr(next_hop), addr(local), addr(remote))
    assert not route.loop


def test_find_route_ties_go_to_the_first_row(harness: StackHarness) -> None:
    harness.stack.create_nic(2, ChannelEndpoint())
    harness.stack.add_address(2, IPV4, "198.51.100.2/24")
    harness.stack.set_route_table([Route.parse("0.0.0.0/0", 2, "198.51.100.1"), Route.parse("0.0.0.0/0", NIC_ID, PEER)])
    assert harness.stack.find_route(0, b"", addr("8.8.8.8"), IPV4).nic.id == 2


def test_find_route_restricted_to_a_nic() -> None:
    h = two_nic_stack()
    assert h.stack.find_route(2, b"", addr("203.0.113.200"), IPV4).nic.id == 2
    assert h.stack.find_route(NIC_ID, b"", addr("203.0.113.200"), IPV4).next_hop == addr(PEER)
    with pytest.raises(ErrNetworkUnreachable):
        h.stack.find_route(2, b"", addr("203.0.113.5"), IPV4)


def test_no_route_is_network_unreachable() -> None:
    h = StackHarness()
    h.stack.set_route_table([Route.parse("192.0.2.0/24", NIC_ID)])
    with pytest.raises(ErrNetworkUnreachable) as info:
        h.stack.find_route(0, b"", addr(REMOTE), IPV4)
    assert info.value.errno == errno.ENETUNREACH
    assert h.stats.ip.no_route.value == 1
    ep = h.udp()
    with pytest.raises(ErrNetworkUnreachable):
        ep.write(b"x", to(REMOTE, 9))
    assert ep.stats.send_errors.no_route.value == 1
    assert h.sent() == []


def test_find_route_with_a_local_address_we_do_not_have(harness: StackHarness) -> None:
    with pytest.raises(ErrBadLocalAddress) as info:
        harness.stack.find_route(0, addr("192.0.2.99"), addr(PEER), IPV4)
    assert info.value.errno == errno.EADDRNOTAVAIL


def test_find_route_honours_the_chosen_local_address(harness: StackHarness) -> None:
    harness.stack.add_address(NIC_ID, IPV4, "192.0.2.9/24")
    assert harness.stack.find_route(0, addr("192.0.2.9"), addr(PEER), IPV4).local_address == addr("192.0.2.9")
    assert harness.stack.find_route(0, b"", addr(PEER), IPV4).local_address == addr(LOCAL)


def test_find_route_unknown_network_protocol(harness: StackHarness) -> None:
    with pytest.raises(ErrUnknownProtocol):
        harness.stack.find_route(0, b"", addr(PEER), 0x86DD)


def test_removing_a_nic_removes_its_routes_and_addresses() -> None:
    h = two_nic_stack()
    link = h.stack.nics[2].link
    h.stack.remove_nic(2)

    assert 2 not in h.stack.nics and not link.is_attached()
    assert all(r.nic != 2 for r in h.stack.get_route_table())
    assert h.stack.local_address_nic(addr("198.51.100.2")) is None
    assert h.stack.find_route(0, b"", addr("203.0.113.200"), IPV4).nic.id == NIC_ID


def test_address_of_one_nic_is_reachable_through_another() -> None:
    """The weak host model, as Linux: an address belongs to the host, not to its interface."""
    h = two_nic_stack()
    ep = h.udp(7)
    h.stack.nics[2].link.inject(IPV4, bytes(IP(src="198.51.100.1", dst=LOCAL) / UDP(sport=1, dport=7) / Raw(b"x")))
    assert ep.read().sender == FullAddress(2, addr("198.51.100.1"), 1)


# --- the route cache: every change that can alter an answer empties it ------------------------------

def test_a_repeated_lookup_is_answered_from_the_cache(harness: StackHarness) -> None:
    first = harness.stack.find_route(0, addr(LOCAL), addr(REMOTE), IPV4)
    assert harness.stack.find_route(0, addr(LOCAL), addr(REMOTE), IPV4) is first
    assert harness.stack.find_route(0, b"", addr(REMOTE), IPV4) is not first     # another question


def test_the_cache_follows_the_route_table(harness: StackHarness) -> None:
    stack = harness.stack
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).next_hop == addr(PEER)
    stack.set_route_table([Route.parse("0.0.0.0/0", NIC_ID, OTHER_PEER)])
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).next_hop == addr(OTHER_PEER)
    more_specific = Route.parse("198.51.100.0/24", NIC_ID, PEER)
    stack.add_route(more_specific)
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).next_hop == addr(PEER)
    stack.remove_route(more_specific)
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).next_hop == addr(OTHER_PEER)


def test_the_cache_follows_addresses(harness: StackHarness) -> None:
    stack = harness.stack
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).local_address == addr(LOCAL)
    stack.add_address(NIC_ID, IPV4, "198.51.100.2/24")         # on the remote's subnet: preferred
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).local_address == addr("198.51.100.2")
    stack.remove_address(NIC_ID, addr("198.51.100.2"))
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).local_address == addr(LOCAL)
    with pytest.raises(ErrBadLocalAddress):
        stack.find_route(0, addr("198.51.100.2"), addr(REMOTE), IPV4)


def test_no_answer_is_kept_while_an_address_is_tentative(harness: StackHarness) -> None:
    """Duplicate address detection makes an address usable without telling the stack."""
    stack = harness.stack
    candidate = addr("198.51.100.2")
    harness.nic.tentative.add(candidate)            # as IPv6 marks a new address, before DAD
    stack.add_address(NIC_ID, IPV4, "198.51.100.2/24")
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).local_address == addr(LOCAL)
    harness.nic.tentative.discard(candidate)        # DAD found no one else using it
    assert stack.find_route(0, b"", addr(REMOTE), IPV4).local_address == candidate


def test_the_cache_follows_nics_going_down_and_away() -> None:
    h = two_nic_stack()
    stack = h.stack
    assert stack.find_route(0, b"", addr("203.0.113.200"), IPV4).nic.id == 2
    stack.disable_nic(2)
    assert stack.find_route(0, b"", addr("203.0.113.200"), IPV4).nic.id == NIC_ID
    stack.enable_nic(2)
    assert stack.find_route(0, b"", addr("203.0.113.200"), IPV4).nic.id == 2
    stack.remove_nic(2)
    assert stack.find_route(0, b"", addr("203.0.113.200"), IPV4).nic.id == NIC_ID
    stack.disable_nic(NIC_ID)
    with pytest.raises(ErrNetworkUnreachable):
        stack.find_route(0, b"", addr("203.0.113.200"), IPV4)


def test_the_cache_follows_spoofing_and_local_handling(harness: StackHarness) -> None:
    stack = harness.stack
    stack.set_spoofing(NIC_ID, True)
    assert stack.find_route(0, addr(OTHER_PEER), addr(REMOTE), IPV4).local_address == addr(OTHER_PEER)
    stack.set_spoofing(NIC_ID, False)
    with pytest.raises(ErrBadLocalAddress):
        stack.find_route(0, addr(OTHER_PEER), addr(REMOTE), IPV4)
    assert stack.find_route(0, b"", addr(LOCAL), IPV4).loop
    stack.handle_local = False
    assert not stack.find_route(0, b"", addr(LOCAL), IPV4).loop


# --- disabled NIC ---------------------------------------------------------------------------------

def test_disabled_nic_drops_inbound_and_counts_it(harness: StackHarness) -> None:
    ep = harness.udp(7)
    harness.stack.disable_nic(NIC_ID)
    harness.inject(IP(src=PEER, dst=LOCAL) / UDP(sport=1000, dport=7) / Raw(b"x"))

    assert harness.nic.stats.disabled_rx_packets.value == 1
    assert harness.stats.ip.packets_received.value == 0
    with pytest.raises(ErrWouldBlock):
        ep.read()

    harness.stack.enable_nic(NIC_ID)
    harness.inject(IP(src=PEER, dst=LOCAL) / UDP(sport=1000, dport=7) / Raw(b"y"))
    assert ep.read().data == b"y"


def test_disabled_nic_has_no_routes(harness: StackHarness) -> None:
    harness.stack.disable_nic(NIC_ID)
    with pytest.raises(ErrNetworkUnreachable):
        harness.stack.find_route(0, b"", addr(PEER), IPV4)


def test_nic_created_disabled(harness: StackHarness) -> None:
    link = ChannelEndpoint()
    harness.stack.create_nic(2, link, enabled=False)
    harness.stack.add_address(2, IPV4, "198.51.100.2/24")
    link.inject(IPV4, bytes(IP(src="198.51.100.1", dst="198.51.100.2") / UDP(sport=1, dport=7)))
    assert harness.stack.nics[2].stats.disabled_rx_packets.value == 1
    assert link.drain() == []


# --- local delivery -------------------------------------------------------------------------------

def test_datagram_to_own_address_is_delivered_locally(harness: StackHarness) -> None:
    receiver = harness.udp(7)
    sender = harness.udp()
    sender.write(b"to myself", to(LOCAL, 7))

    result = receiver.read()
    assert result.data == b"to myself"
    assert result.sender.addr == addr(LOCAL) and result.sender.port == sender.get_local_address().port
    assert harness.sent() == []   # nothing went out on the wire


def test_local_delivery_is_iterative(harness: StackHarness) -> None:
    """Two endpoints bouncing a datagram back and forth from their receive callbacks: each send is
    delivered while the previous delivery is still on the call stack, so recursion would blow it."""
    rounds = 5000
    a, b = harness.udp(1000), harness.udp(2000)
    received = []

    def bounce(me, peer_port: int):
        def on_readable(_mask: EventMask) -> None:
            data = me.read().data
            received.append(data)
            if len(received) < rounds:
                me.write(data, to(LOCAL, peer_port))
        return on_readable

    a.waiter_queue.register(bounce(a, 2000), EventMask.IN)
    b.waiter_queue.register(bounce(b, 1000), EventMask.IN)
    a.write(b"ball", to(LOCAL, 2000))

    assert len(received) == rounds
    assert harness.sent() == []


def test_loop_route_needs_handle_local() -> None:
    h = StackHarness()
    h.stack.handle_local = False
    route = h.stack.find_route(0, b"", addr(LOCAL), IPV4)
    assert not route.loop and route.nic.id == NIC_ID


# --- promiscuous mode -----------------------------------------------------------------------------

def test_promiscuous_mode_accepts_any_destination(harness: StackHarness) -> None:
    ep = harness.udp(7)
    foreign = IP(src=PEER, dst=OTHER_PEER) / UDP(sport=1000, dport=7) / Raw(b"not for us")

    harness.inject(foreign)
    assert harness.stats.ip.invalid_addresses_received.value == 1
    with pytest.raises(ErrWouldBlock):
        ep.read()

    harness.stack.set_promiscuous_mode(NIC_ID, True)
    harness.inject(foreign)
    result = ep.read()
    assert result.data == b"not for us" and result.sender == FullAddress(NIC_ID, addr(PEER), 1000)

    harness.stack.set_promiscuous_mode(NIC_ID, False)
    harness.inject(foreign)
    assert harness.stats.ip.invalid_addresses_received.value == 2



# --- the transport demultiplexer ------------------------------------------------------------------

class Member(TransportEndpoint):
    """A stand-in endpoint: the demultiplexer only stores and returns them."""

    __slots__ = ()


def test_demux_replace_puts_one_endpoint_in_anothers_place() -> None:
    demux = TransportDemuxer()
    old, new, other = Member(), Member(), Member()
    id = TransportEndpointID(80, addr(LOCAL), 4000, addr(PEER))
    demux.register((IPV4,), 6, id, old)
    demux.register((IPV4,), 6, TransportEndpointID(80, b"", 0, b""), other)
    demux.replace((IPV4,), 6, id, old, new)
    assert list(demux.lookup(IPV4, 6, NIC_ID, addr(PEER), addr(LOCAL), 4000, 80)) == [new]
    assert demux.lookup_exact(IPV4, 6, 0, id) and len(demux) == 2
    with pytest.raises(KeyError):
        demux.replace((IPV4,), 6, id, old, new)      # old is no longer there
    demux.unregister((IPV4,), 6, id, new)
    assert list(demux.lookup(IPV4, 6, NIC_ID, addr(PEER), addr(LOCAL), 4000, 80)) == [other]


def test_demux_group_is_load_balanced_while_every_member_set_reuse_port() -> None:
    demux = TransportDemuxer()
    id = TransportEndpointID(53, b"", 0, b"")
    a, b, c = Member(), Member(), Member()
    demux.register((IPV4,), 17, id, a, reuse_port=True, reuse_addr=True)
    demux.register((IPV4,), 17, id, b, reuse_port=True, reuse_addr=True)
    group = demux.lookup(IPV4, 17, 0, addr(PEER), addr(LOCAL), 1000, 53)
    assert group.load_balanced
    demux.register((IPV4,), 17, id, c, reuse_port=False, reuse_addr=True)     # shares by SO_REUSEADDR only
    assert not group.load_balanced
    demux.unregister((IPV4,), 17, id, c)
    assert group.load_balanced
    demux.unregister((IPV4,), 17, id, a)
    demux.unregister((IPV4,), 17, id, b)
    assert demux.lookup(IPV4, 17, 0, addr(PEER), addr(LOCAL), 1000, 53) is None and len(demux) == 0
