"""The mangle table's PREROUTING (``iptables -t mangle``), for TPROXY: a transparent proxy's socket
takes packets for other hosts, their destination unchanged, as Linux's xt_TPROXY hands them over.

The network layer asks it first of an arrived packet (before the nat table's PREROUTING, as Linux's
hook priorities order them), only while a rule is in it. A TPROXY rule's packet goes to this host's
socket for its connection if there is one (an accepted connection keeps the addresses its client
asked for), else to a transparent socket (IP_TRANSPARENT) listening where the rule says; with neither
it is dropped. What the proxy accepts is addressed as the client addressed it: its getsockname() is
the destination the client wanted, and it answers from there.
"""

from __future__ import annotations

from ..tcpip import TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER
from .iptables import Accept, Drop, FilteredPacket, Jump, Log, Mark, Return, Rule, RuleTable, TProxy

PREROUTING = "PREROUTING"


class MangleTable(RuleTable):
    """One IP version's mangle table, its PREROUTING chain (``iptables -t mangle``): where TPROXY steers
    a packet to a transparent proxy's socket. Consulted before the nat table's PREROUTING, as Linux's."""

    builtin = (PREROUTING,)

    def _check_target(self, chain: str, rule: Rule) -> None:
        super()._check_target(chain, rule)
        target = rule.target
        if not isinstance(target, (Accept, Drop, Return, Jump, TProxy, Log, Mark)):
            raise ValueError(f"{type(target).__name__} is not a target of the mangle table's PREROUTING")
        if isinstance(target, TProxy):
            if rule.protocol not in (TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER):
                raise ValueError("TPROXY steers TCP or UDP only (iptables' -p tcp or -p udp)")
            if target.address and len(target.address) != (4 if self.version == 4 else 16):
                raise ValueError(f"{target.address!r} is not an IPv{self.version} address")

    def prerouting(self, packet: FilteredPacket) -> TProxy | Drop | None:
        """What PREROUTING does with an arrived packet: steer it (TPROXY), drop it, or nothing; the marks
        its rules set are left on ``packet``."""
        target = self._traverse(PREROUTING, packet)
        if isinstance(target, TProxy) and target.mark is not None:
            packet.mark = target.mark.apply(packet.mark)
        return target if isinstance(target, (TProxy, Drop)) else None
