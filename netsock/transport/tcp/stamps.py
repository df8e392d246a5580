"""SO_TIMESTAMPING's transmit stamps for one TCP connection, as Linux's tcp_tx_timestamp and tcp_ack_tstamp
make them: each send call marks its last byte; the segment that first carries a mark is stamped when it is
queued for the device and when it leaves (TX_SCHED, TX_SOFTWARE), and the mark again when the peer
acknowledges that byte (TX_ACK). The stamps go to the connection's error queue, read with MSG_ERRQUEUE."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ...stack.packet_buffer import PacketBuffer
from ...tcpip.options import (SCM_TSTAMP_ACK, SOF_TIMESTAMPING_OPT_ID,
                              SOF_TIMESTAMPING_OPT_ID_TCP, SOF_TIMESTAMPING_OPT_TSONLY, SOF_TIMESTAMPING_TX_ACK,
                              SOF_TIMESTAMPING_TX_SCHED, SOF_TIMESTAMPING_TX_SOFTWARE)
from ...waiter import EventMask
from ..datagram import ENTRY_OVERHEAD, TRANSMIT_STAMPS, TransmitStamp, link_frame

if TYPE_CHECKING:
    from .endpoint import TCPEndpoint

MASK = 0xFFFFFFFF
TRANSMIT_FLAGS = SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_TX_ACK


class TransmitStamper:
    """The flags SO_TIMESTAMPING set, where OPT_ID's byte count starts, the marks not yet acknowledged
    (last byte, key, the stamps asked for, and once sent, the payload of the segment that carried it), and
    the bytes the stamps queued hold (charged to the receive buffer, as Linux charges them)."""

    __slots__ = ("flags", "base", "marks", "queued_bytes")

    def __init__(self) -> None:
        self.flags = 0
        self.base = 0
        self.marks: deque[list] = deque()
        self.queued_bytes = 0

    def set_flags(self, flags: int, una: int, write_end: int) -> None:
        """New SO_TIMESTAMPING flags; OPT_ID newly on counts bytes from the oldest unacknowledged one, or
        with OPT_ID_TCP from the next one written (Linux's sock_set_timestamping)."""
        if flags & SOF_TIMESTAMPING_OPT_ID and not self.flags & SOF_TIMESTAMPING_OPT_ID:
            self.base = write_end if flags & SOF_TIMESTAMPING_OPT_ID_TCP else una
        self.flags = flags

    def written(self, last: int) -> None:
        """A send call whose last byte has (unwrapped) sequence number ``last``."""
        flags = self.flags
        if flags & TRANSMIT_FLAGS:
            key = (last - self.base) & MASK if flags & SOF_TIMESTAMPING_OPT_ID else 0
            self.marks.append([last, key, flags, None])

    def transmitted(self, ep: TCPEndpoint, seq: int, size: int, payload: bytes | memoryview | list[memoryview],
                    pkt: PacketBuffer | None) -> None:
        """A segment of ``size`` bytes from ``seq`` went out (first transmission): the latest mark it
        carries is stamped; earlier ones in it go without, as their bytes share one skb's key on Linux."""
        carried = [mark for mark in self.marks if mark[3] is None and seq <= mark[0] < seq + size]
        if not carried:
            return
        _, key, flags, _ = carried[-1]
        # (the payload is kept for TX_ACK's stamp only: b"" marks the others sent)
        sent = b"" if not flags & SOF_TIMESTAMPING_TX_ACK or flags & SOF_TIMESTAMPING_OPT_TSONLY else \
            b"".join(payload) if type(payload) is list else bytes(payload)
        for mark in carried:
            mark[3] = sent
        for mark in carried[:-1]:
            self.marks.remove(mark)
        frame = b"" if flags & SOF_TIMESTAMPING_OPT_TSONLY or pkt is None else link_frame(ep.route, pkt)
        for info, flag in TRANSMIT_STAMPS:
            if flags & flag:
                self._queue(ep, info, key, frame)
        if not flags & SOF_TIMESTAMPING_TX_ACK:
            self.marks.remove(carried[-1])

    def acked(self, ep: TCPEndpoint, ack: int) -> None:
        """The peer acknowledged everything below ``ack``: the marks within it are stamped (TX_ACK), with
        the payload of the segment that carried them."""
        marks = self.marks
        while marks and marks[0][0] < ack and marks[0][3] is not None:
            _, key, flags, payload = marks.popleft()
            if flags & SOF_TIMESTAMPING_TX_ACK:
                self._queue(ep, SCM_TSTAMP_ACK, key, payload)

    def _queue(self, ep: TCPEndpoint, info: int, key: int, frame: bytes) -> None:
        cost = len(frame) + ENTRY_OVERHEAD
        if self.queued_bytes + cost > ep.receive_buffer_size:
            ep.stats.receive_errors.receive_buffer_overflow.increment()
            return
        self.queued_bytes += cost
        ep.error_list().append(TransmitStamp(info, key, frame, ep.stack.clock.now_ns(), ep.route.local_address))
        ep.waiter_queue.notify(EventMask.ERR)

    def dequeued(self, entry: TransmitStamp) -> None:
        self.queued_bytes -= len(entry.payload) + ENTRY_OVERHEAD
