"""Group membership for an IPv4 host: IGMPv3 (RFC 3376), with IGMPv2 (RFC 2236) and IGMPv1 (RFC 1112)
compatibility.

A host only tells the routers on its link which groups it listens to. On a join or a leave it sends
an unsolicited state-change report, repeated robustness times at random intervals; when a router
queries, it answers after a random delay within the query's maximum response time. Hearing a v1 or
v2 query switches the NIC to that version's messages until the old querier has been silent for the
Older Version Querier Present Timeout (RFC 3376 §7.2.1). 224.0.0.1 is never reported (§5).

Messages leave as Linux sends them: TTL 1, a Router Alert option (RFC 2113), precedence "internetwork
control" (TOS 0xc0) and DF, straight onto the NIC (no routing: they never leave the link).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, KeysView
from typing import TYPE_CHECKING

from ...header import Malformed, igmp, ipv4
from ...stack.interfaces import LinkCapabilities
from ...stack.multicast import NO_STATE, FilterState, PendingChange, current_state_record, state_change_records
from ...stack.packet_buffer import PacketBuffer
from ...stack.route import Route
from ...tcpip import IPV4_PROTOCOL_NUMBER, Error
from ...tcpip.stats import StatCounter, StatGroup

if TYPE_CHECKING:
    from ...stack.clock import Timer
    from .ipv4 import IPv4Endpoint

ROBUSTNESS = 2                          # RFC 3376 §8.1; a v3 querier's QRV overrides it
QUERY_INTERVAL = 125.0                  # §8.2, seconds; a v3 querier's QQIC overrides it
QUERY_RESPONSE_INTERVAL = 10.0          # §8.3; the last v3 query's maximum response time overrides it
V3_UNSOLICITED_REPORT_INTERVAL = 1.0    # §8.11
V2_UNSOLICITED_REPORT_INTERVAL = 10.0   # RFC 2236 §8.10 (Linux: igmpv2_unsolicited_report_interval)
TOS = 0xC0

_ANY = bytes(4)
_ROUTER_ALERT = ipv4.encode_options([(ipv4.OPT_ROUTER_ALERT, b"\x00\x00")])
_IP_HEADER_SIZE = ipv4.MIN_SIZE + len(_ROUTER_ALERT)
_COUNTERS = {igmp.V1_REPORT: "v1_membership_report", igmp.V2_REPORT: "v2_membership_report",
                      igmp.LEAVE_GROUP: "leave_group"}


class IGMPPacketStats(StatGroup):
    membership_query: StatCounter
    v1_membership_report: StatCounter
    v2_membership_report: StatCounter
    v3_membership_report: StatCounter
    leave_group: StatCounter


class IGMPSentPacketStats(IGMPPacketStats):
    dropped: StatCounter                # the NIC refused it (down, queue full ...)


class IGMPReceivedPacketStats(IGMPPacketStats):
    invalid: StatCounter                # too short, or a length no version has
    checksum_errors: StatCounter
    unrecognized: StatCounter           # a type IGMP does not define


class IGMPStats(StatGroup):
    """One per stack (netstack's tcpip.IGMPStats)."""

    packets_sent: IGMPSentPacketStats
    packets_received: IGMPReceivedPacketStats


class _Answer:
    """A pending answer to a group-specific or group-and-source-specific query (RFC 3376 §5.2)."""

    __slots__ = ("sources", "timer")

    def __init__(self, timer: Timer, sources: set[bytes] | None) -> None:
        self.timer = timer
        self.sources = sources          # None: about the whole group; else the sources asked about


class IGMP:
    """The IGMP host on one NIC's IPv4 endpoint."""

    def __init__(self, ep: IPv4Endpoint, stats: IGMPStats) -> None:
        self.ep = ep
        self.stats = stats
        # Built with the NIC, before nic.loopback is set: the link says it. No routers on loopback.
        self.enabled = not ep.nic.link.capabilities() & LinkCapabilities.LOOPBACK
        self._changes: dict[bytes, PendingChange] = {}
        self._answers: dict[bytes, _Answer] = {}
        self._general_answer = ep.stack.timers.timer(self._answer_general_query)   # v3 "interface timer"
        self._last_reporters: set[bytes] = set()        # v2: groups whose last report on the link was ours
        self._robustness = ROBUSTNESS
        self._query_interval = QUERY_INTERVAL
        self._query_response_interval = QUERY_RESPONSE_INTERVAL
        self._v1_querier_until = 0.0
        self._v2_querier_until = 0.0

    @property
    def version(self) -> int:
        """Host compatibility mode: the oldest querier version heard lately (RFC 3376 §7.2.1)."""
        now = self.ep.stack.clock.now()
        if now < self._v1_querier_until:
            return 1
        if now < self._v2_querier_until:
            return 2
        return 3

    # --- membership changes -----------------------------------------------------------------------

    @property
    def groups(self) -> KeysView[bytes]:
        """The NIC's groups (it keeps their members and filters)."""
        return self.ep.nic.multicast_groups.get(IPV4_PROTOCOL_NUMBER, {}).keys()

    def _state(self, group: bytes) -> FilterState:
        return self.ep.nic.group_state(IPV4_PROTOCOL_NUMBER, group)

    def changed(self, group: bytes, before: FilterState) -> None:
        """The NIC's interface state of ``group`` changed from ``before`` (NO_STATE: joined now)."""
        if group not in self.groups:
            answer = self._answers.pop(group, None)
            if answer is not None:
                answer.timer.cancel()
        self._state_changed(group, before)

    def on_enable(self) -> None:
        """The NIC came up: announce the groups joined while it was down (as Linux's ip_mc_up)."""
        for group in self.groups:
            self._state_changed(group, NO_STATE)

    def _state_changed(self, group: bytes, before: FilterState) -> None:
        """RFC 3376 §5.1: report a change now, and again robustness - 1 times; a newer change merges into
        one still being retransmitted. Versions 1 and 2 tell joins and leaves only."""
        if not self.enabled or not self.ep.nic.enabled or group == igmp.ALL_SYSTEMS:
            return
        pending = self._changes.pop(group, None)
        if pending is not None:
            pending.timer.cancel()
            before = pending.reported
        version = self.version
        if version != 3:
            if self._state(group) == NO_STATE:
                # RFC 2236 §3: one leave, only by the host that sent the last report; v1 has none.
                if version == 2 and group in self._last_reporters:
                    self._send_v12(igmp.LEAVE_GROUP, igmp.ALL_ROUTERS, group)
                self._last_reporters.discard(group)
                return
            if before != NO_STATE:
                return
        self._changes[group] = PendingChange(before, self._robustness,
                                             self.ep.stack.timers.timer(self._send_state_change, group))
        self._send_state_change(group)

    def _send_state_change(self, group: bytes) -> None:
        change = self._changes[group]
        version = self.version
        if version == 3:
            change.reported = self._state(group)
            records = state_change_records(change.base, change.reported)
            if not records:         # back where the last report left it: nothing to tell
                del self._changes[group]
                return
            self._send_v3([igmp.GroupRecord(kind, group, sources) for kind, sources in records])
            interval = V3_UNSOLICITED_REPORT_INTERVAL
        else:
            # A compatibility mode change cancels pending changes, so a v1/v2 one is always a join.
            self._send_v12(igmp.V1_REPORT if version == 1 else igmp.V2_REPORT, group, group)
            self._last_reporters.add(group)
            interval = V2_UNSOLICITED_REPORT_INTERVAL
        change.left -= 1
        if change.left > 0:
            change.timer.reset(random.uniform(0, interval))
        else:
            del self._changes[group]

    # --- inbound ----------------------------------------------------------------------------------

    def handle(self, pkt: PacketBuffer, ip: ipv4.IPv4Header) -> None:
        """An inbound IGMP message (pkt.data: the IP payload)."""
        received = self.stats.packets_received
        data = pkt.data
        if len(data) < igmp.MIN_SIZE:
            received.invalid.increment()
            return
        if not igmp.checksum_valid(data):
            received.checksum_errors.increment()
            return
        msg = igmp.parse(data)
        if isinstance(msg, Malformed):
            (received.unrecognized if msg is Malformed.BAD_FIELD else received.invalid).increment()
            return
        if isinstance(msg, igmp.Query):
            received.membership_query.increment()
            if self.enabled:
                self._handle_query(msg, ip.dst)
        elif isinstance(msg, igmp.V3Report):
            received.v3_membership_report.increment()       # for routers; hosts do not suppress on them
        else:
            getattr(received, _COUNTERS[msg.type]).increment()
            if self.enabled and msg.type != igmp.LEAVE_GROUP:
                self._heard_report(msg.group)

    def _handle_query(self, query: igmp.Query, dst: bytes) -> None:
        general = query.group == _ANY
        if general and ipv4.is_multicast(dst) and dst != igmp.ALL_SYSTEMS:
            return      # RFC 3376 §9.1: a general query to any other group is ignored
        max_delay = query.max_response_time / 10
        if query.version == 3:
            self._robustness = query.robustness or ROBUSTNESS
            self._query_interval = query.query_interval or QUERY_INTERVAL
            self._query_response_interval = max_delay
        else:
            self._older_querier_seen(query.version)
        if not general and query.group not in self.groups:
            return
        due = self.ep.stack.clock.now() + random.uniform(0, max_delay)
        if self.version == 3:
            self._schedule_v3_answer(query, general, due)
            return
        for group in (self.groups if general else (query.group,)):
            if group == igmp.ALL_SYSTEMS:
                continue
            answer = self._answers.get(group)
            if answer is None:
                answer = self._answers[group] = _Answer(self.ep.stack.timers.timer(self._answer_group, group), None)
            elif answer.timer.deadline - self.ep.stack.clock.now() < max_delay:  # type: ignore[operator]
                continue    # RFC 2236 §3: a running timer is reset only if the query asks for sooner
            answer.timer.reset_at(due)

    def _older_querier_seen(self, version: int) -> None:
        before = self.version
        until = (self.ep.stack.clock.now() + self._robustness * self._query_interval
                 + self._query_response_interval)
        if version == 1:
            self._v1_querier_until = until
        else:
            self._v2_querier_until = until
        if self.version != before:
            self._cancel_pending()      # RFC 3376 §7.2.1: a mode change cancels pending reports

    def _schedule_v3_answer(self, query: igmp.Query, general: bool, due: float) -> None:
        """RFC 3376 §5.2's five rules for scheduling the answer to a query."""
        interface = self._general_answer
        if interface.armed and interface.deadline <= due:  # type: ignore[operator]
            return                                          # the pending general answer covers it
        if general:
            interface.reset_at(due)
            return
        group = query.group
        answer = self._answers.get(group)
        if answer is None:
            timer = self.ep.stack.timers.timer(self._answer_group, group)
            self._answers[group] = _Answer(timer, set(query.sources) or None)
            timer.reset_at(due)
            return
        if not query.sources or answer.sources is None:
            answer.sources = None
        else:
            answer.sources.update(query.sources)
        if answer.timer.deadline > due:  # type: ignore[operator]
            answer.timer.reset_at(due)

    def _heard_report(self, group: bytes) -> None:
        """RFC 2236 §3: another member answered for the group, so we need not (v1/v2 only)."""
        if self.version == 3 or group not in self.groups:
            return
        for pending in (self._answers.pop(group, None), self._changes.pop(group, None)):
            if pending is not None:
                pending.timer.cancel()
        self._last_reporters.discard(group)

    # --- answers ------------------------------------------------------------------------------------

    def _answer_general_query(self) -> None:
        records = []
        for group in sorted(self.groups - {igmp.ALL_SYSTEMS}):
            kind, sources = current_state_record(self._state(group))  # type: ignore[misc]
            records.append(igmp.GroupRecord(kind, group, sources))
        self._send_v3(records)

    def _answer_group(self, group: bytes) -> None:
        answer = self._answers.pop(group)
        if group not in self.groups:
            return
        version = self.version
        if version == 3:
            record = current_state_record(self._state(group), answer.sources)
            if record is not None:      # (none of the sources asked about is listened to: no answer, §5.2)
                self._send_v3([igmp.GroupRecord(record[0], group, record[1])])
        else:
            self._send_v12(igmp.V1_REPORT if version == 1 else igmp.V2_REPORT, group, group)
            self._last_reporters.add(group)

    # --- sending ------------------------------------------------------------------------------------

    def _send_v12(self, type_: int, dst: bytes, group: bytes) -> None:
        message = bytearray(igmp.MIN_SIZE)
        igmp.build(message, type_, 0, group)
        self._send(dst, message, _COUNTERS[type_])

    def _send_v3(self, records: Iterable[igmp.GroupRecord]) -> None:
        """Current-state or state-change records to 224.0.0.22, as many reports as the MTU needs."""
        room = self.ep.mtu() - _IP_HEADER_SIZE - igmp.MIN_SIZE
        batch: list[igmp.GroupRecord] = []
        size = 0
        for record in records:
            record_size = 8 + 4 * len(record.sources)
            if batch and size + record_size > room:
                self._send(igmp.ALL_IGMPV3_ROUTERS, igmp.encode_v3_report(batch), "v3_membership_report")
                batch, size = [], 0
            batch.append(record)
            size += record_size
        if batch:
            self._send(igmp.ALL_IGMPV3_ROUTERS, igmp.encode_v3_report(batch), "v3_membership_report")

    def _send(self, dst: bytes, message: bytes | bytearray, counter: str) -> None:
        ep = self.ep
        nic = ep.nic
        src = nic.primary_address(IPV4_PROTOCOL_NUMBER, dst) or _ANY   # RFC 3376 §4.2.13: 0.0.0.0 if none
        pkt = PacketBuffer(nic.link.max_header_length() + _IP_HEADER_SIZE, message)
        ipv4.build(pkt.prepend(_IP_HEADER_SIZE), src=src, dst=dst, protocol=igmp.PROTOCOL_NUMBER,
                   total_length=_IP_HEADER_SIZE + len(message), ttl=igmp.TTL, tos=TOS,
                   ident=ep.protocol.next_ident(), flags_fragment=ipv4.FLAG_DONT_FRAGMENT, options=_ROUTER_ALERT)
        pkt.network_protocol = IPV4_PROTOCOL_NUMBER
        sent = self.stats.packets_sent
        try:
            ep.send(Route(src, dst, dst, nic, IPV4_PROTOCOL_NUMBER, multicast=True), pkt)
        except Error:
            sent.dropped.increment()
            return
        getattr(sent, counter).increment()

    # --- teardown -----------------------------------------------------------------------------------

    def _cancel_pending(self) -> None:
        self._general_answer.cancel()
        for change in self._changes.values():
            change.timer.cancel()
        for answer in self._answers.values():
            answer.timer.cancel()
        self._changes.clear()
        self._answers.clear()

    def close(self) -> None:
        self._cancel_pending()
        self._last_reporters.clear()
