"""Network address translation: iptables' nat table (netstack's DNAT, SNAT, REDIRECT and MASQUERADE).

As Linux's nat does it: a connection's first packet goes through the table's chains at each hook it
passes — PREROUTING (arrived, before the routing decision) or OUTPUT (sent by this host) choose
its destination; POSTROUTING (leaving) or INPUT (delivered here) its source — and a chain that ends
without a translation keeps what it has. The choices stay with the connection (connection tracking),
and every later packet of it is translated without the rules: the original direction's as chosen,
the replies' the other way (their source back to the destination the client asked for, their
destination back to the client's own address). A translated source keeps its port unless another
connection would then carry the same tuple; then the next free one in the range.

The network layer asks only while a rule is in the table (``active``), and rewrites what the answer
says: addresses, ports (an ICMP echo's identifier stands for both) and the checksums that cover them,
adjusted (RFC 1624) — a partial checksum, left for the device to complete, as the pseudo-header sum
it holds. An ICMP error about a packet of a translated connection is translated with it, the packet
it quotes too (Linux's nf_nat_icmp_reply_translation). IPv4 fragments are reassembled before they
are tracked, those to be forwarded too (Linux's nf_defrag_ipv4), and forwarding cuts them again.

Not here: IPv6 packets with extension headers (fragments among them), which pass untranslated; and
a new connection that finds the tracking table full (``conntrack.MAX_CONNECTIONS`` of them, all
replied to) goes untranslated where Linux drops its packets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from ..header.checksum import adjust_checksum, checksum, pseudo_header_checksum
from ..tcpip import ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER
from .conntrack import PORTED, Entry, Tuple, is_error, packet_tuple, quoted_tuple, reverse
from .iptables import (DNAT, SNAT, Accept, Drop, FilteredPacket, Jump, Log, Masquerade, Redirect, Reject, Return,
                       Rule, RuleTable)

PREROUTING, INPUT, OUTPUT, POSTROUTING = "PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"
NAT_DESTINATION, NAT_SOURCE = 1, 2      # Entry.decided bits
_DESTINATION_HOOKS = frozenset((PREROUTING, OUTPUT))
# Where each target may be (Linux's xt_nat hooks); in a user chain, every built-in chain reaching it must allow it.
_HOOKS = {DNAT: _DESTINATION_HOOKS, Redirect: _DESTINATION_HOOKS, SNAT: frozenset((POSTROUTING, INPUT)),
          Masquerade: frozenset((POSTROUTING,))}
_LOOPBACK = {4: bytes([127, 0, 0, 1]), 6: bytes(15) + b"\x01"}
# Which way a packet goes (Connection): with its connection, against it, or translated already; an ICMP
# error about a packet of the connection goes the other way from that packet.
ORIGINAL, REPLY, DONE, ERROR_ORIGINAL, ERROR_REPLY = "original", "reply", "done", "error original", "error reply"
Connection = tuple[Entry, str]
_FIRST_FREE_PORT = 1024     # a clashing port >= 1024 moves within 1024-65535, as Linux's nf_nat_l4proto_unique_tuple
# Where each protocol keeps its checksum, and whether it covers the pseudo-header (addresses).
_CHECKSUM = {TCP_PROTOCOL_NUMBER: (16, True), UDP_PROTOCOL_NUMBER: (6, True), 136: (6, True),
             ICMPV4_PROTOCOL_NUMBER: (2, False), ICMPV6_PROTOCOL_NUMBER: (2, True)}


class TableFull(Exception):
    """A new connection found connection tracking full, none of its connections unanswered to make room
    for it: its packet is dropped, as Linux drops it."""


class NatTable(RuleTable):
    """One IP version's nat table (``iptables -t nat``)."""

    builtin = (PREROUTING, INPUT, OUTPUT, POSTROUTING)

    def _check_target(self, chain: str, rule: Rule) -> None:
        super()._check_target(chain, rule)
        target = rule.target
        if isinstance(target, (Drop, Reject)):
            raise ValueError("the nat table does not filter: DROP and REJECT belong in the filter table")
        if not isinstance(target, (Accept, Return, Jump, Log, *_HOOKS)):
            raise ValueError(f"{type(target).__name__} is not a target of the nat table")
        if getattr(target, "ports", None) is not None and rule.protocol not in PORTED:
            raise ValueError("a translated port needs protocol TCP, UDP or UDP-Lite (iptables' -p)")
        address = getattr(target, "address", b"")
        if address and len(address) != (4 if self.version == 4 else 16):
            raise ValueError(f"{address!r} is not an IPv{self.version} address")
        if isinstance(target, Jump):
            targets = [r.target for name in {target.chain, *self._reachable(target.chain)}
                       for r in self.chains[name].rules]
        else:
            targets = [target]
        hooks = self._builtins_reaching(chain)
        for each in targets:
            allowed = _HOOKS.get(type(each))
            if allowed is not None and not allowed.issuperset(hooks):
                raise ValueError(f"{type(each).__name__} is a target of {' and '.join(sorted(allowed))} only "
                                 f"(and of user chains reached from there alone)")

    def set_policy(self, chain: str, policy: Accept | Drop) -> None:
        if not isinstance(policy, Accept):
            raise ValueError("the nat table's policies are ACCEPT (it does not filter)")
        super().set_policy(chain, policy)

    # --- the network layer's questions -------------------------------------------------------------

    def connection(self, key: Tuple, head: bytes) -> Connection:
        """The connection of a packet (its tuple ``key``) at its first hook (PREROUTING, OUTPUT), tracked
        from now on if new, and which way the packet goes: ORIGINAL, REPLY or DONE (translated already:
        back through loopback, as Linux's conntrack recognises by the connection the packet carries).
        TableFull if there is no room to track a new one: Linux drops the packet ("nf_conntrack: table full")."""
        track = self.conntrack
        entry = track.lookup(key)
        if entry is None:
            entry = track.track(key)
            if entry is None:
                raise TableFull()
        way = ORIGINAL if key == entry.original else REPLY if key == entry.reply else DONE
        if way is not DONE:
            track.refresh(entry, key, head)
        return entry, way

    def related(self, protocol: int, head: bytes) -> Connection | None:
        """The connection an ICMP error is about (its quoted packet's), and the way the error goes: against
        the quoted packet. None if that is no connection tracked here."""
        quoted = quoted_tuple(protocol, head)
        entry = self.conntrack.lookup(quoted) if quoted is not None else None
        if entry is None:
            return None
        quoted_original = quoted == entry.original or entry.aliases[:1] == (quoted,)
        return entry, ERROR_REPLY if quoted_original else ERROR_ORIGINAL

    def destination(self, hook: str, connection: Connection, describe: Callable[[], FilteredPacket],
                    arriving: Callable[[], bytes]) -> tuple[bytes, int] | None:
        """PREROUTING, OUTPUT: where the packet now goes, (address, port), if it may change. ``describe()``:
        the packet as the rules see it, ``arriving()``: REDIRECT's address in PREROUTING (the arriving
        interface's; loopback's in OUTPUT) — asked only of a connection's first packet."""
        entry, way = connection
        if way is REPLY or way is ERROR_REPLY:
            return entry.original[1:3] if entry.source is not None else None    # back to the client
        if way is not ORIGINAL:
            return entry.destination if way is ERROR_ORIGINAL else None
        if not entry.decided & NAT_DESTINATION:
            entry.decided |= NAT_DESTINATION
            target = self._traverse(hook, describe())
            if isinstance(target, (DNAT, Redirect)):
                original = entry.original
                here = _LOOPBACK[self.version] if hook == OUTPUT else arriving()
                address = here if isinstance(target, Redirect) else target.address or original[3]
                port = original[4] if target.ports is None or original[0] not in PORTED else target.ports[0]
                if address and (address, port) != original[3:5]:
                    entry.destination = (address, port)
                    self._retuple(entry)
        return entry.destination

    def source(self, hook: str, connection: Connection, describe: Callable[[], FilteredPacket],
               leaving: Callable[[], bytes]) -> tuple[bytes, int] | None:
        """POSTROUTING, INPUT: where the packet now comes from, (address, port), if it may change.
        ``describe()`` and ``leaving()`` (MASQUERADE's address: the leaving interface's towards the
        destination), as for ``destination``."""
        entry, way = connection
        if way is REPLY or way is ERROR_REPLY:
            return entry.original[3:5] if entry.destination is not None else None   # from whom was asked
        if way is not ORIGINAL:
            return entry.source if way is ERROR_ORIGINAL else None
        if not entry.decided & NAT_SOURCE:
            entry.decided |= NAT_SOURCE
            target = self._traverse(hook, describe())
            if isinstance(target, (SNAT, Masquerade)):
                address = target.address if isinstance(target, SNAT) else leaving()
                if address:
                    self._choose_source(entry, address, target.ports)
        return entry.source

    def original_destination(self, protocol: int, local: bytes, local_port: int, remote: bytes,
                             remote_port: int) -> tuple[bytes, int] | None:
        """SO_ORIGINAL_DST: the destination a connection's client asked for, the connection known here by
        its own addresses (its replies' tuple); None if it is not tracked."""
        entry = self.conntrack.lookup((protocol, local, local_port, remote, remote_port))
        return entry.original[3:5] if entry is not None else None

    def _choose_source(self, entry: Entry, address: bytes, ports: tuple[int, int] | None) -> None:
        """The source ``address`` and a port that leaves no two connections' replies alike."""
        protocol, _, port, destination, destination_port = self._translated(entry)
        echo = protocol not in PORTED
        if ports is None:
            low, high = (_FIRST_FREE_PORT, 0xFFFF) if port >= _FIRST_FREE_PORT else (1, _FIRST_FREE_PORT - 1)
            candidates: Iterable[int] = itertools.chain((port,), range(port + 1, high + 1), range(low, port))
        else:
            low, high = ports
            candidates = itertools.chain((port,) if low <= port <= high else (), range(low, high + 1))
        for candidate in candidates:
            reply = (protocol, destination, candidate if echo else destination_port, address, candidate)
            if self.conntrack.lookup(reply) in (None, entry):
                if (address, candidate) != entry.original[1:3]:
                    entry.source = (address, candidate)
                    self._retuple(entry)
                return
        # Every port taken: as Linux, the connection goes untranslated (and its replies will not find it).

    def _translated(self, entry: Entry) -> Tuple:
        protocol, source, source_port, destination, destination_port = entry.original
        if entry.destination is not None:
            destination, destination_port = entry.destination
            if protocol not in PORTED:             # an echo's identifier is both "ports"
                source_port = destination_port
        if entry.source is not None:
            source, source_port = entry.source
            if protocol not in PORTED:
                destination_port = source_port
        return (protocol, source, source_port, destination, destination_port)

    def _retuple(self, entry: Entry) -> None:
        """Index the connection by what its packets carry once translated: its replies' tuple, and (for
        packets looped back to this host, met again) the original direction's translated and the replies'
        untranslated."""
        translated = self._translated(entry)
        self.conntrack.retuple(entry, reverse(translated), (translated, reverse(entry.original)))


def translate_datagram(datagram: memoryview, l4: int, protocol: int, source: tuple[bytes, int] | None,
                       destination: tuple[bytes, int] | None, partial: bool) -> memoryview | None:
    """A copy of ``datagram`` (whole, IPv4 or IPv6, its transport header at ``l4``) coming from ``source``
    and going to ``destination`` (None: as it does), or None if that changes nothing. An ICMP error's
    quoted packet goes the other way: it is made to come from ``destination`` and go to ``source``."""
    copy = bytearray(datagram)
    view = memoryview(copy)
    old_source, old_destination = _addresses(view)
    new_source = source[0] if source else old_source
    new_destination = destination[0] if destination else old_destination
    head = bytes(view[l4:l4 + 8])
    if is_error(protocol, head):
        quote = view[l4 + 8:]
        quoted_source, quoted_destination = _addresses(quote)
        quoted_length = 40 if len(quoted_source) == 16 else (quote[0] & 0x0F) * 4
        new_quoted_source = destination[0] if destination else quoted_source
        new_quoted_destination = source[0] if source else quoted_destination
        _set_addresses(quote, new_quoted_source, new_quoted_destination)
        rewrite_transport(quote[quoted_length:], quote[6] if len(quoted_source) == 16 else quote[9], quoted_source,
                          new_quoted_source, quoted_destination, new_quoted_destination,
                          destination[1] if destination else None, source[1] if source else None, False)
        _set_addresses(view, new_source, new_destination)
        message = view[l4:]
        message[2:4] = b"\0\0"        # summed afresh: the quote changed under it
        total = checksum(message, pseudo_header_checksum(protocol, new_source, new_destination, len(message))
                         if protocol == ICMPV6_PROTOCOL_NUMBER else 0)
        message[2:4] = (~total & 0xFFFF).to_bytes(2, "big")
        return view
    key = packet_tuple(protocol, old_source, old_destination, bytes(view[l4:l4 + 8]))
    if key is None:
        return None
    new_source_port = source[1] if source else key[2]
    new_destination_port = destination[1] if destination else key[4]
    if (new_source, new_source_port, new_destination, new_destination_port) == key[1:]:
        return None
    _set_addresses(view, new_source, new_destination)
    rewrite_transport(view[l4:], protocol, old_source, new_source, old_destination, new_destination,
                      new_source_port if source else None, new_destination_port if destination else None, partial)
    return view


def _addresses(header: memoryview) -> tuple[bytes, bytes]:
    """An IP header's source and destination addresses."""
    if header[0] >> 4 == 4:
        return bytes(header[12:16]), bytes(header[16:20])
    return bytes(header[8:24]), bytes(header[24:40])


def _set_addresses(header: memoryview, source: bytes, destination: bytes) -> None:
    """Write an IP header's addresses (an IPv4 one's checksum adjusted, if it is there to adjust)."""
    if header[0] >> 4 == 4:
        old = bytes(header[12:20])
        header[12:16], header[16:20] = source, destination
        if len(header) >= 20:
            header[10:12] = adjust_checksum(int.from_bytes(header[10:12], "big"), old, header[12:20]).to_bytes(2, "big")
    else:
        header[8:24], header[24:40] = source, destination


def rewrite_transport(view: memoryview, protocol: int, old_source: bytes, new_source: bytes,
                      old_destination: bytes, new_destination: bytes, source_port: int | None,
                      destination_port: int | None, partial: bool) -> None:
    """Translate a transport header (``view`` starts at it) in place: its ports (an ICMP echo's
    identifier: ``source_port`` for a request, ``destination_port`` for a reply) and the checksum
    over them and the addresses. ``partial``: the checksum field holds the pseudo-header sum only."""
    offset, pseudo = _CHECKSUM.get(protocol, (None, False))
    old, new = bytearray(), bytearray()
    if pseudo:
        old += old_source + old_destination
        new += new_source + new_destination
    # A partial checksum (left for the device) holds the pseudo-header's sum alone: the device sums the ports.
    pseudo_length = len(old) if partial else None
    if protocol in PORTED:
        fields = ((0, source_port), (2, destination_port))
    else:
        fields = ((4, source_port if source_port is not None else destination_port),)
    for at, port in fields:
        if port is not None and len(view) >= at + 2:
            old += view[at:at + 2]
            view[at:at + 2] = port.to_bytes(2, "big")
            new += view[at:at + 2]
    if offset is None or len(view) < offset + 2 or old == new:
        return
    field = int.from_bytes(view[offset:offset + 2], "big")
    if protocol == UDP_PROTOCOL_NUMBER and field == 0 and len(old_source) == 4:
        return      # an IPv4 UDP datagram sent without a checksum stays so
    if partial:
        if not pseudo_length:
            return
        field = ~adjust_checksum(~field & 0xFFFF, old[:pseudo_length], new[:pseudo_length]) & 0xFFFF
    else:
        field = adjust_checksum(field, old, new)
        if field == 0 and protocol == UDP_PROTOCOL_NUMBER:
            field = 0xFFFF      # 0 would mean "no checksum"
    view[offset:offset + 2] = field.to_bytes(2, "big")


