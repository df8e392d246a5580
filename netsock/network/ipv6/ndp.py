"""Neighbour discovery for a host (RFC 4861), duplicate address detection and stateless address
autoconfiguration (RFC 4862).

The NUD state machine itself is the NIC's NeighborCache (shared with ARP); this module sends and
answers the NDP messages, runs DAD for every address (so a tentative address is used by nothing
but DAD until it is confirmed unique), solicits routers when the NIC comes up, and applies router
advertisements: default routers, on-link prefixes, SLAAC addresses, MTU and hop limit, each with
its lifetime. All of it only on links that need address resolution (Ethernet/TAP): a TUN link has
no neighbours to discover.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from ...header import icmpv6, ipv6, ndp
from ...stack.interfaces import LinkCapabilities
from ...stack.packet_buffer import PacketBuffer
from ...tcpip import ICMPV6_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, AddressWithPrefix, Error, Route, Subnet
from ...tcpip.address import Address, AddressMask
from . import icmp
from .mld import MLD

if TYPE_CHECKING:
    from ...stack.clock import Timer
    from . import IPv6Endpoint

MAX_RTR_SOLICITATIONS = 3           # RFC 4861 §10
RTR_SOLICITATION_INTERVAL = 4.0
MAX_RTR_SOLICITATION_DELAY = 1.0
DUP_ADDR_DETECT_TRANSMITS = 1       # RFC 4862 §5.1
RETRANS_TIMER = 1.0
DEFAULT_ROUTE = Subnet(bytes(16), bytes(16))


class NDP:
    def __init__(self, ep: IPv6Endpoint) -> None:
        self.ep = ep
        self.nic = ep.nic
        self.stack = ep.stack
        self.enabled = bool(self.nic.link.capabilities() & LinkCapabilities.RESOLUTION_REQUIRED)
        self.retrans_timer = RETRANS_TIMER
        self.mld = MLD(ep, self.enabled)
        self.duplicates: list[bytes] = []            # addresses DAD found in use by someone else
        self._dad: dict[bytes, tuple[Timer, int]] = {}
        self._rs_timer: Timer | None = None
        self._rs_sent = 0
        self._lifetimes: dict[tuple[str, bytes, int], Timer] = {}   # routers, prefixes, SLAAC addresses

    # --- NIC events -------------------------------------------------------------------------------

    def on_enable(self) -> None:
        if not self.enabled:
            return
        self.mld.on_enable()
        autoconfigure = self.ep.protocol.autoconfigure
        mac = self.nic.link.link_address()
        if autoconfigure and len(mac) == 6:
            link_local = ipv6.link_local_from_mac(mac)
            if not self.nic.holds_address(IPV6_PROTOCOL_NUMBER, link_local):
                self.stack.add_address(self.nic.id, IPV6_PROTOCOL_NUMBER, AddressWithPrefix(Address(link_local), 64))
        for a in self.nic.addresses.get(IPV6_PROTOCOL_NUMBER, ()):
            if a.address in self.nic.tentative and a.address not in self._dad:
                self._start_dad(a.address)
        self._rs_sent = 0
        if autoconfigure:
            self._rs_timer = self.stack.timers.call_later(random.uniform(0, MAX_RTR_SOLICITATION_DELAY),
                                                          self._solicit_router)

    def on_address_added(self, address: bytes) -> None:
        if not self.enabled or ipv6.is_multicast(address):
            return
        dad = self.ep.protocol.dad_transmits > 0
        if dad:
            self.nic.tentative.add(address)   # RFC 4862 §5.4: unusable until proven unique
        self.nic.join_group(IPV6_PROTOCOL_NUMBER, ipv6.solicited_node_multicast(address))
        if dad and self.nic.enabled:
            self._start_dad(address)

    def on_address_removed(self, address: bytes) -> None:
        dad = self._dad.pop(address, None)
        if dad is not None:
            dad[0].cancel()
        if self.enabled and not ipv6.is_multicast(address):
            self.nic.leave_group(IPV6_PROTOCOL_NUMBER, ipv6.solicited_node_multicast(address))

    def listens_on(self, group: bytes) -> bool:
        """Multicast groups the stack itself belongs to: solicited-node groups of our addresses."""
        return ipv6.is_solicited_node_multicast(group) and any(
            ipv6.solicited_node_multicast(a.address) == group for a in self.nic.addresses.get(IPV6_PROTOCOL_NUMBER, ()))

    def close(self) -> None:
        for timer, _ in self._dad.values():
            timer.cancel()
        self._dad.clear()
        for timer in self._lifetimes.values():
            timer.cancel()
        self._lifetimes.clear()
        if self._rs_timer is not None:
            self._rs_timer.cancel()
        self.mld.close()

    # --- duplicate address detection --------------------------------------------------------------

    def _start_dad(self, address: bytes) -> None:
        timer = self.stack.timers.timer(self._dad_step, address)
        self._dad[address] = (timer, 0)
        self._dad_step(address)

    def _dad_step(self, address: bytes) -> None:
        entry = self._dad.get(address)
        if entry is None:
            return
        timer, sent = entry
        if sent >= self.ep.protocol.dad_transmits:
            del self._dad[address]
            self.nic.tentative.discard(address)    # unique: the address is ours now
            return
        self._dad[address] = (timer, sent + 1)
        self._send(ipv6.UNSPECIFIED, ipv6.solicited_node_multicast(address), icmpv6.NEIGHBOR_SOLICIT,
                   ndp.encode_neighbor_solicit(address))
        timer.reset(self.retrans_timer)

    def _duplicate(self, address: bytes) -> None:
        """RFC 4862 §5.4.5: someone else has it; the address must not be used."""
        self.duplicates.append(address)
        self.stack.stats().ip.duplicate_addresses_detected.increment()
        try:
            self.stack.remove_address(self.nic.id, address)
        except Error:
            pass

    # --- router solicitation ----------------------------------------------------------------------

    def _solicit_router(self) -> None:
        if self._rs_sent >= MAX_RTR_SOLICITATIONS:
            return
        self._rs_sent += 1
        src = self.nic.primary_address(IPV6_PROTOCOL_NUMBER, ipv6.ALL_ROUTERS)
        options = ndp.encode_link_address(ndp.OPT_SOURCE_LINK_ADDRESS, self.nic.link.link_address()) if src else b""
        self._send(src or ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS, icmpv6.ROUTER_SOLICIT, ndp.encode_router_solicit(options))
        self._rs_timer = self.stack.timers.call_later(RTR_SOLICITATION_INTERVAL, self._solicit_router)

    # --- address resolution (the NeighborCache's LinkAddressResolver) -----------------------------

    def solicit(self, target: bytes, local: bytes, remote_link_address: bytes) -> None:
        src = local or self.nic.primary_address(IPV6_PROTOCOL_NUMBER, target)
        if not src:
            return
        dst = target if remote_link_address else ipv6.solicited_node_multicast(target)
        options = ndp.encode_link_address(ndp.OPT_SOURCE_LINK_ADDRESS, self.nic.link.link_address())
        self._send(src, dst, icmpv6.NEIGHBOR_SOLICIT, ndp.encode_neighbor_solicit(target, options),
                   remote_link_address)

    # --- inbound ----------------------------------------------------------------------------------

    def handle(self, pkt: PacketBuffer, ip: ipv6.IPv6Header, hdr: icmpv6.ICMPv6Header) -> None:
        msg = ndp.parse(pkt.data, ip.src, ip.dst, ip.hop_limit)
        if not msg:
            self.stack.stats().icmp.v6_packets_received.invalid.increment()
            return
        if not self.enabled:
            return
        if isinstance(msg, ndp.NeighborSolicit):
            self._neighbor_solicit(ip, msg)
        elif isinstance(msg, ndp.NeighborAdvert):
            self._neighbor_advert(msg)
        elif isinstance(msg, ndp.RouterAdvert):
            self._router_advert(ip, msg)

    def _neighbor_solicit(self, ip: ipv6.IPv6Header, msg: ndp.NeighborSolicit) -> None:
        target = msg.target
        nic = self.nic
        if not nic.holds_address(IPV6_PROTOCOL_NUMBER, target):
            return
        from_unspecified = ipv6.is_unspecified(ip.src)
        if target in nic.tentative:
            if from_unspecified:
                self._duplicate(target)     # another node is probing for the same address
            return
        flags = ndp.NA_OVERRIDE
        options = ndp.encode_link_address(ndp.OPT_TARGET_LINK_ADDRESS, nic.link.link_address())
        if from_unspecified:
            self._send(target, ipv6.ALL_NODES, icmpv6.NEIGHBOR_ADVERT,
                       ndp.encode_neighbor_advert(flags, target, options))
            return
        source_mac = msg.options.source_link_address
        cache = nic.neighbors.get(IPV6_PROTOCOL_NUMBER)
        if source_mac and cache is not None:
            cache.handle_probe(ip.src, bytes(source_mac))
        self._send(target, ip.src, icmpv6.NEIGHBOR_ADVERT,
                   ndp.encode_neighbor_advert(flags | ndp.NA_SOLICITED, target, options), bytes(source_mac or b""))

    def _neighbor_advert(self, msg: ndp.NeighborAdvert) -> None:
        target = msg.target
        nic = self.nic
        if nic.holds_address(IPV6_PROTOCOL_NUMBER, target):
            if target in nic.tentative:
                self._duplicate(target)
            return
        cache = nic.neighbors.get(IPV6_PROTOCOL_NUMBER)
        mac = msg.options.target_link_address
        if cache is None:
            return
        entry = cache.get(target)
        if entry is None:
            return
        if mac:
            if entry.link_address and entry.link_address != mac and not msg.override:
                return          # RFC 4861 §7.2.5: an advert without Override does not replace a known address
            cache.handle_confirmation(target, bytes(mac), solicited=msg.solicited)
        elif entry.link_address and msg.solicited:
            cache.confirm_reachability(target)

    def _router_advert(self, ip: ipv6.IPv6Header, ra: ndp.RouterAdvert) -> None:
        """RFC 4861 §6.3.4 and RFC 4862 §5.5.3."""
        ep = self.ep
        if self._rs_timer is not None:
            self._rs_timer.cancel()
        if ra.cur_hop_limit:
            ep.hop_limit = ra.cur_hop_limit
        if ra.retrans_timer:
            self.retrans_timer = ra.retrans_timer / 1000.0
        cache = self.nic.neighbors.get(IPV6_PROTOCOL_NUMBER)
        if cache is not None:
            if ra.reachable_time:
                cache.config.base_reachable_time = ra.reachable_time / 1000.0
            if ra.retrans_timer:
                cache.config.retransmit_timer = self.retrans_timer
            if ra.options.source_link_address:
                cache.handle_probe(ip.src, bytes(ra.options.source_link_address))
        mtu = ra.options.mtu
        if mtu and ipv6.MIN_MTU <= mtu <= self.nic.link.mtu():
            ep.link_mtu = mtu
        self._lifetime("router", ip.src, 0, ra.router_lifetime,
                       Route(DEFAULT_ROUTE, self.nic.id, gateway=Address(ip.src)))
        for prefix in ra.options.prefixes:
            if ipv6.is_link_local(prefix.prefix) or prefix.preferred_lifetime > prefix.valid_lifetime:
                continue
            mask = AddressMask.from_prefix(prefix.prefix_length, 16)
            network = bytes(a & m for a, m in zip(prefix.prefix, mask))
            if prefix.on_link:
                self._lifetime("prefix", network, prefix.prefix_length, prefix.valid_lifetime,
                               Route(Subnet(network, mask), self.nic.id))
            if prefix.autonomous and prefix.prefix_length == 64 and len(self.nic.link.link_address()) == 6:
                address = network[:8] + ipv6.interface_id_from_mac(self.nic.link.link_address())
                self._autoconfigure(address, prefix.valid_lifetime)

    def _lifetime(self, kind: str, key: bytes, length: int, lifetime: int, route: Route) -> None:
        """Install ``route`` for ``lifetime`` seconds (0: withdraw it; all ones: forever)."""
        name = (kind, bytes(key), length)
        timer = self._lifetimes.get(name)
        if not lifetime:
            if timer is not None:
                timer.cancel()
                del self._lifetimes[name]
                self.stack.remove_route(route)
            return
        if timer is None:
            self.stack.add_route(route)
            timer = self._lifetimes[name] = self.stack.timers.timer(self._expire, name, route)
        if lifetime == ndp.INFINITE_LIFETIME:
            timer.cancel()
        else:
            timer.reset(float(lifetime))

    def _expire(self, name: tuple[str, bytes, int], route: Route) -> None:
        self._lifetimes.pop(name, None)
        self.stack.remove_route(route)

    def _autoconfigure(self, address: bytes, valid_lifetime: int) -> None:
        name = ("address", address, 64)
        timer = self._lifetimes.get(name)
        if timer is None and not valid_lifetime:
            return                  # RFC 4862 §5.5.3 (d): a prefix without a lifetime forms no address
        if not self.nic.holds_address(IPV6_PROTOCOL_NUMBER, address):
            if address in self.duplicates:
                return
            self.stack.add_address(self.nic.id, IPV6_PROTOCOL_NUMBER, AddressWithPrefix(Address(address), 64))
        if timer is None:
            timer = self._lifetimes[name] = self.stack.timers.timer(self._address_expired, address)
            remaining = 0.0
        else:               # a timer that is not armed is an infinite lifetime
            remaining = timer.deadline - self.stack.clock.now() if timer.deadline is not None else math.inf
        if valid_lifetime == ndp.INFINITE_LIFETIME:
            timer.cancel()
        # RFC 4862 §5.5.3 (e): a spoofed short lifetime may not cut a longer one below two hours.
        elif valid_lifetime > 7200 or valid_lifetime > remaining:
            timer.reset(float(valid_lifetime))
        elif remaining > 7200:
            timer.reset(7200.0)

    def _address_expired(self, address: bytes) -> None:
        self._lifetimes.pop(("address", address, 64), None)
        try:
            self.stack.remove_address(self.nic.id, address)
        except Error:
            pass

    def handle_mld(self, pkt: PacketBuffer, ip: ipv6.IPv6Header, router_alert: int | None) -> None:
        self.mld.handle(pkt, ip, router_alert)

    # --- outbound ---------------------------------------------------------------------------------

    def _send(self, src: bytes, dst: bytes, icmp_type: int, body: bytes, remote_link_address: bytes = b"") -> None:
        """An NDP message: hop limit 255, straight onto this NIC's link (no route lookup)."""
        send_link_local(self.ep, src, dst, icmp_type, body, ndp.HOP_LIMIT, remote_link_address)


def send_link_local(ep: IPv6Endpoint, src: bytes, dst: bytes, icmp_type: int, body: bytes, hop_limit: int,
                    remote_link_address: bytes = b"", hop_by_hop: bool = False) -> None:
    """Send an ICMPv6 message on ``ep``'s link itself (NDP, MLD), bypassing routing and resolution."""
    size = icmpv6.HEADER_SIZE + len(body)
    header_room = ipv6.HEADER_SIZE + (ipv6.ROUTER_ALERT_HEADER_SIZE if hop_by_hop else 0)
    pkt = PacketBuffer(ep.nic.link.max_header_length() + header_room + size, body)
    icmpv6.build_header(pkt.prepend(icmpv6.HEADER_SIZE), icmp_type, 0, src, dst, body)
    next_header = ICMPV6_PROTOCOL_NUMBER
    if hop_by_hop:
        ipv6.build_router_alert(pkt.prepend(ipv6.ROUTER_ALERT_HEADER_SIZE), next_header)
        next_header = ipv6.HOP_BY_HOP
        size += ipv6.ROUTER_ALERT_HEADER_SIZE
    ipv6.build(pkt.prepend(ipv6.HEADER_SIZE), src=src, dst=dst, next_header=next_header, payload_length=size,
               hop_limit=hop_limit)
    pkt.network_protocol = IPV6_PROTOCOL_NUMBER
    link = remote_link_address or ep.resolve_static_address(dst)
    stats = ep.stack.stats()
    try:
        if link is None:
            cache = ep.nic.neighbors.get(IPV6_PROTOCOL_NUMBER)
            if cache is None:
                ep.nic.write_to_link(b"", IPV6_PROTOCOL_NUMBER, pkt)
            else:
                cache.send(dst, src, IPV6_PROTOCOL_NUMBER, pkt)
        else:
            ep.nic.write_to_link(link, IPV6_PROTOCOL_NUMBER, pkt)
    except Error:
        stats.icmp.v6_packets_sent.dropped.increment()
        return
    stats.ip.packets_sent.value += 1
    icmp.count(stats.icmp.v6_packets_sent, icmp_type)
