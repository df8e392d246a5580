"""IPv4 (RFC 791, RFC 1122 host requirements): validation, local delivery, sending, ICMP.

Inbound, a packet is checked (structure, header checksum, options, source and destination
addresses) and either handed to the transport demultiplexer, answered (ICMP echo), or dropped with
the counter saying why. Outbound, the header is prepended in front of the transport's bytes and the
packet goes to the NIC, or straight back in when the destination is this stack.

Fragments are reassembled (with bounded memory, see ``network.fragmentation``) before delivery, and a
datagram larger than the route MTU is sent in fragments: this stack never sets DF.

With forwarding on (``Stack.set_forwarding``), a unicast packet for another host is routed as RFC 1812
and netstack's forwardUnicastPacket say: TTL decremented, fragmented or refused with "fragmentation
needed" when too big, ICMP errors for expired TTLs and missing routes, and never for addresses that
must not leave their link. Fragments in transit are forwarded as they are, never reassembled.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ...header import Malformed, icmpv4, ipv4
from ...header.checksum import complete_checksum
from ...header.gso import segments_to_forward, split_tcp
from ...header.igmp import PROTOCOL_NUMBER as IGMP_PROTOCOL_NUMBER
from ...tcpip import ICMPV4_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER, Error, ErrMessageTooLong, ErrNoBufferSpace
from ...stack.interfaces import LinkCapabilities, PacketType
from ...stack.iptables import HEAD_SIZE, REJECT_CODES, Accept, Drop, Hook, Reject
from ...stack.multicast import FilterState
from ...stack.nat import INPUT, POSTROUTING, Connection
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import NetworkEndpoint, NetworkProtocol, UnknownDestinationDisposition
from ..fragmentation import Reassembler, ReassemblyResult, fragment, split_packet
from . import icmp
from .igmp import IGMP, IGMPStats

if TYPE_CHECKING:
    from ...stack.nic import NIC
    from ...stack.route import Route

PROTOCOL_NUMBER = IPV4_PROTOCOL_NUMBER
_ALL_HOSTS = b"\xe0\x00\x00\x01"   # 224.0.0.1: every host is a member (RFC 1112)
_HOST, _BROADCAST, _MULTICAST = PacketType.HOST, PacketType.BROADCAST, PacketType.MULTICAST  # no Enum lookups
_FRAGMENT_BITS = ipv4.FLAG_MORE_FRAGMENTS | ipv4.FRAGMENT_OFFSET_MASK
REASSEMBLY_TIMEOUT = 30.0          # seconds, as Linux's ipfrag_time (RFC 1122 §3.3.2: 60 to 120 advised)


def is_martian_source(src: bytes) -> bool:
    """Sources no real packet has: multicast, class E, limited broadcast (RFC 1812 §5.3.7)."""
    return src[0] >= 224


def _is_link_local(addr: bytes) -> bool:
    """169.254.0.0/16 (RFC 3927)."""
    return addr[0] == 169 and addr[1] == 254


class IPv4Endpoint(NetworkEndpoint):
    def __init__(self, protocol: IPv4Protocol, nic: NIC) -> None:
        super().__init__(protocol, nic)
        self._ipv4 = protocol       # (``protocol``, as IPv4's: its fragment identifiers and reassembly)
        self._stats = self.stack.stats()
        self._filter = self.stack.iptables.ipv4
        self._nat = self.stack.iptables.ipv4_nat
        self._mangle = self.stack.iptables.ipv4_mangle
        self.igmp = IGMP(self, protocol.igmp_stats)
        self.forwarding = False              # route packets for other hosts (a router's interface)

    def max_header_length(self) -> int:
        return self.nic.link.max_header_length() + ipv4.MAX_SIZE

    def mtu(self) -> int:
        # The total length is a 16-bit field: a larger link MTU (a loopback's 65536) cannot be used.
        return min(self.nic.link.mtu(), ipv4.MAX_TOTAL_LENGTH)

    def on_enable(self) -> None:
        self.igmp.on_enable()

    def on_group_changed(self, group: bytes, before: FilterState) -> None:
        self.igmp.changed(group, before)

    def close(self) -> None:
        self.igmp.close()

    def set_forwarding(self, enabled: bool) -> bool:
        """Turn forwarding on this NIC on or off (netstack's ForwardingNetworkEndpoint); returns the
        previous setting."""
        previous, self.forwarding = self.forwarding, enabled
        return previous

    # --- inbound ----------------------------------------------------------------------------------

    def handle_packet(self, pkt: PacketBuffer) -> None:
        ip_stats = self._stats.ip
        ip_stats.packets_received.value += 1
        data = pkt.data
        hdr = ipv4.parse(data, pkt.gso_size > 0)
        if isinstance(hdr, Malformed):
            ip_stats.malformed_packets_received.increment()
            return
        hlen = hdr.header_length
        if not self.nic.rx_checksum_offload and not ipv4.checksum_valid(data, hlen):
            ip_stats.malformed_packets_received.increment()
            ip_stats.checksum_errors.increment()
            return
        # parse() checked header length <= total length <= len(data): trim the link's padding and
        # take the header off in place (PacketBuffer.trim and consume, without their calls).
        if hdr.total_length < len(data):
            data = data[:hdr.total_length]
        original = data                          # the whole datagram, for ICMP errors that quote it
        pkt.network_header = data[:hlen]
        pkt.data = data[hlen:]
        src, dst = hdr.src, hdr.dst
        if is_martian_source(src):
            ip_stats.invalid_addresses_received.increment()
            return
        steer: tuple[bytes, int] | None = None
        if self._mangle.active and not hdr.flags_fragment & _FRAGMENT_BITS:
            decision = self._steered(pkt, data, hlen, hdr.protocol, src, dst)
            if isinstance(decision, Drop):
                return
            steer = decision
        connection = None
        if self._nat.active and steer is None:
            if hdr.flags_fragment & _FRAGMENT_BITS:
                # Connections are tracked, and translated, whole: a fragment is reassembled first, one to be
                # forwarded too (Linux's nf_defrag_ipv4), and forwarding cuts the datagram again.
                reassembled = self._reassemble(pkt, hdr, original, whole=True)
                if reassembled is None:
                    return
                hdr, original = reassembled
                hlen = ipv4.MIN_SIZE
            arrived = self._nat_arrived(pkt, original, hlen, hdr.protocol, src, dst)
            if arrived is None:
                return
            connection, translated = arrived
            if translated is not None:
                original = translated
                hdr = self._take(pkt, translated)
                src, dst = hdr.src, hdr.dst
        if steer is not None:
            pkt.pkt_type = _HOST            # (TPROXY's packet is this host's, whatever its destination)
        elif not self._accepts(dst, pkt, src, hdr.protocol):
            if self.forwarding and not 224 <= dst[0] <= 239:   # no multicast routing
                self._forward(pkt, hdr, original, connection)
            else:
                ip_stats.invalid_addresses_received.increment()
            return
        # After _accepts classified the destination: no parameter problem about a broadcast.
        if hlen > ipv4.MIN_SIZE and not ipv4.options_valid(original[ipv4.MIN_SIZE:hlen]):
            ip_stats.malformed_packets_received.increment()
            icmp.send_error(self, pkt, hdr, icmpv4.PARAM_PROBLEM, 0, ipv4.MIN_SIZE << 24, original)
            return
        if hdr.flags_fragment & _FRAGMENT_BITS:    # hdr.is_fragment(), without a call per packet
            reassembled = self._reassemble(pkt, hdr, original)
            if reassembled is None:
                return
            hdr, original = reassembled
        proto = hdr.protocol
        if self._filter.active and not self._filter_input(
                pkt, proto, src, dst, hdr.total_length, lambda reject_with: icmp.send_error(
                    self, pkt, hdr, icmpv4.DST_UNREACHABLE, REJECT_CODES[reject_with][0], 0, original)):
            return
        if connection is not None:
            translated = self._nat_source(INPUT, connection, pkt, original, hlen, proto, src, dst)
            if translated is not None:
                original = translated
                hdr = self._take(pkt, translated)
                src = hdr.src
        # Raw sockets read the whole datagram (a reassembled one behind its first fragment's header,
        # without fragment fields or options: what ``original`` starts with then).
        raw_taken = False
        if self.stack.raw_endpoints:
            raw_taken = self.stack.deliver_raw_packet(self.nic, PROTOCOL_NUMBER, proto, pkt, src, dst,
                                                      original[:hdr.header_length])
        if proto == ICMPV4_PROTOCOL_NUMBER:
            ip_stats.packets_delivered.value += 1
            icmp.handle(self, pkt, hdr)
            return
        if proto == IGMP_PROTOCOL_NUMBER:
            ip_stats.packets_delivered.value += 1
            self.igmp.handle(pkt, hdr)
            return
        verdict = self.stack.deliver_transport_packet(self.nic, PROTOCOL_NUMBER, proto, pkt, src, dst, steer)
        if verdict is None:
            ip_stats.packets_delivered.value += 1
        elif verdict is UnknownDestinationDisposition.UNHANDLED:
            # send_error sends nothing about broadcast and multicast packets.
            if proto in self.stack.transport_protocols:
                icmp.send_error(self, pkt, hdr, icmpv4.DST_UNREACHABLE, icmpv4.PORT_UNREACHABLE, 0, original)
            elif raw_taken:     # a raw socket's protocol: no "protocol unreachable", as Linux
                ip_stats.packets_delivered.value += 1
            else:
                ip_stats.unknown_protocol_received.increment()
                icmp.send_error(self, pkt, hdr, icmpv4.DST_UNREACHABLE, icmpv4.PROTO_UNREACHABLE, 0, original)

    def _reassemble(self, pkt: PacketBuffer, hdr: ipv4.IPv4Header, original: memoryview,
                    whole: bool = False) -> tuple[ipv4.IPv4Header, memoryview] | None:
        """Hand a fragment (``original``: all of it) to the reassembler. Once the datagram is complete, it
        goes on as if it had come whole: ``pkt`` holds its payload, and this returns its header — without
        fragment fields or options, so that ICMP errors about it quote an unfragmented datagram (as Linux
        does) — and the datagram behind that header, all of it if ``whole``, else as much as an ICMP error
        quotes. None while fragments are missing (or the datagram was given up)."""
        ip_stats = self._stats.ip
        ip_stats.fragments_received.increment()
        offset = hdr.fragment_offset
        reassembler = self._ipv4.reassembler
        status, payload = reassembler.process(
            (hdr.src, hdr.dst, hdr.ident, hdr.protocol), offset, hdr.more_fragments, pkt.data,
            original[:hdr.header_length] if offset == 0 else None, hdr.total_length)
        if status is not ReassemblyResult.COMPLETE or payload is None:
            status.count(ip_stats)
            return None
        pkt.checksum_verified = False   # what the link vouched for was the last fragment alone
        pkt.frag_max_size = reassembler.completed_largest
        hdr = hdr._replace(header_length=ipv4.MIN_SIZE, total_length=ipv4.MIN_SIZE + len(payload), flags_fragment=0)
        header = bytearray(ipv4.MIN_SIZE)
        ipv4.build(header, src=hdr.src, dst=hdr.dst, protocol=hdr.protocol, total_length=hdr.total_length,
                   ttl=hdr.ttl, tos=hdr.tos, ident=hdr.ident)
        hdr = hdr._replace(checksum=int.from_bytes(header[10:12], "big"))
        if whole:
            datagram = memoryview(bytes(header) + payload)
            pkt.network_header, pkt.data = datagram[:ipv4.MIN_SIZE], datagram[ipv4.MIN_SIZE:]
            return hdr, datagram
        pkt.data = memoryview(payload)
        return hdr, memoryview(bytes(header) + payload[:icmp.MAX_ERROR_SIZE])

    def _take(self, pkt: PacketBuffer, datagram: memoryview) -> ipv4.IPv4Header:
        """Go on with ``datagram`` (translated by the nat table) in place of the packet's: its header."""
        hdr = ipv4.parse(datagram, pkt.gso_size > 0)
        assert not isinstance(hdr, Malformed)
        pkt.network_header = datagram[:hdr.header_length]
        pkt.data = datagram[hdr.header_length:]
        return hdr

    def _accepts(self, dst: bytes, pkt: PacketBuffer, src: bytes, proto: int) -> bool:
        """Is ``dst`` for us? Sets pkt.pkt_type to HOST, BROADCAST or MULTICAST accordingly. A group's packet
        must come from a source its members' filters let through, but IGMP's (Linux's ip_check_mc_rcu)."""
        nic = self.nic
        if nic.has_address(PROTOCOL_NUMBER, dst) or self.stack.local_address_nic(dst) is not None:
            pkt.pkt_type = _HOST
            return True
        if dst == b"\xff\xff\xff\xff" or nic.is_subnet_broadcast(PROTOCOL_NUMBER, dst):
            pkt.pkt_type = _BROADCAST
            return True
        if 224 <= dst[0] <= 239:
            pkt.pkt_type = _MULTICAST
            if proto == IGMP_PROTOCOL_NUMBER:
                return dst == _ALL_HOSTS or nic.is_in_group(PROTOCOL_NUMBER, dst)
            return dst == _ALL_HOSTS or nic.group_allows(PROTOCOL_NUMBER, dst, src)
        if nic.promiscuous or (nic.loopback and dst[0] == 127):
            pkt.pkt_type = _HOST
            return True
        return False

    # --- forwarding -------------------------------------------------------------------------------

    def _forward(self, pkt: PacketBuffer, hdr: ipv4.IPv4Header, original: memoryview,
                 connection: Connection | None = None) -> None:
        """Route a datagram for another host (``original``: all of it, header first) out of the NIC
        the route table picks, or drop it with the counter and the ICMP error that say why;
        ``connection``: its own, if the nat table tracks it."""
        ip_stats = self._stats.ip
        fwd = ip_stats.forwarding
        src, dst = hdr.src, hdr.dst
        if (pkt.pkt_type != PacketType.HOST or dst[0] in (0, 127) or src[0] == 127
                or self.stack.local_address_nic(src) is not None):
            # Not a link-layer unicast to us (RFC 1812 §5.3.4), or a martian: loopback, "this network"
            # as destination, or our own address as source (a loop, or a forgery).
            ip_stats.invalid_addresses_received.increment()
            return
        if src[0] == 0:
            fwd.fail(fwd.initializing_source)       # RFC 6890 §2.2.2: 0.0.0.0/8 is not forwardable
            return
        if _is_link_local(src):                     # RFC 3927 §7: a router MUST NOT forward these
            fwd.fail(fwd.link_local_source)
            return
        if _is_link_local(dst):
            fwd.fail(fwd.link_local_destination)
            return
        hlen = hdr.header_length
        if hlen > ipv4.MIN_SIZE and not ipv4.options_valid(original[ipv4.MIN_SIZE:hlen]):
            ip_stats.malformed_packets_received.increment()
            icmp.send_error(self, pkt, hdr, icmpv4.PARAM_PROBLEM, 0, ipv4.MIN_SIZE << 24, original)
            return
        if pkt.csum_offset:                         # the kernel left it partial: whole before it leaves
            complete_checksum(original, hlen, pkt.csum_offset)
            pkt.csum_offset = 0
        if hdr.ttl <= 1:                            # RFC 1812 §5.3.1: it would leave with TTL 0
            icmp.send_error(self, pkt, hdr, icmpv4.TIME_EXCEEDED, icmpv4.TTL_EXCEEDED, 0, original)
            fwd.fail(fwd.exhausted_ttl)
            return
        try:
            route = self.stack.find_route(0, b"", dst, PROTOCOL_NUMBER)
        except Error:
            icmp.send_error(self, pkt, hdr, icmpv4.DST_UNREACHABLE, icmpv4.NET_UNREACHABLE, 0, original)
            fwd.fail(fwd.unrouteable)
            return
        if route.broadcast:
            # A directed broadcast to one of our subnets: not forwarded (RFC 2644, Linux's bc_forwarding=0).
            ip_stats.invalid_addresses_received.increment()
            return
        if self._filter.active:
            head = b"" if hdr.flags_fragment & _FRAGMENT_BITS else original[hlen:hlen + HEAD_SIZE]
            verdict = self._filter_check(Hook.FORWARD, hdr.protocol, src, dst, hdr.total_length, head, route.nic,
                                         pkt.mark)
            if not isinstance(verdict, Accept):
                if isinstance(verdict, Reject):
                    self.reject_forwarded(verdict, src, dst, bytes(head), hdr.total_length,
                                          lambda with_: icmp.send_error(self, pkt, hdr, icmpv4.DST_UNREACHABLE,
                                                                        REJECT_CODES[with_][0], 0, original))
                return
        if connection is not None:
            translated = self._nat_source(POSTROUTING, connection, pkt, original, hlen, hdr.protocol, src, dst,
                                          route.nic)
            if translated is not None:
                original = translated
                hdr = ipv4.parse(translated, pkt.gso_size > 0)     # type: ignore[assignment]
        if pkt.gso_size:
            self._forward_super_segment(route, pkt, hdr, original)
        else:
            self._forward_datagram(route, pkt, hdr, original)

    def _forward_datagram(self, route: Route, pkt: PacketBuffer, hdr: ipv4.IPv4Header, original: memoryview,
                          gso_size: int = 0) -> None:
        """Send on a datagram that may be forwarded, TTL one less: whole, fragmented, or refused
        (frag-needed) if it is larger than the next hop's MTU; a super-segment (``gso_size``) whose
        pieces fit is sent whole, for the link to cut."""
        fwd = self._stats.ip.forwarding
        mtu = route.mtu()
        if hdr.total_length > mtu and not gso_size:
            if hdr.dont_fragment:                   # RFC 1191: tell the sender the next hop's MTU
                icmp.send_error(self, pkt, hdr, icmpv4.DST_UNREACHABLE, icmpv4.FRAG_NEEDED, mtu, original)
                fwd.fail(fwd.packet_too_big)
                return
            self._forward_fragments(route, hdr, original, mtu)
            return
        hlen = hdr.header_length
        out = PacketBuffer(route.max_header_length(), original[hlen:])
        out.gso_size = gso_size
        header = out.prepend(hlen)
        header[:] = original[:hlen]
        header[8] = hdr.ttl - 1
        # RFC 1624: the TTL/protocol word fell by 0x0100, so the checksum rises by as much (one's complement).
        csum = hdr.checksum + 0x0100
        csum = (csum & 0xFFFF) + (csum >> 16)
        header[10] = csum >> 8
        header[11] = csum & 0xFF
        out.network_protocol = PROTOCOL_NUMBER
        self._send_forwarded(route, [out])

    def _forward_super_segment(self, route: Route, pkt: PacketBuffer, hdr: ipv4.IPv4Header,
                               original: memoryview) -> None:
        """A TCP super-segment received whole (from a TUN with offloads, or coalesced by link.gro)
        stands for its wire segments: it leaves whole if the next hop's link cuts (GSO) and they fit
        its MTU; otherwise it is cut here and each piece forwarded as if it had come alone. One over
        64 KB (merged by the link: BIG TCP) is first cut into 64 KB ones, which any link takes."""
        try:
            if len(original) > ipv4.MAX_TOTAL_LENGTH:
                for piece in split_tcp(original, pkt.gso_size, ipv4.MAX_TOTAL_LENGTH):
                    view = memoryview(piece)
                    self._forward_super_segment(route, pkt, ipv4.parse(view), view)  # type: ignore[arg-type]
                return
            pieces = segments_to_forward(original, hdr.header_length, pkt.gso_size, route.mtu(),
                                         bool(route.nic.link.capabilities() & LinkCapabilities.HARDWARE_GSO))
        except ValueError:                          # not a TCP packet after all
            self._stats.ip.malformed_packets_received.increment()
            return
        if pieces is None:
            self._forward_datagram(route, pkt, hdr, original, pkt.gso_size)
            return
        for piece in pieces:
            view = memoryview(piece)
            piece_header = ipv4.parse(view)
            assert not isinstance(piece_header, Malformed)     # (cut from a datagram that parsed)
            self._forward_datagram(route, pkt, piece_header, view)

    def _forward_fragments(self, route: Route, hdr: ipv4.IPv4Header, original: memoryview, mtu: int) -> None:
        """RFC 791 fragmentation of a datagram in transit (itself perhaps a fragment): the first piece
        keeps every option, the others only those flagged "copied"; payloads are views of ``original``."""
        fwd = self._stats.ip.forwarding
        hlen = hdr.header_length
        payload = original[hlen:]
        base = hdr.fragment_offset
        if base + len(payload) > ipv4.MAX_TOTAL_LENGTH - ipv4.MIN_SIZE:
            self._stats.ip.malformed_fragments_received.increment()   # its pieces' offsets would overflow
            return
        try:
            cuts = fragment(len(payload), hlen, mtu)
        except ValueError:                          # a route MTU too small for this header
            fwd.fail(fwd.packet_too_big)
            return
        options = bytes(original[ipv4.MIN_SIZE:hlen])
        parsed = ipv4.parse_options(options) if options else []         # validated by _forward
        assert not isinstance(parsed, Malformed)
        copied = ipv4.encode_options([o for o in parsed if o[0] & 0x80]) if parsed else b""
        reserve = route.max_header_length()
        pieces = []
        for offset, length, more in cuts:
            piece = PacketBuffer(reserve, payload[offset:offset + length])
            piece_options = options if offset == 0 else copied
            flags = (base + offset) >> 3 | (ipv4.FLAG_MORE_FRAGMENTS if more or hdr.more_fragments else 0)
            ipv4.build(piece.prepend(ipv4.MIN_SIZE + len(piece_options)), src=hdr.src, dst=hdr.dst,
                       protocol=hdr.protocol, total_length=ipv4.MIN_SIZE + len(piece_options) + length,
                       ttl=hdr.ttl - 1, tos=hdr.tos, ident=hdr.ident, flags_fragment=flags, options=piece_options)
            piece.network_protocol = PROTOCOL_NUMBER
            pieces.append(piece)
        self._send_forwarded(route, pieces)

    def _send_forwarded(self, route: Route, pieces: list[PacketBuffer]) -> None:
        """Send a forwarded datagram (in one piece or several) through the outgoing NIC, which resolves
        the next hop's link address as for our own packets."""
        fwd = self._stats.ip.forwarding
        try:
            for piece in pieces:
                route.network_endpoint.send(route, piece)
        except ErrNoBufferSpace:
            fwd.fail(fwd.outgoing_device_no_buffer_space)
        except Error:
            fwd.errors.increment()
        else:
            fwd.packets_forwarded.increment()

    # --- outbound ---------------------------------------------------------------------------------

    def write_packet(self, route: Route, transport: int, pkt: PacketBuffer, ttl: int, tos: int,
                     dont_fragment: bool = True, path_mtu: bool = True) -> None:
        total = pkt.size() + ipv4.MIN_SIZE
        src, dst = route.local_address, route.remote_address
        if self._nat.active or self._filter.active:
            route, src, dst = self._local_out(route, transport, pkt, total)
        if not pkt.gso_size:        # a super-segment is cut by the link, not fragmented
            mtu = route.mtu(path_mtu)
            if total > mtu:
                self._write_fragments(route, transport, pkt, ttl, tos, mtu, src, dst)
                return
        hdr = pkt.prepend(ipv4.MIN_SIZE)
        if total > ipv4.MAX_TOTAL_LENGTH:
            # A BIG TCP super-segment (the link's gso_max_size allowed it): the length field says 0
            # and the packet's own length counts, as Linux's iph_totlen() reads it (Linux 6.3).
            total = 0
        ipv4.build(hdr, src=src, dst=dst, protocol=transport,
                   total_length=total, ttl=ttl, tos=tos, ident=self._ipv4.next_ident(),
                   flags_fragment=ipv4.FLAG_DONT_FRAGMENT if dont_fragment else 0)
        pkt.network_protocol = PROTOCOL_NUMBER
        self.send(route, pkt)

    def _write_fragments(self, route: Route, transport: int, pkt: PacketBuffer, ttl: int, tos: int,
                         mtu: int, src: bytes, dst: bytes) -> None:
        """RFC 791 fragmentation: the datagram copied once, each fragment a view of it behind its own header."""
        try:
            pieces = split_packet(pkt, ipv4.MIN_SIZE, mtu, ipv4.MAX_TOTAL_LENGTH - ipv4.MIN_SIZE,
                                  self.max_header_length())
        except ValueError:
            self._stats.ip.outgoing_packet_errors.increment()
            raise ErrMessageTooLong() from None
        ident = self._ipv4.next_ident()
        for frag, offset, more in pieces:
            ipv4.build(frag.prepend(ipv4.MIN_SIZE), src=src, dst=dst, protocol=transport,
                       total_length=ipv4.MIN_SIZE + len(frag.data), ttl=ttl, tos=tos, ident=ident,
                       flags_fragment=offset >> 3 | (ipv4.FLAG_MORE_FRAGMENTS if more else 0))
            frag.network_protocol = PROTOCOL_NUMBER
            self.send(route, frag)


class IPv4Protocol(NetworkProtocol):
    number = PROTOCOL_NUMBER
    min_header_size = ipv4.MIN_SIZE
    address_length = 4

    def __init__(self, stack) -> None:  # noqa: ANN001 - Stack (import cycle)
        super().__init__(stack)
        self._ident = secrets.randbelow(1 << 16)
        self.igmp_stats = IGMPStats()
        self.reassembler: Reassembler[tuple[bytes, bytes, int, int]] = Reassembler(
            stack.timers, timeout=REASSEMBLY_TIMEOUT, max_payload=ipv4.MAX_TOTAL_LENGTH - ipv4.MIN_SIZE,
            max_fragments_per_datagram=128,   # a 64 KB datagram over a 576-byte path takes 119
            on_timeout=self._reassembly_timed_out, stats=stack.stats().ip.reassembly)

    def new_endpoint(self, nic: NIC) -> IPv4Endpoint:
        return IPv4Endpoint(self, nic)

    def parse_addresses(self, view: memoryview) -> tuple[bytes, bytes]:
        return bytes(view[12:16]), bytes(view[16:20])

    def _reassembly_timed_out(self, key: tuple[bytes, bytes, int, int], first_fragment: bytes | None) -> None:
        """RFC 792, RFC 1122 §3.3.2: time exceeded (reassembly), only if the first fragment came.

        Only about a datagram to one of our unicast addresses: none about broadcast or multicast.
        """
        self.stack.stats().ip.reassembly_failures.increment()
        nic = self.stack.local_address_nic(key[1])
        if first_fragment is None or nic is None:
            return
        hdr = ipv4.parse(first_fragment)      # validated when it arrived
        if not hdr:
            return
        ep = nic.network_endpoints[PROTOCOL_NUMBER]
        trigger = PacketBuffer.inbound(first_fragment)
        trigger.pkt_type = PacketType.HOST
        icmp.send_error(ep, trigger, hdr, icmpv4.TIME_EXCEEDED,  # type: ignore[arg-type]
                        icmpv4.REASSEMBLY_TIMEOUT, 0, memoryview(first_fragment))

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident
