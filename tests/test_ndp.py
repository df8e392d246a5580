"""Neighbour discovery (RFC 4861) and stateless address autoconfiguration (RFC 4862) on an Ethernet
link: the link-local address, duplicate address detection, address resolution and answering for
our addresses, router solicitation, and what router advertisements configure, with their lifetimes.

The stack is at 2001:db8::2/64 on an Ethernet ChannelEndpoint; scapy plays its neighbours (and a
second stack plays one where two implementations must agree). Every frame the stack sends is
recorded with the time it left, so intervals are exact."""

from __future__ import annotations

from ipaddress import IPv6Address
from itertools import pairwise
from socket import AF_INET6, inet_ntop

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA,
                                ICMPv6ND_RS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptMTU, ICMPv6NDOptPrefixInfo,
                                ICMPv6NDOptSrcLLAddr, IPv6, IPv6ExtHdrFragment)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils6 import in6_getnsma, in6_getnsmac, in6_mactoifaceid

from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv6 import IPv6Protocol
from netsock.stack import ManualClock, NeighborState, Stack
from netsock.tcpip import (IPV6_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Address, ErrNetworkUnreachable, FullAddress,
                           Route, Subnet)
from netsock.transport.icmp import ICMPv6Protocol
from netsock.transport.udp import UDPProtocol
from netsock.waiter import EventMask

from test_ipv6 import a6, to6, upper_layer_checksum_valid

LOCAL_MAC = "02:00:00:00:00:02"
PEER_MAC = "02:00:00:00:00:01"
OTHER_MAC = "02:00:00:00:00:03"
ROUTER_MAC = "02:00:00:00:00:fe"
LOCAL = "2001:db8::2"
PEER = "2001:db8::1"
LOCAL_LL = str(IPv6Address("fe80::" + in6_mactoifaceid(LOCAL_MAC)))     # fe80::ff:fe00:2, by scapy's EUI-64
PEER_LL = str(IPv6Address("fe80::" + in6_mactoifaceid(PEER_MAC)))
ROUTER_LL = "fe80::1"
PREFIX = "2001:db8:5::"
SLAAC = str(IPv6Address(PREFIX + in6_mactoifaceid(LOCAL_MAC)))          # 2001:db8:5::ff:fe00:2
ALL_NODES, ALL_ROUTERS = "ff02::1", "ff02::2"
NIC_ID = 1
INFINITE = 0xFFFFFFFF


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def solicited_node(address: str) -> str:
    return inet_ntop(AF_INET6, in6_getnsma(a6(address)))


class EtherV6Harness:
    """A Stack(IPv6) with UDP and ICMPv6 endpoints on an Ethernet ChannelEndpoint with LOCAL_MAC."""

    def __init__(self, address: str | None = LOCAL, enabled: bool = True, link_mac: str = LOCAL_MAC,
                 clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.stack = Stack((IPv6Protocol,), (UDPProtocol, ICMPv6Protocol), clock=self.clock)
        self.link = ChannelEndpoint(link_address=mac(link_mac), ethernet=True)
        self._out: list[tuple[float, bytes]] = []
        self.link.on_outbound = lambda info: self._out.append((self.clock.now(), info.data))
        self.nic = self.stack.create_nic(NIC_ID, self.link, enabled=False)
        if address:
            self.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, f"{address}/64")
            self.stack.set_route_table([Route.parse("2001:db8::/64", NIC_ID)])
        if enabled:
            self.stack.enable_nic(NIC_ID)

    @property
    def stats(self):  # noqa: ANN201 - Stats
        return self.stack.stats()

    @property
    def ndp(self):  # noqa: ANN201 - NDP
        return self.nic.network_endpoints[IPV6_PROTOCOL_NUMBER].ndp

    @property
    def neighbors(self):  # noqa: ANN201 - NeighborCache
        return self.nic.neighbors[IPV6_PROTOCOL_NUMBER]

    def addresses(self) -> list[str]:
        return [str(a.address) for a in self.nic.addresses.get(IPV6_PROTOCOL_NUMBER, ())]

    def tentative(self) -> set[str]:
        return {str(Address(a)) for a in self.nic.tentative}

    def settle(self, seconds: float = 1.0) -> None:
        """Let DAD finish (RetransTimer, 1 s) and forget what was sent meanwhile."""
        self.clock.advance(seconds)
        self.sent()

    def know_peer(self) -> None:
        self.neighbors.add_static(a6(PEER), mac(PEER_MAC))

    def inject(self, frame: Packet | bytes) -> None:
        self.link.inject(IPV6_PROTOCOL_NUMBER, bytes(frame))

    def sent_timed(self) -> list[tuple[float, Ether]]:
        """Every frame sent since the last call, with the time it was sent; checksums are verified."""
        out, self._out = self._out, []
        self.link.drain()
        for _, raw in out:
            assert raw[20] == 44 or upper_layer_checksum_valid(raw[14:])   # fragments aside
        return [(when, Ether(raw)) for when, raw in out]

    def sent(self, kind: type[Packet] | None = None) -> list[Ether]:
        return [frame for _, frame in self.sent_timed() if kind is None or kind in frame]

    def udp(self, port: int | None = None):  # noqa: ANN201 - UDPEndpoint
        ep = self.stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER)
        if port is not None:
            ep.bind(FullAddress(0, b"", port))
        return ep


@pytest.fixture
def h() -> EtherV6Harness:
    return EtherV6Harness()


@pytest.fixture
def settled() -> EtherV6Harness:
    h = EtherV6Harness()
    h.settle()
    return h


def frame(src_mac: str, ip: IPv6) -> Ether:
    """``ip`` on the wire from ``src_mac``: to us, or to the multicast MAC of its group."""
    dst_mac = in6_getnsmac(a6(ip.dst)) if ip.dst.startswith("ff") else LOCAL_MAC
    return Ether(src=src_mac, dst=dst_mac) / ip


def ns(target: str, src: str = PEER, src_mac: str = PEER_MAC, lladdr: str | None = PEER_MAC, hlim: int = 255,
       dst: str | None = None) -> Ether:
    ip = IPv6(src=src, dst=dst or solicited_node(target), hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if lladdr:
        ip = ip / ICMPv6NDOptSrcLLAddr(lladdr=lladdr)
    return frame(src_mac, ip)


def na(target: str, solicited: bool, override: bool, lladdr: str | None = PEER_MAC, src: str = PEER,
       dst: str = LOCAL, src_mac: str = PEER_MAC) -> Ether:
    ip = IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NA(tgt=target, R=0, S=int(solicited), O=int(override))
    if lladdr:
        ip = ip / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
    return frame(src_mac, ip)


def ra(*options: Packet, lifetime: int = 1800, chlim: int = 0, src: str = ROUTER_LL, hlim: int = 255,
       retrans: int = 0) -> Ether:
    ip = IPv6(src=src, dst=ALL_NODES, hlim=hlim) / ICMPv6ND_RA(chlim=chlim, routerlifetime=lifetime,
                                                               retranstimer=retrans)
    ip = ip / ICMPv6NDOptSrcLLAddr(lladdr=ROUTER_MAC)
    for option in options:
        ip = ip / option
    return frame(ROUTER_MAC, ip)


def prefix_info(prefix: str = PREFIX, length: int = 64, on_link: bool = True, autonomous: bool = True,
                valid: int = INFINITE, preferred: int = INFINITE) -> ICMPv6NDOptPrefixInfo:
    return ICMPv6NDOptPrefixInfo(prefix=prefix, prefixlen=length, L=int(on_link), A=int(autonomous),
                                 validlifetime=valid, preferredlifetime=preferred)


def default_route() -> Route:
    return Route(Subnet(bytes(16), bytes(16)), NIC_ID, a6(ROUTER_LL))


def prefix_route(prefix: str = PREFIX, length: int = 64) -> Route:
    return Route.parse(f"{prefix}/{length}", NIC_ID)


# --- the link-local address and duplicate address detection -------------------------------------

def test_link_local_address_is_formed_from_the_mac_when_the_nic_comes_up() -> None:
    h = EtherV6Harness(address=None, enabled=False)
    assert h.addresses() == []
    h.stack.enable_nic(NIC_ID)
    assert h.addresses() == [LOCAL_LL]
    assert h.nic.addresses[IPV6_PROTOCOL_NUMBER][0].prefix_len == 64
    assert h.tentative() == {LOCAL_LL}


def test_dad_probes_every_address_from_the_unspecified_address(h: EtherV6Harness) -> None:
    assert h.tentative() == {LOCAL, LOCAL_LL}
    probes = h.sent(ICMPv6ND_NS)
    assert sorted(p[ICMPv6ND_NS].tgt for p in probes) == sorted([LOCAL, LOCAL_LL])
    for probe in probes:
        target = probe[ICMPv6ND_NS].tgt
        assert (probe.src, probe.dst) == (LOCAL_MAC, in6_getnsmac(a6(solicited_node(target))))
        assert (probe[IPv6].src, probe[IPv6].dst, probe[IPv6].hlim) == ("::", solicited_node(target), 255)
        assert ICMPv6NDOptSrcLLAddr not in probe            # RFC 4861 §7.1.1: none from ::
    h.clock.advance(0.999)
    assert h.tentative() == {LOCAL, LOCAL_LL}
    h.clock.advance(0.001)
    assert h.tentative() == set()
    assert h.sent(ICMPv6ND_NS) == []                         # DupAddrDetectTransmits is 1
    assert h.stats.ip.duplicate_addresses_detected.value == 0


def test_without_dad_transmits_an_address_is_used_at_once() -> None:
    h = EtherV6Harness(enabled=False)
    h.stack.network_protocols[IPV6_PROTOCOL_NUMBER].dad_transmits = 0
    h.stack.enable_nic(NIC_ID)
    h.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, "2001:db8::3/64")
    assert h.tentative() == set()
    sent = h.sent()
    assert sent and not [frame for frame in sent if ICMPv6ND_NS in frame]
    assert all(frame[IPv6].dst == "ff02::16" for frame in sent)     # MLD: solicited-node groups still joined


def test_tentative_address_is_neither_a_source_nor_a_destination(h: EtherV6Harness) -> None:
    h.know_peer()
    h.sent()
    ep = h.udp(9)
    assert h.nic.primary_address(IPV6_PROTOCOL_NUMBER, a6(PEER)) == b""
    with pytest.raises(ErrNetworkUnreachable):
        h.udp().write(b"too early", to6(PEER, 9))
    h.inject(frame(PEER_MAC, IPv6(src=PEER, dst=LOCAL) / UDP(sport=1, dport=9) / Raw(b"early")))
    h.inject(frame(PEER_MAC, IPv6(src=PEER, dst=LOCAL) / ICMPv6EchoRequest(seq=1)))
    h.inject(frame(PEER_MAC, IPv6(src=PEER, dst=LOCAL) / UDP(sport=1, dport=10)))   # no port unreachable
    assert not ep.readiness(EventMask.IN)
    assert h.sent() == []

    h.clock.advance(1)
    h.sent()
    h.inject(frame(PEER_MAC, IPv6(src=PEER, dst=LOCAL) / UDP(sport=1, dport=9) / Raw(b"in time")))
    h.inject(frame(PEER_MAC, IPv6(src=PEER, dst=LOCAL) / ICMPv6EchoRequest(seq=2)))
    assert ep.read().data == b"in time"
    [reply] = h.sent()
    assert (reply.dst, reply[IPv6].src, reply[ICMPv6EchoReply].seq) == (PEER_MAC, LOCAL, 2)


@pytest.mark.parametrize("defence", ["neighbor advertisement", "dad probe"])
def test_duplicate_address_is_removed(h: EtherV6Harness, defence: str) -> None:
    h.sent()
    if defence == "neighbor advertisement":
        h.inject(na(LOCAL, solicited=False, override=True, src=LOCAL, dst=ALL_NODES, lladdr=OTHER_MAC,
                    src_mac=OTHER_MAC))
    else:
        h.inject(ns(LOCAL, src="::", src_mac=OTHER_MAC, lladdr=None))
    assert h.addresses() == [LOCAL_LL]
    assert h.tentative() == {LOCAL_LL}
    assert h.ndp.duplicates == [a6(LOCAL)]
    assert h.stats.ip.duplicate_addresses_detected.value == 1
    h.clock.advance(1)
    assert h.addresses() == [LOCAL_LL] and h.tentative() == set()
    assert h.sent(ICMPv6ND_NS) == []


def test_address_resolution_of_a_tentative_address_is_ignored(h: EtherV6Harness) -> None:
    """RFC 4862 §5.4.3: a solicitation from a unicast source for a tentative address is silently dropped."""
    h.sent()
    h.inject(ns(LOCAL))
    assert h.sent() == []
    assert h.addresses() == [LOCAL, LOCAL_LL] and h.stats.ip.duplicate_addresses_detected.value == 0


def pump(*harnesses: EtherV6Harness) -> None:
    """Carry frames between the stacks until none are left in flight."""
    moved = True
    while moved:
        moved = False
        for source in harnesses:
            for info in source.link.drain():
                moved = True
                for sink in harnesses:
                    if sink is not source:
                        sink.link.inject(info.protocol, info.data)


def test_two_stacks_detect_a_duplicate_address() -> None:
    clock = ManualClock()
    first = EtherV6Harness(clock=clock)
    first.settle()
    second = EtherV6Harness(clock=clock, link_mac=OTHER_MAC)    # the same global address, its own link-local
    pump(first, second)
    clock.advance(1)
    pump(first, second)
    assert LOCAL not in second.addresses() and second.ndp.duplicates == [a6(LOCAL)]
    assert LOCAL in first.addresses() and first.ndp.duplicates == []


def test_two_stacks_talk_over_link_local_addresses() -> None:
    clock = ManualClock()
    first, second = EtherV6Harness(clock=clock), EtherV6Harness(address=PEER, clock=clock, link_mac=PEER_MAC)
    pump(first, second)
    clock.advance(1)
    pump(first, second)
    assert first.tentative() == second.tentative() == set()
    receiver = second.udp(9)
    first.udp().write(b"hello neighbour", to6(PEER_LL, 9))
    pump(first, second)
    result = receiver.read()
    assert (result.data, result.sender.addr) == (b"hello neighbour", a6(LOCAL_LL))
    assert first.neighbors.get(a6(PEER_LL)).state is NeighborState.REACHABLE


# --- address resolution ---------------------------------------------------------------------------

def test_resolution_solicits_the_solicited_node_group_and_flushes_on_advert(settled: EtherV6Harness) -> None:
    h = settled
    h.udp().write(b"queued", to6(PEER, 9))
    [solicit] = h.sent()
    assert (solicit.src, solicit.dst) == (LOCAL_MAC, "33:33:ff:00:00:01")
    assert (solicit[IPv6].src, solicit[IPv6].dst, solicit[IPv6].hlim) == (LOCAL, "ff02::1:ff00:1", 255)
    assert solicit[ICMPv6ND_NS].tgt == PEER
    assert solicit[ICMPv6NDOptSrcLLAddr].lladdr == LOCAL_MAC
    assert h.neighbors.get(a6(PEER)).state is NeighborState.INCOMPLETE

    h.inject(na(PEER, solicited=True, override=True))

    entry = h.neighbors.get(a6(PEER))
    assert (entry.state, entry.link_address) == (NeighborState.REACHABLE, mac(PEER_MAC))
    [datagram] = h.sent()
    assert (datagram.dst, datagram[IPv6].dst, datagram[UDP].load) == (PEER_MAC, PEER, b"queued")


def test_unanswered_resolution_gives_up_after_three_solicitations(settled: EtherV6Harness) -> None:
    h = settled
    h.udp().write(b"lost", to6(PEER, 9))
    h.clock.advance(5)
    solicits = [when for when, f in h.sent_timed() if ICMPv6ND_NS in f]
    assert [when - solicits[0] for when in solicits] == [0, 1, 2]
    assert h.neighbors.get(a6(PEER)) is None
    assert h.stats.arp.resolution_failures.value == 1


def test_solicitation_for_our_address_is_answered(settled: EtherV6Harness) -> None:
    h = settled
    h.inject(ns(LOCAL))
    [advert] = h.sent()
    assert (advert.src, advert.dst) == (LOCAL_MAC, PEER_MAC)
    assert (advert[IPv6].src, advert[IPv6].dst, advert[IPv6].hlim) == (LOCAL, PEER, 255)
    flags = advert[ICMPv6ND_NA]
    assert (flags.R, flags.S, flags.O, flags.tgt) == (0, 1, 1, LOCAL)
    assert advert[ICMPv6NDOptDstLLAddr].lladdr == LOCAL_MAC
    entry = h.neighbors.get(a6(PEER))
    assert (entry.state, entry.link_address) == (NeighborState.STALE, mac(PEER_MAC))


def test_solicitation_for_our_link_local_address_is_answered(settled: EtherV6Harness) -> None:
    settled.inject(ns(LOCAL_LL, src=PEER_LL))
    [advert] = settled.sent()
    assert (advert[IPv6].src, advert[IPv6].dst, advert[ICMPv6ND_NA].tgt) == (LOCAL_LL, PEER_LL, LOCAL_LL)


def test_dad_probe_for_our_address_is_answered_to_all_nodes(settled: EtherV6Harness) -> None:
    settled.inject(ns(LOCAL, src="::", src_mac=OTHER_MAC, lladdr=None))
    [advert] = settled.sent()
    assert (advert.dst, advert[IPv6].src, advert[IPv6].dst) == ("33:33:00:00:00:01", LOCAL, ALL_NODES)
    assert (advert[ICMPv6ND_NA].S, advert[ICMPv6ND_NA].O) == (0, 1)
    assert LOCAL in settled.addresses()


@pytest.mark.parametrize("bad", ["not ours", "hop limit 64", "multicast target"])
def test_solicitation_not_to_answer(settled: EtherV6Harness, bad: str) -> None:
    packet = {"not ours": ns("2001:db8::99"), "hop limit 64": ns(LOCAL, hlim=64),
              "multicast target": ns("ff02::1", dst=solicited_node(LOCAL))}[bad]
    settled.inject(packet)
    assert settled.sent() == []
    assert settled.neighbors.get(a6(PEER)) is None


def test_advert_without_override_does_not_replace_a_known_address(settled: EtherV6Harness) -> None:
    h = settled
    h.udp().write(b"x", to6(PEER, 9))
    h.inject(na(PEER, solicited=True, override=True))
    h.sent()
    h.inject(na(PEER, solicited=True, override=False, lladdr=OTHER_MAC))
    assert h.neighbors.get(a6(PEER)).link_address == mac(PEER_MAC)
    h.udp().write(b"y", to6(PEER, 9))
    assert [f.dst for f in h.sent()] == [PEER_MAC]
    h.inject(na(PEER, solicited=False, override=True, lladdr=OTHER_MAC))
    entry = h.neighbors.get(a6(PEER))
    assert (entry.state, entry.link_address) == (NeighborState.STALE, mac(OTHER_MAC))


def test_advert_without_override_completes_an_incomplete_entry(settled: EtherV6Harness) -> None:
    h = settled
    h.udp().write(b"x", to6(PEER, 9))
    h.sent()
    h.inject(na(PEER, solicited=True, override=False))
    assert h.neighbors.get(a6(PEER)).state is NeighborState.REACHABLE
    assert [f.dst for f in h.sent()] == [PEER_MAC]


# --- router solicitation --------------------------------------------------------------------------

def test_three_router_solicitations_four_seconds_apart() -> None:
    h = EtherV6Harness()
    start = h.clock.now()
    h.clock.advance(30)
    solicits = [(when - start, f) for when, f in h.sent_timed() if ICMPv6ND_RS in f]
    times = [when for when, _ in solicits]
    assert len(times) == 3
    assert 0 <= times[0] <= 1                                       # MAX_RTR_SOLICITATION_DELAY
    assert [round(b - a, 9) for a, b in pairwise(times)] == [4.0, 4.0]
    for when, rs in solicits:
        assert (rs.dst, rs[IPv6].dst, rs[IPv6].hlim) == ("33:33:00:00:00:02", ALL_ROUTERS, 255)
        if when < 1:                                                # the link-local is still tentative
            assert rs[IPv6].src == "::" and ICMPv6NDOptSrcLLAddr not in rs
        else:
            assert rs[IPv6].src == LOCAL_LL and rs[ICMPv6NDOptSrcLLAddr].lladdr == LOCAL_MAC
    assert len(h.stack.timers) == 0


def test_router_advertisement_stops_solicitations() -> None:
    h = EtherV6Harness()
    h.clock.advance(1)
    assert len(h.sent(ICMPv6ND_RS)) == 1
    h.inject(ra())
    h.clock.advance(30)
    assert h.sent(ICMPv6ND_RS) == []


# --- router advertisements ------------------------------------------------------------------------

def test_default_router_is_installed_for_its_lifetime(settled: EtherV6Harness) -> None:
    h = settled
    h.inject(ra(lifetime=600))
    assert default_route() in h.stack.get_route_table()
    h.udp().write(b"far", to6("2001:db8:99::1", 9))
    [datagram] = h.sent(UDP)
    assert (datagram.dst, datagram[IPv6].dst) == (ROUTER_MAC, "2001:db8:99::1")   # its SLLA, no resolution
    h.clock.advance(599)
    assert default_route() in h.stack.get_route_table()
    h.inject(ra(lifetime=600))                                  # refreshed
    h.clock.advance(599)
    assert default_route() in h.stack.get_route_table()
    h.clock.advance(1)
    assert default_route() not in h.stack.get_route_table()
    with pytest.raises(ErrNetworkUnreachable):
        h.udp().write(b"far", to6("2001:db8:99::1", 9))


def test_router_lifetime_zero_withdraws_the_default_route(settled: EtherV6Harness) -> None:
    settled.inject(ra(lifetime=1800))
    settled.inject(ra(lifetime=0))
    assert default_route() not in settled.stack.get_route_table()
    assert len(settled.stack.get_route_table()) == 1


def test_on_link_prefix_gets_a_route_for_its_valid_lifetime(settled: EtherV6Harness) -> None:
    h = settled
    h.inject(ra(prefix_info(autonomous=False, valid=3600, preferred=1800), lifetime=0))
    assert prefix_route() in h.stack.get_route_table()
    h.udp().write(b"on link", to6(PREFIX + "9", 9))
    [solicit] = h.sent()
    assert solicit[ICMPv6ND_NS].tgt == PREFIX + "9"              # resolved directly, not via a router
    h.clock.advance(3600)
    assert prefix_route() not in h.stack.get_route_table()
    assert SLAAC not in h.addresses()


def test_autonomous_prefix_configures_an_address_after_dad(settled: EtherV6Harness) -> None:
    h = settled
    h.inject(ra(prefix_info(valid=3600, preferred=1800)))
    assert SLAAC in h.addresses() and SLAAC in h.tentative()
    [probe] = [f for f in h.sent(ICMPv6ND_NS) if f[ICMPv6ND_NS].tgt == SLAAC]
    assert probe[IPv6].src == "::"
    h.clock.advance(1)
    assert h.tentative() == set()
    assert h.nic.primary_address(IPV6_PROTOCOL_NUMBER, a6(PREFIX + "9")) == a6(SLAAC)
    h.clock.advance(3599)
    assert SLAAC not in h.addresses()
    assert h.stack.local_address_nic(a6(SLAAC)) is None


@pytest.mark.parametrize("option", [
    prefix_info(length=48), prefix_info(prefix="fe80::"), prefix_info(valid=100, preferred=200),
    prefix_info(autonomous=False)], ids=["not a /64", "link-local", "preferred beyond valid", "not autonomous"])
def test_prefix_that_configures_no_address(settled: EtherV6Harness, option: Packet) -> None:
    settled.inject(ra(option))
    settled.clock.advance(2)
    assert settled.addresses() == [LOCAL, LOCAL_LL]


def test_autonomous_prefix_with_zero_valid_lifetime_configures_nothing(settled: EtherV6Harness) -> None:
    """RFC 4862 §5.5.3 (d): an address is formed only if the valid lifetime is not 0."""
    settled.inject(ra(prefix_info(on_link=False, valid=0, preferred=0), lifetime=0))
    settled.clock.advance(2)
    assert settled.addresses() == [LOCAL, LOCAL_LL]
    assert settled.sent() == []
    assert settled.ndp.duplicates == []


def test_mtu_option_lowers_the_ipv6_mtu(settled: EtherV6Harness) -> None:
    h = settled
    h.know_peer()
    h.inject(ra(ICMPv6NDOptMTU(mtu=1400)))
    h.inject(ra(ICMPv6NDOptMTU(mtu=1000)))       # below the IPv6 minimum: ignored
    h.inject(ra(ICMPv6NDOptMTU(mtu=9000)))       # beyond the link's: ignored
    assert h.nic.network_endpoints[IPV6_PROTOCOL_NUMBER].mtu() == 1400
    h.udp().write(bytes(1400), to6(PEER, 9))
    fragments = h.sent(IPv6ExtHdrFragment)
    assert len(fragments) == 2 and all(len(f[IPv6]) <= 1400 for f in fragments)


def test_retrans_timer_from_the_router_paces_solicitations(settled: EtherV6Harness) -> None:
    h = settled
    h.inject(ra(retrans=2500, lifetime=0))
    h.udp().write(b"x", to6(PEER, 9))
    h.clock.advance(10)
    solicits = [when for when, f in h.sent_timed() if ICMPv6ND_NS in f]
    assert [when - solicits[0] for when in solicits] == [0, 2.5, 5.0]


def test_cur_hop_limit_applies_to_what_we_send(settled: EtherV6Harness) -> None:
    h = settled
    h.know_peer()
    h.inject(ra(chlim=42))
    h.inject(ra(chlim=0))                        # unspecified: keep what we have
    h.udp().write(b"x", to6(PEER, 9))
    [datagram] = h.sent(UDP)
    assert datagram[IPv6].hlim == 42


@pytest.mark.parametrize("bad", ["global source", "hop limit 64"])
def test_invalid_router_advertisement_is_ignored(settled: EtherV6Harness, bad: str) -> None:
    h = settled
    advert = ra(prefix_info(), ICMPv6NDOptMTU(mtu=1400), chlim=42, **(
        {"src": "2001:db8::fe"} if bad == "global source" else {"hlim": 64}))
    h.inject(advert)
    assert h.stack.get_route_table() == [Route.parse("2001:db8::/64", NIC_ID)]
    assert h.addresses() == [LOCAL, LOCAL_LL]
    assert h.nic.network_endpoints[IPV6_PROTOCOL_NUMBER].mtu() == 1500
    assert h.nic.network_endpoints[IPV6_PROTOCOL_NUMBER].hop_limit == 64
    assert h.stats.icmp.v6_packets_received.invalid.value == 1


@pytest.mark.parametrize("first,elapsed,advertised,expires", [
    (10000, 100, 100, 100 + 7200),      # (e.3) a short lifetime cuts a long one to two hours, not below
    (3600, 100, 60, 3600),              # (e.2) remaining two hours or less: the short one is ignored
    (3600, 100, 7201, 100 + 7201),      # (e.1) more than two hours is taken as it is
    (3600, 100, 5000, 100 + 5000),      # (e.1) more than what remains, too
    (10000, 100, INFINITE, None),
    (INFINITE, 100, 100, 100 + 7200),   # (e.3) an infinite lifetime is the longest of all
    (INFINITE, 100, 0, 100 + 7200),
])
def test_two_hour_rule_for_valid_lifetimes(settled: EtherV6Harness, first: int, elapsed: int, advertised: int,
                                           expires: int | None) -> None:
    """RFC 4862 §5.5.3 (e): an unauthenticated advertisement may not cut a lifetime below two hours."""
    h = settled
    h.inject(ra(prefix_info(valid=first, preferred=min(first, 60)), lifetime=0))
    h.clock.advance(elapsed)
    h.inject(ra(prefix_info(valid=advertised, preferred=min(advertised, 60)), lifetime=0))
    if expires is None:
        h.clock.advance(10 ** 6)
        assert SLAAC in h.addresses()
        return
    h.clock.advance(expires - elapsed - 1)
    assert SLAAC in h.addresses()
    h.clock.advance(1)
    assert SLAAC not in h.addresses()


# --- timers ---------------------------------------------------------------------------------------

def test_no_timers_once_everything_has_settled() -> None:
    h = EtherV6Harness()
    h.clock.advance(20)
    assert len(h.stack.timers) == 0
    h.inject(ra(prefix_info(), lifetime=0))              # no default router; the prefix for ever
    h.clock.advance(20)
    assert SLAAC in h.addresses() and h.tentative() == set()
    assert prefix_route() in h.stack.get_route_table()
    assert len(h.stack.timers) == 0


def test_no_timers_once_lifetimes_have_expired() -> None:
    h = EtherV6Harness()
    h.clock.advance(1)
    h.inject(ra(prefix_info(valid=100, preferred=50), lifetime=300))
    h.clock.advance(301)
    assert default_route() not in h.stack.get_route_table() and SLAAC not in h.addresses()
    assert len(h.stack.timers) == 0
