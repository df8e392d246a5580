"""The receiving half of a connection: sequence tracking, reassembly, the advertised window, and
when to acknowledge.

Sequence numbers here are *unwrapped*: 0 is the peer's SYN (the IRS) and they grow without bound,
so comparisons are plain integer comparisons; the endpoint converts at the wire (mod 2**32) once
per segment. That puts wraparound handling in exactly one place.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from typing import Callable

from ...tcpip import TransportEndpointStats
from .buffers import ReceiveQueue
from .sack import update_sack_blocks

DELAYED_ACK_TIMEOUT = 0.040     # Linux's minimum ATO
QUICKACK_SEGMENTS = 16          # segments acknowledged at once while a connection starts (Linux's quickack)
MAX_OOO_SEGMENTS = 1024         # a hostile peer cannot make the out-of-order queue grow past this
MAX_WINDOW = 65535
_COALESCE_LIMIT = 65536         # bytes one SO_TIMESTAMP record covers at most (about an skb's worth)

# What a segment asks of the acknowledgement (``handle_data``'s answer).
ACK_NONE = 0    # nothing new arrived
ACK_LATER = 1   # the delayed-ACK timer covers it (the endpoint arms it)
ACK_SOON = 2    # once the stack is done with the current event: a batch of segments read at once gets one
                # ACK, and a reply the application writes in answer carries it (TCPProtocol.owe_ack)
ACK_NOW = 3     # out of order: each is a duplicate ACK the sender counts towards fast retransmit


class Receiver:
    """Holds no reference back to its endpoint (the endpoint acts on what the methods return), so a
    finished connection is freed by reference counting, without waiting for the cyclic GC."""

    __slots__ = ("irs", "nxt", "queue", "ooo", "ooo_bytes", "buffer_size", "max_buffer_size", "wscale",
                 "adv_edge", "unacked_bytes", "ack_owed", "quickacks", "fin_received", "mss", "sack_ok",
                 "sack_blocks", "dsack", "moderate", "copied", "copied_since", "stats", "now", "urg_seq", "urg_byte",
                 "urg_read", "clamp", "stamps", "stamp_run", "clock_ns", "ooo_packets")

    def __init__(self, irs: int, buffer_size: int, max_buffer_size: int, wscale: int, mss: int, sack_ok: bool,
                 stats: TransportEndpointStats, now: Callable[[], float]) -> None:
        self.irs = irs                  # the peer's initial sequence number (wire), our 0
        self.nxt = 1                    # next byte expected (the SYN took 0)
        self.queue = ReceiveQueue()
        # (seq, end, data, fin, arrival in ns since the epoch while SO_TIMESTAMP is on, else 0), sorted
        self.ooo: list[tuple[int, int, memoryview, bool, int]] = []
        self.ooo_bytes = 0
        self.ooo_packets = 0            # segments that arrived out of order (TCP_INFO's tcpi_rcv_ooopack)
        self.buffer_size = buffer_size
        self.max_buffer_size = max_buffer_size
        self.wscale = wscale            # our shift (0 when scaling was not negotiated)
        self.adv_edge = 1               # right edge of the window we last advertised
        self.unacked_bytes = 0          # in-order bytes received since our last ACK
        self.ack_owed = False           # queued for an ACK at the end of the current event
        self.quickacks = QUICKACK_SEGMENTS
        self.fin_received = False
        self.mss = mss                  # what we expect the peer to send (for ACK and window decisions)
        self.sack_ok = sack_ok          # report out-of-order blocks (RFC 2018)
        self.sack_blocks: list[tuple[int, int]] = []
        # A duplicate just received (RFC 2883): reported once, as the first SACK block of the next ACK.
        self.dsack: tuple[int, int] | None = None
        self.moderate = True            # receive-buffer auto-tuning, until the user sets a size
        self.copied = 0
        self.copied_since = now()
        self.stats = stats              # the endpoint's
        self.now = now
        # Urgent data (RFC 9293 §3.8.5, as Linux keeps it: one byte, the last the pointer marks): the
        # byte's sequence number (-1: none), its value once it is in (-1: not yet), and whether
        # recv(MSG_OOB) took it. See TCPEndpoint's urgent-data section.
        self.urg_seq = -1
        self.urg_byte = -1
        self.urg_read = False
        self.clamp = 0                  # TCP_WINDOW_CLAMP: the most window offered (0: none)
        # SO_TIMESTAMP: when the bytes up to each sequence number arrived (ns since the epoch), while asked for.
        self.stamps: deque[tuple[int, int]] | None = None
        self.stamp_run = 0              # ... where the last record's bytes start
        self.clock_ns: Callable[[], int] = time.time_ns

    # --- inbound data -----------------------------------------------------------------------------

    def handle_data(self, seq: int, data: memoryview, fin: bool) -> int:
        """Take the segment's data and FIN; returns when to acknowledge it (ACK_LATER/SOON/NOW)."""
        nxt = self.nxt
        end = seq + len(data)
        if seq < nxt:                       # retransmitted bytes we already have
            self.duplicate(seq, min(end, nxt))
            data = data[nxt - seq:]
            seq = nxt
        limit = max(self.adv_edge, nxt)
        if end > limit:                     # beyond the window we offered: not ours to keep
            data = data[:max(0, limit - seq)]
            end = seq + len(data)
            fin = False
        if seq > nxt:
            if data or fin:
                self._insert_out_of_order(seq, end, data, fin)
            return ACK_NOW                  # RFC 5681 §4.2: out-of-order data is ACKed at once
        filled_hole = bool(self.ooo)
        stamps = self.stamps
        if data:
            unread = self.queue.size
            self.queue.append(data)
            self.nxt = nxt = end
            self.unacked_bytes += len(data)
            if stamps is not None:
                self._stamp(seq, nxt, self.clock_ns(), unread > 0)
        while self.ooo and self.ooo[0][0] <= nxt:
            oseq, oend, odata, ofin, arrived = self.ooo.pop(0)
            self.ooo_bytes -= len(odata)
            if oend > nxt:
                tail = odata[nxt - oseq:]
                self.queue.append(tail)
                if stamps is not None:      # (a held segment keeps when it came)
                    self._stamp(nxt, oend, arrived or self.clock_ns(), True)
                self.nxt = nxt = oend
            if ofin and oend >= nxt:
                fin = True
        if filled_hole and self.sack_blocks:
            self.sack_blocks = update_sack_blocks(self.sack_blocks, nxt, nxt, nxt)
        if fin and not self.fin_received:
            self.fin_received = True
            self.nxt = nxt + 1
            return ACK_SOON
        if filled_hole or self.quickacks > 0 or self.unacked_bytes >= 2 * self.mss:
            if self.quickacks > 0:
                self.quickacks -= 1
            return ACK_SOON
        return ACK_LATER if data else ACK_NONE

    def _insert_out_of_order(self, seq: int, end: int, data: memoryview, fin: bool) -> None:
        self.ooo_packets += 1
        ooo = self.ooo
        i = bisect.bisect_left(ooo, (seq,))
        for j in (i - 1, i):                # already held whole: a duplicate
            if 0 <= j < len(ooo) and ooo[j][0] <= seq and ooo[j][1] >= end and (ooo[j][3] or not fin):
                self.duplicate(seq, end)
                self._report_sack(seq, end)
                return
        if len(ooo) >= MAX_OOO_SEGMENTS:
            self.stats.receive_errors.receive_buffer_overflow.increment()
            return
        ooo.insert(i, (seq, end, data, fin, self.clock_ns() if self.stamps is not None else 0))
        self.ooo_bytes += len(data)
        self._report_sack(seq, end)

    def duplicate(self, seq: int, end: int) -> None:
        """Bytes ``seq``..``end`` came again: a D-SACK block tells the sender (RFC 2883, Linux's
        tcp_dsack_set), which learns that a retransmission was spurious."""
        if self.sack_ok and end > seq:
            self.dsack = (seq, end)

    def _report_sack(self, seq: int, end: int) -> None:
        if self.sack_ok and end > seq:
            self.sack_blocks = update_sack_blocks(self.sack_blocks, seq, end, self.nxt)

    def read_stamp(self) -> int | None:
        """When the last segment the latest read took bytes from arrived (Linux's tcp_recv_timestamp stamps
        a read with its last skb copied): the entry that holds the byte before ``read_seq``."""
        stamps = self.stamps
        if stamps is None:
            return None
        read = self.read_seq
        while stamps and stamps[0][0] < read:
            stamps.popleft()        # (wholly read: no later read needs them)
        return self.stamp_of(read)

    def _stamp(self, start: int, end: int, arrived: int, behind_unread: bool) -> None:
        """Record when bytes ``start``..``end`` arrived. Bytes that find the ones before them unread join
        their record, up to 64 KB, which then says when they came — as Linux's tcp_try_coalesce merges a
        segment into the unread skb before it, stamp and all (and a held segment, when a hole fills, into
        the one that filled it)."""
        stamps = self.stamps
        assert stamps is not None
        if behind_unread and stamps and stamps[-1][0] == start and end - self.stamp_run <= _COALESCE_LIMIT:
            stamps[-1] = (end, arrived)
        else:
            stamps.append((end, arrived))
            self.stamp_run = start

    def stamp_of(self, seq: int) -> int | None:
        """When the segment holding the byte before ``seq`` arrived, leaving the record be: a peek's stamp."""
        for end, stamp in self.stamps or ():
            if end >= seq:
                return stamp
        return None

    @property
    def read_seq(self) -> int:
        """Sequence number of the next byte the reader gets (Linux's copied_seq)."""
        return self.nxt - (1 if self.fin_received else 0) - self.queue.size

    # --- the window -------------------------------------------------------------------------------

    def free_space(self) -> int:
        return max(0, self.buffer_size - self.queue.size - self.ooo_bytes)

    def window_field(self) -> int:
        """The window to put in an outgoing segment (already shifted), moving ``adv_edge``.

        Receiver-side silly-window avoidance (RFC 9293 §3.8.6.2.2): the right edge advances only by
        at least min(buffer/2, MSS); and it never moves left (RFC 9293 §3.8.6.2.2, RFC 7323 §2.4).
        """
        nxt = self.nxt
        free = self.free_space()
        if self.clamp and free > self.clamp:
            free = self.clamp
        edge = nxt + free
        if edge - self.adv_edge < min(self.buffer_size // 2, self.mss):
            edge = self.adv_edge
        window = max(edge, self.adv_edge) - nxt
        if window <= 0:
            self.adv_edge = max(self.adv_edge, nxt)
            return 0
        shift = self.wscale
        field = window >> shift
        if (field << shift) + nxt < self.adv_edge:
            field += 1                      # rounding down would shrink what we offered before
        if field > MAX_WINDOW:
            field = MAX_WINDOW
        self.adv_edge = max(self.adv_edge, nxt + (field << shift))
        return field

    def window_update_due(self) -> bool:
        """After the reader freed space: has the window opened enough to tell the peer now?"""
        # Only what the window field can carry counts: with the field saturated, an update says nothing new.
        opening = self.nxt + min(self.free_space(), MAX_WINDOW << self.wscale) - self.adv_edge
        return opening >= min(self.buffer_size // 2, 2 * self.mss)

    # --- reading ----------------------------------------------------------------------------------

    def consumed(self, count: int, srtt: float) -> bool:
        """The reader took ``count`` bytes: auto-tune the buffer (Linux's DRS, over one round trip of
        ``srtt``); returns whether the window opened enough to tell the peer (which the endpoint does
        at the end of the event: a reply the reader writes next carries the update)."""
        if self.moderate:
            self.copied += count
            now = self.now()
            if now - self.copied_since >= (srtt or 0.001):
                if 2 * self.copied > self.buffer_size:
                    self.buffer_size = min(self.max_buffer_size, 2 * self.copied)
                self.copied = 0
                self.copied_since = now
        return self.window_update_due()

    def on_ack_sent(self) -> None:
        self.unacked_bytes = 0
        self.ack_owed = False
