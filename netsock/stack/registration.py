"""Base classes for protocols plugged into a Stack (netstack's registration.go)."""

from __future__ import annotations

import enum
import struct
from typing import TYPE_CHECKING, Any, ClassVar

from mypy_extensions import mypyc_attr

from ..header import ipv4, ipv6, tcp
from ..tcpip import (TCP_PROTOCOL_NUMBER, AddressWithPrefix, ErrBadLocalAddress, ErrNetworkUnreachable, Error,
                     ErrNotPermitted, ErrNotSupported, ErrUnknownProtocolOption, SockOpt)
from ..waiter import WaiterQueue
from .conntrack import is_error, packet_tuple
from .iptables import HEAD_SIZE, Accept, Drop, FilteredPacket, FilterTable, Hook, Reject, RejectWith
from .mangle import MangleTable
from .multicast import FilterState
from .nat import OUTPUT, POSTROUTING, PREROUTING, Connection, NatTable, TableFull, translate_datagram
from .packet_buffer import PacketBuffer

if TYPE_CHECKING:
    from .nic import NIC
    from .route import Route
    from .stack import Stack


class UnknownDestinationDisposition(enum.Enum):
    """What a transport did with a packet no endpoint claimed."""

    HANDLED = 0      # e.g. TCP answered with RST
    MALFORMED = 1    # bad header or checksum: counted, no ICMP error
    UNHANDLED = 2    # the network layer should send "port unreachable"


class ControlType(enum.Enum):
    """ICMP errors, as the network layer reports them to the transport endpoint they concern."""

    PORT_UNREACHABLE = "port unreachable"
    HOST_UNREACHABLE = "host unreachable"
    NET_UNREACHABLE = "network unreachable"
    NET_UNKNOWN = "network unknown or prohibited"   # unlike NET_UNREACHABLE, not transient (RFC 1122 §3.2.2.1)
    HOST_UNKNOWN = "host unknown"
    PROTOCOL_UNREACHABLE = "protocol unreachable"
    PACKET_TOO_BIG = "packet too big"
    TTL_EXCEEDED = "ttl exceeded"
    PARAMETER_PROBLEM = "parameter problem"
    PROHIBITED = "administratively prohibited"


_PORTS_SEQ_ACK = struct.Struct("!HHII")

# What a socket hears of its own packet rejected on OUTPUT (the ICMP error Linux loops back to it).
_REJECT_CONTROL = {RejectWith.PORT_UNREACHABLE: ControlType.PORT_UNREACHABLE,
                   RejectWith.HOST_UNREACHABLE: ControlType.HOST_UNREACHABLE,
                   RejectWith.NET_UNREACHABLE: ControlType.NET_UNREACHABLE,
                   RejectWith.ADMIN_PROHIBITED: ControlType.PROHIBITED}


@mypyc_attr(allow_interpreted_subclasses=True)     # (compiled, and the base of ARP's and IPv6's, which are not)
class NetworkEndpoint:
    """A network protocol's presence on one NIC."""

    def __init__(self, protocol: NetworkProtocol, nic: NIC) -> None:
        self.protocol = protocol
        self.nic = nic
        self.stack = protocol.stack
        self._ip_stats = protocol.stack.stats().ip     # counted for every packet sent

    def handle_packet(self, pkt: PacketBuffer) -> None:
        """An inbound packet whose data starts at this protocol's header."""
        raise NotImplementedError

    def write_packet(self, route: Route, transport: int, pkt: PacketBuffer, ttl: int, tos: int,
                     dont_fragment: bool = True, path_mtu: bool = True) -> None:
        raise ErrNotSupported()

    # --- the filter table (IPv4 and IPv6 set ``_filter``; they ask only while it is active) ----------

    _filter: FilterTable

    def _filter_check(self, hook: Hook, protocol: int, src: bytes, dst: bytes, length: int, head: Any,
                      out_nic: NIC | None = None, mark: int = 0) -> Accept | Reject | Any:
        """The table's verdict (Accept, Drop or Reject), a drop or reject counted at its hook."""
        packet = FilteredPacket(protocol, src, dst, length, bytes(head),
                                None if hook is Hook.OUTPUT else self.nic.name,
                                out_nic.name if out_nic is not None else None, mark)
        verdict = self._filter.check(hook, packet)
        if not isinstance(verdict, Accept):
            ip = self.stack.stats().ip
            (ip.iptables_input_dropped if hook is Hook.INPUT else ip.iptables_forward_dropped
             if hook is Hook.FORWARD else ip.iptables_output_dropped).increment()
        return verdict

    def _filter_input(self, pkt: PacketBuffer, protocol: int, src: bytes, dst: bytes, length: int,
                      reject: Any) -> bool:
        """INPUT: may ``pkt`` (its data the transport's) go on to the sockets? A reject is answered:
        a TCP reset as to a closed port, else ``reject(RejectWith)`` sends the ICMP error."""
        verdict = self._filter_check(Hook.INPUT, protocol, src, dst, length, pkt.data[:HEAD_SIZE], mark=pkt.mark)
        if isinstance(verdict, Accept):
            return True
        if isinstance(verdict, Reject):
            if verdict.with_ is RejectWith.TCP_RESET:
                tcp = self.stack.transport_protocols.get(TCP_PROTOCOL_NUMBER)
                if tcp is not None:
                    tcp.handle_unknown_destination_packet(self.nic, pkt, src, dst)
            else:
                reject(verdict.with_)
        return False

    def _local_out(self, route: Route, transport: int, pkt: PacketBuffer, length: int) -> tuple[Route, bytes, bytes]:
        """The hooks a transport's packet passes before the network header and any fragmentation, in
        Linux's order: the nat table's OUTPUT (a new destination, re-routed), the filter table's OUTPUT (a
        drop or reject raises), the nat table's POSTROUTING (a new source). The route, source and
        destination it leaves with (``length``: the whole packet's, network header included)."""
        src, dst = route.local_address, route.remote_address
        connection = None
        if self._nat.active:
            connection, route, dst = self._nat_output(route, transport, pkt, length)
        if self._filter.active:
            self.filter_output(route, transport, src, dst, length, _transport_head(pkt), pkt.mark)
        if connection is not None:
            src = self._nat_postrouting(connection, route, transport, pkt, length, src, dst)
        return route, src, dst

    def filter_output(self, route: Route, protocol: int, src: bytes, dst: bytes, length: int, head: Any,
                      mark: int = 0) -> None:
        """OUTPUT: a drop or reject fails the send with EPERM (Linux's ip_local_out); a reject also
        tells the sending socket its ICMP error. Raw sockets writing whole datagrams ask here too."""
        if not self._filter.active:
            return
        verdict = self._filter_check(Hook.OUTPUT, protocol, src, dst, length, head, route.nic, mark)
        if isinstance(verdict, Accept):
            return
        if isinstance(verdict, Reject):
            # Later, as the looped-back answer would come: not inside the sender's own call.
            if verdict.with_ is RejectWith.TCP_RESET:
                reset = self._reset_from(src, dst, head, length)
                if reset is not None:
                    self.stack.clock.call_soon(self.stack.deliver_local, route.nic, self.protocol.number, reset)
            else:
                self.stack.clock.call_soon(self.stack.deliver_transport_control_packet, route.nic,
                                           self.protocol.number, protocol, src, dst, _REJECT_CONTROL[verdict.with_],
                                           0, PacketBuffer.inbound(bytearray(head)))
        raise ErrNotPermitted()

    def reject_forwarded(self, verdict: Reject, src: bytes, dst: bytes, head: bytes, length: int,
                         send_icmp: Any) -> None:
        """FORWARD's REJECT: a TCP reset to the sender in the destination's name, as Linux's nf_send_reset
        (sent back the way the segment came, from the destination's address), else ``send_icmp(RejectWith)``."""
        if verdict.with_ is not RejectWith.TCP_RESET:
            send_icmp(verdict.with_)
            return
        reset = self._reset_from(src, dst, head, length)
        if reset is None:
            return
        try:
            route = self.stack.find_route(0, b"", src, self.protocol.number)
            self.send(route, PacketBuffer(route.max_header_length(), reset))
        except Error:
            pass    # (no way back, or the link refused it: counted where it failed)

    # --- the mangle table's PREROUTING (IPv4 and IPv6 set ``_mangle``; they ask only while it is active) ---

    _mangle: MangleTable

    def _steered(self, pkt: PacketBuffer, datagram: memoryview, l4: int, protocol: int, src: bytes, dst: bytes
                 ) -> tuple[bytes, int] | Drop | None:
        """Where TPROXY steers the arrived ``datagram`` (its transport header at ``l4``): the (address, port) a
        transparent socket for it may listen at; DROP (counted); or None, for the packet to go on as it is.
        The marks the rules set go on ``pkt``."""
        head = bytes(datagram[l4:l4 + HEAD_SIZE])
        packet = FilteredPacket(protocol, src, dst, len(datagram), head, self.nic.name, mark=pkt.mark)
        verdict = self._mangle.prerouting(packet)
        pkt.mark = packet.mark
        if verdict is None:
            return None
        if isinstance(verdict, Drop):
            self._ip_stats.iptables_prerouting_dropped.increment()
            return verdict
        port = verdict.port or int.from_bytes(head[2:4], "big")
        return verdict.address or self.nic.primary_address(self.protocol.number, src), port

    # --- the nat table (IPv4 and IPv6 set ``_nat``; they ask only while it is active) ----------------

    _nat: NatTable

    def _nat_arrived(self, pkt: PacketBuffer, datagram: memoryview, l4: int, protocol: int, src: bytes,
                     dst: bytes) -> tuple[Connection | None, memoryview | None] | None:
        """PREROUTING: the arrived ``datagram``'s connection (None: it has none, a fragment say) and the
        datagram with its destination translated (a copy; None: unchanged); None to drop it (connection
        tracking is full: counted). ``l4``: where its transport header starts."""
        head = bytes(datagram[l4:l4 + HEAD_SIZE])
        try:
            connection = self._nat_connection(protocol, src, dst, head)
        except TableFull:
            self._ip_stats.iptables_prerouting_dropped.increment()
            return None
        if connection is None:
            return None, None
        to = self._nat.destination(PREROUTING, connection,
                                   lambda: FilteredPacket(protocol, src, dst, len(datagram), head, self.nic.name,
                                                          mark=pkt.mark),
                                   lambda: self.nic.primary_address(self.protocol.number, src))
        return connection, translate_datagram(datagram, l4, protocol, None, to, _partial(pkt)) if to else None

    def _nat_source(self, hook: str, connection: Connection, pkt: PacketBuffer, datagram: memoryview, l4: int,
                    protocol: int, src: bytes, dst: bytes, out_nic: NIC | None = None) -> memoryview | None:
        """INPUT, or POSTROUTING of a forwarded datagram (leaving by ``out_nic``): the datagram with its
        source translated (a copy), or None if it keeps it."""
        number = self.protocol.number
        source = self._nat.source(hook, connection, lambda: FilteredPacket(
            protocol, src, dst, len(datagram), bytes(datagram[l4:l4 + HEAD_SIZE]), self.nic.name,
            out_nic.name if out_nic is not None else None, pkt.mark),
            lambda: out_nic.primary_address(number, dst) if out_nic is not None else b"")
        return translate_datagram(datagram, l4, protocol, source, None, _partial(pkt)) if source else None

    def _nat_output(self, route: Route, transport: int, pkt: PacketBuffer,
                    length: int) -> tuple[Connection | None, Route, bytes]:
        """OUTPUT of the nat table for a transport's packet (its header first in ``pkt.headers()``, the
        network header not yet there): its connection, the route to its destination and that destination,
        translated (the packet rewritten, and re-routed if it now goes elsewhere)."""
        src, dst = route.local_address, route.remote_address
        head = _transport_head(pkt)
        try:
            connection = self._nat_connection(transport, src, dst, head)
        except TableFull:       # dropped: the send fails as one the filter table drops
            self._ip_stats.iptables_output_dropped.increment()
            raise ErrNotPermitted() from None
        if connection is None:
            return None, route, dst
        to = self._nat.destination(OUTPUT, connection, lambda: FilteredPacket(
            transport, src, dst, length, head, None, route.nic.name, pkt.mark), lambda: b"")
        if to is None or not _translate_outbound(pkt, transport, src, dst, None, to):
            return connection, route, dst
        if to[0] != dst:
            route = self.stack.find_route(0, b"", to[0], self.protocol.number)     # Linux's ip_route_me_harder
        return connection, route, to[0]

    def _nat_postrouting(self, connection: Connection, route: Route, transport: int, pkt: PacketBuffer,
                         length: int, src: bytes, dst: bytes) -> bytes:
        """POSTROUTING of the nat table for a transport's packet (after ``_nat_output``): its source,
        translated (the packet rewritten)."""
        number = self.protocol.number
        source = self._nat.source(POSTROUTING, connection, lambda: FilteredPacket(
            transport, src, dst, length, _transport_head(pkt), None, route.nic.name, pkt.mark),
            lambda: route.nic.primary_address(number, dst))
        if source is None or not _translate_outbound(pkt, transport, src, dst, source, None):
            return src
        return source[0]

    def _nat_connection(self, protocol: int, src: bytes, dst: bytes, head: bytes) -> Connection | None:
        """The connection a packet meeting its first hook belongs to, or is an ICMP error about; TableFull if
        it is new and there is no room to track it."""
        key = packet_tuple(protocol, src, dst, head)
        if key is not None:
            return self._nat.connection(key, head)
        return self._nat.related(protocol, head) if is_error(protocol, head) else None

    def _reset_from(self, src: bytes, dst: bytes, head: bytes, length: int) -> bytes | None:
        """The TCP reset a REJECT --reject-with tcp-reset answers ``src``'s segment to ``dst`` with, as if
        ``dst`` answered it (Linux's nf_send_reset): IP header and RST, or None for a reset."""
        header_size = ipv4.MIN_SIZE if len(src) == 4 else ipv6.HEADER_SIZE
        if len(head) < tcp.MIN_SIZE or head[13] & tcp.RST:
            return None
        src_port, dst_port, seq, ack = _PORTS_SEQ_ACK.unpack_from(head)
        flags = head[13]
        occupied = length - header_size - (head[12] >> 4) * 4 + bool(flags & tcp.SYN) + bool(flags & tcp.FIN)
        reset = bytearray(tcp.MIN_SIZE)
        if flags & tcp.ACK:
            tcp.build(reset, src_port=dst_port, dst_port=src_port, seq=ack, ack=0, flags=tcp.RST, window=0)
        else:
            tcp.build(reset, src_port=dst_port, dst_port=src_port, seq=0, ack=(seq + occupied) & 0xFFFFFFFF,
                      flags=tcp.RST | tcp.ACK, window=0)
        tcp.set_checksum(reset, tcp.compute_checksum(dst, src, reset))
        ip = bytearray(header_size)
        if header_size == ipv4.MIN_SIZE:
            ipv4.build(ip, src=dst, dst=src, protocol=TCP_PROTOCOL_NUMBER, total_length=header_size + tcp.MIN_SIZE)
        else:
            ipv6.build(ip, src=dst, dst=src, next_header=TCP_PROTOCOL_NUMBER, payload_length=tcp.MIN_SIZE)
        return bytes(ip + reset)

    def send(self, route: Route, pkt: PacketBuffer) -> None:
        """Send a packet whose network header is complete; one for this stack loops straight back in."""
        ip_stats = self._ip_stats
        ip_stats.packets_sent.value += 1
        number = self.protocol.number
        if route.loop:
            self.stack.deliver_local(route.nic, number, pkt.to_bytes(), pkt.mark, pkt.gro)
            return
        try:
            route.nic.write_packet(route, number, pkt)
        except Error:
            ip_stats.outgoing_packet_errors.increment()
            raise

    def max_header_length(self) -> int:
        return self.nic.link.max_header_length()

    def mtu(self) -> int:
        return self.nic.link.mtu()

    def default_ttl(self) -> int:
        """TTL / hop limit for packets that ask for no particular one."""
        return self.stack.default_ttl

    def close(self) -> None:
        """The NIC is going away."""

    def on_enable(self) -> None:
        """The NIC came up (IPv6: link-local address, router solicitation)."""

    def on_address_added(self, address: AddressWithPrefix) -> None:
        """An address was assigned on this NIC (IPv6: duplicate address detection starts)."""

    def on_address_removed(self, address: bytes) -> None:
        """An address was removed from this NIC."""

    def on_group_changed(self, group: bytes, before: FilterState) -> None:
        """The interface state of ``group`` on this NIC (its members' filters merged) changed from ``before``
        (NO_STATE: the first member joined) to NIC.group_state's (NO_STATE: the last left): tell the routers
        (IGMP, MLD)."""


@mypyc_attr(allow_interpreted_subclasses=True)
class NetworkProtocol:
    """A network-layer protocol (IPv4, ARP ...). One instance per stack. Its numbers belong to the class
    (ClassVar: read from it too, which a compiled subclass's instance attributes could not be)."""

    number: ClassVar[int] = 0
    min_header_size: ClassVar[int] = 0
    address_length: ClassVar[int] = 0   # 0: carries no addresses of its own (ARP)

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def new_endpoint(self, nic: NIC) -> NetworkEndpoint:
        raise NotImplementedError

    def parse_addresses(self, view: memoryview) -> tuple[bytes, bytes]:
        """(source, destination) of a packet of this protocol, without validating it."""
        return b"", b""


@mypyc_attr(allow_interpreted_subclasses=True)
class TransportProtocol:
    """A transport protocol (UDP, ICMP echo, TCP). One instance per stack; its numbers, as NetworkProtocol's."""

    number: ClassVar[int] = 0
    min_header_size: ClassVar[int] = 0

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def new_endpoint(self, net_proto: int, waiter_queue: WaiterQueue) -> Any:
        raise NotImplementedError

    def header_length(self, view: memoryview) -> int:
        """Bytes of transport header at the front of ``view`` (what a reuseport program's offset 0 skips)."""
        return 0

    def parse_ports(self, view: memoryview) -> tuple[int, int] | None:
        """(source port, destination port), or None if the header is too short to have them."""
        raise NotImplementedError

    def handle_unknown_destination_packet(self, nic: NIC, pkt: PacketBuffer, src: bytes,
                                          dst: bytes) -> UnknownDestinationDisposition:
        return UnknownDestinationDisposition.UNHANDLED

    def set_option(self, option: SockOpt, value: Any) -> None:
        raise ErrUnknownProtocolOption()

    def get_option(self, option: SockOpt) -> Any:
        raise ErrUnknownProtocolOption()


def socket_route(stack: Any, nic: int, local: bytes, remote: bytes, net_proto: int, on_link: bool = False,
                 transparent: bool = False) -> Route:
    """``stack.find_route`` for a socket sending from the address it is bound to: one the stack does
    not have (bound with IP_FREEBIND, or removed since) makes the network unreachable, as Linux's
    route lookup answers a connect or send from it (for IPv6 Linux sends anyway; netsock does not
    send from an address it does not hold), but for a ``transparent`` socket (IP_TRANSPARENT), which
    sends from any. ``on_link`` (SO_DONTROUTE, MSG_DONTROUTE): no gateway."""
    try:
        route = stack.find_route(nic, local, remote, net_proto, transparent)
    except ErrBadLocalAddress:
        raise ErrNetworkUnreachable() from None
    if on_link:
        check_on_link(route)
    return route


def check_on_link(route: Route) -> None:
    """SO_DONTROUTE's rule as Linux's RTO_ONLINK applies it: an IPv4 destination behind a gateway is
    unreachable (Linux's IPv6 takes no notice of the flag, nor does netsock's)."""
    if len(route.remote_address) == 4 and not route.loop and route.next_hop != route.remote_address:
        raise ErrNetworkUnreachable()


@mypyc_attr(allow_interpreted_subclasses=True)
class TransportEndpoint:
    """What the demultiplexer delivers to: the inbound half of a transport endpoint."""

    __slots__ = ()

    def handle_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, src_port: int, dst_port: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """The stack is closing: end now and release ports, timers and registrations."""
        raise NotImplementedError

    def handle_control_packet(self, kind: ControlType, info: int, pkt: PacketBuffer) -> None:
        """An ICMP error about a packet this endpoint sent (``info``: MTU, pointer ...)."""


def _transport_head(pkt: PacketBuffer) -> bytes:
    """The first HEAD_SIZE bytes of an outbound transport packet (its header, then its payload)."""
    return (bytes(pkt.headers()) + bytes(pkt.data[:HEAD_SIZE]))[:HEAD_SIZE]


def _partial(pkt: PacketBuffer) -> bool:
    """Whether ``pkt``'s transport checksum is left for the device: the pseudo-header sum only."""
    return bool(pkt.gso_size or pkt.csum_offset)


def _translate_outbound(pkt: PacketBuffer, transport: int, src: bytes, dst: bytes, source: tuple[bytes, int] | None,
                        destination: tuple[bytes, int] | None) -> bool:
    """Rewrite a transport's outbound packet (its network header not yet there) as coming from ``source``
    and going to ``destination`` (None: as it does); False if that changes nothing."""
    headers = pkt.headers()
    stand_in = bytearray(ipv4.MIN_SIZE if len(src) == 4 else ipv6.HEADER_SIZE)    # for the addresses it carries
    if len(src) == 4:
        stand_in[0], stand_in[12:20] = 0x45, src + dst
    else:
        stand_in[0], stand_in[8:40] = 0x60, src + dst
    error = is_error(transport, bytes(headers[:1]))
    # An ICMP error's quote (its payload) is translated too; of other packets the header alone changes.
    payload = bytes(pkt.data) + b"".join(pkt.tail) if error else b""
    translated = translate_datagram(memoryview(stand_in + headers + payload), len(stand_in), transport, source,
                                    destination, _partial(pkt))
    if translated is None:
        return False
    headers[:] = translated[len(stand_in):len(stand_in) + len(headers)]
    if error:
        pkt.data, pkt.tail, pkt.tail_size = translated[len(stand_in) + len(headers):], (), 0
    return True
