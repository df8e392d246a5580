"""A link wrapper that records all traffic (netstack's ``link/sniffer``, ``NewWithWriter``).

The sniffer sits between the NIC and the real link: it is the link endpoint the NIC writes to and
the dispatcher the real link delivers to. Every packet is recorded to a pcap file, and optionally
summarised in one line to a log function, before it is passed on unchanged.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import BinaryIO

from ..header import arp, ipv4
from ..header import ethernet as eth
from ..stack.interfaces import LinkEndpoint
from ..stack.packet_buffer import Buffer, PacketBuffer
from ..tcpip.stats import StatCounter, StatGroup
from .nested import NestedEndpoint
from .pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter

_log = logging.getLogger(__name__)


class SnifferStats(StatGroup):
    packets_recorded: StatCounter
    record_errors: StatCounter   # the capture file could not be written (the packet still passed)


class SnifferEndpoint(NestedEndpoint):
    """Wraps ``lower`` and records its traffic.

    ``pcap`` is a path or binary file (a writer is created for it and closed with the endpoint) or a
    ``PcapWriter`` shared with others (only flushed on close). ``linktype`` defaults to Ethernet if
    the lower link has a 14-byte header, raw IP otherwise; raw IP on an Ethernet link records the
    network packets without their link headers.

    Outbound packets are recorded as they are offered to the lower link, before it adds its own
    header (so on Ethernet the recorded header is synthesised from the same fields) and whether or
    not it then takes them: recording first keeps the capture in causal order on a loopback link,
    which delivers the packet back in before the write returns.
    """

    def __init__(self, lower: LinkEndpoint, pcap: str | os.PathLike[str] | BinaryIO | PcapWriter,
                 linktype: int | None = None, log: Callable[[str], None] | None = None) -> None:
        ethernet_lower = lower.max_header_length() == eth.HEADER_SIZE
        if isinstance(pcap, PcapWriter):
            if linktype is not None and linktype != pcap.linktype:
                raise ValueError(f"linktype {linktype} differs from the writer's ({pcap.linktype})")
            self._writer = pcap
            self._owns_writer = False
        else:
            if linktype is None:
                linktype = LINKTYPE_ETHERNET if ethernet_lower else LINKTYPE_RAW
            self._writer = PcapWriter(pcap, linktype)
            self._owns_writer = True
        if self._writer.linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
            raise ValueError(f"unsupported linktype {self._writer.linktype}")
        if self._writer.linktype == LINKTYPE_ETHERNET and not ethernet_lower:
            raise ValueError("an Ethernet capture needs an Ethernet link below")
        super().__init__(lower)
        self._record_link_header = self._writer.linktype == LINKTYPE_ETHERNET
        self._log = log
        self.stats = SnifferStats()

    # --- LinkEndpoint: what the NIC sees -----------------------------------------------------------

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self._record_outbound(remote_link_address, protocol, pkt)
        self.lower.write_packet(remote_link_address, protocol, pkt)

    def write_packets(self, remote_link_address: bytes, protocol: int, pkts: list[PacketBuffer]) -> int:
        for pkt in pkts:
            self._record_outbound(remote_link_address, protocol, pkt)
        return self.lower.write_packets(remote_link_address, protocol, pkts)

    def close(self) -> None:
        """Close the lower link, then the capture (or only flush it if it is shared)."""
        self.dispatcher = None
        try:
            self.lower.close()
        finally:
            if self._owns_writer:
                self._writer.close()
            else:
                self._writer.flush()

    # --- NetworkDispatcher: what the lower link sees ------------------------------------------------

    def deliver_network_packet(self, remote_link_address: bytes, local_link_address: bytes, protocol: int,
                               pkt: PacketBuffer) -> None:
        if self._record_link_header:
            self._record("recv", protocol, (pkt.link_header, pkt.data), (pkt.data,))
        else:
            self._record("recv", protocol, (pkt.data,), (pkt.data,))
        dispatcher = self.dispatcher
        if dispatcher is not None:
            dispatcher.deliver_network_packet(remote_link_address, local_link_address, protocol, pkt)

    # --- recording ----------------------------------------------------------------------------------

    def _record_outbound(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        views = pkt.views()
        if self._record_link_header:
            header = bytearray(eth.HEADER_SIZE)
            eth.build(header, remote_link_address, self.lower.link_address(), protocol)
            self._record("send", protocol, (header, *views), views)
        else:
            self._record("send", protocol, views, views)

    def _record(self, direction: str, protocol: int, parts: Sequence[Buffer], network: Sequence[Buffer]) -> None:
        """Write one record made of ``parts``; ``network``: the parts from the network header on."""
        try:
            self._writer.write(*parts)
        except (OSError, ValueError) as e:  # ValueError: the file was closed under us
            if not self.stats.record_errors.value:
                _log.error("sniffer: cannot write the capture (%s); counting further failures silently", e)
            self.stats.record_errors.increment()
        else:
            self.stats.packets_recorded.increment()
        if self._log is not None:
            packet = network[0] if len(network) == 1 else b"".join(network)
            self._log(f"{direction} {summarize(protocol, packet, sum(map(len, parts)))}")


_TCP_FLAGS = "FSRPAUEC"
_PORTS = struct.Struct("!HH")


def summarize(protocol: int, packet: Buffer, size: int) -> str:
    """One line describing a packet, from its network header on (``size``: its length on the wire)."""
    if protocol == ipv4.PROTOCOL_NUMBER:
        hdr = ipv4.parse(packet, big=True)
        if not hdr:
            return f"IPv4 malformed ({hdr.value}) len {size}"
        what = _transport(hdr.protocol, packet, hdr.header_length)
        return (f"{socket.inet_ntop(socket.AF_INET, hdr.src)} > {socket.inet_ntop(socket.AF_INET, hdr.dst)} "
                f"{what} id {hdr.ident} ttl {hdr.ttl} len {size}")
    if protocol == eth.ETHERTYPE_IPV6:
        if len(packet) < 40:
            return f"IPv6 malformed (truncated) len {size}"
        src = socket.inet_ntop(socket.AF_INET6, bytes(packet[8:24]))
        dst = socket.inet_ntop(socket.AF_INET6, bytes(packet[24:40]))
        return f"{src} > {dst} {_transport(packet[6], packet, 40)} hlim {packet[7]} len {size}"
    if protocol == eth.ETHERTYPE_ARP:
        msg = arp.parse(packet)
        if not msg:
            return f"ARP malformed ({msg.value}) len {size}"
        target = socket.inet_ntop(socket.AF_INET, msg.target_proto)
        sender = socket.inet_ntop(socket.AF_INET, msg.sender_proto)
        if msg.op == arp.OP_REQUEST:
            return f"ARP who-has {target} tell {sender} ({msg.sender_hw.hex(':')})"
        if msg.op == arp.OP_REPLY:
            return f"ARP {sender} is-at {msg.sender_hw.hex(':')} (to {target})"
        return f"ARP op {msg.op} len {size}"
    return f"ethertype 0x{protocol:04x} len {size}"


def _transport(protocol: int, packet: Buffer, offset: int) -> str:
    """The transport part of a summary: ports and flags for TCP/UDP, type/code for ICMP."""
    if protocol in (6, 17) and len(packet) >= offset + 4:
        src_port, dst_port = _PORTS.unpack_from(packet, offset)
        if protocol == 17:
            return f"udp {src_port} > {dst_port}"
        if len(packet) >= offset + 14:
            bits = packet[offset + 13]
            flags = "".join(f for i, f in enumerate(_TCP_FLAGS) if bits >> i & 1)
            return f"tcp {src_port} > {dst_port} [{flags}]"
        return f"tcp {src_port} > {dst_port}"
    if protocol in (1, 58) and len(packet) >= offset + 2:
        return f"icmp{'v6' if protocol == 58 else ''} type {packet[offset]} code {packet[offset + 1]}"
    return f"proto {protocol}"
