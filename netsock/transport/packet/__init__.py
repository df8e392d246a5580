"""Packet endpoints (netstack's transport/packet; Linux's AF_PACKET sockets).

A packet endpoint of protocol P reads a copy of every frame of EtherType P that a NIC receives,
besides the stack's own handling of it; of ETH_P_ALL, every frame a NIC receives or sends (Linux
shows outbound frames only to its ptype_all taps). It reads each frame with its
link header (SOCK_RAW; an Ethernet NIC's 14 bytes, none on a raw-IP NIC, as Linux's TUN shows
it), or without it (SOCK_DGRAM). Each frame comes with its ``PacketAddress``: the NIC, the
EtherType, the delivery class (PACKET_HOST ... PACKET_OTHERHOST inbound, PACKET_OUTGOING for frames
the stack sends), the hardware type and the link address of its sender (for an outgoing frame, the
NIC's own). Binding narrows what it reads to one NIC and one protocol.

Writes go to a NIC's link as they are: under SOCK_RAW the caller's frame, its Ethernet header
included (the link writes its own source address there: links build their headers themselves);
under SOCK_DGRAM the payload, behind an Ethernet header the stack builds to the given link address.
Other packet endpoints read such a frame as outgoing; the writer itself does not, as on Linux.

A loopback NIC shows its frames as Linux's lo does: behind an Ethernet header of zero addresses
(which its link leaves out), ARPHRD_LOOPBACK. Packets the stack sends to itself without a link
(``Stack.deliver_local``: to any of its own addresses) are shown there, leaving and arriving, as
Linux routes them through lo.

Linux lets only holders of CAP_NET_RAW open packet sockets: that guards the host's kernel and
everyone's traffic on it, and netsock's stack is the process's own, so anyone may make packet
endpoints of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...header import ethernet
from ...stack.interfaces import PacketType
from ...stack.packet_buffer import PacketBuffer
from ...tcpip import (DEFAULT_WRITE_OPTIONS, NO_CONTROL_MESSAGES, ErrBadLocalAddress, ErrDestinationRequired,
                      ErrInvalidEndpointState, ErrInvalidOptionValue, ErrMessageTooLong, ErrNotSupported,
                      ErrUnknownDevice, ErrUnknownProtocolOption, Error, FullAddress, SockOpt, WriteOptions)
from ...tcpip.options import ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE, ETH_P_ALL, PacketAddress
from ...waiter import WaiterQueue
from ..datagram import DatagramEndpoint, EndpointState

if TYPE_CHECKING:
    from ...stack.nic import NIC
    from ...stack.stack import Stack

__all__ = ["ARPHRD_ETHER", "ARPHRD_LOOPBACK", "ARPHRD_NONE", "ETH_P_ALL", "PacketAddress", "PacketEndpoint"]

# The options a packet endpoint takes: those of the socket level; the IP ones are not its.
_OPTIONS = (SockOpt.RECEIVE_BUFFER_SIZE, SockOpt.SEND_BUFFER_SIZE, SockOpt.BIND_TO_DEVICE, SockOpt.TIMESTAMP,
            SockOpt.REUSE_ADDRESS, SockOpt.REUSE_PORT, SockOpt.BROADCAST, SockOpt.MARK, SockOpt.SOCKET_FILTER,
            SockOpt.LOCK_FILTER)


# tpacket_auxdata's tp_status bits (<linux/if_packet.h>)
TP_STATUS_USER, TP_STATUS_CSUMNOTREADY, TP_STATUS_CSUM_VALID = 0x1, 0x8, 0x80


def _auxdata_status(pkt: PacketBuffer, sender: PacketAddress) -> int:
    """As Linux's packet_recvmsg: a frame whose checksum is still to be filled in (partial) is "not
    ready", an inbound one whose checksum was verified "valid"."""
    if pkt.csum_offset:
        return TP_STATUS_USER | TP_STATUS_CSUMNOTREADY
    if sender.pkt_type != PacketType.OUTGOING.value and pkt.checksum_verified:
        return TP_STATUS_USER | TP_STATUS_CSUM_VALID
    return TP_STATUS_USER


class PacketEndpoint(DatagramEndpoint):
    """A packet endpoint: ``cooked`` (SOCK_DGRAM) reads and writes frames without their link header."""

    max_payload = 65535

    def __init__(self, stack: Stack, protocol: int, cooked: bool, waiter_queue: WaiterQueue) -> None:
        if not 0 <= protocol <= 0xFFFF:
            raise ErrInvalidOptionValue("a packet endpoint's protocol is a two-byte EtherType")
        super().__init__(stack, 0, waiter_queue)
        self.cooked = cooked
        self.protocol = protocol
        self._nic = 0
        self.auxdata = False                # PACKET_AUXDATA: each frame comes with its tpacket_auxdata
        self.ignore_outgoing = False        # PACKET_IGNORE_OUTGOING: frames the stack sends are not read
        self.memberships: list[tuple[int, int, bytes]] = []     # PACKET_ADD_MEMBERSHIP's (NIC, type, address)
        self._statistics_base = (0, 0)      # PACKET_STATISTICS counts from its last reading
        # Linux's packet_create: with a protocol it reads from the start; with 0 only once bound to one.
        if protocol:
            stack.register_packet_endpoint(protocol, self)

    # --- binding ----------------------------------------------------------------------------------

    def bind(self, addr: FullAddress | PacketAddress) -> None:
        """Read only frames of NIC ``addr.nic`` (0: any) and protocol ``addr.protocol`` (0: keep the
        current one), as Linux's packet_bind; allowed again and again."""
        if self.state is EndpointState.CLOSED:
            raise ErrInvalidEndpointState()
        if not isinstance(addr, PacketAddress):
            raise ErrInvalidOptionValue("a packet endpoint binds to a PacketAddress")
        if addr.nic and addr.nic not in self.stack.nics:
            raise ErrUnknownDevice()
        protocol = addr.protocol or self.protocol
        if self.protocol:
            self.stack.unregister_packet_endpoint(self.protocol, self)
        self.protocol = protocol
        self._nic = addr.nic
        if protocol:
            self.stack.register_packet_endpoint(protocol, self)
        self.state = EndpointState.BOUND

    def connect(self, addr: FullAddress) -> None:
        raise ErrNotSupported()     # Linux: EOPNOTSUPP

    def shutdown(self, flags: Any) -> None:
        raise ErrNotSupported()

    def _release(self) -> None:
        if self.protocol:
            self.stack.unregister_packet_endpoint(self.protocol, self)

    def get_local_address(self) -> PacketAddress:  # type: ignore[override]
        """Linux's packet_getname: the bound NIC (0: none), the protocol and that NIC's link."""
        nic = self.stack.nics.get(self._nic)
        if nic is None:
            return PacketAddress(0, self.protocol)
        return PacketAddress(nic.id, self.protocol, 0, nic.hardware_type, bytes(nic.link.link_address()))

    # --- reading ----------------------------------------------------------------------------------

    def handle_frame(self, nic: NIC, sender: PacketAddress, frame: bytes, header_length: int,
                     pkt: PacketBuffer) -> None:
        """Queue ``frame`` (shared by every packet endpoint that reads it: immutable), whose link header
        is ``header_length`` bytes, if it came through the NIC this endpoint reads."""
        bound_nic = self.options[SockOpt.BIND_TO_DEVICE] or self._nic
        if bound_nic and bound_nic != nic.id:
            return
        view = memoryview(frame)
        view = view[header_length:] if self.cooked else view
        length = len(view)
        if self.socket_filter is not None:      # on what the socket reads: SOCK_DGRAM's has no link header
            head = frame[:header_length] if self.cooked else b""
            keep = self._filter_keeps(pkt, head, view, header_length)
            if not keep:
                return
            view = view[:keep]
        control = None
        if self.auxdata:
            control = self._control_messages(pkt, b"", b"") if self._wants_control else NO_CONTROL_MESSAGES
            control = replace(control, packet_aux=(_auxdata_status(pkt, sender), length, len(view),
                                                   0 if self.cooked else header_length))
        self._enqueue(view, sender, pkt, b"", control)  # type: ignore[arg-type]

    # --- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview, options: WriteOptions = DEFAULT_WRITE_OPTIONS) -> int:
        """Send one frame to ``options.to`` (a PacketAddress; else the bound NIC and protocol), as
        Linux's packet_sendmsg: the NIC must be up and the frame within its MTU plus link header."""
        if self.state is EndpointState.CLOSED:
            self.stats.write_errors.invalid_endpoint_state.increment()
            raise ErrInvalidEndpointState()
        to = options.to
        if to is None:
            if not self._nic:
                raise ErrDestinationRequired()
            to = PacketAddress(self._nic, self.protocol)
        elif not isinstance(to, PacketAddress):
            self.stats.write_errors.invalid_args.increment()
            raise ErrInvalidOptionValue("a packet endpoint writes to a PacketAddress")
        nic = self.stack.nics.get(to.nic)
        if nic is None:
            raise ErrUnknownDevice()
        if not nic.enabled:
            raise ErrInvalidEndpointState("NIC is disabled")
        header_length = nic.frame_header_length
        if self.cooked:
            if nic.ethernet and len(to.address) != 6:
                raise ErrInvalidOptionValue("an Ethernet frame needs a 6-byte destination")
            dst, protocol, payload = bytes(to.address), to.protocol or self.protocol, memoryview(data)
        else:
            if len(data) < header_length:
                raise ErrInvalidOptionValue("shorter than the link header")
            if header_length:
                dst, _, protocol = ethernet.parse(data)      # type: ignore[misc]
            else:
                dst, protocol = b"", to.protocol or self.protocol
            payload = memoryview(data)[header_length:]
        if len(payload) > nic.link.mtu():
            self.stats.write_errors.invalid_args.increment()
            raise ErrMessageTooLong()
        try:
            nic.write_frame(dst, protocol, PacketBuffer(header_length, payload), self)
        except Error:
            self.stats.send_errors.send_to_network_failed.increment()
            raise
        self.stats.packets_sent.value += 1
        return len(data)

    # --- options ----------------------------------------------------------------------------------

    def statistics(self) -> tuple[int, int]:
        """PACKET_STATISTICS: frames queued and dropped since it was last read (the dropped counted in
        both, as Linux's tpacket_stats), then from zero again."""
        queued, dropped = self.stats.packets_received.value, self.stats.receive_errors.receive_buffer_overflow.value
        base_queued, base_dropped = self._statistics_base
        self._statistics_base = (queued, dropped)
        return queued - base_queued + dropped - base_dropped, dropped - base_dropped

    def membership(self, join: bool, nic_id: int, kind: int, address: bytes) -> None:
        """PACKET_ADD_MEMBERSHIP / PACKET_DROP_MEMBERSHIP: a NIC's multicast address, promiscuous or
        all-multicast mode while this endpoint is open. A netsock NIC already shows packet endpoints every
        frame it receives, those for other hosts and groups included (PACKET_OTHERHOST, PACKET_MULTICAST):
        what the mode asks for is there; the memberships are kept, checked and dropped as Linux's."""
        if nic_id not in self.stack.nics:
            raise ErrUnknownDevice()
        entry = (nic_id, kind, address)
        if join:
            self.memberships.append(entry)
        elif entry in self.memberships:
            self.memberships.remove(entry)
        else:
            raise ErrBadLocalAddress()      # Linux: EADDRNOTAVAIL

    def set_sock_opt(self, opt: SockOpt, value: Any) -> None:
        if opt not in _OPTIONS:
            raise ErrUnknownProtocolOption()
        if opt is SockOpt.BIND_TO_DEVICE and value and value not in self.stack.nics:
            raise ErrUnknownDevice()
        super().set_sock_opt(opt, value)
