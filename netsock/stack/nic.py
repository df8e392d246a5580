"""A network interface: one link endpoint, its addresses, and each network protocol's endpoint on it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..header import ethernet
from ..tcpip import (AddressWithPrefix, ErrBadLinkEndpoint, ErrDuplicateAddress, ErrInvalidEndpointState,
                     ErrNotSupported, ErrUnknownProtocol, Subnet)
from ..tcpip.options import ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE, ETH_P_ALL, PacketAddress
from ..tcpip.stats import NICStats
from .interfaces import LinkCapabilities, LinkEndpoint, PacketType
from .multicast import MCAST_EXCLUDE, NO_STATE, FilterState, GroupFilter
from .neighbor import NeighborCache
from .packet_buffer import PacketBuffer

if TYPE_CHECKING:
    from .registration import NetworkEndpoint
    from .route import Route
    from .stack import Stack

_OUTGOING = PacketType.OUTGOING.value
_ZERO_MAC = bytes(6)


def _loopback_header(protocol: int) -> bytes:
    """The Ethernet header packet endpoints see on a loopback NIC, as on Linux's lo: zero addresses."""
    return bytes(12) + protocol.to_bytes(2, "big")


class NIC:
    """Implements the NetworkDispatcher its link endpoint delivers to."""

    def __init__(self, stack: Stack, nic_id: int, name: str, link: LinkEndpoint) -> None:
        if link.is_attached():
            raise ErrBadLinkEndpoint("link endpoint is already attached to a NIC")
        self.stack = stack
        self.id = nic_id
        self.name = name
        self.link = link
        self.enabled = False
        self.promiscuous = False
        self.spoofing = False
        self.stats = NICStats()
        self.addresses: dict[int, list[AddressWithPrefix]] = {}
        self.tentative: set[bytes] = set()     # IPv6 addresses under duplicate address detection
        self.multicast_groups: dict[int, dict[bytes, GroupFilter]] = {}   # protocol -> group -> its members
        self.network_endpoints: dict[int, NetworkEndpoint] = {
            number: proto.new_endpoint(self) for number, proto in stack.network_protocols.items()}
        self.neighbors: dict[int, NeighborCache] = {}
        if link.capabilities() & LinkCapabilities.RESOLUTION_REQUIRED:
            for ep in self.network_endpoints.values():
                resolves = getattr(ep, "resolves_protocol", 0)
                if resolves:
                    self.neighbors[resolves] = NeighborCache(self, ep, stack.timers,  # type: ignore[arg-type]
                                                             stack.stats().arp)       # (it resolves: ARP's, NDP's)
        self.loopback = bool(link.capabilities() & LinkCapabilities.LOOPBACK)
        self.ethernet = link.max_header_length() == ethernet.HEADER_SIZE   # else frames are bare IP packets
        # Link header of the frames packet endpoints read and write: a loopback NIC shows an Ethernet one of
        # zero addresses, which its link leaves out, as Linux's lo.
        self.frame_header_length = ethernet.HEADER_SIZE if self.ethernet or self.loopback else 0
        self.packet_endpoints = stack.packet_endpoints     # the stack's own dict: tested per frame, one load
        self.hardware_type = ARPHRD_ETHER if self.ethernet else ARPHRD_LOOPBACK if self.loopback else ARPHRD_NONE
        # Read once: protocols consult these per packet.
        self.rx_checksum_offload = bool(link.capabilities() & LinkCapabilities.RX_CHECKSUM_OFFLOAD)
        self.tx_checksum_offload = bool(link.capabilities() & LinkCapabilities.TX_CHECKSUM_OFFLOAD)
        link.attach(self)   # type: ignore[arg-type]  # (udp_gro: a property the link only reads)

    # --- inbound (NetworkDispatcher) ------------------------------------------------------------

    @property
    def udp_gro(self) -> bool:
        return self.stack.udp_gro_sockets > 0

    def deliver_network_packet(self, remote_link_address: bytes, local_link_address: bytes, protocol: int,
                               pkt: PacketBuffer, looped: bool = False) -> None:
        """``looped``: the stack's own packet to itself, which no link carried (packet endpoints miss it)."""
        stats = self.stats
        stats.rx_packets.value += 1
        stats.rx_bytes.value += len(pkt.data)
        if not self.enabled:
            stats.disabled_rx_packets.increment()
            return
        if self.packet_endpoints and not looped:
            self._tap_inbound(remote_link_address, protocol, pkt)
        ep = self.network_endpoints.get(protocol)
        if ep is None:
            stats.unknown_l3_protocol_rcvd_packets.increment()
            self.stack.stats().unknown_protocol_rcvd_packets.increment()
            return
        pkt.nic_id = self.id
        pkt.network_protocol = protocol
        ep.handle_packet(pkt)

    # --- outbound ---------------------------------------------------------------------------------

    def write_packet(self, route: Route, protocol: int, pkt: PacketBuffer) -> None:
        """Send a packet whose network header is in place, resolving the next hop's link address."""
        if not self.enabled:
            raise ErrInvalidEndpointState("NIC is disabled")
        cache = self.neighbors.get(protocol)
        if cache is None:
            self.write_to_link(b"", protocol, pkt)
        else:
            cache.send(route.next_hop, route.local_address, protocol, pkt)

    def write_to_link(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        if self.packet_endpoints:
            self._tap_outbound(remote_link_address, protocol, pkt, None)
        self.link.write_packet(remote_link_address, protocol, pkt)
        self.stats.tx_packets.value += 1
        self.stats.tx_bytes.value += pkt.size()

    def write_frame(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer, writer: Any) -> None:
        """A packet endpoint's frame: shown to the other packet endpoints, not to ``writer`` (as Linux's
        dev_queue_xmit_nit skips the sending socket)."""
        self._tap_outbound(remote_link_address, protocol, pkt, writer)
        self.link.write_packet(remote_link_address, protocol, pkt)
        self.stats.tx_packets.value += 1
        self.stats.tx_bytes.value += pkt.size()

    # --- packet endpoints -------------------------------------------------------------------------

    def _tap_inbound(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        endpoints = self.packet_endpoints
        takers = [*endpoints.get(ETH_P_ALL, ()), *endpoints.get(protocol, ())]
        if not takers:
            return
        header: bytes | memoryview = pkt.link_header
        if self.loopback and not header:
            header, remote_link_address = _loopback_header(protocol), _ZERO_MAC
        self._tap(takers, protocol, pkt.pkt_type, remote_link_address, header, [pkt.data], pkt)

    def tap_looped(self, protocol: int, packet: bytes) -> None:
        """Show a packet the stack sends to itself without a link (``Stack.deliver_local``) as Linux shows
        one on lo: leaving (to endpoints of every protocol), then arriving."""
        pkt = PacketBuffer.inbound(packet)
        self._tap_outbound(b"", protocol, pkt, None)
        self._tap_inbound(b"", protocol, pkt)

    def _tap_outbound(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer, writer: Any) -> None:
        """Show an outbound frame as PACKET_OUTGOING, with the link header the link is about to build,
        to the endpoints of every protocol (Linux's ptype_all: no others see outbound frames)."""
        takers = [ep for ep in self.packet_endpoints.get(ETH_P_ALL, ())
                  if ep is not writer and not ep.ignore_outgoing]     # (PACKET_IGNORE_OUTGOING)
        if not takers:
            return
        header = b""
        sender = self.link.link_address()
        if self.ethernet:
            built = bytearray(ethernet.HEADER_SIZE)
            ethernet.build(built, remote_link_address, sender, protocol)
            header = bytes(built)
        elif self.loopback:
            header, sender = _loopback_header(protocol), _ZERO_MAC
        self._tap(takers, protocol, _OUTGOING, sender, header, pkt.views(), pkt)

    def _tap(self, takers: list[Any], protocol: int, pkt_type: int, sender: bytes, header: bytes | memoryview,
             payload: Sequence[bytes | bytearray | memoryview], pkt: PacketBuffer) -> None:
        """Give each of ``takers`` the frame (``header`` and the ``payload`` buffers): one copy, shared."""
        frame = b"".join((header, *payload))
        address = PacketAddress(self.id, protocol, int(pkt_type), self.hardware_type, bytes(sender))
        for ep in takers:
            ep.handle_frame(self, address, frame, len(header), pkt)

    # --- addresses --------------------------------------------------------------------------------

    def add_address(self, protocol: int, address: AddressWithPrefix) -> None:
        if protocol not in self.network_endpoints:
            raise ErrUnknownProtocol()
        addrs = self.addresses.setdefault(protocol, [])
        if any(a.address == address.address for a in addrs):
            raise ErrDuplicateAddress()
        addrs.append(address)
        self.network_endpoints[protocol].on_address_added(address)

    def remove_address(self, address: bytes) -> bool:
        for protocol, addrs in self.addresses.items():
            for a in addrs:
                if a.address == address:
                    addrs.remove(a)
                    self.tentative.discard(address)
                    self.network_endpoints[protocol].on_address_removed(address)
                    return True
        return False

    def has_address(self, protocol: int, address: bytes) -> bool:
        """Is ``address`` assigned here (and usable: not still tentative)? Asked for every packet received."""
        if address in self.tentative:
            return False
        for a in self.addresses.get(protocol, ()):
            if a.address == address:
                return True
        return False

    def holds_address(self, protocol: int, address: bytes) -> bool:
        """Assigned here, tentative or not (for duplicate address detection)."""
        return any(a.address == address for a in self.addresses.get(protocol, ()))

    def primary_address(self, protocol: int, remote: bytes = b"") -> bytes:
        """The source address to use towards ``remote``.

        The network protocol may choose (IPv6: RFC 6724); otherwise one on the same subnet as
        ``remote`` first, else the first assigned.
        """
        addrs = [a for a in self.addresses.get(protocol, ()) if a.address not in self.tentative]
        if not addrs:
            return b""
        select = getattr(self.network_endpoints.get(protocol), "select_source", None)
        if select is not None:
            return select(addrs, remote)
        if remote:
            for a in addrs:
                if a.subnet().contains(remote):
                    return a.address
        return addrs[0].address

    def subnets(self, protocol: int) -> list[Subnet]:
        return [a.subnet() for a in self.addresses.get(protocol, ())]

    def is_subnet_broadcast(self, protocol: int, address: bytes) -> bool:
        # A directed broadcast has at least two host bits, all set: most unicast addresses fail that on
        # their last byte, before any subnet arithmetic (link address resolution asks for every packet).
        if not address or address[-1] & 3 != 3:
            return False
        for a in self.addresses.get(protocol, ()):
            if a.subnet().is_broadcast(address):
                return True
        return False

    # --- forwarding -------------------------------------------------------------------------------

    def set_forwarding(self, protocol: int, enable: bool) -> bool:
        """Route packets of ``protocol`` that arrive here for other hosts; returns the previous setting."""
        return self._forwarding_endpoint(protocol).set_forwarding(enable)

    def forwarding(self, protocol: int) -> bool:
        return self._forwarding_endpoint(protocol).forwarding

    def _forwarding_endpoint(self, protocol: int) -> Any:
        ep = self.network_endpoints.get(protocol)
        if ep is None:
            raise ErrUnknownProtocol()
        if not hasattr(ep, "set_forwarding"):    # netstack: not a ForwardingNetworkEndpoint
            raise ErrNotSupported()
        return ep

    # --- multicast ----------------------------------------------------------------------------------

    def join_group(self, protocol: int, group: bytes, mode: int = MCAST_EXCLUDE,
                   sources: Iterable[bytes] = ()) -> None:
        """A member joins ``group`` with its source filter (a plain join: EXCLUDE of none)."""
        self.change_group_filter(protocol, group, None, (mode, frozenset(sources)))

    def leave_group(self, protocol: int, group: bytes, mode: int = MCAST_EXCLUDE,
                    sources: Iterable[bytes] = ()) -> None:
        """A member with this source filter leaves ``group``."""
        self.change_group_filter(protocol, group, (mode, frozenset(sources)), None)

    def change_group_filter(self, protocol: int, group: bytes, old: FilterState | None,
                            new: FilterState | None) -> None:
        """A member's filter of ``group`` goes from ``old`` to ``new`` (None: not a member); the network
        endpoint hears of each change of the merged state (NO_STATE before the first join, after the last leave)."""
        group = bytes(group)
        groups = self.multicast_groups.setdefault(protocol, {})
        merged = groups.get(group)
        if merged is None:
            merged = groups[group] = GroupFilter()
        before = merged.state() if merged.members else NO_STATE
        if old is not None:
            merged.remove(*old)
        if new is not None:
            merged.add(*new)
        if not merged.members:
            del groups[group]
        if (merged.state() if merged.members else NO_STATE) != before:
            self.network_endpoints[protocol].on_group_changed(group, before)

    def is_in_group(self, protocol: int, group: bytes) -> bool:
        return group in self.multicast_groups.get(protocol, ())

    def group_state(self, protocol: int, group: bytes) -> FilterState:
        """The interface state of ``group`` (NO_STATE for one nobody joined)."""
        merged = self.multicast_groups.get(protocol, {}).get(group)
        return merged.state() if merged is not None else NO_STATE

    def group_allows(self, protocol: int, group: bytes, source: bytes) -> bool:
        """Whether ``group``'s packets from ``source`` are received here: joined, and the merged filter lets
        the source through."""
        merged = self.multicast_groups.get(protocol, {}).get(group)
        return merged is not None and merged.allows(source)

    def close(self) -> None:
        for cache in self.neighbors.values():
            cache.clear()
        for ep in self.network_endpoints.values():
            ep.close()
        self.link.attach(None)

    def __repr__(self) -> str:
        return f"<NIC {self.id} {self.name!r} {'up' if self.enabled else 'down'}>"
