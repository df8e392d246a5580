"""Multicast listener discovery for a host: MLDv2 (RFC 3810) with MLDv1 (RFC 2710) compatibility.

A host only tells routers which groups it listens to: an unsolicited report (sent robustness
times) when it joins or leaves, and a report after a random delay when a router asks. A version 1
query switches the NIC to version 1 reports until the querier has been silent for the
older-version timeout. Groups of link-local scope "all nodes" are never reported (§6).
"""

from __future__ import annotations

import random
from collections.abc import KeysView
from typing import TYPE_CHECKING, Callable

from ...header import icmpv6, igmp, ipv6, mld
from ...stack.multicast import (NO_STATE, FilterState, PendingChange, Record, current_state_record,
                                state_change_records)
from ...stack.packet_buffer import PacketBuffer
from ...tcpip import IPV6_PROTOCOL_NUMBER

if TYPE_CHECKING:
    from ...stack.clock import Timer
    from . import IPv6Endpoint

ROBUSTNESS = 2
UNSOLICITED_REPORT_INTERVAL = 1.0
OLDER_VERSION_TIMEOUT = 260.0        # robustness * query interval + query response interval


class MLD:
    def __init__(self, ep: IPv6Endpoint, enabled: bool) -> None:
        self.ep = ep
        self.enabled = enabled
        self._timers: dict[bytes, Timer] = {}      # one pending report per group ...
        self._actions: dict[bytes, Callable[[bytes], None]] = {}   # ... and what it will send
        self._pending_changes: dict[bytes, PendingChange] = {}
        # The sources a pending answer is about (a multicast-address-and-source-specific query's, merged), None
        # for the whole group (RFC 3810 §6.2).
        self._asked: dict[bytes, set[bytes] | None] = {}
        self._v1_until = 0.0

    @property
    def groups(self) -> KeysView[bytes]:
        """The NIC's groups (it keeps their members and filters)."""
        return self.ep.nic.multicast_groups.get(IPV6_PROTOCOL_NUMBER, {}).keys()

    def _state(self, group: bytes) -> FilterState:
        return self.ep.nic.group_state(IPV6_PROTOCOL_NUMBER, group)

    def on_enable(self) -> None:
        """The NIC came up: announce the groups joined while it was down (Linux's ipv6_mc_up)."""
        for group in self.groups:
            self.changed(group, NO_STATE)

    def changed(self, group: bytes, before: FilterState) -> None:
        """The NIC's interface state of ``group`` changed from ``before`` (NO_STATE: joined now): report it."""
        if not self.enabled or not self.ep.nic.enabled or not _reportable(group):
            return
        pending = self._pending_changes.get(group)
        self._pending_changes[group] = PendingChange(pending.reported if pending is not None else before, ROBUSTNESS)
        self._send_change(group)

    def _send_change(self, group: bytes) -> None:
        change = self._pending_changes.get(group)
        if change is None:
            return
        change.reported = self._state(group)
        records = state_change_records(change.base, change.reported)
        if records:
            self._report(group, records)
        change.left -= 1
        if records and change.left:
            self._schedule(group, random.uniform(0, UNSOLICITED_REPORT_INTERVAL), self._send_change)
        else:
            del self._pending_changes[group]

    def handle(self, pkt: PacketBuffer, ip: ipv6.IPv6Header, router_alert: int | None) -> None:
        msg = mld.parse(pkt.data, ip.src, ip.hop_limit, router_alert)
        if not msg:
            self.ep.stack.stats().icmp.v6_packets_received.invalid.increment()
            return
        if not self.enabled or not isinstance(msg, mld.Query):
            return
        if msg.version == 1:
            self._v1_until = self.ep.stack.clock.now() + OLDER_VERSION_TIMEOUT
        delay = random.uniform(0, msg.max_response_delay / 1000.0)
        if ipv6.is_unspecified(msg.group):
            for group in list(self.groups):
                if _reportable(group):
                    self._asked[group] = None
                    self._schedule(group, delay, self._answer)
        elif msg.group in self.groups and _reportable(msg.group):
            asked = self._asked
            if not msg.sources or (msg.group in asked and asked[msg.group] is None):
                asked[msg.group] = None
            else:
                asked[msg.group] = (asked.get(msg.group) or set()) | set(msg.sources)
            self._schedule(msg.group, delay, self._answer)

    def _schedule(self, group: bytes, delay: float, action: Callable[[bytes], None]) -> None:
        """Run ``action(group)`` after ``delay``, unless one is due sooner already (RFC 3810 §6.2)."""
        timer = self._timers.get(group)
        if timer is None:
            timer = self._timers[group] = self.ep.stack.timers.timer(self._fire, group)
        due = self.ep.stack.clock.now() + delay
        if not timer.armed or timer.deadline > due:  # type: ignore[operator]
            self._actions[group] = action
            timer.reset_at(due)

    def _fire(self, group: bytes) -> None:
        self._timers.pop(group, None)
        action = self._actions.pop(group, None)
        if action is not None:
            action(group)

    def _answer(self, group: bytes) -> None:
        """The current state, or of the sources asked about those listened to (RFC 3810 §6.3; none: no answer)."""
        asked = self._asked.pop(group, None)
        record = current_state_record(self._state(group), asked) if group in self.groups else None
        if record is not None:
            self._report(group, [record])

    def _report(self, group: bytes, records: list[Record]) -> None:
        from .ndp import send_link_local
        ep = self.ep
        nic = ep.nic
        # RFC 3810 §5.2.13, RFC 2710 §3: from a valid link-local address, else (DAD pending) from ::.
        src = next((a.address for a in nic.addresses.get(ep.protocol.number, ())
                    if ipv6.is_link_local(a.address) and a.address not in nic.tentative), ipv6.UNSPECIFIED)
        if ep.stack.clock.now() < self._v1_until:    # (version 1 tells joins and leaves only)
            if group not in self.groups:
                send_link_local(ep, src, ipv6.ALL_ROUTERS, icmpv6.MLD_DONE, mld.encode_v1(0, group),
                                mld.HOP_LIMIT, hop_by_hop=True)
            else:
                send_link_local(ep, src, group, icmpv6.MLD_REPORT, mld.encode_v1(0, group), mld.HOP_LIMIT,
                                hop_by_hop=True)
            return
        body = mld.encode_v2_report([igmp.GroupRecord(kind, group, sources) for kind, sources in records])
        send_link_local(ep, src, ipv6.ALL_MLDV2_ROUTERS, icmpv6.MLDV2_REPORT, body, mld.HOP_LIMIT,
                        hop_by_hop=True)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._actions.clear()
        self._pending_changes.clear()
        self._asked.clear()


def _reportable(group: bytes) -> bool:
    """RFC 3810 §6: never the link-scope all-nodes group, nor one of scope 0 (reserved) or 1 (interface-local)."""
    return group != ipv6.ALL_NODES and ipv6.multicast_scope(group) > ipv6.SCOPE_INTERFACE_LOCAL
