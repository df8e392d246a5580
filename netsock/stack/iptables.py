"""Packet filtering: the filter table of Linux's iptables / ip6tables (netstack's iptables package).

Each IP version has a table of chains. The built-in ones are where the network layer asks: INPUT
for a packet to this host (after reassembly, before any socket sees it, raw ones included), FORWARD
for one routed through it, OUTPUT for one it sends (before fragmentation). A chain is a list of
rules tried in order; the first that matches decides by its target: ACCEPT, DROP, REJECT (drop and
tell the sender), RETURN (back to the calling chain, or the policy at a built-in chain's end), or a
jump to a user chain; LOG and MARK note or mark the packet and go on. A built-in chain ends in its
policy (ACCEPT unless set). Rules count the packets and bytes they matched, as ``iptables -L -v`` shows.

What happens to a packet dropped or rejected is the network layer's (it knows how to answer):
INPUT and FORWARD drops are silent, rejects answer with the ICMP error (or, on INPUT, a TCP reset);
an OUTPUT drop or reject fails the send with EPERM, as Linux's ``ip_local_out``, and a reject also
answers the sending socket as Linux loops its answer back: with the ICMP error, or a TCP reset as
if from the peer. (A reset for a forwarded packet would come from an address netsock does not hold:
refused on FORWARD.)

The nat table (address and port translation, PREROUTING and POSTROUTING) is ``nat.NatTable``, the
mangle table's PREROUTING (TPROXY, MARK) ``mangle.MangleTable``, on the same rules and chains; iptables'
command lines and rule sets are read by ``iptables_syntax``.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

from ..header import icmpv4, icmpv6
from ..tcpip import ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Subnet
from .conntrack import PORTED, ConnTrack, State

_MAX_JUMP_DEPTH = 64
HEAD_SIZE = 64      # transport bytes the rules see: ports, flags, and an ICMP error's quote for conntrack


class Hook(enum.Enum):
    """Where the network layer consults the table (netstack's Hook; the filter table's three)."""

    INPUT = "INPUT"
    FORWARD = "FORWARD"
    OUTPUT = "OUTPUT"


@dataclass(frozen=True)
class Accept:
    """Let the packet through (this table is done with it)."""


@dataclass(frozen=True)
class Drop:
    """Discard the packet, telling no one."""


@dataclass(frozen=True)
class Return:
    """Stop this chain: back to the rule after the jump, or the built-in chain's policy."""


@dataclass(frozen=True)
class Jump:
    """Go through the user chain ``chain``; carry on here if it returns."""

    chain: str


class RejectWith(enum.Enum):
    """What a REJECT answers with (``iptables -j REJECT --reject-with``)."""

    PORT_UNREACHABLE = "port-unreachable"          # the default, as iptables'
    HOST_UNREACHABLE = "host-unreachable"          # ICMPv6: address unreachable
    NET_UNREACHABLE = "net-unreachable"            # ICMPv6: no route
    ADMIN_PROHIBITED = "admin-prohibited"
    TCP_RESET = "tcp-reset"                        # TCP only


# (ICMPv4 code, ICMPv6 code) of destination unreachable for each ICMP answer.
REJECT_CODES = {
    RejectWith.PORT_UNREACHABLE: (icmpv4.PORT_UNREACHABLE, icmpv6.PORT_UNREACHABLE),
    RejectWith.HOST_UNREACHABLE: (icmpv4.HOST_UNREACHABLE, icmpv6.ADDRESS_UNREACHABLE),
    RejectWith.NET_UNREACHABLE: (icmpv4.NET_UNREACHABLE, icmpv6.NO_ROUTE),
    RejectWith.ADMIN_PROHIBITED: (icmpv4.ADMIN_PROHIBITED, icmpv6.ADMIN_PROHIBITED),
}


# Syslog's levels (LOG's --log-level) as the logging module's.
LOG_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR, 4: logging.WARNING,
              5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
_LOGGER = logging.getLogger("netsock.iptables")
_TCP_FLAG_NAMES = ((0x20, "URG"), (0x10, "ACK"), (0x08, "PSH"), (0x04, "RST"), (0x02, "SYN"), (0x01, "FIN"))


@dataclass(frozen=True)
class Log:
    """Note the packet in the log and go on to the next rule (``-j LOG --log-prefix --log-level``): a line as
    Linux's nf_log writes one (``IN= OUT= SRC= DST= LEN= PROTO= SPT= DPT=`` and TCP's flags, ICMP's type and
    code), to the logger "netsock.iptables" at the syslog ``level``'s logging level."""

    prefix: str = ""
    level: int = 4

    def __post_init__(self) -> None:
        if self.level not in LOG_LEVELS or len(self.prefix) > 29:
            raise ValueError("LOG: a level from 0 to 7, a prefix of at most 29 characters")

    def write(self, packet: FilteredPacket) -> None:
        if not _LOGGER.isEnabledFor(LOG_LEVELS[self.level]):
            return
        words = [f"IN={packet.in_interface or ''}", f"OUT={packet.out_interface or ''}",
                 f"SRC={ipaddress.ip_address(packet.source)}", f"DST={ipaddress.ip_address(packet.destination)}",
                 f"LEN={packet.length}"]
        head, protocol = packet.transport_head, packet.protocol
        name = {TCP_PROTOCOL_NUMBER: "TCP", UDP_PROTOCOL_NUMBER: "UDP", 136: "UDPLITE", ICMPV4_PROTOCOL_NUMBER: "ICMP",
                ICMPV6_PROTOCOL_NUMBER: "ICMPv6"}.get(protocol, str(protocol))
        words.append(f"PROTO={name}")
        if protocol in PORTED and len(head) >= 4:
            words += [f"SPT={head[0] << 8 | head[1]}", f"DPT={head[2] << 8 | head[3]}"]
            if protocol == TCP_PROTOCOL_NUMBER and len(head) >= 14:
                words += [flag for bit, flag in _TCP_FLAG_NAMES if head[13] & bit]
        elif protocol in (ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER) and len(head) >= 2:
            words += [f"TYPE={head[0]}", f"CODE={head[1]}"]
        _LOGGER.log(LOG_LEVELS[self.level], "%s%s", self.prefix, " ".join(words))


@dataclass(frozen=True)
class Reject:
    """Discard the packet and answer its sender (``with_``)."""

    with_: RejectWith = RejectWith.PORT_UNREACHABLE


def _check_ports(ports: tuple[int, int] | None) -> None:
    if ports is not None and not 0 < ports[0] <= ports[1] <= 0xFFFF:
        raise ValueError(f"bad port range {ports}")


@dataclass(frozen=True)
class DNAT:
    """nat table, PREROUTING and OUTPUT: the connection's destination becomes ``address`` (b'': kept),
    its port one of ``ports`` (None: kept) — ``iptables -j DNAT --to-destination``."""

    address: bytes = b""
    ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_ports(self.ports)


@dataclass(frozen=True)
class Redirect:
    """nat table, PREROUTING and OUTPUT: DNAT to this host — the arriving interface's first address
    (loopback's for what the host sends itself) — and to one of ``ports`` (None: kept)."""

    ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_ports(self.ports)


@dataclass(frozen=True)
class SNAT:
    """nat table, POSTROUTING and INPUT: the connection's source becomes ``address``, its port one of
    ``ports`` (None: kept if no other connection would then look the same, else another)."""

    address: bytes
    ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_ports(self.ports)


@dataclass(frozen=True)
class Masquerade:
    """nat table, POSTROUTING: SNAT to the leaving interface's address for the destination, as
    ``iptables -j MASQUERADE`` (for an interface whose address the rule cannot know in advance)."""

    ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_ports(self.ports)


@dataclass(frozen=True)
class Mark:
    """mangle table: set the packet's mark and go on to the next rule (``-j MARK --set-xmark value/mask``:
    the mask's bits cleared, then ``value``'s flipped, as Linux's xt_MARK; --set-mark, --and-mark,
    --or-mark and --xor-mark are that with other values and masks). The filter table's ``-m mark``
    sees it, in INPUT and FORWARD."""

    value: int
    mask: int = 0xFFFFFFFF

    def __post_init__(self) -> None:
        if not (0 <= self.value <= 0xFFFFFFFF and 0 <= self.mask <= 0xFFFFFFFF):
            raise ValueError("a mark and its mask are 32 bits")

    def apply(self, mark: int) -> int:
        return (mark & ~self.mask & 0xFFFFFFFF) ^ self.value


@dataclass(frozen=True)
class TProxy:
    """mangle table, PREROUTING: hand the packet, its destination unchanged, to this host's socket for its
    connection, else to a transparent (IP_TRANSPARENT) one listening on ``address`` (b'': the arriving
    interface's) and ``port`` (0: the packet's own) — ``iptables -j TPROXY --on-ip --on-port``. No socket:
    the packet is dropped. (Linux also needs a policy route to deliver the marked packet locally;
    here the target delivers it.)"""

    port: int = 0
    address: bytes = b""
    mark: Mark | None = None         # --tproxy-mark: set on the packet it steers

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"bad port {self.port}")


class MultiPort(enum.Enum):
    """Which ports ``-m multiport`` looks at."""

    SOURCE = "--sports"
    DESTINATION = "--dports"
    EITHER = "--ports"


MULTIPORT_MAX = 15      # ports (a range counts two) in one multiport match, as Linux's XT_MULTI_PORTS


@dataclass(eq=False)
class Statistic:
    """``-m statistic``, as Linux's xt_statistic decides: ``--mode nth --every N --packet P`` matches one
    packet in ``every``, the first at ``packet`` (counting from 0); ``--mode random --probability p``
    matches with that probability, kept as the kernel keeps it (``probability``: p times 2**31, rounded),
    drawn from a generator seeded with ``seed`` (a rule matches the same packets in every run)."""

    every: int = 0                  # nth mode when not 0
    packet: int = 0
    probability: int = 0            # random mode: of 2**31
    seed: int = 0

    def __post_init__(self) -> None:
        if self.every < 0 or not 0 <= self.packet < max(self.every, 1) or not 0 <= self.probability <= 1 << 31:
            raise ValueError("bad statistic match: --every N, --packet below N, --probability between 0 and 1")
        self._count = self.packet
        self._random = random.Random(self.seed)

    @classmethod
    def random(cls, probability: float, seed: int = 0) -> Statistic:
        return cls(probability=round(probability * (1 << 31)), seed=seed)

    def matches(self) -> bool:
        if self.every:
            self._count = 0 if self._count == self.every - 1 else self._count + 1
            return self._count == 0
        return self._random.getrandbits(31) < self.probability


LIMIT_SCALE = 10000                 # Linux's XT_LIMIT_SCALE: a limit's period is kept in 1/10000 s


@dataclass(eq=False)
class Limit:
    """``-m limit --limit rate --limit-burst burst``, as Linux's xt_limit decides: a bucket of ``burst``
    packets, full at first, refilled by one every ``period`` (in 1/10000 s, as the kernel keeps a rate);
    a packet matches if it takes one. Its table gives it the stack's clock (``now``)."""

    period: int
    burst: int = 5
    now: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.period <= 0 or not 0 < self.burst <= 10000:
            raise ValueError("bad limit: a rate below 10000 a second, a burst from 1 to 10000")
        self._tokens = float(self.burst)
        self._last: float | None = None

    def matches(self) -> bool:
        now = self.now()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * LIMIT_SCALE / self.period)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


# The conditions iptables' ``!`` may negate (Rule.inverted), and those a negated protocol leaves without meaning.
NEGATABLE = frozenset({"protocol", "source", "destination", "in_interface", "out_interface", "source_ports",
                       "destination_ports", "tcp_flags", "icmp_type", "mark", "state", "multiport", "length",
                       "source_range", "destination_range"})
_OF_THE_PROTOCOL = ("source_ports", "destination_ports", "tcp_flags", "icmp_type", "multiport")
NatTarget = Union[DNAT, Redirect, SNAT, Masquerade]
Target = Union[Accept, Drop, Return, Jump, Reject, NatTarget, TProxy, Log, Mark]
ACCEPT, DROP, RETURN = Accept(), Drop(), Return()


@dataclass(eq=False)
class Rule:
    """One rule: every condition given must hold (None: any). Ports match TCP, UDP and UDP-Lite
    packets, ``tcp_flags`` = (mask, set) TCP ones and ``icmp_type`` ICMP(v6) ones; none of the three
    matches a fragment being forwarded (only what this host receives is reassembled first). ``mark``
    is iptables' ``-m mark --mark value/mask``: packets carry their socket's SO_MARK, others 0.
    ``state`` is ``-m state --state``: what connection tracking (``conntrack``) says of the packet;
    a table tracks connections while one of its rules asks. ``multiport`` is ``-m multiport``: which
    ports, and ranges of them, any of which matches; ``limit`` (``-m limit``) and ``statistic``
(``-m statistic``) are asked last, as they count the packets asking. ``inverted`` names the conditions negated
(iptables' ``!``); a condition on the transport header (ports, flags, ICMP type) fails a packet without one —
a later fragment — negated or not, as Linux's matches do."""

    target: Target
    protocol: int | None = None                 # transport protocol number
    source: Subnet | None = None
    destination: Subnet | None = None
    in_interface: str | None = None             # NIC name (INPUT, FORWARD)
    out_interface: str | None = None            # NIC name (FORWARD, OUTPUT)
    source_ports: tuple[int, int] | None = None         # inclusive range
    destination_ports: tuple[int, int] | None = None
    tcp_flags: tuple[int, int] | None = None    # (flags examined, those of them that must be set)
    icmp_type: int | None = None
    mark: tuple[int, int] | None = None         # (value, mask): the packet's mark & mask == value
    state: frozenset[State] | None = None       # its connection's (iptables' -m state --state)
    state_match: str = field(default="state", compare=False)   # or "conntrack" (--ctstate): the same, spelt so
    multiport: tuple[MultiPort, tuple[tuple[int, int], ...]] | None = None
    length: tuple[int, int] | None = None       # the IP packet's length, a range (-m length)
    source_range: tuple[bytes, bytes] | None = None         # -m iprange --src-range first-last
    destination_range: tuple[bytes, bytes] | None = None    # --dst-range
    comment: str | None = None                  # -m comment: shown, never matched
    limit: Limit | None = None
    statistic: Statistic | None = None
    inverted: frozenset[str] = frozenset()
    packets: int = field(default=0, compare=False)
    bytes: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        for ports in (self.source_ports, self.destination_ports):
            if ports is not None and not 0 <= ports[0] <= ports[1] <= 0xFFFF:
                raise ValueError(f"bad port range {ports}")
        if (self.source_ports or self.destination_ports or self.multiport) and self.protocol not in PORTED:
            raise ValueError("ports match only with protocol TCP, UDP or UDP-Lite (iptables' -p before --dport)")
        if self.length is not None and not 0 <= self.length[0] <= self.length[1] <= 0xFFFF:
            raise ValueError(f"bad length range {self.length}")
        if self.multiport is not None:
            ranges = self.multiport[1]
            if not ranges or sum(1 if low == high else 2 for low, high in ranges) > MULTIPORT_MAX or not all(
                    0 <= low <= high <= 0xFFFF for low, high in ranges):
                raise ValueError(f"multiport: 1 to {MULTIPORT_MAX} ports (a range counts two), each 0 to 65535")
        if self.tcp_flags is not None and self.protocol != TCP_PROTOCOL_NUMBER:
            raise ValueError("tcp_flags match only with protocol TCP")
        if self.icmp_type is not None and self.protocol not in (ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER):
            raise ValueError("icmp_type matches only with protocol ICMP or ICMPv6")
        if self.inverted:
            self._check_inverted()

    def _check_inverted(self) -> None:
        unknown = self.inverted - NEGATABLE
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]} cannot be negated (those that can: {', '.join(sorted(NEGATABLE))})")
        unset = sorted(name for name in self.inverted if getattr(self, name) is None)
        if unset:
            raise ValueError(f"{unset[0]} is negated but not given")
        if "protocol" in self.inverted and any(getattr(self, name) is not None for name in _OF_THE_PROTOCOL):
            raise ValueError("ports, TCP flags and ICMP types need their protocol, not its negation")

    def matches(self, packet: FilteredPacket, state: State | None = None) -> bool:
        # Each condition given fails the packet when whether it holds equals whether it is negated.
        inverted = self.inverted
        if self.protocol is not None and (packet.protocol == self.protocol) == ("protocol" in inverted):
            return False
        if self.state is not None and (state in self.state) == ("state" in inverted):
            return False
        if self.source is not None and self.source.contains(packet.source) == ("source" in inverted):
            return False
        if self.destination is not None and \
                self.destination.contains(packet.destination) == ("destination" in inverted):
            return False
        if self.in_interface is not None and \
                (packet.in_interface == self.in_interface) == ("in_interface" in inverted):
            return False
        if self.out_interface is not None and \
                (packet.out_interface == self.out_interface) == ("out_interface" in inverted):
            return False
        head = packet.transport_head
        if self.source_ports is not None or self.destination_ports is not None:
            if len(head) < 4:
                return False
            for name, ports, value in (("source_ports", self.source_ports, head[0] << 8 | head[1]),
                                       ("destination_ports", self.destination_ports, head[2] << 8 | head[3])):
                if ports is not None and (ports[0] <= value <= ports[1]) == (name in inverted):
                    return False
        if self.tcp_flags is not None:
            if len(head) < 14 or (head[13] & self.tcp_flags[0] == self.tcp_flags[1]) == ("tcp_flags" in inverted):
                return False
        if self.icmp_type is not None and (not head or (head[0] == self.icmp_type) == ("icmp_type" in inverted)):
            return False
        if self.mark is not None and (packet.mark & self.mark[1] == self.mark[0]) == ("mark" in inverted):
            return False
        if self.multiport is not None:
            if len(head) < 4:
                return False
            which, ranges = self.multiport
            ports = ((head[0] << 8 | head[1],) if which is MultiPort.SOURCE else (head[2] << 8 | head[3],)
                     if which is MultiPort.DESTINATION else (head[0] << 8 | head[1], head[2] << 8 | head[3]))
            if any(low <= port <= high for port in ports for low, high in ranges) == ("multiport" in inverted):
                return False
        if self.length is not None and \
                (self.length[0] <= packet.length <= self.length[1]) == ("length" in inverted):
            return False
        for name, bounds, address in (("source_range", self.source_range, packet.source),
                                      ("destination_range", self.destination_range, packet.destination)):
            if bounds is not None and (len(address) == len(bounds[0]) and bounds[0] <= address <= bounds[1]) == \
                    (name in inverted):
                return False
        if self.limit is not None and not self.limit.matches():
            return False
        return self.statistic is None or self.statistic.matches()


@dataclass(slots=True)
class FilteredPacket:
    """What the rules look at, as the network layer describes a packet at a hook. Only a MARK target (or
    TPROXY's mark) changes it: its ``mark``, which the network layer then gives the packet."""

    protocol: int                   # transport protocol number
    source: bytes
    destination: bytes
    length: int                     # of the whole IP packet
    transport_head: bytes           # the transport header's first bytes, 64 (b'': a later fragment)
    in_interface: str | None = None
    out_interface: str | None = None
    mark: int = 0                   # the sending socket's SO_MARK; what the mangle table set on one received


@dataclass(eq=False)
class Chain:
    rules: list[Rule] = field(default_factory=list)
    policy: Accept | Drop | None = None        # built-in chains: what ends them; None for user chains
    packets: int = 0                            # that went by the policy
    bytes: int = 0


class RuleTable:
    """Chains of rules, built-in (named after their hooks) and the user's, as iptables edits them.
    ``active`` is false while no rule is in any chain and every policy is ACCEPT: the network layer then
    asks nothing per packet."""

    builtin: tuple[str, ...] = ()

    def __init__(self, version: int, now: Callable[[], float] = time.monotonic) -> None:
        self.version = version
        self.now = now
        self.chains: dict[str, Chain] = {name: Chain(policy=ACCEPT) for name in self.builtin}
        self.active = False
        self.conntrack = ConnTrack(now)

    # --- configuration (iptables -A, -I, -D, -F, -N, -X, -P) --------------------------------------

    def append(self, chain: str, rule: Rule) -> None:
        self.insert(chain, len(self._chain(chain).rules), rule)

    def insert(self, chain: str, index: int, rule: Rule) -> None:
        self._check_target(chain, rule)
        if rule.limit is not None:
            rule.limit.now = self.now      # the stack's clock
        self._chain(chain).rules.insert(index, rule)
        self._update()

    def delete(self, chain: str, rule: Rule) -> None:
        rules = self._chain(chain).rules
        for i, existing in enumerate(rules):
            if existing is rule:
                del rules[i]
                self._update()
                return
        raise ValueError(f"rule not in chain {chain}")

    def flush(self, chain: str | None = None) -> None:
        for name in [chain] if chain is not None else list(self.chains):
            self._chain(name).rules.clear()
        self._update()

    def new_chain(self, name: str) -> None:
        if name in self.chains:
            raise ValueError(f"chain {name} exists")
        self.chains[name] = Chain()

    def delete_chain(self, name: str) -> None:
        chain = self._chain(name)
        if chain.policy is not None:
            raise ValueError(f"{name} is a built-in chain")
        if chain.rules or any(isinstance(r.target, Jump) and r.target.chain == name
                              for c in self.chains.values() for r in c.rules):
            raise ValueError(f"chain {name} is not empty or is jumped to")
        del self.chains[name]

    def set_policy(self, chain: str, policy: Accept | Drop) -> None:
        target = self._chain(chain)
        if target.policy is None or not isinstance(policy, (Accept, Drop)):
            raise ValueError("a policy is ACCEPT or DROP, of a built-in chain")
        target.policy = policy
        self._update()

    def _chain(self, name: str) -> Chain:
        chain = self.chains.get(name)
        if chain is None:
            raise ValueError(f"no chain {name}")
        return chain

    def _check_target(self, chain: str, rule: Rule) -> None:
        target = rule.target
        if isinstance(target, Jump):
            callee = self._chain(target.chain)
            if callee.policy is not None:
                raise ValueError("a jump goes to a user chain")
            if target.chain == chain or chain in self._reachable(target.chain):
                raise ValueError(f"jumping from {chain} to {target.chain} makes a loop")

    def _builtins_reaching(self, chain: str) -> list[str]:
        """The built-in chains whose packets may go through ``chain`` (itself, if built-in)."""
        return [name for name in self.builtin if name == chain or chain in self._reachable(name)]

    def _reachable(self, name: str) -> set[str]:
        """User chains reachable by jumps from ``name``."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            for rule in self.chains[todo.pop()].rules:
                if isinstance(rule.target, Jump) and rule.target.chain not in seen:
                    seen.add(rule.target.chain)
                    todo.append(rule.target.chain)
        return seen

    def _update(self) -> None:
        self.active = any(chain.rules or (chain.policy is not None and chain.policy != ACCEPT)
                          for chain in self.chains.values())

    def _traverse(self, builtin: str, packet: FilteredPacket, state: State | None = None) -> Target:
        """The target that decides ``packet`` in the built-in chain ``builtin``: a rule's, else the chain's
        policy (counting the packet on it)."""
        chain = self.chains[builtin]
        target = self._walk(chain, packet, 0, state)
        if target is None:
            chain.packets += 1
            chain.bytes += packet.length
            target = chain.policy
        return target  # type: ignore[return-value]

    def _walk(self, chain: Chain, packet: FilteredPacket, depth: int, state: State | None) -> Target | None:
        """The target that decided, or None if the chain ran out or returned."""
        for rule in chain.rules:
            if not rule.matches(packet, state):
                continue
            rule.packets += 1
            rule.bytes += packet.length
            target = rule.target
            if isinstance(target, Log):      # (not a verdict: the next rule goes on)
                target.write(packet)
                continue
            if isinstance(target, Mark):     # (nor is this)
                packet.mark = target.apply(packet.mark)
                continue
            if isinstance(target, Jump):
                if depth >= _MAX_JUMP_DEPTH:
                    return DROP
                verdict = self._walk(self.chains[target.chain], packet, depth + 1, state)
                if verdict is not None:
                    return verdict
                continue
            if isinstance(target, Return):
                return None
            return target
        return None


class FilterTable(RuleTable):
    """One IP version's filter table."""

    builtin = tuple(hook.value for hook in Hook)

    def __init__(self, version: int, now: Callable[[], float] = time.monotonic) -> None:
        super().__init__(version, now)
        self.tracking = False       # a rule asks for the state: every packet let through is tracked

    def _check_target(self, chain: str, rule: Rule) -> None:
        super()._check_target(chain, rule)
        if not isinstance(rule.target, (Accept, Drop, Return, Jump, Reject, Log)):
            raise ValueError(f"{type(rule.target).__name__} is not a target of the filter table")
        if _resets(rule):
            if rule.protocol != TCP_PROTOCOL_NUMBER:
                raise ValueError("tcp-reset rejects only TCP (-p tcp)")

    def _update(self) -> None:
        super()._update()
        self.tracking = any(rule.state is not None for chain in self.chains.values() for rule in chain.rules)

    # --- the network layer's question -------------------------------------------------------------

    def check(self, hook: Hook, packet: FilteredPacket) -> Accept | Drop | Reject:
        """The verdict on ``packet`` at ``hook``, counting it on the rule (or policy) that decided."""
        state = None
        if self.tracking:
            state = self.conntrack.state(packet.protocol, packet.source, packet.destination, packet.transport_head)
        verdict = self._traverse(hook.value, packet, state)
        if self.tracking and isinstance(verdict, Accept):
            self.conntrack.accepted(packet.protocol, packet.source, packet.destination, packet.transport_head)
        return verdict  # type: ignore[return-value]


def _resets(rule: Rule) -> bool:
    return isinstance(rule.target, Reject) and rule.target.with_ is RejectWith.TCP_RESET


class IPTables:
    """The stack's packet filter and translator: the filter tables ``ipv4`` (iptables) and ``ipv6``
    (ip6tables), the nat tables ``ipv4_nat`` and ``ipv6_nat`` (``-t nat``) and the mangle tables'
    PREROUTING, for TPROXY (``-t mangle``), on the stack's clock (``now``) for connection tracking's timeouts."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        from .mangle import MangleTable     # (they build on this module's rules and chains)
        from .nat import NatTable

        self.ipv4 = FilterTable(4, now)
        self.ipv6 = FilterTable(6, now)
        self.ipv4_nat = NatTable(4, now)
        self.ipv6_nat = NatTable(6, now)
        self.ipv4_mangle = MangleTable(4, now)
        self.ipv6_mangle = MangleTable(6, now)
