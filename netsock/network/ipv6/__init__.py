"""IPv6 (RFC 8200) for a host: validation, extension headers, reassembly, local delivery, sending
(with source fragmentation), RFC 6724 source address selection. ICMPv6 is in ``icmp``, neighbour
discovery, DAD and SLAAC in ``ndp``.

With forwarding on (``Stack.set_forwarding``) a NIC is a router's interface: it listens on the
all-routers groups, and a unicast packet for another host is routed as netstack's
forwardUnicastPacket does it: hop-by-hop options processed (RFC 8200 §4.3), hop limit decremented,
ICMPv6 errors for an exhausted hop limit, a missing route and a packet too big for the next link (a
router never fragments), and never a link-local source or destination.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ...header import icmpv6, ipv6
from ...header.checksum import complete_checksum
from ...header.gso import segments_to_forward
from ...stack.interfaces import LinkCapabilities, PacketType
from ...stack.iptables import HEAD_SIZE, REJECT_CODES, Accept, Drop, Hook, Reject
from ...stack.multicast import FilterState
from ...stack.nat import INPUT, POSTROUTING, Connection
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import NetworkEndpoint, NetworkProtocol, UnknownDestinationDisposition
from ...tcpip import IPV6_PROTOCOL_NUMBER, AddressWithPrefix, Error, ErrMessageTooLong, ErrNoBufferSpace
from ..fragmentation import Reassembler, ReassemblyResult, split_packet
from . import icmp
from .ndp import DUP_ADDR_DETECT_TRANSMITS, NDP

if TYPE_CHECKING:
    from ...stack.nic import NIC
    from ...stack.route import Route

PROTOCOL_NUMBER = IPV6_PROTOCOL_NUMBER
REASSEMBLY_TIMEOUT = 60.0          # RFC 8200 §4.5
# RFC 4291 §2.8: a router also answers to the all-routers groups of interface, link and site scope.
ALL_ROUTERS_GROUPS = tuple(bytes.fromhex(f"ff0{scope}0000000000000000000000000002") for scope in (1, 2, 5))
# What a group's source filter does not hold back: MLD, which is ICMPv6 behind a hop-by-hop header.
_UNFILTERED = frozenset((0, 58))
_TRANSLATED = frozenset((6, 17, 136, 58))   # the nat table's: TCP, UDP, UDP-Lite, ICMPv6 right after the fixed header


def _common_prefix_bits(a: bytes, b: bytes) -> int:
    diff = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return 128 - diff.bit_length()


def _scope(addr: bytes) -> int:
    if ipv6.is_multicast(addr):
        return ipv6.multicast_scope(addr)
    if ipv6.is_link_local(addr) or ipv6.is_loopback(addr):
        return ipv6.SCOPE_LINK_LOCAL
    return ipv6.SCOPE_GLOBAL


class IPv6Endpoint(NetworkEndpoint):
    resolves_protocol = PROTOCOL_NUMBER     # the NIC's IPv6 neighbour cache resolves through NDP here

    def __init__(self, protocol: IPv6Protocol, nic: NIC) -> None:
        super().__init__(protocol, nic)
        self._stats = self.stack.stats()
        self._filter = self.stack.iptables.ipv6
        self._nat = self.stack.iptables.ipv6_nat
        self._mangle = self.stack.iptables.ipv6_mangle
        self.hop_limit = self.stack.default_ttl    # a router may advertise another (RFC 4861 §6.3.4)
        self.link_mtu = 0                   # from router advertisements; 0: the link's
        self.forwarding = False             # route packets for other hosts (a router's interface)
        self.ndp = NDP(self)

    def max_header_length(self) -> int:
        return self.nic.link.max_header_length() + ipv6.HEADER_SIZE + ipv6.FRAGMENT_HEADER_SIZE

    def default_ttl(self) -> int:
        return self.hop_limit

    def mtu(self) -> int:
        link = self.nic.link.mtu()
        return min(link, self.link_mtu) if self.link_mtu else link

    # --- NIC events, neighbour resolution -----------------------------------------------------------

    def on_enable(self) -> None:
        self.ndp.on_enable()

    def on_address_added(self, address: AddressWithPrefix) -> None:
        self.ndp.on_address_added(address.address)

    def on_address_removed(self, address: bytes) -> None:
        self.ndp.on_address_removed(address)

    def on_group_changed(self, group: bytes, before: FilterState) -> None:
        self.ndp.mld.changed(group, before)

    def link_address_request(self, target: bytes, local: bytes, remote_link_address: bytes) -> None:
        self.ndp.solicit(target, local, remote_link_address)

    def resolve_static_address(self, addr: bytes) -> bytes | None:
        if ipv6.is_multicast(addr):
            return b"\x33\x33" + bytes(addr[12:16])   # RFC 2464 §7
        return None

    def close(self) -> None:
        self.ndp.close()

    def set_forwarding(self, enabled: bool) -> bool:
        """Turn forwarding on this NIC on or off (netstack's ForwardingNetworkEndpoint), joining or
        leaving the all-routers groups with it; returns the previous setting."""
        previous, self.forwarding = self.forwarding, enabled
        if enabled != previous:
            change = self.nic.join_group if enabled else self.nic.leave_group
            for group in ALL_ROUTERS_GROUPS:
                change(PROTOCOL_NUMBER, group)
        return previous

    # --- source address selection -----------------------------------------------------------------

    def select_source(self, candidates: list[AddressWithPrefix], remote: bytes) -> bytes:
        """RFC 6724 §5 for one interface: same address, then matching scope, then longest common prefix."""
        if not remote:
            return candidates[0].address
        best = None
        best_key: tuple[int, int, int] | None = None
        remote_scope = _scope(remote)
        for cand in candidates:
            addr = cand.address
            if addr == remote:
                return addr                                             # rule 1
            scope = _scope(addr)
            scope_rank = 0 if scope >= remote_scope else -1             # rule 2: never too small a scope
            key = (scope_rank, -abs(scope - remote_scope), _common_prefix_bits(addr, remote))  # rules 2, 8
            if best_key is None or key > best_key:
                best, best_key = addr, key
        return best  # type: ignore[return-value]

    # --- inbound ----------------------------------------------------------------------------------

    def handle_packet(self, pkt: PacketBuffer) -> None:
        ip_stats = self._stats.ip
        ip_stats.packets_received.value += 1
        data = pkt.data
        hdr = ipv6.parse(data)
        if not hdr or ipv6.HEADER_SIZE + hdr.payload_length > len(data):
            ip_stats.malformed_packets_received.increment()
            return
        pkt.trim(ipv6.HEADER_SIZE + hdr.payload_length)
        packet = pkt.data                   # the whole packet: offsets below are ICMP pointers into it
        src, dst = hdr.src, hdr.dst
        if ipv6.is_multicast(src):
            ip_stats.invalid_addresses_received.increment()
            return
        steer = None
        if self._mangle.active and hdr.next_header in _TRANSLATED:
            steer = self._steered(pkt, packet, ipv6.HEADER_SIZE, hdr.next_header, src, dst)
            if isinstance(steer, Drop):
                return
        connection = None
        if self._nat.active and hdr.next_header in _TRANSLATED and steer is None:
            arrived = self._nat_arrived(pkt, packet, ipv6.HEADER_SIZE, hdr.next_header, src, dst)
            if arrived is None:
                return
            connection, translated = arrived
            if translated is not None:
                packet = pkt.data = translated
                hdr = ipv6.parse(translated)      # type: ignore[assignment]
                src, dst = hdr.src, hdr.dst
        if steer is not None:
            pkt.pkt_type = PacketType.HOST      # (TPROXY's packet is this host's, whatever its destination)
        elif not self._accepts(dst, pkt, src, hdr.next_header):
            if self.forwarding and not ipv6.is_multicast(dst):   # no multicast routing
                self._forward(pkt, hdr, packet, connection)
            else:
                ip_stats.invalid_addresses_received.increment()
            return
        chain = ipv6.iter_extension_headers(packet, hdr.next_header)
        if not chain:
            ip_stats.malformed_packets_received.increment()
            return
        allowed, router_alert = self._process_extension_headers(pkt, hdr, packet, chain.headers)
        if not allowed:
            return
        next_header = chain.next_header
        payload_offset = chain.payload_offset
        next_header_pointer = chain.next_header_pointer
        if chain.fragment is not None:
            reassembled = self._reassemble(pkt, hdr, packet, chain)
            if reassembled is None:
                return
            packet, rest, next_header_pointer = reassembled
            pkt.checksum_verified = False   # what the link vouched for was the last fragment alone
            # RFC 8200 §4.5: the headers of the fragmentable part are processed once the datagram is whole.
            if not self._process_extension_headers(pkt, hdr, packet, rest.headers)[0]:
                return
            next_header, payload_offset = rest.next_header, rest.payload_offset
        pkt.data = packet
        pkt.network_header = pkt.consume(payload_offset)  # type: ignore[assignment]
        if self._filter.active and not self._filter_input(
                pkt, next_header, src, dst, len(packet), lambda reject_with: icmp.send_error(
                    self, pkt, hdr, icmpv6.DST_UNREACHABLE, REJECT_CODES[reject_with][1], 0, packet)):
            return
        if connection is not None:      # (a packet without extension headers: its transport's at HEADER_SIZE)
            translated = self._nat_source(INPUT, connection, pkt, packet, ipv6.HEADER_SIZE, next_header, src, dst)
            if translated is not None:
                packet = translated
                pkt.network_header, pkt.data = translated[:ipv6.HEADER_SIZE], translated[ipv6.HEADER_SIZE:]
                hdr = ipv6.parse(translated)      # type: ignore[assignment]
                src = hdr.src
        # Raw sockets read the payload alone (Linux's raw6_local_deliver).
        raw_taken = False
        if self.stack.raw_endpoints:
            raw_taken = self.stack.deliver_raw_packet(self.nic, PROTOCOL_NUMBER, next_header, pkt, src, dst)
        if next_header == ipv6.ICMPV6:
            ip_stats.packets_delivered.value += 1
            icmp.handle(self, pkt, hdr, router_alert)
            return
        if next_header == ipv6.NO_NEXT:
            ip_stats.packets_delivered.value += 1
            return
        if dst in self.nic.tentative:
            ip_stats.invalid_addresses_received.increment()  # RFC 4862 §5.4: for neighbour discovery only
            return
        verdict = self.stack.deliver_transport_packet(self.nic, PROTOCOL_NUMBER, next_header, pkt, src, dst, steer)
        if verdict is None:
            ip_stats.packets_delivered.value += 1
        elif verdict is UnknownDestinationDisposition.UNHANDLED and pkt.pkt_type == PacketType.HOST:
            if next_header in self.stack.transport_protocols:
                icmp.send_error(self, pkt, hdr, icmpv6.DST_UNREACHABLE, icmpv6.PORT_UNREACHABLE, 0, packet)
            elif raw_taken:     # a raw socket's protocol: no parameter problem, as Linux
                ip_stats.packets_delivered.value += 1
            else:
                ip_stats.unknown_protocol_received.increment()
                icmp.send_error(self, pkt, hdr, icmpv6.PARAM_PROBLEM, icmpv6.UNRECOGNIZED_NEXT_HEADER,
                                next_header_pointer, packet)

    def _process_extension_headers(self, pkt: PacketBuffer, hdr: ipv6.IPv6Header, packet: memoryview,
                                   headers: tuple[ipv6.ExtHeader, ...]) -> tuple[bool, int | None]:
        """Act on options and routing headers (RFC 8200 §4.2, §4.4), sending the ICMPv6 errors they call
        for: whether the packet may go on, and the value of its Router Alert option (None without one)."""
        ip_stats = self._stats.ip
        router_alert = None
        for ext in headers:
            if ext.kind == ipv6.HOP_BY_HOP or ext.kind == ipv6.DEST_OPTIONS:
                opts = ipv6.parse_options(packet, ext)
                if not opts:
                    ip_stats.malformed_packets_received.increment()
                    return False, None
                if opts.router_alert is not None:
                    router_alert = opts.router_alert
                if opts.action != ipv6.ACTION_SKIP:
                    if opts.action == ipv6.ACTION_DISCARD_SEND_ICMP or (
                            opts.action == ipv6.ACTION_DISCARD_SEND_ICMP_UNLESS_MULTICAST
                            and pkt.pkt_type != PacketType.MULTICAST):
                        icmp.send_error(self, pkt, hdr, icmpv6.PARAM_PROBLEM, icmpv6.UNRECOGNIZED_OPTION,
                                        opts.pointer, packet, allow_multicast=True)
                    ip_stats.malformed_packets_received.increment()
                    return False, None
            elif ext.kind == ipv6.ROUTING:
                routing = ipv6.parse_routing(packet, ext.offset)
                if not routing:
                    ip_stats.malformed_packets_received.increment()
                    return False, None
                if routing.segments_left:
                    # A host is no router: RFC 8200 §4.4 parameter problem at the routing type.
                    icmp.send_error(self, pkt, hdr, icmpv6.PARAM_PROBLEM, icmpv6.ERRONEOUS_HEADER,
                                    ext.offset + ipv6.ROUTING_TYPE_OFFSET, packet)
                    return False, None
        return True, router_alert

    def _reassemble(self, pkt: PacketBuffer, hdr: ipv6.IPv6Header, packet: memoryview,
                    chain: ipv6.ExtensionChain) -> tuple[memoryview, ipv6.ExtensionChain, int] | None:
        """Feed a fragment to the reassembler. Once the datagram is whole: the packet without its fragment
        header, the chain of headers behind it, and the offset of the Next Header naming the upper layer."""
        ip_stats = self._stats.ip
        ip_stats.fragments_received.increment()
        frag = chain.fragment
        assert frag is not None
        data = packet[chain.payload_offset:]
        if frag.more and len(data) % 8:
            # RFC 8200 §4.5: a non-final fragment not a multiple of 8 bytes long.
            icmp.send_error(self, pkt, hdr, icmpv6.PARAM_PROBLEM, icmpv6.ERRONEOUS_HEADER,
                            ipv6.PAYLOAD_LENGTH_OFFSET, packet)
            ip_stats.malformed_fragments_received.increment()
            return None
        unfragmentable = chain.payload_offset - ipv6.FRAGMENT_HEADER_SIZE
        if unfragmentable - ipv6.HEADER_SIZE + frag.offset + len(data) > 65535:
            icmp.send_error(self, pkt, hdr, icmpv6.PARAM_PROBLEM, icmpv6.ERRONEOUS_HEADER,
                            chain.payload_offset - ipv6.FRAGMENT_HEADER_SIZE + ipv6.FRAGMENT_OFFSET_OFFSET, packet)
            ip_stats.malformed_fragments_received.increment()
            return None
        first = bytes(packet[:chain.payload_offset]) if frag.offset == 0 else None
        reassembler = self.protocol.reassembler
        status, payload = reassembler.process((hdr.src, hdr.dst, frag.ident), frag.offset, frag.more, data, first,
                                              len(packet))
        if status is not ReassemblyResult.COMPLETE:
            status.count(ip_stats)
            return None
        pkt.frag_max_size = reassembler.completed_largest
        # Rebuild the packet without its fragment header, then walk what the fragments carried.
        head = bytearray(packet[:unfragmentable])
        link = chain.headers[-2].offset if len(chain.headers) > 1 else ipv6.NEXT_HEADER_OFFSET
        head[link] = frag.next_header
        whole = memoryview(bytes(head) + bytes(payload))  # type: ignore[arg-type]
        rest = ipv6.iter_extension_headers(whole, frag.next_header, unfragmentable)
        if not rest or rest.fragment is not None:
            ip_stats.malformed_packets_received.increment()
            return None
        return whole, rest, rest.headers[-1].offset if rest.headers else link

    def _accepts(self, dst: bytes, pkt: PacketBuffer, src: bytes, next_header: int) -> bool:
        """Is ``dst`` for this host? Sets pkt.pkt_type. A group's packet must come from a source its members'
        filters let through (Linux's ipv6_chk_mcast_addr), but MLD's (ICMPv6, behind a hop-by-hop header), which
        are let through to ICMPv6 as a kind."""
        nic = self.nic
        if nic.has_address(PROTOCOL_NUMBER, dst) or (self.stack.local_address_nic(dst) is not None
                                                   and dst not in nic.tentative):
            pkt.pkt_type = PacketType.HOST
            return True
        if ipv6.is_multicast(dst):
            pkt.pkt_type = PacketType.MULTICAST
            if dst == ipv6.ALL_NODES or self.ndp.listens_on(dst):
                return True
            if next_header in _UNFILTERED:
                return nic.is_in_group(PROTOCOL_NUMBER, dst)
            return nic.group_allows(PROTOCOL_NUMBER, dst, src)
        if nic.holds_address(PROTOCOL_NUMBER, dst):
            pkt.pkt_type = PacketType.HOST   # tentative: only neighbour discovery may use it (ndp checks)
            return True
        if nic.promiscuous or (nic.loopback and ipv6.is_loopback(dst)):
            pkt.pkt_type = PacketType.HOST
            return True
        return False

    # --- forwarding -------------------------------------------------------------------------------

    def _forward(self, pkt: PacketBuffer, hdr: ipv6.IPv6Header, packet: memoryview,
                 connection: Connection | None = None) -> None:
        """Route a packet for another host (``packet``: all of it, fixed header first) out of the NIC
        the route table picks, or drop it with the counter and the ICMPv6 error that say why;
        ``connection``: its own, if the nat table tracks it."""
        ip_stats = self._stats.ip
        fwd = ip_stats.forwarding
        src, dst = hdr.src, hdr.dst
        if (pkt.pkt_type != PacketType.HOST or ipv6.is_loopback(src) or ipv6.is_loopback(dst)
                or ipv6.is_unspecified(dst) or self.stack.local_address_nic(src) is not None):
            # Not a link-layer unicast to us, or an address that never crosses a router, or our own
            # address as source (a loop, or a forgery).
            ip_stats.invalid_addresses_received.increment()
            return
        if ipv6.is_unspecified(src):                # RFC 4291 §2.5.2: never forwarded
            fwd.fail(fwd.initializing_source)
            return
        if ipv6.is_link_local(src):                 # RFC 4291 §2.5.6: never to other links
            fwd.fail(fwd.link_local_source)
            return
        if ipv6.is_link_local(dst):
            fwd.fail(fwd.link_local_destination)
            return
        if hdr.hop_limit <= 1:                      # RFC 4443 §3.3
            icmp.send_error(self, pkt, hdr, icmpv6.TIME_EXCEEDED, icmpv6.HOP_LIMIT_EXCEEDED, 0, packet)
            fwd.fail(fwd.exhausted_ttl)
            return
        if hdr.next_header == ipv6.HOP_BY_HOP and not self._hop_by_hop_allows(pkt, hdr, packet):
            fwd.fail(fwd.extension_header_problem)
            return
        if pkt.csum_offset:     # the kernel left it partial (behind the fixed header): whole before it leaves
            complete_checksum(packet, ipv6.HEADER_SIZE, pkt.csum_offset)
            pkt.csum_offset = 0
        try:
            route = self.stack.find_route(0, b"", dst, PROTOCOL_NUMBER)
        except Error:
            icmp.send_error(self, pkt, hdr, icmpv6.DST_UNREACHABLE, icmpv6.NO_ROUTE, 0, packet)
            fwd.fail(fwd.unrouteable)
            return
        if self._filter.active and not self._filter_forward(pkt, hdr, packet, route):
            return
        if connection is not None:
            translated = self._nat_source(POSTROUTING, connection, pkt, packet, ipv6.HEADER_SIZE, hdr.next_header,
                                          src, dst, route.nic)
            if translated is not None:
                packet = translated
                hdr = ipv6.parse(translated)      # type: ignore[assignment]
        if pkt.gso_size:
            self._forward_super_segment(route, pkt, hdr, packet)
        else:
            self._forward_packet(route, pkt, hdr, packet)

    def _filter_forward(self, pkt: PacketBuffer, hdr: ipv6.IPv6Header, packet: memoryview, route: Route) -> bool:
        """FORWARD: may the packet go on? A fragment shows the rules no transport header."""
        chain = ipv6.iter_extension_headers(packet, hdr.next_header)
        protocol, head = hdr.next_header, b""
        if chain:
            protocol = chain.next_header
            if chain.fragment is None:
                head = packet[chain.payload_offset:chain.payload_offset + HEAD_SIZE]
        verdict = self._filter_check(Hook.FORWARD, protocol, hdr.src, hdr.dst, len(packet), head, route.nic, pkt.mark)
        if isinstance(verdict, Reject):
            self.reject_forwarded(verdict, hdr.src, hdr.dst, bytes(head), len(packet), lambda with_: icmp.send_error(
                self, pkt, hdr, icmpv6.DST_UNREACHABLE, REJECT_CODES[with_][1], 0, packet))
        return isinstance(verdict, Accept)

    def _forward_packet(self, route: Route, pkt: PacketBuffer, hdr: ipv6.IPv6Header, packet: memoryview,
                        gso_size: int = 0) -> None:
        """Send on a packet that may be forwarded, hop limit one less, or refuse it (packet too big)
        if it is larger than the next hop's MTU; a super-segment (``gso_size``) whose pieces fit is
        sent whole, for the link to cut."""
        fwd = self._stats.ip.forwarding
        mtu = route.mtu()
        if len(packet) > mtu and not gso_size:      # RFC 8200 §5: only the source fragments
            icmp.send_error(self, pkt, hdr, icmpv6.PACKET_TOO_BIG, 0, mtu, packet)
            fwd.fail(fwd.packet_too_big)
            return
        out = PacketBuffer(route.max_header_length(), packet[ipv6.HEADER_SIZE:])
        out.gso_size = gso_size
        header = out.prepend(ipv6.HEADER_SIZE)
        header[:] = packet[:ipv6.HEADER_SIZE]
        header[7] = hdr.hop_limit - 1
        out.network_protocol = PROTOCOL_NUMBER
        try:
            route.network_endpoint.send(route, out)   # the outgoing NIC resolves the next hop (NDP)
        except ErrNoBufferSpace:
            fwd.fail(fwd.outgoing_device_no_buffer_space)
        except Error:
            fwd.errors.increment()
        else:
            fwd.packets_forwarded.increment()

    def _forward_super_segment(self, route: Route, pkt: PacketBuffer, hdr: ipv6.IPv6Header,
                               packet: memoryview) -> None:
        """A TCP super-segment received whole (a TUN with offloads, link.gro): it leaves whole if the
        next hop's link cuts (GSO) and its pieces fit the MTU; otherwise it is cut here and each piece
        forwarded as if it had come alone."""
        try:
            pieces = segments_to_forward(packet, ipv6.HEADER_SIZE, pkt.gso_size, route.mtu(),
                                         bool(route.nic.link.capabilities() & LinkCapabilities.HARDWARE_GSO))
        except ValueError:                          # not TCP right behind the fixed header
            self._stats.ip.malformed_packets_received.increment()
            return
        if pieces is None:
            self._forward_packet(route, pkt, hdr, packet, pkt.gso_size)
            return
        for piece in pieces:
            view = memoryview(piece)
            self._forward_packet(route, pkt, ipv6.parse(view), view)

    def _hop_by_hop_allows(self, pkt: PacketBuffer, hdr: ipv6.IPv6Header, packet: memoryview) -> bool:
        """RFC 8200 §4.3: every node on the path processes the Hop-by-Hop Options header, and only it:
        the headers behind it are the destination's business, so they are not even walked here. A
        Router Alert asks routers to look closer (RFC 2711); with nothing here listening for one, the
        packet is forwarded as usual, as Linux does without a router-alert socket."""
        length = ((packet[ipv6.HEADER_SIZE + 1] + 1) << 3) if len(packet) >= ipv6.HEADER_SIZE + 8 else 0
        if not length or ipv6.HEADER_SIZE + length > len(packet):
            self._stats.ip.malformed_packets_received.increment()
            return False
        header = ipv6.ExtHeader(ipv6.HOP_BY_HOP, ipv6.HEADER_SIZE, length, packet[ipv6.HEADER_SIZE])
        return self._process_extension_headers(pkt, hdr, packet, (header,))[0]

    # --- outbound ---------------------------------------------------------------------------------

    def write_packet(self, route: Route, transport: int, pkt: PacketBuffer, ttl: int, tos: int,
                     dont_fragment: bool = True, path_mtu: bool = True) -> None:
        """(``dont_fragment`` is IPv4's: an IPv6 router never fragments.)"""
        total = pkt.size() + ipv6.HEADER_SIZE
        src, dst = route.local_address, route.remote_address
        if self._nat.active or self._filter.active:
            route, src, dst = self._local_out(route, transport, pkt, total)
        mtu = route.mtu(path_mtu)
        if total > mtu and not pkt.gso_size:   # a super-segment is cut by the link, not fragmented
            self._write_fragments(route, transport, pkt, ttl, tos, mtu, src, dst)
            return
        hdr = pkt.prepend(ipv6.HEADER_SIZE)
        ipv6.build(hdr, src=src, dst=dst, next_header=transport,
                   payload_length=total - ipv6.HEADER_SIZE, hop_limit=ttl, traffic_class=tos,
                   flow_label=flow_label(pkt.hash))
        pkt.network_protocol = PROTOCOL_NUMBER
        self.send(route, pkt)

    def _write_fragments(self, route: Route, transport: int, pkt: PacketBuffer, ttl: int, tos: int,
                         mtu: int, src: bytes, dst: bytes) -> None:
        """RFC 8200 §4.5: the source fragments, each piece behind an IPv6 header and a fragment header."""
        try:
            pieces = split_packet(pkt, ipv6.HEADER_SIZE + ipv6.FRAGMENT_HEADER_SIZE, max(mtu, ipv6.MIN_MTU), 65535,
                                  self.max_header_length())
        except ValueError:
            self._stats.ip.outgoing_packet_errors.increment()
            raise ErrMessageTooLong() from None
        ident = self.protocol.next_ident()
        label = flow_label(pkt.hash)
        for frag, offset, more in pieces:
            ipv6.build_fragment(frag.prepend(ipv6.FRAGMENT_HEADER_SIZE), transport, offset, more, ident)
            ipv6.build(frag.prepend(ipv6.HEADER_SIZE), src=src, dst=dst, next_header=ipv6.FRAGMENT,
                       payload_length=ipv6.FRAGMENT_HEADER_SIZE + len(frag.data), hop_limit=ttl,
                       traffic_class=tos, flow_label=label)
            frag.network_protocol = PROTOCOL_NUMBER
            self.send(route, frag)


def flow_label(flow_hash: int) -> int:
    """The flow label of a flow's hash (0: none), as Linux's ip6_make_flowlabel makes it (RFC 6437 §3): the
    hash turned by 16 bits, its low 20 bits (the top one not forced: net.ipv6.flowlabel_state_ranges is 0 by
    default)."""
    return (flow_hash << 16 | flow_hash >> 16) & 0xFFFFF


class IPv6Protocol(NetworkProtocol):
    number = PROTOCOL_NUMBER
    min_header_size = ipv6.HEADER_SIZE
    address_length = 16

    def __init__(self, stack) -> None:  # noqa: ANN001 - Stack (import cycle)
        super().__init__(stack)
        self._ident = secrets.randbelow(1 << 32)
        # netstack's AutoGenLinkLocal and MaxRtrSolicitations together: when False, an Ethernet NIC
        # gets no link-local address and solicits no router when enabled (IPv4-only networks whose
        # traffic must be reproducible frame for frame; RFC 4861 times those messages at random).
        self.autoconfigure = True
        # netstack's DupAddrDetectTransmits (Linux's dad_transmits): 0 uses an address at once, for
        # networks that hand out unique addresses themselves.
        self.dad_transmits = DUP_ADDR_DETECT_TRANSMITS
        self.reassembler: Reassembler[tuple[bytes, bytes, int]] = Reassembler(
            stack.timers, timeout=REASSEMBLY_TIMEOUT, on_timeout=self._reassembly_timed_out,
            stats=stack.stats().ip.reassembly)

    def new_endpoint(self, nic: NIC) -> IPv6Endpoint:
        return IPv6Endpoint(self, nic)

    def parse_addresses(self, view: memoryview) -> tuple[bytes, bytes]:
        return bytes(view[8:24]), bytes(view[24:40])

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFFFFFF
        return self._ident

    def _reassembly_timed_out(self, key: tuple[bytes, bytes, int], first: bytes | None) -> None:
        """RFC 8200 §4.5: time exceeded (reassembly), only if the first fragment had come."""
        self.stack.stats().ip.reassembly_failures.increment()
        nic = self.stack.local_address_nic(key[1])
        if first is None or nic is None:
            return
        hdr = ipv6.parse(first)
        if not hdr:
            return
        trigger = PacketBuffer.inbound(first)
        trigger.pkt_type = PacketType.HOST
        icmp.send_error(nic.network_endpoints[PROTOCOL_NUMBER], trigger, hdr,  # type: ignore[arg-type]
                        icmpv6.TIME_EXCEEDED, icmpv6.REASSEMBLY_TIMEOUT, 0, memoryview(first))
