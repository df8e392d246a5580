"""The sending half of a connection: what to send when, and recovering what was lost.

- Transmission is limited by the congestion window (in segments, as Linux and netstack count it),
  the peer's window, Nagle (RFC 9293 §3.7.4) and cork, with sender-side silly-window avoidance.
- Loss is recovered by the retransmission timer (RFC 6298: Karn's rule, exponential backoff,
  200 ms minimum as Linux; after it, what the peer SACKed is not resent unless it reneged, as
  Linux's tcp_timeout_mark_lost), by fast retransmit with NewReno recovery (RFC 5681, RFC 6582), or,
  when the peer sends SACK, by RFC 6675 loss recovery driven by the scoreboard, the window brought
  down to ssthresh in proportion to what the peer receives meanwhile (PRR, RFC 6937, as Linux).
- A recovery or timeout was spurious — undone, the window back where it was — if every retransmission
  it made is reported as a duplicate (D-SACK, Linux's tcp_try_undo_dsack), or if the first ACK after
  it echoes a timestamp older than the first retransmission: the original got through (the Eifel
  detection, RFC 3522; Linux's tcp_packet_delayed), or — F-RTO, RFC 5682 §3 — if after a timeout the
  peer acknowledges data that was never resent (new data is sent to find out, before resending more).
- With SACK, losses are found by time (RACK, RFC 8985 §6: see ``rack``) rather than by counting
  SACKed segments, unless ``TCPProtocol.rack_loss_detection`` is off.
- With SACK, a tail loss probe (RFC 8985 §7, as Linux's TLP) goes out when nothing has been heard
  for two round trips: one new segment, or the last one again, to draw the ACK or SACK that starts
  recovery, instead of waiting for the retransmission timer.
- A zero window is probed by the persist timer, forever while the peer answers (as Linux).
- Data written after more than an RTO with nothing in flight starts from a restart window
  (RFC 5681 §4.1, as Linux's tcp_slow_start_after_idle).

Sequence numbers are unwrapped: 0 is our SYN, data starts at 1, and the FIN takes the number after
the last data byte. ``wire()`` converts to the 32-bit numbers in headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...header import tcp
from ...tcpip import ErrTimeout
from ...tcpip.options import UNLIMITED_PACING_RATE
from . import congestion
from .buffers import SendBuffer
from .rack import RACK
from .sack import SACKScoreboard
from .segment import ACK, FIN, PSH

if TYPE_CHECKING:
    from ...stack.clock import Timer
    from .endpoint import TCPEndpoint

MASK = 0xFFFFFFFF
MIN_RTO = 0.2
MAX_RTO = 120.0
INITIAL_RTO = 1.0
INITIAL_CWND = 10           # RFC 6928, Linux's default
DUP_THRESH = 3
INFINITE_SSTHRESH = (1 << 31) - 1
PROBE_SLACK = 0.002         # added to a loss probe's two round trips (Linux's TCP_TIMEOUT_MIN)
PROBE_DELAYED_ACK = MIN_RTO  # ... with one segment in flight, whose ACK the peer may delay (RFC 8985 §7.2)
PROBE_WITHOUT_RTT = 1.0     # ... before any round trip was measured (Linux's TCP_TIMEOUT_INIT)
CHRONO_NONE, CHRONO_BUSY, CHRONO_RWND_LIMITED, CHRONO_SNDBUF_LIMITED = range(4)     # (in order of precedence)
THIN_LINEAR_RETRIES = 6     # timeouts a thin stream's RTO does not back off for (TCP_THIN_LINEAR_TIMEOUTS)


class Sender:
    __slots__ = ("ep", "iss", "una", "nxt", "max", "wnd", "max_wnd", "wl1", "wl2", "wscale", "mss", "buffer",
                 "fin_queued", "cwnd", "ssthresh", "cc_name", "_cc", "srtt", "rttvar", "rto", "min_rtt", "retransmits",
                 "timer", "persisting", "dupacks", "recovery", "recover", "sack", "high_rxt", "rtt_seq", "rtt_time",
                 "now", "total_retransmits", "burst", "scatter", "last_sent", "push_owed", "up", "una_since",
                 "probe_due", "tlp_high", "tlp_retransmitted", "rack", "reo_due",
                 "undo_marker", "undo_retrans", "prior_cwnd", "prior_ssthresh", "prr_delivered", "prr_out",
                 "retrans_ts", "retrans_high", "undo_timeout", "frto", "frto_mark", "frto_sacked", "bytes_retrans",
                 "dsack_dups", "total_rto", "total_rto_recoveries", "delivered", "delivered_time", "app_limited",
                 "rate_prior", "rate_delivered", "rate_interval", "rate_app_limited", "data_segs_out", "chrono",
                 "chrono_since", "chrono_totals", "blocked", "last_ack_time", "rto_stamp", "total_rto_time",
                 "departure", "pacing_timer")

    def __init__(self, ep: TCPEndpoint, iss: int, mss: int, cc_name: str) -> None:
        self.ep = ep
        self.iss = iss
        self.una = 0                # oldest unacknowledged
        self.nxt = 0                # next to send
        self.max = 0                # highest ever sent + 1 (nxt goes back below it after a timeout)
        self.wnd = 0                # peer's window, in bytes
        self.max_wnd = 0
        self.wl1 = -1               # peer sequence / our ack of the last window update (RFC 9293 SND.WL1/2)
        self.wl2 = -1
        self.wscale = 0             # the peer's shift
        self.mss = mss              # payload bytes per segment, options already taken off
        self.burst = mss            # bytes per transmission: several segments when the link does GSO
        self.scatter = False        # the link writes a super-segment's payload in pieces (no join)
        self.up = 0                 # urgent mode while > una: just past the urgent byte (Linux's snd_up)
        self.una_since = 0.0        # since when the oldest unacknowledged byte has waited (TCP_USER_TIMEOUT)
        self.buffer = SendBuffer(1)
        self.fin_queued = False
        self.cwnd = INITIAL_CWND
        self.ssthresh = INFINITE_SSTHRESH
        self.cc_name = cc_name
        self._cc: congestion.CongestionControl | None = None
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = INITIAL_RTO
        self.min_rtt = 0.0
        self.retransmits = 0        # consecutive timeouts (reset by progress)
        self.total_retransmits = 0
        # For TCP_INFO: payload bytes resent, D-SACKs received, timeouts, and the episodes they began.
        self.bytes_retrans = self.dsack_dups = self.total_rto = self.total_rto_recoveries = 0
        self.persisting = False
        self.dupacks = 0
        self.recovery = False
        self.recover = 0            # RFC 6582 "recover": snd.max when the last recovery began
        self.sack: SACKScoreboard | None = None
        self.high_rxt = 0
        self.rtt_seq: int | None = None   # the segment being timed (Karn: never a retransmitted one)
        self.rtt_time = 0.0
        self.last_sent = 0.0        # when data last went out (0: never)
        self.push_owed = False      # written while data was in flight: sent when the writer yields
        self.probe_due = False      # the timer is the tail loss probe's, not the RTO
        self.tlp_high = -1          # nxt when the outstanding loss probe went (-1: none; RFC 8985 TLP.end_seq)
        self.tlp_retransmitted = False   # ... and it resent the last segment (so its ACK may mean a loss)
        self.rack: RACK | None = None   # with SACK: time-based loss detection
        self.reo_due = False        # the timer is RACK's reordering timer, not the RTO
        self.undo_marker = -1       # una when the last recovery or timeout began, while it may be undone (-1: not)
        self.undo_retrans = 0       # ... segments retransmitted since, not yet reported as duplicates
        self.retrans_ts = -1        # our timestamp on the oldest retransmission not yet acknowledged (-1: none) ...
        self.retrans_high = 0       # ... and the end of the highest one
        self.prior_cwnd = 0         # ... and the window it reduced
        self.prior_ssthresh = 0
        self.undo_timeout = False   # ... a timeout's (else a recovery's)
        self.frto = 0               # F-RTO after a timeout: 1 awaiting the first ACK, 2 new data sent to probe
        self.frto_mark = 0          # ... the end of what was resent before new data went instead
        self.frto_sacked = 0        # ... the end of what the peer had SACKed before the timeout
        self.prr_delivered = 0      # segments the peer received since the recovery began (RFC 6937) ...
        self.prr_out = 0            # ... and segments sent meanwhile
        # Delivery rate (Linux's tcp_rate.c, sampled once a round trip, on the segment timed for the RTT):
        # segments delivered (cumulatively acknowledged; the SYN's counts) and when the count last grew;
        # while the application leaves the window unused, the count at which that ends (0: it does not);
        # the timed segment's snapshot (delivered, since when, application-limited) until its ACK; and the
        # sample TCP_INFO reports (segments over seconds, application-limited), kept while faster ones come.
        self.delivered = 0
        self.delivered_time = 0.0
        self.app_limited = 0
        self.rate_prior: tuple[int, float, bool] | None = None
        self.rate_delivered = 0
        self.rate_interval = 0.0
        self.rate_app_limited = False
        self.data_segs_out = 0      # segments carrying data, resent ones included (TCP_INFO)
        # Linux's chronograph (tcp_chrono_*): what the connection is doing, one of BUSY (data queued),
        # RWND_LIMITED (held back by the peer's window) and SNDBUF_LIMITED (all sent, the writer waiting for
        # room), the most telling one winning; since when; seconds spent in each before (index: the kind).
        self.chrono = CHRONO_NONE
        self.chrono_since = 0.0
        self.chrono_totals = [0.0, 0.0, 0.0, 0.0]
        self.blocked = False        # a write found the send buffer full (Linux's SOCK_NOSPACE)
        self.rto_stamp = 0.0        # when the timeouts under way began (0: none), and the seconds of those before
        self.total_rto_time = 0.0
        self.last_ack_time = 0.0    # when the last acceptable ACK came
        # Paced (SO_MAX_PACING_RATE set once, Linux's internal pacing): when the next transmission may leave
        # (Linux's tcp_wstamp_ns), and the timer that sends it then (made at the first wait).
        self.departure = 0.0
        self.pacing_timer: Timer | None = None
        self.now = ep.stack.clock.now
        self.timer = ep.stack.timers.timer(ep.guarded, self._on_timer)

    @property
    def cc(self) -> congestion.CongestionControl:
        """The congestion-control algorithm, created when first consulted: a short connection (one
        request, one answer) never leaves the initial window, and never needs one."""
        cc = self._cc
        if cc is None:
            cc = self._cc = congestion.new(self.cc_name, self)  # type: ignore[arg-type]  # (outstanding: a property)
        return cc

    def set_congestion_control(self, name: str) -> None:
        """Switch algorithm (TCP_CONGESTION): the new one starts from the current window, in its own initial state."""
        self.cc_name = name
        self._cc = None

    # --- the congestion-state view the algorithms read --------------------------------------------

    @property
    def outstanding(self) -> int:
        """Segments in flight."""
        return (self.max - self.una + self.mss - 1) // self.mss

    def wire(self, seq: int) -> int:
        return (seq + self.iss) & MASK

    def unwrap(self, wire: int) -> int:
        """The unwrapped number of a 32-bit acknowledgment number, taken nearest to ``una``."""
        delta = (wire - self.iss - self.una) & MASK
        return self.una + (delta - (1 << 32) if delta & 0x80000000 else delta)

    def enable_sack(self) -> None:
        self.sack = SACKScoreboard(self.mss)
        if self.ep.proto.rack_loss_detection:
            self.rack = RACK()

    # --- writing --------------------------------------------------------------------------------

    def queue(self, data: bytes | bytearray | memoryview, keep: bool = False) -> None:
        """The application wrote ``data`` (``keep``: held as it is, not copied: MSG_ZEROCOPY). Coming with
        nothing in flight, it restarts transmission:
        a congestion window not used for more than an RTO no longer reflects the path (no ACK has
        clocked it), so, as Linux's tcp_cwnd_restart (RFC 5681 §4.1), it goes back to the initial
        window, halved first for each RTO of silence, and ssthresh keeps three quarters of it."""
        if self.una == self.max and self.last_sent:
            idle = self.now() - self.last_sent
            if self._cc is not None:
                self._cc.on_transmit_start(idle)
            if idle > self.rto:
                cwnd = self.cwnd
                restart = min(INITIAL_CWND, cwnd)
                self.ssthresh = max(self.ssthresh, (cwnd >> 1) + (cwnd >> 2))
                idle -= self.rto
                while idle > 0 and cwnd > restart:
                    cwnd >>= 1
                    idle -= self.rto
                self.cwnd = max(cwnd, restart)
        if self.una >= self.buffer.end:
            self.chrono_start(CHRONO_BUSY)
        self.buffer.append(data, keep)

    def queue_fin(self) -> None:
        if not self.fin_queued:
            self.fin_queued = True
            self.send_data()

    @property
    def fin_seq(self) -> int:
        return self.buffer.end

    def fin_acked(self) -> bool:
        return self.fin_queued and self.una > self.buffer.end

    # --- transmission -----------------------------------------------------------------------------

    def send_data(self) -> None:
        """Send whatever the windows, Nagle, cork and recovery allow right now."""
        ep = self.ep
        if ep is None or not ep.can_send_data():
            return      # (None: the connection ended under a callback of this very ACK's processing)
        if self.recovery and self.sack is not None:
            self._sack_recovery_send()
            return
        mss = self.mss
        buffer = self.buffer
        sack = self.sack
        rwnd_limited = False
        # After a timeout, what the peer SACKed is neither resent nor counted in flight (Linux's CA_Loss).
        timed_out = sack is not None and self.una < self.recover and sack.sacked_bytes()
        while True:
            nxt = self.nxt
            data_end = buffer.end
            gap_end = data_end
            if timed_out and nxt < self.max:
                start, end = sack.unsacked_from(self.wire(nxt), self.wire(self.max))  # type: ignore[union-attr]
                nxt = self.nxt = self.unwrap(start)
                gap_end = min(data_end, self.unwrap(end))      # (up to what the peer holds next)
            pending = gap_end - nxt
            fin_pending = self.fin_queued and nxt <= data_end and gap_end == data_end
            if pending <= 0 and not fin_pending:
                break
            inflight = nxt - self.una
            if timed_out:
                inflight -= sack.sacked_below(self.wire(nxt))  # type: ignore[union-attr]
            room = min(self.cwnd * mss - inflight, self.una + self.wnd - nxt)
            # In urgent mode, segments one by one: each carries its own urgent pointer (Linux sends
            # no TSO for MSG_OOB either), which a super-segment's cut pieces would all copy.
            burst = self.burst if self.up <= nxt else mss
            if ep.pacing:
                if room > 0 and self._pacing_holds():
                    break
                burst = self._paced_burst(burst)
            size = min(pending, burst, room) if pending > 0 else 0
            if size > mss:
                size -= size % mss          # super-segments carry whole segments; the tail goes next
            if room <= 0:
                if self.una + self.wnd <= nxt:
                    rwnd_limited = True
                    if nxt == self.una:
                        self._start_persist()
                break
            if 0 < size < mss and size < pending:
                # Window-limited to a sliver: silly-window avoidance (RFC 9293 §3.8.6.2.1) waits for
                # at least half the largest window the peer ever offered.
                if size < self.max_wnd // 2:
                    rwnd_limited = self.una + self.wnd - nxt <= size
                    if nxt == self.una:
                        self._start_persist()
                    break
            elif 0 < size < mss and not fin_pending and nxt >= self.max and not self.up:
                if ep.cork or (not ep.nodelay and inflight > (1 if self.una == 0 else 0)):
                    break   # Nagle: one small segment in flight at a time; cork: full segments only
                # (neither holds back urgent data: Linux's tcp_nagle_test; nor does a Fast Open server's
                # SYN-ACK, not yet acknowledged, hold back its first answer)
            flags = ACK
            end = nxt + size
            if end == data_end:
                if size:
                    flags |= PSH    # a bare FIN has nothing to push (as Linux)
                if fin_pending:
                    flags |= FIN
            self._transmit(nxt, size, flags)
            self.nxt = end + (1 if flags & FIN else 0)
            if self.nxt > self.max:
                self.max = self.nxt
            if flags & FIN:
                break
        if rwnd_limited:
            self.chrono_start(CHRONO_RWND_LIMITED)
        elif self.chrono == CHRONO_RWND_LIMITED:
            self.chrono_stop(CHRONO_RWND_LIMITED)
        if self.blocked and self.nxt >= buffer.end:
            self.chrono_start(CHRONO_SNDBUF_LIMITED)   # all sent, and the writer waits for room
        if self.una < self.max and (self.probe_due or not self.timer.armed):
            # (a loss probe waits two round trips from the latest transmission: Linux re-arms it)
            self.persisting = False
            self._arm_retransmit(advancing=False)

    def _transmit(self, seq: int, size: int, flags: int) -> None:
        now = self.now()
        segments = max(1, -(-size // self.mss))     # (as Linux counts a super-segment: tcp_skb_pcount)
        if size:
            payload = self.buffer.get(seq, size, self.scatter and size > self.mss)
            self.last_sent = now
            self.data_segs_out += segments
        else:
            payload = b""
        if self.rack is not None:
            self.rack.sent(seq, seq + size + (flags & FIN), now, seq < self.max)
        if self.recovery:
            self.prr_out += segments
        if seq < self.max:
            self.total_retransmits += 1
            self.bytes_retrans += size
            self.ep.stack_stats.retransmits.value += 1
            if self.undo_marker >= 0:
                self.undo_retrans += segments
            if self.retrans_ts < 0 and self.ep.ts_ok:
                self.retrans_ts = self.ep.tsval()
            self.retrans_high = max(self.retrans_high, seq + size + (flags & FIN))
            if self.rtt_seq is not None and seq < self.rtt_seq:
                self.rtt_seq = None     # Karn: an ambiguous sample
        else:
            if self.una == self.max:
                self.una_since = now            # nothing was waiting: the wait starts with this
                self.delivered_time = now       # (and a delivery rate is timed from here)
            if self.rtt_seq is None and size:
                self.rtt_seq = seq + size
                self.rtt_time = now
                self.rate_prior = (self.delivered, self.delivered_time, bool(self.app_limited))
        pkt = self.ep.send_segment(seq, flags, payload)
        if self.ep.pacing:
            self._schedule_departure(now, size)
        stamper = self.ep.stamper
        if stamper is not None and stamper.marks and seq >= self.max:
            stamper.transmitted(self.ep, seq, size, payload, pkt)

    # --- pacing (SO_MAX_PACING_RATE) ----------------------------------------------------------------

    def pacing_rate(self) -> int | float:
        """Bytes a second, as Linux's tcp_update_pacing_rate sets it (and TCP_INFO reports it, paced or not):
        the window over the smoothed RTT, twice that in the first half of slow start, 1.2 times after, at
        most SO_MAX_PACING_RATE's; until a round trip is measured, what SO_MAX_PACING_RATE left it."""
        ep = self.ep
        if not self.srtt:
            return ep.pacing_rate_set
        ratio = 2.0 if self.cwnd < self.ssthresh // 2 else 1.2
        return min(self.mss * max(self.cwnd, self.outstanding) * ratio / self.srtt, ep.max_pacing_rate)

    def _pacing_holds(self) -> bool:
        """The next transmission may not leave yet: the pacing timer sends it when it may (Linux's
        tcp_pacing_check)."""
        wait = self.departure - self.now()
        if wait <= 0:
            return False
        timer = self.pacing_timer
        if timer is None:
            ep = self.ep
            timer = self.pacing_timer = ep.stack.timers.timer(ep.guarded, self.send_data)
        if not timer.armed:
            timer.reset(wait)
        return True

    def _schedule_departure(self, now: float, size: int) -> None:
        """A segment of ``size`` payload bytes left at ``now``: the next leaves its length at the pacing rate
        later, from the eleventh data segment on (Linux's tcp_update_skb_after_send); of the time the sender
        came late, up to half that length is made up."""
        prior = self.departure
        departure = max(prior, now)
        rate = self.pacing_rate()
        if 0 < rate < UNLIMITED_PACING_RATE and self.data_segs_out >= 10:
            gap = (size + tcp.MIN_SIZE + self.ep.option_bytes()) / rate
            departure += gap - min(gap / 2, departure - prior)
        self.departure = departure

    def _paced_burst(self, burst: int) -> int:
        """A paced transmission carries about a millisecond at the pacing rate, two segments at least (Linux's
        tcp_tso_autosize, sk_pacing_shift 10)."""
        mss = self.mss
        return min(burst, max(int(self.pacing_rate()) >> 10, 2 * mss) // mss * mss)

    def _retransmit_first(self) -> None:
        """Resend the oldest unacknowledged segment (fast retransmit, partial ACK, RTO)."""
        una = self.una
        data_end = self.buffer.end
        # A full segment if there is data for it, bytes written since the first transmission included,
        # as far as the peer's window allows.
        size = min(self.mss, data_end - una, max(self.max, una + self.wnd) - una) if una < data_end else 0
        sack = self.sack
        if sack is not None and sack.sacked_bytes():
            size = min(size, self.unwrap(sack.unsacked_from(self.wire(una), self.wire(una + size))[1]) - una)
        flags = ACK
        if una + size == data_end:
            if size:
                flags |= PSH
            if self.fin_queued and self.max > data_end:
                flags |= FIN
        if size or flags & FIN:
            self._transmit(una, size, flags)
            if una + size + (1 if flags & FIN else 0) > self.nxt:
                self.nxt = una + size + (1 if flags & FIN else 0)
            if self.nxt > self.max:
                self.max = self.nxt     # new bytes went out with the old ones

    def _sack_recovery_send(self) -> None:
        """RFC 6675 §5: while the pipe leaves room for a segment, retransmit what is lost, else send new data."""
        if self.rack is not None:
            self._rack_recovery_send()
            return
        sack = self.sack
        assert sack is not None
        mss = self.mss
        wire = self.wire
        pipe = sack.pipe(wire(self.una), wire(self.nxt), wire(self.high_rxt), mss)
        while self.cwnd * mss - pipe >= mss:
            if self.ep.pacing and self._pacing_holds():
                break
            seg = sack.next_seg(wire(self.high_rxt), wire(self.una), wire(self.nxt), mss)
            if seg is not None:
                start = self.unwrap(seg[0])
                size = (seg[1] - seg[0]) & MASK
                data_end = self.buffer.end
                size = min(size, max(0, data_end - start))
                flags = ACK
                if start + size == data_end and self.fin_queued and self.max > data_end:
                    flags |= FIN
                if not size and not flags & FIN:
                    break
                self._transmit(start, size, flags)
                self.high_rxt = start + size + (1 if flags & FIN else 0)
                pipe += max(size, 1)      # RFC 6675 §5 (C.4)
                continue
            sent = self._send_new_segment()
            if not sent:
                break
            pipe += sent
        if self.una < self.max and not self.timer.armed:
            self.timer.reset(self.rto)

    def _send_new_segment(self) -> int:
        """In recovery, with nothing to resend: one segment of new data as far as the peer's window goes
        (RFC 6675 NextSeg rule 2). Returns its size, 0 if there is none or no room."""
        nxt, data_end = self.nxt, self.buffer.end
        size = min(data_end - nxt, self.mss, self.una + self.wnd - nxt)
        if size <= 0:
            return 0
        self._transmit(nxt, size, ACK | (PSH if nxt + size == data_end else 0))
        self.nxt = nxt + size
        if self.nxt > self.max:
            self.max = self.nxt
        return size

    def _rack_recovery_send(self) -> None:
        """Recovery with RACK: while the pipe leaves room for a segment, resend what RACK marked lost,
        lowest first, else send new data."""
        rack = self.rack
        assert rack is not None
        mss = self.mss
        pipe = rack.pipe()
        while self.cwnd * mss - pipe >= mss:
            if self.ep.pacing and self._pacing_holds():
                break
            lost = rack.first_lost()
            if lost is not None:
                start, end = lost[0], lost[1]
                data_end = self.buffer.end
                size = min(end, data_end, start + mss) - start
                flags = ACK
                if start + size == data_end:
                    if size:
                        flags |= PSH
                    if end > data_end:
                        flags |= FIN        # the FIN was lost too
                if not size and not flags & FIN:
                    break
                self._transmit(start, size, flags)
                pipe += max(size, 1)
                continue
            sent = self._send_new_segment()
            if not sent:
                break
            pipe += sent
        if self.una < self.max and not self.timer.armed:
            self.timer.reset(self.rto)

    def _rack_detect(self) -> None:
        """RFC 8985 §6.2: mark lost what is overdue, start recovery for it, and time what is not yet."""
        rack = self.rack
        assert rack is not None
        reo_wnd = rack.reo_wnd(self.srtt, self.min_rtt, self.recovery,
                               self.sack.sacked_bytes() >= DUP_THRESH * self.mss)  # type: ignore[union-attr]
        lost, lost_retransmissions, wait = rack.detect_loss(self.now(), reo_wnd)
        if lost_retransmissions:
            self.ep.stack_stats.lost_retransmits.increment(lost_retransmissions)
        if lost and not self.recovery and self.una > self.recover:
            self._enter_recovery()
        if wait:
            self.reo_due = True
            self.probe_due = False
            self.timer.reset(wait)

    # --- acknowledgments --------------------------------------------------------------------------

    def handle_ack(self, seg_seq: int, ack: int, window: int, pure_ack: bool,
                   sack_blocks: tuple[tuple[int, int], ...], echoed: int | None = None) -> None:
        """Process the ACK fields of an acceptable segment (``ack`` unwrapped, within [una, max]; ``echoed``:
        its timestamp echo, with timestamps on)."""
        old_wnd = self.wnd
        now = self.last_ack_time = self.now()
        if seg_seq > self.wl1 or (seg_seq == self.wl1 and ack >= self.wl2):
            self.wnd = window << self.wscale
            self.wl1 = seg_seq
            self.wl2 = ack
            if self.wnd > self.max_wnd:
                self.max_wnd = self.wnd
        new_sack = dsack = False
        sack = self.sack
        # Loss-recovery state can change only with SACK information, in recovery, or while some is held.
        tracking = sack is not None and (sack_blocks or self.recovery or sack.sacked_bytes())
        if tracking:
            prior_una, recovering, sacked = self.una, self.recovery, sack.sacked_bytes()  # type: ignore[union-attr]
            if sack_blocks:
                dsack = self._is_dsack(sack_blocks, ack)
                rack = self.rack
                echo_ms = self._echo_ms(now, echoed)
                for start, end in sack_blocks:
                    s, e = self.unwrap(start), self.unwrap(end)
                    if self.una < s < e <= self.max:   # D-SACKs and nonsense are ignored
                        sack.insert(start, end)  # type: ignore[union-attr]
                        if rack is not None:
                            rack.sacked(s, e, now, self.min_rtt, echo_ms)
                new_sack = sack.sacked_bytes() > sacked  # type: ignore[union-attr]
                if dsack:
                    self.ep.stack_stats.dsacks_received.increment()
                    self.dsack_dups += 1
        if self.tlp_high >= 0:
            self._loss_probe_answered(ack, dsack, not new_sack and pure_ack and ack == self.una)
        if self.persisting:
            self.retransmits = 0            # the peer answers: probing goes on as long as it does
            if self.wnd > 0 or ack > self.una:
                self.persisting = False
                self.timer.cancel()
        # (an answer to a zero-window probe is no sign of loss). RFC 6675 §2: an ACK with new SACK
        # information is a duplicate even if it carries data or a changed window (a Linux receiver's
        # window grows with autotuning; in a two-way transfer its ACKs ride on data).
        duplicate = ack == self.una < self.max and not self.persisting and \
            (new_sack or pure_ack and self.wnd == old_wnd)
        if ack > self.una and self.undo_marker >= 0 and self.retrans_ts >= 0 and echoed is not None and \
                (echoed - self.retrans_ts) & MASK >= 1 << 31:
            self._undo()            # it answers a segment sent before the retransmissions: none was needed
        frto = self.frto and self._frto_ack(ack, sack_blocks, duplicate or new_sack)
        if ack > self.una:
            self._new_ack(ack, now, echoed)
        if frto:
            self._frto_send_new()
        if tracking and self.ep is not None:
            self._sack_feedback(sack_blocks[0] if dsack else None, prior_una)
        if duplicate:
            self._dupack()
        if tracking and self.recovery:
            self._proportional_rate_reduction(self.una - prior_una + sack.sacked_bytes() - sacked,  # type: ignore
                                              self.una > prior_una, entered=not recovering)
        if tracking and self.una > prior_una and sack.sacked_bytes() and self.ep is not None:  # type: ignore
            self._check_reneging()
        self.send_data()
        ep = self.ep
        if ep is not None and ep.notsent_lowat > 0:
            ep.on_send_space()          # what just went out may bring the unsent bytes under the mark

    def _sack_feedback(self, dsack: tuple[int, int] | None, prior_una: int) -> None:
        """What an ACK's SACK information concludes, ahead of its duplicate-ACK count: a D-SACK may
        undo the last recovery and widens RACK's allowance; RACK finds what is lost."""
        if dsack is not None and self.undo_marker >= 0:
            self._dsack_undo(dsack, prior_una)
        rack = self.rack
        if rack is not None:
            if dsack is not None:
                rack.dsack(self.una, self.nxt)
            if self.recovery or self.sack.sacked_bytes():  # type: ignore[union-attr]
                self._rack_detect()     # (before the duplicate's limited transmit: a loss it finds comes first)

    def _check_reneging(self) -> None:
        """The cumulative ACK stopped at data the peer SACKed: it dropped what it held (RFC 2018 §8). The
        timeout that forgets its SACKs and resends comes in half a round trip, 10 ms at least, not an RTO
        (Linux's tcp_check_sack_reneging)."""
        if self._head_sacked():
            self.probe_due = self.reo_due = False
            self.timer.reset(max(self.srtt / 2, 0.01))

    def _head_sacked(self) -> bool:
        """The oldest unacknowledged byte is SACKed, yet not acknowledged: the peer dropped what it held."""
        una = self.wire(self.una)
        return self.sack.is_sacked(una, (una + 1) & MASK)  # type: ignore[union-attr]

    def _pipe(self) -> int:
        """Bytes in flight during SACK recovery, as its loss detection sees them."""
        if self.rack is not None:
            return self.rack.pipe()
        wire = self.wire
        return self.sack.pipe(wire(self.una), wire(self.nxt), wire(self.high_rxt), self.mss)  # type: ignore[union-attr]

    def _proportional_rate_reduction(self, delivered: int, una_advanced: bool, entered: bool = False) -> None:
        """RFC 6937 (Linux's tcp_cwnd_reduction): the window for what this ACK lets go out. While more
        than ssthresh is in flight, send in proportion to what the peer received (ssthresh / the
        window before the loss); below it, grow back towards ssthresh no faster than slow start.
        ``delivered``: bytes newly acknowledged or SACKed; ``entered``: this ACK started the recovery,
        whose fast retransmission went out already, ahead of this reckoning (Linux's comes after it)."""
        mss = self.mss
        newly = (delivered + mss - 1) // mss if delivered > 0 else 0
        self.prr_delivered += newly
        pipe = (self._pipe() + mss - 1) // mss
        sent = self.prr_out
        if entered:
            pipe, sent = pipe - sent, 0
        ssthresh = self.ssthresh
        if pipe > ssthresh:
            prior = max(self.prior_cwnd, 1)
            count = (ssthresh * self.prr_delivered + prior - 1) // prior - sent
        else:
            count = min(ssthresh - pipe, max(self.prr_delivered - sent, newly) + (1 if una_advanced else 0))
        count = max(count, 0 if sent else 1)    # the fast retransmission goes regardless
        self.cwnd = max(pipe + count, 1)

    def _is_dsack(self, blocks: tuple[tuple[int, int], ...], ack: int) -> bool:
        """RFC 2883 §4: the first block reports a duplicate if it lies below the cumulative ACK or
        within the second block."""
        start, end = self.unwrap(blocks[0][0]), self.unwrap(blocks[0][1])
        if end <= ack:
            return True
        if len(blocks) > 1:
            second_start, second_end = self.unwrap(blocks[1][0]), self.unwrap(blocks[1][1])
            return second_start <= start and end <= second_end
        return False

    def _dsack_undo(self, block: tuple[int, int], prior_una: int) -> None:
        """A D-SACK below the cumulative ACK for a retransmission of the last recovery: once every one
        of them is reported so, none was needed — the window goes back to where it was, and the
        recovery ends (Linux's tcp_check_dsack and tcp_try_undo_dsack)."""
        start, end = self.unwrap(block[0]), self.unwrap(block[1])
        if not self.undo_marker < end <= prior_una or self.undo_retrans <= 0:
            return
        self.undo_retrans = max(0, self.undo_retrans - (end - start + self.mss - 1) // self.mss)
        if not self.undo_retrans:
            self.ep.stack_stats.dsack_undos.increment()
            self._undo()

    def _frto_ack(self, ack: int, sack_blocks: tuple[tuple[int, int], ...], duplicate: bool) -> bool:
        """F-RTO (RFC 5682 §3, SACK-enhanced, as Linux's tcp_process_loss): what an ACK after a timeout
        says. Data never resent acknowledged or SACKed: the timeout was spurious, undone. The first ACK
        of resent data only: True — send new data instead of resending more (step 2b). A duplicate ACK
        or a SACK after that: the loss was real, resending goes on."""
        mark = self.nxt if self.frto == 1 else self.frto_mark
        # (what the peer had SACKed before the timeout may be acknowledged now without telling anything)
        floor = max(mark, self.frto_sacked)
        original = ack > floor or any(floor <= self.unwrap(start) and self.unwrap(end) <= self.recover
                                      for start, end in sack_blocks)
        if original and self.undo_marker >= 0:
            self._undo()
            return False
        if ack >= self.recover:
            self.frto = 0           # all sent before the timeout is in, resent: nothing to tell
            return False
        if self.frto == 2:
            if duplicate:
                self.frto = 0
                self.nxt = self.una     # (resending from the first hole, as a timeout does)
            return False
        if ack > self.una and self.buffer.end > self.max and self.una + self.wnd > self.max:
            self.frto, self.frto_mark = 2, mark
            return True
        if ack > self.una:
            self.frto = 0
        return False

    def _frto_send_new(self) -> None:
        """Step 2b: up to two new segments in place of more resent ones, whatever the window: their
        ACK will tell whether the data sent before the timeout had arrived."""
        for _ in range(2):
            start, data_end = self.max, self.buffer.end
            size = min(self.mss, data_end - start, self.una + self.wnd - start)
            if size <= 0:
                break
            self._transmit(start, size, ACK | (PSH if start + size == data_end else 0))
            self.nxt = self.max = start + size

    def _begin_undo(self, timeout: bool) -> None:
        """A recovery or a first timeout begins: remember the window it reduces, in case it was needless.
        (retrans_ts stays: a retransmission still unacknowledged from before is the oldest one, and an ACK
        echoing its timestamp is no sign that the originals got through.)"""
        self.undo_marker, self.undo_retrans = self.una, 0
        self.prior_cwnd, self.prior_ssthresh, self.undo_timeout = self.cwnd, self.ssthresh, timeout

    def _undo(self) -> None:
        """The last recovery or timeout was spurious (Linux's tcp_undo_cwnd_reduction): the window and
        ssthresh go back to what they were, the recovery ends, and after a timeout what was sent before it
        is taken to be on its way (it is not sent again)."""
        stats = self.ep.stack_stats
        timeout = self.undo_timeout
        (stats.spurious_rto_recovery if timeout else stats.spurious_recovery).increment()
        self.cwnd = max(self.cwnd, self.prior_cwnd)
        self.ssthresh = max(self.ssthresh, self.prior_ssthresh)
        self.undo_marker = -1
        self.frto = 0
        self.recovery = False
        self.recover = self.una - 1     # (a loss from here on may start a recovery at once, as Linux's undo opens)
        self.dupacks = 0
        self.retransmits = 0
        if timeout:
            self.nxt = self.max
            if self.rack is not None:
                self.rack.found_in_flight()

    def _echo_ms(self, now: float, echoed: int | None) -> int | None:
        """When (stack clock, in milliseconds) the segment whose timestamp an ACK echoes was sent: RACK tells
        by it a retransmission's delivery from the original's (RFC 8985 §6.2 step 2); None while no
        retransmission is unacknowledged (nothing to tell apart), or without timestamps."""
        if echoed is None or self.retrans_ts < 0:
            return None
        now_ms = int(now * 1000)
        return now_ms - ((now_ms + self.ep.ts_offset - echoed) & MASK)

    def _new_ack(self, ack: int, now: float, echoed: int | None = None) -> None:
        acked = ack - self.una
        flight = self.max - self.una
        packets = (acked + self.mss - 1) // self.mss
        self.delivered += packets
        self.delivered_time = now
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0
        if self.rtt_seq is not None and ack >= self.rtt_seq:
            self.rtt_sample(now - self.rtt_time)
            self.rtt_seq = None
            if self.rate_prior is not None:
                self._rate_sample(now)
        self.retransmits = 0
        if self.rto_stamp:
            self.total_rto_time += now - self.rto_stamp     # (progress: the timeouts' episode is over)
            self.rto_stamp = 0.0
        self.una = ack
        self.una_since = now
        if self.nxt < ack:
            self.nxt = ack
        if self.up and ack >= self.up:
            self.up = 0             # the urgent byte is through: urgent mode ends
        echo_ms = self._echo_ms(now, echoed)    # (before the last retransmission's acknowledgment clears it)
        if self.retrans_ts >= 0 and ack >= self.retrans_high:
            self.retrans_ts = -1    # every retransmission is acknowledged
        self.buffer.trim(ack)
        stamper = self.ep.stamper
        if stamper is not None and stamper.marks:
            stamper.acked(self.ep, ack)
        zerocopy = self.ep.zerocopy
        if zerocopy is not None and zerocopy.pending:
            zerocopy.acked(self.ep, ack)
        if self.sack is not None:
            self.sack.delete(self.wire(ack))
            rack = self.rack
            if rack is not None and rack.records:
                rack.acked(ack, now, self.min_rtt, echo_ms)
        if self.recovery:
            if ack >= self.recover:
                self.recovery = False
                self.dupacks = 0
                # RFC 6582 §3.2 step 6: min(ssthresh, max(FlightSize, SMSS) + SMSS).
                self.cwnd = max(min(self.ssthresh, max((self.max - self.una) // self.mss, 1) + 1), 1)
                self.cc.post_recovery()
                if self.rack is not None:
                    self.rack.recovery_ended()
            elif self.sack is None:
                # NewReno partial ACK (RFC 6582 §3.2 step 5): the next hole is lost too.
                self._retransmit_first()
                self.cwnd = max(self.cwnd - packets + 1, 1)
                self.timer.reset(self.rto)
        else:
            self.dupacks = 0
            if 2 * flight >= self.cwnd * self.mss:   # grow only when the window was in use (RFC 7661)
                self.cc.on_ack(packets)
        if self.una >= self.max:
            self.timer.cancel()
            self.probe_due = False
            if self.una >= self.buffer.end and self.chrono:
                self.chrono_stop(CHRONO_BUSY)       # (everything written is acknowledged: it ends)
        elif not self.persisting:
            self._arm_retransmit(advancing=True)
        self.ep.on_send_space()

    def _rate_sample(self, now: float) -> None:
        """The timed segment is acknowledged: segments delivered since it was sent, over the time since the
        delivery before it (Linux's tcp_rate_gen, once a round trip). A sample shorter than the minimum RTT is
        ACK compression, not a rate; an application-limited one is kept only if it is faster than the last,
        which it cannot underestimate then."""
        delivered, since, app_limited = self.rate_prior  # type: ignore[misc]
        self.rate_prior = None
        interval = now - since
        if interval <= 0 or interval < self.min_rtt:
            return
        segments = self.delivered - delivered
        if not app_limited or segments * self.rate_interval >= self.rate_delivered * interval:
            self.rate_delivered, self.rate_interval, self.rate_app_limited = segments, interval, app_limited

    def chrono_start(self, kind: int) -> None:
        """``kind`` begins, unless something more telling is under way (Linux's tcp_chrono_start)."""
        if kind > self.chrono:
            self._chrono_set(kind)

    def chrono_stop(self, kind: int) -> None:
        """``kind`` ends: with nothing left to send or acknowledge, the chronograph stops, else a stopped
        current kind falls back to BUSY (Linux's tcp_chrono_stop)."""
        if self.una >= self.buffer.end:
            self._chrono_set(CHRONO_NONE)
        elif kind == self.chrono:
            self._chrono_set(CHRONO_BUSY)

    def _chrono_set(self, kind: int) -> None:
        now = self.now()
        if self.chrono:
            self.chrono_totals[self.chrono] += now - self.chrono_since
        self.chrono, self.chrono_since = kind, now

    def chrono_times(self) -> list[float]:
        """Seconds spent BUSY, RWND_LIMITED and SNDBUF_LIMITED (at index 1, 2 and 3), the current stretch
        included."""
        totals = list(self.chrono_totals)
        if self.chrono:
            totals[self.chrono] += self.now() - self.chrono_since
        return totals

    def check_app_limited(self) -> None:
        """The application writes with less than a segment unsent and the window not full, outside recovery: the
        flight in the air now is application-limited until delivered (Linux's tcp_rate_check_app_limited)."""
        if self.buffer.end - self.nxt < self.mss and self.outstanding < self.cwnd and not self.recovery:
            self.app_limited = (self.delivered + self.outstanding) or 1

    @property
    def delivery_rate(self) -> float:
        """Bytes a second, from the kept sample (0 before one)."""
        return self.rate_delivered * self.mss / self.rate_interval if self.rate_interval else 0.0

    def syn_acked(self, ack: int) -> None:
        """A SYN-ACK acknowledged ``ack`` (unwrapped) of the data our SYN carried (Fast Open): that much
        is delivered; the rest is resent at once, not after a timeout (RFC 7413 §4.2.2)."""
        if ack > self.una:
            self._new_ack(ack, self.now())
        self.nxt = self.una

    def _dupack(self) -> None:
        self.dupacks += 1
        if self.recovery:
            if self.sack is None:
                self.cwnd += 1      # RFC 5681 §3.2 step 4: each dupack means a segment left the network
            return
        if self.rack is None:   # (with RACK, time decides what is lost: see _rack_detect)
            lost = self.sack is not None and self.sack.is_lost(self.wire(self.una))
            if (self.dupacks >= DUP_THRESH or lost) and self.una > self.recover:
                self._enter_recovery()
                return
        if self.dupacks < DUP_THRESH:
            self._limited_transmit()

    def _limited_transmit(self) -> None:
        """RFC 3042 (a SHOULD of RFC 5681 §3.2): each of the first two duplicate ACKs sends one new
        segment beyond cwnd, so that a small window still draws the duplicate ACKs fast retransmit
        needs instead of waiting for the retransmission timer."""
        nxt = self.nxt
        size = min(self.mss, self.buffer.end - nxt, self.una + self.wnd - nxt)
        if size <= 0 or nxt < self.max:
            return      # nothing new to send, no room in the peer's window, or resending after a timeout
        self._transmit(nxt, size, ACK | (PSH if nxt + size == self.buffer.end else 0))
        self.nxt = self.max = nxt + size

    def _enter_recovery(self) -> None:
        stats = self.ep.stack_stats
        stats.fast_retransmit.increment()
        if self.sack is not None:
            stats.sack_recovery.increment()
        else:
            stats.fast_recovery.increment()
        self.recovery = True
        self.recover = self.max
        self._begin_undo(timeout=False)
        self.cc.on_loss_detected()
        self.rtt_seq = None
        if self.sack is not None:
            self.prr_delivered = self.prr_out = 0
            if self.rack is None:
                self.high_rxt = self.una
            self._proportional_rate_reduction(0, False)
        if self.rack is not None:
            self._rack_recovery_send()
        elif self.sack is not None:
            self._retransmit_first()
            self.high_rxt = min(self.una + self.mss, self.nxt)
        else:
            self.cwnd = self.ssthresh + DUP_THRESH
            self._retransmit_first()
        self.reo_due = False
        self.timer.reset(self.rto)

    def rtt_sample(self, rtt: float) -> None:
        """RFC 6298 §2 smoothing; the RTO floor is Linux's 200 ms rather than the RFC's 1 s."""
        if rtt < 0:
            return
        if not self.srtt:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        if not self.min_rtt or rtt < self.min_rtt:
            self.min_rtt = rtt
        self.rto = self._base_rto()

    # --- timers -----------------------------------------------------------------------------------

    def _start_persist(self) -> None:
        if not self.persisting:
            self.persisting = True
            self.timer.reset(self.rto)

    def _arm_retransmit(self, advancing: bool) -> None:
        """Time what is in flight: a tail loss probe when one may go (RFC 8985 §7.2: two smoothed round
        trips, more if the one segment in flight may have its ACK delayed, never past the RTO, which runs
        from now when ``advancing`` and else from when the oldest byte in flight was sent), else the RTO."""
        rto = self.rto if advancing else max(0.0, self.una_since + self.rto - self.now())
        self.reo_due = False
        probe = self._probe_timeout()
        self.probe_due = probe is not None and probe < rto
        self.timer.reset(probe if self.probe_due else rto)  # type: ignore[arg-type]

    def _probe_timeout(self) -> float | None:
        if not self._may_probe():
            return None
        if not self.srtt:
            return PROBE_WITHOUT_RTT
        return 2 * self.srtt + (PROBE_DELAYED_ACK if self.max - self.una <= self.mss else PROBE_SLACK)

    def _may_probe(self) -> bool:
        """A loss probe needs SACK, and goes only outside any recovery, one at a time (Linux's
        tcp_schedule_loss_probe: CA_Open or CWR, no probe outstanding)."""
        return self.sack is not None and not self.recovery and not self.persisting and self.tlp_high < 0 and \
            self.una >= self.recover and self.una < self.max and self.ep.proto.tail_loss_probes

    def _send_loss_probe(self) -> None:
        """RFC 8985 §7.3: one new segment if the peer's window takes it, else the last one sent again;
        then the RTO."""
        self.ep.stack_stats.loss_probes.increment()
        nxt, data_end = self.nxt, self.buffer.end
        size = min(self.mss, data_end - nxt, self.una + self.wnd - nxt)
        if size > 0 and nxt >= self.max:
            self._transmit(nxt, size, ACK | (PSH if nxt + size == data_end else 0))
            self.nxt = self.max = nxt + size
            self.tlp_retransmitted = False
        else:
            sent_data_end = min(data_end, self.max)
            start = max(self.una, sent_data_end - self.mss)
            size = sent_data_end - start
            flags = ACK | (PSH if size else 0) | (FIN if self.fin_queued and self.max > data_end else 0)
            self._transmit(start, size, flags)
            self.tlp_retransmitted = True
        self.tlp_high = self.max
        self.timer.reset(self.rto)

    def _loss_probe_answered(self, ack: int, dsack: bool, duplicate: bool) -> None:
        """What an ACK says of the outstanding loss probe (RFC 8985 §7.4, as Linux's tcp_process_tlp_ack).
        New data: acknowledged, done. A resent last segment: a D-SACK, or a bare duplicate ACK (the
        peer's answer to a second copy), says the original had arrived too — no loss; an ACK beyond the
        probe without either says the probe repaired a loss, and the window comes down (Linux: CWR)."""
        if ack < self.tlp_high:
            return
        if self.tlp_retransmitted and not dsack and not duplicate:
            if ack == self.tlp_high:
                return      # (it acknowledges the probe, or the original: the next ACK tells which)
            self.ep.stack_stats.loss_probe_recoveries.increment()
            self.cc.on_loss_detected()
            self.cwnd = max(min(self.cwnd, self.ssthresh), 1)
        self.tlp_high = -1
        self.tlp_retransmitted = False

    def _on_timer(self) -> None:
        ep = self.ep
        if self.persisting:
            self._probe_window()
            return
        if ep.in_handshake():
            self.total_rto += 1
            ep.rethink_txhash()
            ep.on_handshake_timeout()
            return
        if self.una >= self.max:
            return
        if self.reo_due:
            self.reo_due = False
            self._rack_detect()
            self.send_data()
            if self.ep is not None and not self.reo_due and self.una < self.max:
                self._arm_retransmit(advancing=False)
            return
        if self.probe_due:
            self.probe_due = False
            if self._may_probe():
                self._send_loss_probe()
                return
        self.retransmits += 1
        self.total_rto += 1
        ep.rethink_txhash()
        ep.stack_stats.timeouts.increment()
        if self.retransmits > ep.max_retries or self._user_timeout_passed():
            ep.fail(ErrTimeout())
            return
        # RFC 6298 §5.5-5.7 and RFC 5681 §3.1: back off, collapse the window, resend from the first hole.
        if self.retransmits == 1:
            self.total_rto_recoveries += 1
            self.rto_stamp = self.now()
            self._begin_undo(timeout=True)
        self.cc.on_rto_expired()
        self.cwnd = 1
        if ep.thin_linear_timeouts and self.outstanding < 4 and self.retransmits <= THIN_LINEAR_RETRIES and \
                self.srtt:
            # TCP_THIN_LINEAR_TIMEOUTS: a thin stream (under four segments in flight) that loses one waits
            # the RTO again, not twice as long, its first six times (Linux's tcp_retransmit_timer, RFC 6298's
            # backoff being no help to a stream that sends too little for fast retransmission).
            self.rto = self._base_rto()
        else:
            self.rto = min(self.rto * 2, self.ep.rto_max)
        self.recovery = False
        self.dupacks = 0
        self.recover = self.max
        self.rtt_seq = None
        sack = self.sack
        if sack is not None:
            highest = sack.highest_sacked()
            self.frto_sacked = max(self.frto_sacked if self.retransmits > 1 else 0,     # (a backed-off timeout)
                                   self.unwrap(highest) if highest is not None else 0)
            # What the peer SACKed is not resent (Linux's tcp_timeout_mark_lost), unless it reneged.
            reneged = self._head_sacked()
            if reneged:
                ep.stack_stats.sack_reneging.increment()
                sack.clear()
            if self.rack is not None:
                self.rack.timed_out(reneged)
        self.nxt = self.una
        self.frto = 1 if ep.proto.frto else 0
        ep.stack_stats.slow_start_retransmits.increment()
        self._retransmit_first()
        self.timer.reset(self._backoff_timeout())
        self.send_data()

    def _base_rto(self) -> float:
        """RFC 6298 §2: SRTT + 4 RTTVAR (at least a clock tick), within Linux's bounds (the upper one
        TCP_RTO_MAX_MS's)."""
        return min(self.ep.rto_max, max(MIN_RTO, self.srtt + max(0.001, 4 * self.rttvar)))

    def _backoff_timeout(self) -> float:
        """The backed-off RTO, but no later than TCP_USER_TIMEOUT runs out (Linux's
        tcp_clamp_rto_to_user_timeout): the connection ends then, not at the next backoff."""
        limit = self.ep.user_timeout
        if not limit:
            return self.rto
        return max(0.001, min(self.rto, limit - (self.now() - self.una_since)))

    def _user_timeout_passed(self) -> bool:
        """RFC 5482: data has waited unacknowledged (or the window stayed shut) longer than the user
        allows (TCP_USER_TIMEOUT), counted from the last progress."""
        limit = self.ep.user_timeout
        return bool(limit) and self.now() - self.una_since >= limit

    def _probe_window(self) -> None:
        """Zero-window probe: one byte (or the FIN) past the closed window; answered, it keeps going."""
        una = self.una
        usable = min(self.mss, self.buffer.end - una, self.wnd)
        if usable > 0 and self.nxt == una:
            # The window is open, only too small for silly-window avoidance: RFC 9293 §3.8.6.2.1's
            # override timeout sends what it takes.
            self.persisting = False
            self._transmit(una, usable, ACK | (PSH if una + usable == self.buffer.end else 0))
            self.nxt = una + usable
            self.max = max(self.max, self.nxt)
            self.timer.reset(self.rto)
            return
        self.retransmits += 1
        if self.retransmits > self.ep.max_retries or self._user_timeout_passed():
            self.ep.fail(ErrTimeout())
            return
        if self.buffer.end > una:
            self._transmit(una, 1, ACK)
            self.max = max(self.max, una + 1)
        elif self.fin_queued:
            self._transmit(una, 0, ACK | FIN)
            self.max = max(self.max, una + 1)
        self.rto = min(self.rto * 2, self.ep.rto_max)
        self.timer.reset(self._backoff_timeout())

    def close(self) -> None:
        """The connection is over: stop, and let go of the endpoint and everything that refers back to
        it (the timer's callback, the algorithm's view of this sender), so that reference counting frees
        a finished connection the moment its user lets go, without the cyclic GC."""
        self.timer.close()
        if self.pacing_timer is not None:
            self.pacing_timer.close()
        self.buffer.clear()
        self._cc = None
        self.rack = None
        self.ep = None  # type: ignore[assignment]
