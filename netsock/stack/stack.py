"""The Stack: NICs, addresses, routes, protocols and the glue between them (netstack's stack.Stack)."""

from __future__ import annotations

import secrets
from collections import deque
from typing import Any, Iterable

from ..ports import PortManager
from ..tcpip import (ICMPV4_PROTOCOL_NUMBER, AddressWithPrefix, ErrBadLocalAddress, ErrDuplicateNICID,
                     ErrNetworkUnreachable, ErrNotSupported, ErrUnknownNICID, ErrUnknownProtocol, ProtocolAddress,
                     SockOpt, Stats, Subnet, address_str)
from ..tcpip import Route as RouteEntry
from ..waiter import WaiterQueue
from .clock import Clock, TimerQueue
from .demux import EndpointGroup, TransportDemuxer
from .interfaces import LinkCapabilities, LinkEndpoint, PacketType
from .iptables import IPTables
from .nic import NIC
from .packet_buffer import PacketBuffer
from .ratelimit import ICMPRateLimiter
from .registration import NetworkProtocol, TransportEndpoint, TransportProtocol, UnknownDestinationDisposition
from .route import PathMTUCache, Route

DEFAULT_TTL = 64
_GROUP_DELIVERY = (PacketType.BROADCAST, PacketType.MULTICAST)   # a copy to every member (fetched once: per packet)
_ROUTE_CACHE_SIZE = 1024


class Stack:
    """A network stack.

    ``Stack([IPv4Protocol, ARPProtocol], [UDPProtocol, ICMPv4Protocol])`` creates one with those
    protocols; then ``create_nic``, ``add_address`` and ``set_route_table`` configure it and
    ``new_endpoint`` makes sockets. Without a ``clock`` it runs on the gevent hub.
    """

    def __init__(self, network_protocols: Iterable[type[NetworkProtocol]],
                 transport_protocols: Iterable[type[TransportProtocol]] = (), clock: Clock | None = None,
                 handle_local: bool = True, default_ttl: int = DEFAULT_TTL) -> None:
        if clock is None:
            from ..scheduler import GeventClock
            clock = GeventClock()
        self.clock = clock
        self.timers = TimerQueue(clock)
        self._stats = Stats()
        self.ports = PortManager()
        self.demux = TransportDemuxer()
        self.iptables = IPTables(clock.now)     # the filter tables the network layers consult (netstack's IPTables)
        # Raw endpoints by (network protocol, transport protocol): empty, the network layers skip raw
        # delivery with one test per packet.
        self.raw_endpoints: dict[tuple[int, int], list[Any]] = {}
        # Packet endpoints by EtherType (ETH_P_ALL: every one): empty, NICs skip them with one test per frame.
        # Changed in place, never replaced: every NIC holds it.
        self.packet_endpoints: dict[int, list[Any]] = {}
        # Queues of datagrams held for later (SO_TXTIME, pacing) while they hold any: what an exit waits for.
        self.held_datagrams: set[Any] = set()
        # UDP sockets with UDP_GRO on: while there is none, links do not mark the UDP flows of their batches.
        self.udp_gro_sockets = 0
        # find_route's answers by (nic, local, remote, protocol): a listener resolves a route for
        # every SYN. Emptied by every change that can alter an answer (``_routing_changed``).
        self._routes: dict[tuple[int, bytes, bytes, int], Route] = {}
        # Every NIC's set of tentative IPv6 addresses: duplicate address detection makes them usable
        # without telling the stack, so no answer is cached (or served) while any is tentative.
        self._tentative: list[set[bytes]] = []
        self._handle_local = handle_local
        self.default_ttl = default_ttl
        self.secret = secrets.token_bytes(32)   # keys ISNs, SYN cookies, hashes
        self.icmp_rate_limiter = ICMPRateLimiter(clock.now)
        self.path_mtu = PathMTUCache(clock.now)
        self.nics: dict[int, NIC] = {}
        self._forwarding_default: set[int] = set()   # network protocols that NICs created later forward
        self._route_table: list[RouteEntry] = []
        self._local_addresses: dict[bytes, NIC] = {}
        # A loopback NIC owns the whole subnet of each of its addresses (Linux: 127.0.0.0/8 is local).
        self._loopback_subnets: list[tuple[Subnet, NIC]] = []
        self._local_queue: deque[tuple[NIC, int, bytes, int, tuple[object, int, int] | None]] = deque()
        self._delivering_local = False
        # Said in the message of every "network unreachable" error (a private network explains itself).
        self.unreachable_note: str | None = None
        # State that higher layers keep per stack (the adapter's resolver), so that it dies with the stack.
        self.extensions: dict[str, object] = {}
        self.network_protocols: dict[int, NetworkProtocol] = {}
        for factory in network_protocols:
            proto = factory(self)
            self.network_protocols[proto.number] = proto
        self.transport_protocols: dict[int, TransportProtocol] = {}
        for factory in transport_protocols:
            tproto = factory(self)
            self.transport_protocols[tproto.number] = tproto

    def stats(self) -> Stats:
        return self._stats

    @property
    def handle_local(self) -> bool:
        """Whether packets to this stack's own addresses loop back inside it (else they go out)."""
        return self._handle_local

    @handle_local.setter
    def handle_local(self, enable: bool) -> None:
        self._handle_local = enable
        self._routing_changed()

    # --- NICs -------------------------------------------------------------------------------------

    def create_nic(self, nic_id: int, link: LinkEndpoint, name: str | None = None, enabled: bool = True) -> NIC:
        if nic_id in self.nics:
            raise ErrDuplicateNICID()
        nic = NIC(self, nic_id, name or f"nic{nic_id}", link)
        self.nics[nic_id] = nic
        self._tentative = [n.tentative for n in self.nics.values()]
        self._routing_changed()
        for protocol in self._forwarding_default:
            nic.set_forwarding(protocol, True)
        if enabled:
            self.enable_nic(nic_id)
        return nic

    def remove_nic(self, nic_id: int) -> None:
        nic = self._nic(nic_id)
        for addr in [a for a, n in self._local_addresses.items() if n is nic]:
            del self._local_addresses[addr]
        self._route_table = [r for r in self._route_table if r.nic != nic_id]
        nic.close()
        del self.nics[nic_id]
        self._tentative = [n.tentative for n in self.nics.values()]
        self._update_loopback_subnets()
        self._routing_changed()

    def enable_nic(self, nic_id: int) -> None:
        nic = self._nic(nic_id)
        if not nic.enabled:
            nic.enabled = True
            self._routing_changed()
            for ep in nic.network_endpoints.values():
                ep.on_enable()

    def disable_nic(self, nic_id: int) -> None:
        self._nic(nic_id).enabled = False
        self._routing_changed()

    def set_promiscuous_mode(self, nic_id: int, enable: bool) -> None:
        """Accept packets to any destination address on this NIC (netstack: for transparent proxies)."""
        self._nic(nic_id).promiscuous = enable

    def set_spoofing(self, nic_id: int, enable: bool) -> None:
        """Allow sending from addresses the NIC does not own."""
        self._nic(nic_id).spoofing = enable
        self._routing_changed()

    # --- forwarding (routing for other hosts) -------------------------------------------------------

    def set_forwarding(self, protocol: int, enable: bool) -> None:
        """Forward ``protocol`` (IPv4, IPv6) on every NIC, and on those created later (netstack's
        SetForwardingDefaultAndAllNICs). Off by default: a stack is a host until told to route."""
        proto = self.network_protocols.get(protocol)
        if proto is None:
            raise ErrUnknownProtocol()
        if not proto.address_length:     # ARP: nothing to route by
            raise ErrNotSupported()
        for nic in self.nics.values():
            nic.set_forwarding(protocol, enable)
        if enable:
            self._forwarding_default.add(protocol)
        else:
            self._forwarding_default.discard(protocol)

    def forwarding(self, protocol: int) -> bool:
        """Do NICs created from now on forward ``protocol``?"""
        return protocol in self._forwarding_default

    def set_nic_forwarding(self, nic_id: int, protocol: int, enable: bool) -> bool:
        """Forward ``protocol`` arriving on one NIC (netstack's SetNICForwarding); returns the previous
        setting. A packet is forwarded if the NIC it arrives on forwards; the outgoing one need not."""
        return self._nic(nic_id).set_forwarding(protocol, enable)

    def nic_forwarding(self, nic_id: int, protocol: int) -> bool:
        return self._nic(nic_id).forwarding(protocol)

    def nic_by_name(self, name: str) -> NIC | None:
        return next((n for n in self.nics.values() if n.name == name), None)

    def _nic(self, nic_id: int) -> NIC:
        try:
            return self.nics[nic_id]
        except KeyError:
            raise ErrUnknownNICID() from None

    # --- addresses --------------------------------------------------------------------------------

    def add_address(self, nic_id: int, protocol: int, address: AddressWithPrefix | str) -> None:
        if isinstance(address, str):
            address = AddressWithPrefix.parse(address)
        if protocol not in self.network_protocols:
            raise ErrUnknownProtocol()
        nic = self._nic(nic_id)
        nic.add_address(protocol, address)
        self._local_addresses[bytes(address.address)] = nic
        self._update_loopback_subnets()
        self._routing_changed()

    def add_protocol_address(self, nic_id: int, address: ProtocolAddress) -> None:
        self.add_address(nic_id, address.protocol, address.address_with_prefix)

    def remove_address(self, nic_id: int, address: bytes) -> None:
        nic = self._nic(nic_id)
        if not nic.remove_address(address):
            raise ErrBadLocalAddress()
        self._local_addresses.pop(bytes(address), None)
        self._update_loopback_subnets()
        self._routing_changed()

    def _update_loopback_subnets(self) -> None:
        self._loopback_subnets = [(a.subnet(), nic) for nic in self.nics.values()
                                  if nic.link.capabilities() & LinkCapabilities.LOOPBACK
                                  for addresses in nic.addresses.values() for a in addresses]

    def all_addresses(self) -> dict[int, list[ProtocolAddress]]:
        return {nic.id: [ProtocolAddress(proto, a) for proto, addrs in nic.addresses.items() for a in addrs]
                for nic in self.nics.values()}

    def local_address_nic(self, address: bytes) -> NIC | None:
        """The NIC owning ``address``, if this stack has it: assigned to it, or in a loopback NIC's
        subnet (but for an IPv4 subnet's broadcast address)."""
        nic = self._local_addresses.get(address)
        if nic is None and self._loopback_subnets:
            nic = next((n for subnet, n in self._loopback_subnets
                        if subnet.contains(address) and not (len(address) == 4 and subnet.is_broadcast(address))),
                       None)
        return nic

    # --- routes -----------------------------------------------------------------------------------

    def set_route_table(self, routes: Iterable[RouteEntry]) -> None:
        self._route_table = list(routes)
        self._routing_changed()

    def get_route_table(self) -> list[RouteEntry]:
        return list(self._route_table)

    def add_route(self, route: RouteEntry) -> None:
        self._route_table.append(route)
        self._routing_changed()

    def remove_route(self, route: RouteEntry) -> None:
        """Remove every row equal to ``route``."""
        self._route_table = [r for r in self._route_table if r != route]
        self._routing_changed()

    def _routing_changed(self) -> None:
        """Forget every cached route: the table, a NIC or an address changed."""
        self._routes.clear()

    def find_route(self, nic_id: int, local: bytes, remote: bytes, net_proto: int, any_source: bool = False) -> Route:
        """Resolve how to send from ``local`` (b'' = choose) to ``remote`` over protocol ``net_proto``.

        Longest-prefix match over the route table (ties: table order); ``nic_id`` 0 means any NIC.
        Raises ErrNetworkUnreachable when nothing matches and ErrBadLocalAddress when ``local`` is not
        an address of the chosen NIC — unless ``any_source`` (a transparent socket's: Linux's
        FLOWI_FLAG_ANYSRC), which sends from any address. Answers are cached until the routing state
        changes (failures are not: each is counted); a Route is immutable, so callers may share one.
        """
        key = (nic_id, local, remote, net_proto, any_source)
        route = self._routes.get(key)
        if route is not None and not any(self._tentative):
            return route
        route = self._resolve_route(nic_id, local, remote, net_proto, any_source)
        if not any(self._tentative):
            routes = self._routes
            if len(routes) >= _ROUTE_CACHE_SIZE:
                del routes[next(iter(routes))]      # the oldest: a cache, not a table of every peer
            routes[key] = route
        return route

    def _resolve_route(self, nic_id: int, local: bytes, remote: bytes, net_proto: int, any_source: bool) -> Route:
        proto = self.network_protocols.get(net_proto)
        if proto is None:
            raise ErrUnknownProtocol()
        if self._handle_local and remote:
            owner = self.local_address_nic(remote)
            if owner is not None and owner.enabled and (not nic_id or nic_id == owner.id):
                if local and local != remote and not any_source and self.local_address_nic(local) is None:
                    raise ErrBadLocalAddress()
                return Route(local or remote, remote, remote, owner, net_proto, loop=True)
        limited_broadcast = remote == b"\xff\xff\xff\xff"
        multicast = bool(remote) and (224 <= remote[0] <= 239 if len(remote) == 4 else remote[0] == 0xFF)
        if not nic_id and len(remote) == 16 and (remote[0] == 0xFE and remote[1] & 0xC0 == 0x80):
            # A link-local destination names no link; without a scope, use the first NIC that has
            # a link-local address of its own.
            nic_id = next((n.id for n in self.nics.values() if n.enabled and any(
                a.address[0] == 0xFE and a.address[1] & 0xC0 == 0x80 for a in n.addresses.get(net_proto, ()))), 0)
            if nic_id:
                nic = self.nics[nic_id]
                src = local or nic.primary_address(net_proto, remote)
                if src:
                    return Route(src, remote, remote, nic, net_proto)
        best: RouteEntry | None = None
        for row in self._route_table:
            if nic_id and row.nic != nic_id:
                continue
            if not (row.destination.contains(remote) or ((limited_broadcast or multicast) and nic_id)):
                continue
            nic = self.nics.get(row.nic)
            if nic is None or not nic.enabled or net_proto not in nic.network_endpoints:
                continue
            if local and not (nic.spoofing or any_source) and not nic.has_address(net_proto, local):
                continue
            if not local and not nic.primary_address(net_proto, remote):
                continue
            if best is None or row.destination.prefix() > best.destination.prefix():
                best = row
        if best is None:
            if nic_id and (limited_broadcast or multicast):
                nic = self._nic(nic_id)
                src = local or nic.primary_address(net_proto)
                return Route(src, remote, remote, nic, net_proto, broadcast=limited_broadcast, multicast=multicast)
            if local and self.local_address_nic(local) is None:
                raise ErrBadLocalAddress()
            self._stats.ip.no_route.increment()
            raise ErrNetworkUnreachable(f"no route to {address_str(remote) if remote else '(none)'}",
                                        self.unreachable_note)
        nic = self.nics[best.nic]
        src = local or nic.primary_address(net_proto, remote)
        broadcast = limited_broadcast or nic.is_subnet_broadcast(net_proto, remote)
        next_hop = remote if (broadcast or multicast or not best.gateway) else best.gateway
        return Route(src, remote, next_hop, nic, net_proto, broadcast=broadcast, multicast=multicast,
                     mtu=best.mtu)

    # --- endpoints --------------------------------------------------------------------------------

    def new_endpoint(self, transport: int, network: int, waiter_queue: WaiterQueue | None = None) -> Any:
        """A new transport endpoint (e.g. UDP over IPv4); the adapter wraps it as a socket."""
        tproto = self.transport_protocols.get(transport)
        if tproto is None or network not in self.network_protocols:
            raise ErrUnknownProtocol()
        return tproto.new_endpoint(network, waiter_queue if waiter_queue is not None else WaiterQueue())

    # --- called by network protocols --------------------------------------------------------------

    def deliver_transport_packet(self, nic: NIC, net_proto: int, trans_proto: int, pkt: PacketBuffer,
                                 src: bytes, dst: bytes, steer: tuple[bytes, int] | None = None
                                 ) -> UnknownDestinationDisposition | None:
        """Hand a transport payload to its endpoint(s); ``steer``: where TPROXY sends it (the mangle table).

        Returns None when delivered, or what the transport protocol decided for a packet no endpoint
        claimed (the network layer sends "port unreachable" for UNHANDLED unicast packets).
        """
        tproto = self.transport_protocols.get(trans_proto)
        if tproto is None:
            return None if trans_proto == ICMPV4_PROTOCOL_NUMBER else UnknownDestinationDisposition.UNHANDLED
        ports = tproto.parse_ports(pkt.data)
        if ports is None:
            nic.stats.malformed_l4_rcvd_packets.increment()
            return UnknownDestinationDisposition.MALFORMED
        src_port, dst_port = ports
        pkt.transport_protocol = trans_proto
        if steer is not None:
            steered = self._steered_endpoint(net_proto, trans_proto, nic, src, dst, src_port, dst_port, steer)
            if steered is None:     # TPROXY found no socket: dropped, as Linux's xt_TPROXY does
                self._stats.ip.iptables_prerouting_dropped.increment()
                return UnknownDestinationDisposition.HANDLED
            steered.handle_packet(pkt, src, dst, src_port, dst_port)
            return None
        if pkt.pkt_type in _GROUP_DELIVERY:
            members = self.demux.lookup_all(net_proto, trans_proto, nic.id, src, dst, src_port, dst_port)
            if not members:
                return tproto.handle_unknown_destination_packet(nic, pkt, src, dst)
            for ep in members:  # every socket bound to the group (or the wildcard) gets a copy
                ep.handle_packet(pkt.clone() if len(members) > 1 else pkt, src, dst, src_port, dst_port)
            return None
        endpoints = self.demux.lookup(net_proto, trans_proto, nic.id, src, dst, src_port, dst_port)
        if endpoints is None:
            return tproto.handle_unknown_destination_packet(nic, pkt, src, dst)
        if len(endpoints) == 1:
            endpoints[0].handle_packet(pkt, src, dst, src_port, dst_port)
            return None
        chosen = self._reuseport_choice(endpoints, tproto, pkt) if endpoints.program is not None else None
        if chosen is None:
            chosen = self.demux.select(endpoints, src, src_port, dst, dst_port)
        chosen.handle_packet(pkt, src, dst, src_port, dst_port)
        return None

    def _steered_endpoint(self, net_proto: int, trans_proto: int, nic: NIC, src: bytes, dst: bytes, src_port: int,
                          dst_port: int, steer: tuple[bytes, int]) -> TransportEndpoint | None:
        """TPROXY's socket (Linux's nf_tproxy_get_sock): the one of the packet's own connection, else a
        transparent one (IP_TRANSPARENT) listening at ``steer`` (address, port)."""
        demux = self.demux
        group = demux.connected(net_proto, trans_proto, nic.id, src, dst, src_port, dst_port)
        if group is not None:
            return next(iter(group))
        address, port = steer
        group = demux.lookup(net_proto, trans_proto, nic.id, src, address, src_port, port)
        return next((ep for ep in group or () if ep.get_sock_opt(SockOpt.TRANSPARENT)), None)

    def _reuseport_choice(self, endpoints: EndpointGroup, tproto: TransportProtocol,
                          pkt: PacketBuffer) -> TransportEndpoint | None:
        """SO_ATTACH_REUSEPORT_CBPF: the group's program names the member by its index, reading the payload at
        offset 0 (Linux pulls the transport header off first); past the group's end, the flow's hash chooses."""
        program = endpoints.program
        assert program is not None
        data = pkt.data
        header = tproto.header_length(data)
        link = bytes(pkt.link_header)
        index = program.choice(pkt, link + bytes(pkt.network_header) + bytes(data[:header]), data[header:],
                               len(link), self.nics)
        return endpoints[index] if endpoints.load_balanced and index < len(endpoints) else None

    def register_raw_endpoint(self, net_proto: int, trans_proto: int, ep: Any) -> None:
        """Give ``ep`` a copy of every packet of ``trans_proto`` for this host (it filters them itself)."""
        self.raw_endpoints.setdefault((net_proto, trans_proto), []).append(ep)

    def unregister_raw_endpoint(self, net_proto: int, trans_proto: int, ep: Any) -> None:
        key = (net_proto, trans_proto)
        endpoints = self.raw_endpoints.get(key)
        if endpoints is not None and ep in endpoints:
            endpoints.remove(ep)
            if not endpoints:
                del self.raw_endpoints[key]

    def register_packet_endpoint(self, protocol: int, ep: Any) -> None:
        """Give ``ep`` a copy of every frame of EtherType ``protocol`` any NIC receives or sends."""
        self.packet_endpoints.setdefault(protocol, []).append(ep)

    def unregister_packet_endpoint(self, protocol: int, ep: Any) -> None:
        endpoints = self.packet_endpoints.get(protocol)
        if endpoints is not None and ep in endpoints:
            endpoints.remove(ep)
            if not endpoints:
                del self.packet_endpoints[protocol]

    def deliver_raw_packet(self, nic: NIC, net_proto: int, trans_proto: int, pkt: PacketBuffer, src: bytes,
                           dst: bytes, header: memoryview | bytes = b"") -> bool:
        """Queue a copy of the packet on every raw endpoint of ``trans_proto`` that accepts it, as
        Linux's raw_local_deliver, before and besides the protocol's own handling. The copy is
        ``header`` (IPv4's, which Linux's raw sockets read; IPv6's read none) and the payload, made
        once, for the first taker. Returns whether any took it (then an unknown protocol is no error)."""
        packet = None
        for ep in self.raw_endpoints.get((net_proto, trans_proto), ()):
            if ep.accepts(nic.id, src, dst):
                if packet is None:
                    packet = bytes(header) + bytes(pkt.data)
                ep.handle_raw_packet(pkt, src, dst, packet)
        return packet is not None

    def deliver_transport_control_packet(self, nic: NIC, net_proto: int, trans_proto: int, src: bytes,
                                         dst: bytes, kind: Any, info: int, pkt: PacketBuffer) -> None:
        """An ICMP error quoting a packet we sent from ``src`` to ``dst``; pkt.data is the quoted
        transport header (at least its first 4 bytes). Raw endpoints of the protocol that would read
        a reply hear of it too (Linux's raw_icmp_error), whatever the protocol."""
        for raw in self.raw_endpoints.get((net_proto, trans_proto), ()):
            if raw.accepts(nic.id, dst, src):
                raw.handle_control_packet(kind, info, pkt)
        tproto = self.transport_protocols.get(trans_proto)
        ports = tproto.parse_ports(pkt.data) if tproto is not None else None
        if ports is None:
            return
        src_port, dst_port = ports
        endpoints = self.demux.lookup(net_proto, trans_proto, nic.id, dst, src, dst_port, src_port)
        for ep in endpoints or ():
            ep.handle_control_packet(kind, info, pkt)

    def deliver_local(self, nic: NIC, net_proto: int, packet: bytes, mark: int = 0,
                      gro: tuple[object, int, int] | None = None) -> None:
        """Loop a packet addressed to this stack back in, iteratively (a trampoline, not recursion). Packet
        endpoints see it on the loopback NIC, as Linux's see such packets on lo; it keeps its ``mark`` (the
        sender's SO_MARK), as Linux's loopback keeps skb->mark, and its place in a super-datagram (``gro``)."""
        if self.packet_endpoints:
            loopback = next((n for n in self.nics.values() if n.loopback and n.enabled), None)
            if loopback is not None:
                loopback.tap_looped(net_proto, packet)
        self._local_queue.append((nic, net_proto, packet, mark, gro))
        if self._delivering_local:
            return
        self._delivering_local = True
        try:
            while self._local_queue:
                owner, proto, data, mark, gro = self._local_queue.popleft()
                owner.deliver_network_packet(b"", b"", proto, PacketBuffer.inbound(data, mark, gro), looped=True)
        finally:
            self._delivering_local = False

    def close(self) -> None:
        """Abort every transport endpoint (connections are reset, timers and ports released), then
        close every NIC (and so detach every link): netstack's Close and Destroy."""
        for endpoint in self.demux.all_endpoints():
            endpoint.abort()
        for raw in [ep for endpoints in self.raw_endpoints.values() for ep in endpoints]:
            raw.abort()
        for tap in [ep for endpoints in self.packet_endpoints.values() for ep in endpoints]:
            tap.abort()
        for nic_id in list(self.nics):
            self.remove_nic(nic_id)
        self.timers.close()     # what is still armed (IGMP reports, DAD, ...) never fires now
