"""The contracts between the layers (netstack's stack/registration.go).

A link endpoint moves frames; a network protocol turns frames into datagrams for transports; a
transport protocol owns endpoints. The stack wires them together and knows none of their details.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from .packet_buffer import PacketBuffer


class LinkCapabilities(enum.IntFlag):
    NONE = 0
    RX_CHECKSUM_OFFLOAD = 1     # inbound checksums were verified by the device: skip them
    TX_CHECKSUM_OFFLOAD = 2     # the device fills outbound transport checksums (PacketBuffer.csum_offset)
    RESOLUTION_REQUIRED = 4     # link addresses must be resolved (ARP/NDP) before sending
    SAVE_RESTORE = 8
    DISCONNECT_OK = 16
    LOOPBACK = 32               # everything written comes straight back in
    HARDWARE_GSO = 64           # accepts TCP super-segments (PacketBuffer.gso_size)
    HARDWARE_GSO_UDP = 128      # accepts UDP super-datagrams (UDP_SEGMENT; PacketBuffer.gso_size)
    SCATTER_GATHER = 256        # writes a payload in pieces (PacketBuffer.tail) without joining it


# The largest super-packet a HARDWARE_GSO link takes unless it says otherwise (Linux's
# GSO_LEGACY_MAX_SIZE): what a 16-bit IP length field describes.
GSO_LEGACY_MAX_SIZE = 65536


class PacketType(enum.IntEnum):
    """Link-level delivery class of an inbound frame (Linux's PACKET_* values)."""

    HOST = 0
    BROADCAST = 1
    MULTICAST = 2
    OTHERHOST = 3
    OUTGOING = 4


@runtime_checkable
class NetworkDispatcher(Protocol):
    """What a link endpoint delivers inbound frames to (the NIC). ``udp_gro``: some socket above reads UDP
    datagrams joined (UDP_GRO), so the link marks a batch's UDP flows for it (``link.gro.mark_udp_flows``)."""

    udp_gro: bool

    def deliver_network_packet(self, remote_link_address: bytes, local_link_address: bytes,
                               protocol: int, pkt: PacketBuffer) -> None:
        """``protocol`` is the EtherType (0x0800 IPv4, 0x86DD IPv6, 0x0806 ARP); pkt.data starts at
        the network header (the link already consumed and recorded its own header)."""


@runtime_checkable
class LinkEndpoint(Protocol):
    """A data-link layer endpoint: TUN, TAP, channel, loopback, a wrapper such as the sniffer."""

    def mtu(self) -> int:
        """Largest network-layer packet the link carries."""

    def max_header_length(self) -> int:
        """Bytes of link header the link prepends (14 for Ethernet, 0 for TUN)."""

    def link_address(self) -> bytes:
        """This endpoint's own link address (b'' where the link has none)."""

    def capabilities(self) -> LinkCapabilities: ...

    def gso_max_size(self, network_protocol: int, remote: bytes = b"") -> int:
        """The largest super-packet of ``network_protocol`` (bytes after the link header) a
        HARDWARE_GSO link takes toward ``remote`` (netstack's GSOMaxSize; Linux's gso_max_size,
        gso_ipv4_max_size; a TUN asks the kernel whether ``remote`` is its own, see ``link.fdbased``)."""

    def attach(self, dispatcher: NetworkDispatcher | None) -> None:
        """Start delivering inbound frames to ``dispatcher``; None detaches."""

    def is_attached(self) -> bool: ...

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        """Send one packet whose network header is already prepended. Raises a tcpip Error
        (e.g. ErrClosedForSend, ErrNoBufferSpace) if the link cannot take it."""

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        """Send several packets; returns how many were sent."""

    def close(self) -> None: ...


class LinkEndpointBase:
    """Shared plumbing for link endpoints: attachment, defaults and batch writes."""

    def __init__(self, mtu: int = 1500, link_address: bytes = b"",
                 capabilities: LinkCapabilities = LinkCapabilities.NONE) -> None:
        self._mtu = mtu
        self._link_address = link_address
        self._capabilities = capabilities
        self.dispatcher: NetworkDispatcher | None = None

    def mtu(self) -> int:
        return self._mtu

    def max_header_length(self) -> int:
        return 0

    def link_address(self) -> bytes:
        return self._link_address

    def capabilities(self) -> LinkCapabilities:
        return self._capabilities

    def gso_max_size(self, network_protocol: int, remote: bytes = b"") -> int:
        return GSO_LEGACY_MAX_SIZE

    def attach(self, dispatcher: NetworkDispatcher | None) -> None:
        self.dispatcher = dispatcher

    def is_attached(self) -> bool:
        return self.dispatcher is not None

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        for pkt in pkts:
            self.write_packet(remote_link_address, protocol, pkt)
        return len(pkts)

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.dispatcher = None


def network_protocol_of_ip(first_byte: int) -> int:
    """EtherType of a raw IP packet from its version nibble (TUN links carry no link header)."""
    version = first_byte >> 4
    if version == 4:
        return 0x0800
    if version == 6:
        return 0x86DD
    return 0


class TransportDispatcher(Protocol):
    """What a network endpoint hands inbound transport payloads to (the stack's demultiplexer)."""

    def deliver_transport_packet(self, nic: object, protocol: int, pkt: PacketBuffer) -> None: ...

    def deliver_transport_control_packet(self, local: bytes, remote: bytes, net_proto: int,
                                         trans_proto: int, kind: object, pkt: PacketBuffer) -> None: ...

