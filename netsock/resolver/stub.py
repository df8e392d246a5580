"""A stub DNS resolver (RFC 1123 §6.1.3.1) whose queries go through a netsock stack.

Each exchange uses a fresh UDP endpoint, connected to the server: a random source port (RFC 6056)
and a random ID, and only datagrams from the server's address and port reach it; a response must
also repeat the question (RFC 5452 §9.1). Anything else is dropped and counted. The calling
greenlet waits on the endpoint with ``scheduler.wait_for``; the rest of the process keeps running.
A truncated answer is asked again over TCP (RFC 7766; if that fails, so has the server). Servers
are tried in order, ``attempts`` rounds over the list, each try waiting ``timeout`` seconds; a
server that fails (SERVFAIL, REFUSED, NOTIMP, an ICMP error, no route) is left at once for the
next. A and AAAA questions for one name are asked together, as glibc does. No EDNS: answers over
512 bytes come by TCP.

Answers are cached by TTL (stack time, so ManualClock tests control it) in a bounded LRU table;
negative answers for as long as their SOA allows (RFC 2308 §5), those without SOA not at all.
"""

from __future__ import annotations

import enum
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..header import Malformed, dns
from ..scheduler import wait_for
from ..tcpip import (IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER,
                     ErrConnectStarted, ErrWouldBlock, Error, FullAddress)
from ..tcpip.stats import StatCounter, StatGroup
from ..waiter import EventMask

if TYPE_CHECKING:
    from ..stack import Stack

NDOTS = 1                       # resolv.conf's default: names with a dot are tried as given first
MAX_CNAME_CHAIN = 16
MAX_POSITIVE_TTL = 86400        # as unbound's cache-max-ttl
MAX_NEGATIVE_TTL = 3600         # RFC 2308 §5 suggests hours at most; unbound's default

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?:\.(?!-)[A-Za-z0-9_-]{1,63})*\.?")
_LENGTH = struct.Struct("!H")


def is_hostname(name: str) -> bool:
    """Syntax a DNS host name may have (glibc's res_hnok): letters, digits, '-' and '_' in labels
    that do not start with '-', at most 253 characters. Nothing else is asked or believed."""
    return len(name.rstrip(".")) <= 253 and _HOSTNAME.fullmatch(name) is not None


class Status(enum.Enum):
    FOUND = "found"             # records of the type asked for
    NODATA = "nodata"           # the name exists, without records of that type
    NXDOMAIN = "nxdomain"       # no such name (also: nothing to ask)
    AGAIN = "again"             # no usable answer from any server: timeouts, SERVFAIL, REFUSED
    FAIL = "fail"               # a server rejected the query (FORMERR, an unknown RCODE)


# When several questions fail differently, the most informative outcome is reported: a name that
# exists beats a temporary failure, which beats a permanent one, which beats "no such name".
_FAILURE_RANK = {Status.NODATA: 3, Status.AGAIN: 2, Status.FAIL: 1, Status.NXDOMAIN: 0}


def worst_failure(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=_FAILURE_RANK.__getitem__, default=Status.NXDOMAIN)


class Answer(NamedTuple):
    status: Status
    canonical: str              # where the CNAME chain ended (the name asked, if there were none)
    aliases: tuple[str, ...]    # the names that led there, in order
    data: tuple[dns.RData, ...]     # addresses (A, AAAA) or names (PTR)


class ResolverStats(StatGroup):
    queries_sent: StatCounter           # UDP queries written
    tcp_queries_sent: StatCounter       # truncated answers asked again over TCP
    responses_malformed: StatCounter    # not DNS: dropped
    responses_unmatched: StatCounter    # wrong ID or question (late, or spoofed): dropped
    server_failures: StatCounter        # SERVFAIL, REFUSED, NOTIMP: the next server is asked
    server_errors: StatCounter          # no route, ICMP errors, TCP failures
    timeouts: StatCounter               # tries that ended with questions unanswered
    records_ignored: StatCounter        # answers off the CNAME chain, or names that are not host names
    cache_hits: StatCounter


class _Cache:
    """Answers by (name, type), each until its deadline; the least recently used goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, int], tuple[float, Answer]] = OrderedDict()

    def get(self, key: tuple[str, int], now: float) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[str, int], answer: Answer, ttl: int, now: float) -> None:
        if ttl <= 0 or self._size <= 0:
            return
        self._entries[key] = (now + ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class StubResolver:
    def __init__(self, stack: Stack, nameservers: list[FullAddress], timeout: float, attempts: int,
                 search: Iterable[str], cache_size: int) -> None:
        self.stack = stack
        self.nameservers = nameservers
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.search = [d.strip(".") for d in search if d.strip(".")]
        self.stats = ResolverStats()
        self.cache = _Cache(cache_size)

    def lookup(self, name: str, qtypes: tuple[int, ...]) -> dict[int, Answer]:
        """Answers for ``name`` (through the search list) and each of ``qtypes``.

        The first candidate name with records of any of the types wins; if none has, every type
        gets the most informative failure seen (see ``worst_failure``).
        """
        seen: list[Status] = []
        for candidate in self._candidates(name):
            answers = self.lookup_absolute(candidate, qtypes)
            if any(a.status is Status.FOUND for a in answers.values()):
                return answers
            seen.extend(a.status for a in answers.values())
        failure = Answer(worst_failure(seen), name.rstrip("."), (), ())
        return {qtype: failure for qtype in qtypes}

    def lookup_absolute(self, name: str, qtypes: tuple[int, ...]) -> dict[int, Answer]:
        """Answers for exactly ``name``, from the cache or the servers."""
        if not self.nameservers or not is_hostname(name):
            return {qtype: Answer(Status.NXDOMAIN, name.rstrip("."), (), ()) for qtype in qtypes}
        name = name.rstrip(".")
        now = self.stack.clock.now()
        answers: dict[int, Answer] = {}
        for qtype in qtypes:
            cached = self.cache.get((name.lower(), qtype), now)
            if cached is not None:
                self.stats.cache_hits.increment()
                answers[qtype] = cached
        missing = tuple(q for q in qtypes if q not in answers)
        if missing:
            answers.update(self._exchange(name, missing))
        return {qtype: answers[qtype] for qtype in qtypes}

    def _candidates(self, name: str) -> list[str]:
        """res_search's order: a name with a final dot as it is; one with at least NDOTS dots as
        it is, then with each search domain; a shorter one with the domains first."""
        if name.endswith("."):
            return [name]
        qualified = [f"{name}.{domain}" for domain in self.search]
        return [name, *qualified] if name.count(".") >= NDOTS else [*qualified, name]

    # --- exchanges --------------------------------------------------------------------------------

    def _exchange(self, name: str, qtypes: tuple[int, ...]) -> dict[int, Answer]:
        settled: dict[int, Answer] = {}
        for _ in range(self.attempts):
            for server in self.nameservers:
                pending = [q for q in qtypes if q not in settled]
                if not pending:
                    return settled
                queries = [dns.build_query(name, qtype) for qtype in pending]
                for query, msg in self._ask(server, queries):
                    answer = self._interpret(query, msg)
                    if answer is not None:
                        settled[query.question.qtype] = answer
        for qtype in qtypes:
            settled.setdefault(qtype, Answer(Status.AGAIN, name, (), ()))
        return settled

    def _ask(self, server: FullAddress, queries: list[dns.Query]) -> list[tuple[dns.Query, dns.Message]]:
        """Send ``queries`` to ``server`` over UDP and collect the responses that arrive within the
        timeout (retrying truncated ones over TCP); fewer than asked on timeouts and errors."""
        net_proto = IPV4_PROTOCOL_NUMBER if len(server.addr) == 4 else IPV6_PROTOCOL_NUMBER
        got: list[tuple[dns.Query, dns.Message]] = []
        try:
            ep = self.stack.new_endpoint(UDP_PROTOCOL_NUMBER, net_proto)
        except Error:
            self.stats.server_errors.increment()
            return got
        waiting = list(queries)
        try:
            ep.connect(server)
            for query in queries:
                ep.write(query.wire)
                self.stats.queries_sent.increment()
            deadline = time.monotonic() + self.timeout
            while waiting:
                if not self._wait(ep, EventMask.IN, deadline):
                    self.stats.timeouts.increment()
                    break
                while waiting:
                    try:
                        datagram = ep.read()
                    except ErrWouldBlock:
                        break
                    match = self._match(datagram.data, waiting)
                    if match is None:
                        continue
                    query, msg = match
                    waiting.remove(query)
                    answer = self._ask_tcp(server, query) if msg.truncated else msg
                    if answer is not None:
                        got.append((query, answer))
        except Error:
            self.stats.server_errors.increment()
        finally:
            ep.close()
        return got

    def _ask_tcp(self, server: FullAddress, query: dns.Query) -> dns.Message | None:
        """The same question over TCP: a two-byte length before each message (RFC 1035 §4.2.2)."""
        self.stats.tcp_queries_sent.increment()
        net_proto = IPV4_PROTOCOL_NUMBER if len(server.addr) == 4 else IPV6_PROTOCOL_NUMBER
        try:
            ep = self.stack.new_endpoint(TCP_PROTOCOL_NUMBER, net_proto)
        except Error:
            self.stats.server_errors.increment()
            return None
        deadline = time.monotonic() + self.timeout
        try:
            try:
                ep.connect(server)
            except ErrConnectStarted:
                pass
            out = memoryview(_LENGTH.pack(len(query.wire)) + query.wire)
            while out:
                if not self._wait(ep, EventMask.OUT, deadline):
                    self.stats.timeouts.increment()
                    return None
                try:
                    out = out[ep.write(out):]
                except ErrWouldBlock:
                    continue
            received = bytearray()
            while len(received) < 2 or len(received) < 2 + _LENGTH.unpack_from(received)[0]:
                if not self._wait(ep, EventMask.IN, deadline):
                    self.stats.timeouts.increment()
                    return None
                try:
                    chunk = ep.read(65536)
                except ErrWouldBlock:
                    continue
                if not chunk:
                    self.stats.server_errors.increment()     # closed before the whole answer
                    return None
                received += chunk
        except Error:
            self.stats.server_errors.increment()
            return None
        finally:
            ep.close()
        match = self._match(bytes(received[2:2 + _LENGTH.unpack_from(received)[0]]), [query])
        return match[1] if match is not None else None

    @staticmethod
    def _wait(ep: Any, mask: EventMask, deadline: float) -> bool:
        """Park until ``ep`` is ready for ``mask`` or has an error (then the next call on it raises
        it); False at the deadline."""
        mask |= EventMask.ERR | EventMask.HUP
        remaining = deadline - time.monotonic()
        return remaining > 0 and wait_for(ep.waiter_queue, mask, lambda: bool(ep.readiness(mask)), remaining)

    def _match(self, data: bytes, queries: list[dns.Query]) -> tuple[dns.Query, dns.Message] | None:
        msg = dns.parse(data)
        if isinstance(msg, Malformed):
            self.stats.responses_malformed.increment()
            return None
        for query in queries:
            if dns.is_response_to(msg, query):
                return query, msg
        self.stats.responses_unmatched.increment()
        return None

    # --- interpretation -----------------------------------------------------------------------------

    def _interpret(self, query: dns.Query, msg: dns.Message) -> Answer | None:
        """The answer ``msg`` gives to ``query`` (cached as long as it may be); None when the
        server failed and another should be asked."""
        name, qtype = query.question.name, query.question.qtype
        rcode = msg.rcode
        if rcode in (dns.Rcode.SERVFAIL, dns.Rcode.REFUSED, dns.Rcode.NOTIMP):
            self.stats.server_failures.increment()
            return None
        if rcode not in (dns.Rcode.NOERROR, dns.Rcode.NXDOMAIN):
            return Answer(Status.FAIL, name, (), ())
        canonical, aliases, ttl = name, [], MAX_POSITIVE_TTL
        data: list[dns.RData] = []
        used = 0
        for _ in range(MAX_CNAME_CHAIN):
            owned = [r for r in msg.answers if r.rclass == dns.CLASS_IN and dns.same_name(r.name, canonical)]
            matching = [r for r in owned if r.rtype == qtype and self._usable(qtype, r.data)]
            if matching:
                data = [r.data for r in matching]
                ttl = min(ttl, *(r.ttl for r in matching))
                used += len(matching)
                break
            cname = next((r for r in owned if r.rtype == dns.RRType.CNAME and self._usable(r.rtype, r.data)), None)
            if cname is None:
                break
            aliases.append(canonical)
            canonical = str(cname.data)
            ttl = min(ttl, cname.ttl)
            used += 1
        self.stats.records_ignored.increment(max(0, len(msg.answers) - used))
        if data and rcode == dns.Rcode.NOERROR:
            answer = Answer(Status.FOUND, canonical, tuple(aliases), tuple(data))
        else:
            status = Status.NXDOMAIN if rcode == dns.Rcode.NXDOMAIN else Status.NODATA
            answer = Answer(status, canonical, tuple(aliases), ())
            # RFC 2308 §5: the SOA's own TTL or its MINIMUM, whichever is smaller; without one, no caching.
            ttl = next((min(r.ttl, r.data.minimum, MAX_NEGATIVE_TTL) for r in msg.authority
                        if isinstance(r.data, dns.SOA)), 0)
        self.cache.put((name.lower(), qtype), answer, ttl, self.stack.clock.now())
        return answer

    @staticmethod
    def _usable(rtype: int, data: dns.RData) -> bool:
        if rtype in (dns.RRType.CNAME, dns.RRType.PTR):
            return isinstance(data, str) and is_hostname(data)
        return isinstance(data, bytes)
