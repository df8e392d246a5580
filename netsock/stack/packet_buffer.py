"""PacketBuffer: one packet on its way up or down the stack, without copying its payload.

Outbound, a transport hands over its payload (any bytes-like object, kept by reference) together
with the room the layers below will need; each layer then writes its header into that room in front
of the previous one (``prepend``). The link writes ``views()`` with one ``writev`` — header bytes and
payload travel separately until the kernel joins them. For a link that writes scattered payloads
(LinkCapabilities.SCATTER_GATHER, Linux's NETIF_F_SG) the payload may be a list of buffers — the
pieces of the application's writes a super-segment spans — kept apart as ``data`` and ``tail``
instead of being joined into one.

Inbound, the whole frame is one buffer; each layer takes its header off the front (``consume``),
records it (``network_header`` ...) and hands the rest up. Slices are memoryviews, so the payload the
transport queues for the reader is the very buffer the link read into.
"""

from __future__ import annotations

import random
from typing import Union

Buffer = Union[bytes, bytearray, memoryview]

_EMPTY = memoryview(b"")
_NO_ROOM = b""


def new_flow_hash() -> int:
    """A random flow hash for a connection (Linux's sk_set_txhash), never 0 (which means none)."""
    return random.getrandbits(32) or 1


# The fields a clone shares with its original (all but the header room): named here once, for __slots__ and
# for clone, which cannot walk __slots__ on the compiled class.
_SHARED_FIELDS = ("data", "tail", "tail_size", "link_header", "network_header", "transport_header",
                  "network_protocol", "transport_protocol", "nic_id", "pkt_type", "hash", "timestamp", "gso_size",
                  "checksum_verified", "csum_offset", "mark", "gro", "frag_max_size")


class PacketBuffer:
    __slots__ = ("_hdr", "_head", *_SHARED_FIELDS)

    def __init__(self, reserve: int = 0, data: Buffer | list[Buffer] | list[memoryview] = b"") -> None:
        # An inbound packet rarely gets a header prepended (forwarding does, once): it shares one
        # empty buffer until then, and prepend makes a new one.
        self._hdr: bytes | bytearray = bytearray(reserve) if reserve else _NO_ROOM
        self._head = reserve
        first: Buffer
        if type(data) is list:      # a scattered payload: only for SCATTER_GATHER links
            first, *rest = data
            self.tail: tuple[Buffer, ...] = tuple(rest)
            self.tail_size = sum(map(len, rest))
        else:
            first = data    # type: ignore[assignment]  # (not a list: the branch above)
            self.tail = ()
            self.tail_size = 0      # bytes in ``tail``: the payload after ``data``
        self.data = first if type(first) is memoryview else memoryview(first)
        self.link_header = _EMPTY
        self.network_header = _EMPTY
        self.transport_header = _EMPTY
        self.network_protocol = 0
        self.transport_protocol = 0
        self.nic_id = 0
        self.pkt_type = 0       # PACKET_HOST, PACKET_BROADCAST, ... (link-level delivery class)
        self.hash = 0           # outbound: the flow's hash, which IPv6 makes its flow label of (0: none)
        self.timestamp = 0      # ns since the epoch when received (0: unknown)
        # >0: a TCP super-segment of segments this size, its checksum partial (see link.gso): outbound
        # the link cuts it, inbound the link received it whole.
        self.gso_size = 0
        # Inbound: the transport checksum is known good (the link completed a partial one, which is
        # right by construction, or the device vouched for it), so the transport need not sum the
        # segment again (Linux's CHECKSUM_PARTIAL / CHECKSUM_UNNECESSARY on receive).
        self.checksum_verified = False
        # >0: the transport checksum is partial (Linux's CHECKSUM_PARTIAL): the field this many bytes
        # into the transport header (which follows the IP header) holds only the pseudo-header sum.
        # Outbound, TCP leaves it so for a link that completes it (TX_CHECKSUM_OFFLOAD); inbound, the
        # kernel handed it so, the packet counts as checked, and one forwarded is completed first.
        self.csum_offset = 0
        self.mark = 0           # outbound: the sending socket's SO_MARK (the filter table matches it)
        self.frag_max_size = 0  # inbound, reassembled: its largest fragment as it came (IP_RECVFRAGSIZE)
        # UDP: (a key of the super-datagram, its segment size, this datagram's index) for a datagram cut
        # from a UDP super-datagram (by the link that read it, or by UDP_SEGMENT's write on a path that
        # cannot carry it whole, the loopback included): a UDP_GRO socket reads them as one again. Linux
        # keeps a super-datagram whole up to the socket; netsock cuts it where the socket is not known.
        self.gro: tuple[object, int, int] | None = None

    @classmethod
    def inbound(cls, frame: Buffer, mark: int = 0, gro: tuple[object, int, int] | None = None) -> PacketBuffer:
        """A received frame: everything is still data; headers get consumed layer by layer. ``mark`` and
        ``gro``: one looped back keeps its sender's (as Linux's loopback keeps skb->mark)."""
        pkt = cls(0, frame)
        pkt.mark = mark
        pkt.gro = gro
        return pkt

    # --- outbound ---------------------------------------------------------------------------------

    def prepend(self, size: int) -> memoryview:
        """Writable room for a ``size``-byte header in front of what is there; grows if reserve is short."""
        head = self._head - size
        if head < 0:
            # A new buffer, not an insertion: views of the headers prepended so far stay valid (a
            # bytearray with exported views cannot be resized).
            grow = -head + 64
            self._hdr = bytearray(grow) + self._hdr
            head += grow
        self._head = head
        return memoryview(self._hdr)[head:head + size]

    def header_size(self) -> int:
        """Bytes of headers prepended so far."""
        return len(self._hdr) - self._head

    def headers(self) -> memoryview:
        """All prepended headers, outermost first."""
        return memoryview(self._hdr)[self._head:]

    # --- inbound ----------------------------------------------------------------------------------

    def consume(self, size: int) -> memoryview | None:
        """Take ``size`` bytes of header off the front of the data; None if the packet is shorter."""
        data = self.data
        if len(data) < size:
            return None
        self.data = data[size:]
        return data[:size]

    def trim(self, size: int) -> None:
        """Drop link padding: keep only the first ``size`` bytes of data."""
        if size < len(self.data):
            self.data = self.data[:size]

    # --- both -------------------------------------------------------------------------------------

    def size(self) -> int:
        """Length on the wire of what this buffer holds now (headers + data + tail)."""
        return len(self._hdr) - self._head + len(self.data) + self.tail_size

    def views(self) -> list[Buffer]:
        """The packet as buffers in order, ready for writev (empty parts left out)."""
        if self.tail:
            return [memoryview(self._hdr)[self._head:], self.data, *self.tail]
        if self._head < len(self._hdr):
            return [memoryview(self._hdr)[self._head:], self.data] if len(self.data) else \
                [memoryview(self._hdr)[self._head:]]
        return [self.data]

    def to_bytes(self) -> bytes:
        """The whole packet as one bytes object (a copy: for tests, pcap and slow paths)."""
        return b"".join((self._hdr[self._head:], self.data, *self.tail))

    def own_payload(self) -> None:
        """Copy the payload where it lies in memory its writer may still change (a datagram's bytearray, a
        MSG_ZEROCOPY send's buffer): for a link that holds the packet after its write returns, as a send
        hands over its bytes when it returns."""
        if type(self.data.obj) is not bytes:
            self.data = memoryview(bytes(self.data))
        if self.tail:
            self.tail = tuple(piece if type(memoryview(piece).obj) is bytes else bytes(piece) for piece in self.tail)

    def clone(self) -> PacketBuffer:
        """A new buffer sharing the payload bytes (headers copied) — for delivery to several consumers."""
        other = PacketBuffer()
        other._hdr = bytearray(self._hdr)
        other._head = self._head
        for name in _SHARED_FIELDS:
            setattr(other, name, getattr(self, name))
        return other

    def __repr__(self) -> str:
        return f"<PacketBuffer headers={self.header_size()} data={len(self.data)}>"
