"""Name resolution over netsock.

A DNS server written here (scapy builds its answers, so our parser never checks our own encoder)
runs in greenlets on a second stack, joined to the resolver's stack by channel links whose packets
cross through the gevent loop, as over a real wire. Time for the caches is the stacks' ManualClock;
waiting for answers is real (and short). The socket module's answers for numeric hosts, the
wildcard and the hosts file are compared with the kernel's own getaddrinfo and friends.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from hypothesis import given, settings, strategies as st

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # before scapy's import: no route warnings

from scapy.layers.dns import DNS, DNSRR, DNSRRSOA, dns_compress  # noqa: E402

from netsock.header import dns  # noqa: E402
from netsock.link.channel import ChannelEndpoint  # noqa: E402
from netsock.link.loopback import LoopbackEndpoint  # noqa: E402
from netsock.network.ipv4 import IPv4Protocol  # noqa: E402
from netsock.network.ipv6 import IPv6Protocol  # noqa: E402
from netsock.resolver import Resolver  # noqa: E402
from netsock.scheduler import wait_for  # noqa: E402
from netsock.stack import ManualClock, Stack  # noqa: E402
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER,  # noqa: E402
                           UDP_PROTOCOL_NUMBER, Address, ErrWouldBlock, FullAddress, Route, WriteOptions)
from netsock.transport.icmp import ICMPv4Protocol, ICMPv6Protocol  # noqa: E402
from netsock.transport.tcp import TCPProtocol  # noqa: E402
from netsock.transport.udp import UDPProtocol  # noqa: E402
from netsock.waiter import EventMask  # noqa: E402

CLIENT_V4, CLIENT_V6 = "192.0.2.2", "2001:db8::2"
SERVER_V4, SERVER_V6 = "192.0.2.53", "2001:db8::53"
DEAD_SERVER = "192.0.2.54"       # the server stack's too, with nothing on port 53: port unreachable

A, AAAA, CNAME, PTR = 1, 28, 5, 12
STREAM = {"type": socket.SOCK_STREAM}

# name -> [(type, ttl, rdata)]; the server follows CNAMEs as a recursive server does.
ZONE: dict[str, list[tuple[str, int, str]]] = {
    "www.example.test": [("CNAME", 60, "web.example.test")],
    "chain.example.test": [("CNAME", 120, "www.example.test")],
    "web.example.test": [("A", 300, "192.0.2.80"), ("AAAA", 300, "2001:db8::80")],
    "v4only.example.test": [("A", 300, "192.0.2.81")],
    "short.example.test": [("A", 5, "192.0.2.82")],
    "big.example.test": [("A", 300, f"198.51.100.{i}") for i in range(1, 41)],
    "evil.example.test": [("CNAME", 60, "bad\\.name.example.test")],
    "bad\\.name.example.test": [("A", 60, "203.0.113.66")],
    "80.2.0.192.in-addr.arpa": [("PTR", 300, "web.example.test")],
    dns.reverse_name(socket.inet_pton(socket.AF_INET6, "2001:db8::80")): [("PTR", 300, "web.example.test")],
}
NEGATIVE_TTL = 30
SOA = DNSRRSOA(rrname="example.test", ttl=600, mname="ns.example.test", rname="hostmaster.example.test",
               serial=1, refresh=3600, retry=600, expire=86400, minimum=NEGATIVE_TTL)

Script = Callable[[DNS, bytes], list[bytes]]     # (query, the normal answer) -> datagrams to send


def error_response(query: DNS, rcode: int) -> bytes:
    return bytes(DNS(id=query.id, qr=1, rd=query.rd, ra=1, rcode=rcode, qd=query.qd))


def silent(query: DNS, answer: bytes) -> list[bytes]:
    return []


SCRIPTS: dict[str, Script] = {
    "servfail.example.test": lambda q, a: [error_response(q, 2)],
    "refused.example.test": lambda q, a: [error_response(q, 5)],
    "formerr.example.test": lambda q, a: [error_response(q, 1)],
    "silent.example.test": silent,
}


class DNSServer:
    """Answers from ZONE over UDP (v4 and v6) and TCP (v4); UDP answers over 512 bytes are cut to
    a header and the question with TC set, as BIND does. ``log`` records every question."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.log: list[tuple[str, str, int]] = []
        self.scripts: dict[str, Script] = dict(SCRIPTS)
        self.greenlets: list[gevent.Greenlet] = []
        self.last_sender = FullAddress()
        for address, proto in ((SERVER_V4, IPV4_PROTOCOL_NUMBER), (SERVER_V6, IPV6_PROTOCOL_NUMBER)):
            udp = stack.new_endpoint(UDP_PROTOCOL_NUMBER, proto)
            udp.bind(FullAddress(0, bytes(Address.parse(address)), 53))
            self.greenlets.append(gevent.spawn(self._serve_udp, udp))
        tcp = stack.new_endpoint(TCP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
        tcp.bind(FullAddress(0, bytes(Address.parse(SERVER_V4)), 53))
        tcp.listen(8)
        self.greenlets.append(gevent.spawn(self._serve_tcp, tcp))

    def questions(self, transport: str = "udp") -> list[tuple[str, int]]:
        return [(name, qtype) for t, name, qtype in self.log if t == transport]

    def answer(self, query: DNS, transport: str) -> bytes:
        question = query.qd[0]
        name = question.qname.decode().rstrip(".").lower()
        self.log.append((transport, name, question.qtype))
        answers: list[DNSRR] = []
        for _ in range(8):
            records = ZONE.get(name, [])
            data = [r for r in records if r[0] == dns.RRType(question.qtype).name]
            cname = next((r for r in records if r[0] == "CNAME"), None)
            for rtype, ttl, rdata in data or ([cname] if cname else []):
                answers.append(DNSRR(rrname=name, type=rtype, ttl=ttl, rdata=rdata))
            if data or cname is None:
                break
            name = cname[2]
        response = DNS(id=query.id, qr=1, aa=1, rd=query.rd, ra=1, rcode=0 if name in ZONE else 3,
                       qd=query.qd, an=answers, ns=[] if data else [SOA])
        wire = bytes(dns_compress(response))
        if transport == "udp" and len(wire) > dns.MAX_UDP_SIZE:
            wire = bytes(DNS(id=query.id, qr=1, tc=1, rd=query.rd, ra=1, qd=query.qd))
        return wire

    def _serve_udp(self, ep: Any) -> None:
        while True:
            wait_for(ep.waiter_queue, EventMask.IN, lambda: bool(ep.readiness(EventMask.IN)))
            datagram = ep.read()
            self.last_sender = datagram.sender
            query = DNS(datagram.data)
            answer = self.answer(query, "udp")
            script = self.scripts.get(query.qd[0].qname.decode().rstrip(".").lower())
            for wire in script(query, answer) if script else [answer]:
                ep.write(wire, WriteOptions(to=datagram.sender))

    def _serve_tcp(self, listener: Any) -> None:
        while True:
            wait_for(listener.waiter_queue, EventMask.IN, lambda: bool(listener.readiness(EventMask.IN)))
            conn, _ = listener.accept()
            self.greenlets.append(gevent.spawn(self._serve_connection, conn))

    def _serve_connection(self, conn: Any) -> None:
        received = b""
        while len(received) < 2 or len(received) < 2 + int.from_bytes(received[:2], "big"):
            wait_for(conn.waiter_queue, EventMask.IN, lambda: bool(conn.readiness(EventMask.IN)))
            chunk = conn.read(65536)
            if not chunk:
                conn.close()
                return
            received += chunk
        wire = self.answer(DNS(received[2:]), "tcp")
        out = len(wire).to_bytes(2, "big") + wire
        while out:
            wait_for(conn.waiter_queue, EventMask.OUT, lambda: bool(conn.readiness(EventMask.OUT)))
            try:
                out = out[conn.write(out):]
            except ErrWouldBlock:
                continue
        conn.close()


def make_stack(clock: ManualClock, v4: str, v6: str, *more_v4: str) -> tuple[Stack, ChannelEndpoint]:
    stack = Stack([IPv4Protocol, IPv6Protocol], [UDPProtocol, TCPProtocol, ICMPv4Protocol, ICMPv6Protocol],
                  clock=clock)
    link = ChannelEndpoint()
    stack.create_nic(1, link, name="eth0")
    for address in (v4, *more_v4):
        stack.add_address(1, IPV4_PROTOCOL_NUMBER, f"{address}/24")
    stack.add_address(1, IPV6_PROTOCOL_NUMBER, f"{v6}/64")
    stack.set_route_table([Route.parse("192.0.2.0/24", 1), Route.parse("2001:db8::/64", 1)])
    return stack, link


def wire(a: ChannelEndpoint, b: ChannelEndpoint) -> None:
    """What one link writes, the other receives once the writer yields to the gevent loop."""
    loop = gevent.get_hub().loop

    def forward(src: ChannelEndpoint, dst: ChannelEndpoint) -> None:
        def on_outbound(info: Any) -> None:
            src.read()
            loop.run_callback(dst.inject, info.protocol, info.data)
        src.on_outbound = on_outbound

    forward(a, b)
    forward(b, a)


class Network:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.client, client_link = make_stack(self.clock, CLIENT_V4, CLIENT_V6)
        self.server_stack, server_link = make_stack(self.clock, SERVER_V4, SERVER_V6, DEAD_SERVER)
        wire(client_link, server_link)
        self.server = DNSServer(self.server_stack)

    def resolver(self, **options: Any) -> Resolver:
        settings_ = {"hosts_file": None, "nameservers": [SERVER_V4], "timeout": 0.5, "attempts": 2, **options}
        return Resolver(self.client, **settings_)


@pytest.fixture
def net() -> Iterator[Network]:
    network = Network()
    yield network
    gevent.killall(network.server.greenlets)


def addresses(infos: list[tuple]) -> list[str]:
    return [info[4][0] for info in infos]


def raises(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[type, tuple]:
    with pytest.raises(OSError) as failure:
        fn(*args, **kwargs)
    return type(failure.value), failure.value.args


NONAME = (socket.gaierror, (socket.EAI_NONAME, "Name or service not known"))
AGAIN = (socket.gaierror, (socket.EAI_AGAIN, "Temporary failure in name resolution"))


# --- DNS --------------------------------------------------------------------------------------------

def test_a_and_aaaa_through_a_cname_chain(net: Network) -> None:
    resolver = net.resolver()
    infos = resolver.getaddrinfo("www.example.test", 80, **STREAM, flags=socket.AI_CANONNAME)
    assert infos == [(socket.AF_INET6, socket.SOCK_STREAM, 6, "web.example.test", ("2001:db8::80", 80, 0, 0)),
                     (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.80", 80))]
    assert net.server.questions() == [("www.example.test", A), ("www.example.test", AAAA)]
    assert resolver.gethostbyname_ex("chain.example.test") == (
        "web.example.test", ["chain.example.test", "www.example.test"], ["192.0.2.80"])
    assert resolver.gethostbyname("www.example.test") == "192.0.2.80"
    assert resolver.stats.queries_sent.value == 3 and resolver.stats.records_ignored.value == 0


def test_queries_are_recursive_with_one_question_and_random_ids(net: Network) -> None:
    seen: list[DNS] = []
    net.server.scripts["web.example.test"] = lambda q, a: (seen.append(q), [a])[1]
    resolver = net.resolver(cache_size=0)
    for _ in range(4):
        resolver.getaddrinfo("web.example.test", None)
    assert len(seen) == 8
    assert all((q.qr, q.rd, q.opcode, q.qdcount, q.ancount, q.nscount, q.arcount) == (0, 1, 0, 1, 0, 0, 0)
               for q in seen)
    assert len({q.id for q in seen}) > 1


def test_ipv6_comes_first_only_with_a_global_ipv6_address(net: Network) -> None:
    resolver = net.resolver(nameservers=[SERVER_V4], cache_size=0)
    assert addresses(resolver.getaddrinfo("web.example.test", 80, **STREAM)) == ["2001:db8::80", "192.0.2.80"]
    net.client.remove_address(1, bytes(Address.parse(CLIENT_V6)))
    net.client.add_address(1, IPV6_PROTOCOL_NUMBER, "fe80::2/64")
    assert addresses(resolver.getaddrinfo("web.example.test", 80, **STREAM)) == ["192.0.2.80", "2001:db8::80"]


def test_families_and_v4_mapped_addresses(net: Network) -> None:
    resolver = net.resolver()
    assert addresses(resolver.getaddrinfo("web.example.test", 80, socket.AF_INET, **STREAM)) == ["192.0.2.80"]
    assert addresses(resolver.getaddrinfo("v4only.example.test", 80, **STREAM)) == ["192.0.2.81"]
    assert raises(resolver.getaddrinfo, "v4only.example.test", 80, socket.AF_INET6) == (
        socket.gaierror, (socket.EAI_NODATA, "No address associated with hostname"))
    mapped = resolver.getaddrinfo("v4only.example.test", 80, socket.AF_INET6, flags=socket.AI_V4MAPPED, **STREAM)
    assert mapped == [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:192.0.2.81", 80, 0, 0))]
    assert addresses(resolver.getaddrinfo("web.example.test", 80, socket.AF_INET6, flags=socket.AI_V4MAPPED,
                                          **STREAM)) == ["2001:db8::80"]
    both = resolver.getaddrinfo("web.example.test", 80, socket.AF_INET6, flags=socket.AI_V4MAPPED | socket.AI_ALL,
                                **STREAM)
    assert addresses(both) == ["2001:db8::80", "::ffff:192.0.2.80"]


def test_no_such_name_and_server_failures(net: Network) -> None:
    resolver = net.resolver(timeout=0.05)
    assert raises(resolver.getaddrinfo, "missing.example.test", 80) == NONAME
    assert raises(resolver.gethostbyname, "missing.example.test") == NONAME
    assert raises(resolver.gethostbyname_ex, "missing.example.test") == NONAME
    for name in ("servfail.example.test", "refused.example.test"):
        assert raises(resolver.getaddrinfo, name, 80, socket.AF_INET) == AGAIN
        assert net.server.questions().count((name, A)) == 2, "one per attempt"
    assert raises(resolver.getaddrinfo, "formerr.example.test", 80, socket.AF_INET) == (
        socket.gaierror, (socket.EAI_FAIL, "Non-recoverable failure in name resolution"))
    assert net.server.questions().count(("formerr.example.test", A)) == 1, "an answer, if a bad one"
    assert resolver.stats.server_failures.value == 4


def test_silence_times_out_after_every_attempt(net: Network) -> None:
    resolver = net.resolver(timeout=0.05, attempts=3)
    start = time.monotonic()
    assert raises(resolver.getaddrinfo, "silent.example.test", 80) == AGAIN
    assert 0.15 <= time.monotonic() - start < 1.0
    assert net.server.questions() == [("silent.example.test", A), ("silent.example.test", AAAA)] * 3
    assert resolver.stats.timeouts.value == 3


def test_a_lost_query_is_asked_again(net: Network) -> None:
    dropped: list[DNS] = []

    def drop_first(query: DNS, answer: bytes) -> list[bytes]:
        if not dropped:
            dropped.append(query)
            return []
        return [answer]

    net.server.scripts["v4only.example.test"] = drop_first
    resolver = net.resolver(timeout=0.05)
    assert addresses(resolver.getaddrinfo("v4only.example.test", 80, socket.AF_INET, **STREAM)) == ["192.0.2.81"]
    assert net.server.questions() == [("v4only.example.test", A)] * 2


def test_the_next_server_is_asked_at_once_when_one_is_unreachable(net: Network) -> None:
    resolver = net.resolver(nameservers=[DEAD_SERVER, SERVER_V4], timeout=2.0)
    start = time.monotonic()
    assert addresses(resolver.getaddrinfo("v4only.example.test", 80, socket.AF_INET, **STREAM)) == ["192.0.2.81"]
    assert time.monotonic() - start < 1.0, "port unreachable ends the try: no timeout"
    assert resolver.stats.server_errors.value == 1


def test_an_ipv6_name_server(net: Network) -> None:
    resolver = net.resolver(nameservers=[SERVER_V6])
    assert addresses(resolver.getaddrinfo("web.example.test", 80, **STREAM)) == ["2001:db8::80", "192.0.2.80"]


def test_truncated_answers_are_asked_again_over_tcp(net: Network) -> None:
    resolver = net.resolver()
    infos = resolver.getaddrinfo("big.example.test", 53, socket.AF_INET, socket.SOCK_DGRAM)
    assert addresses(infos) == [f"198.51.100.{i}" for i in range(1, 41)]
    assert net.server.log == [("udp", "big.example.test", A), ("tcp", "big.example.test", A)]
    assert resolver.stats.tcp_queries_sent.value == 1


def test_responses_with_a_wrong_id_or_question_are_ignored(net: Network) -> None:
    def spoof_first(query: DNS, answer: bytes) -> list[bytes]:
        forged = DNS(answer)
        forged.an[0].rdata = "203.0.113.66"
        wrong_id = forged.copy()
        wrong_id.id = query.id ^ 0x5A5A
        wrong_question = forged.copy()
        wrong_question.qd[0].qname = "other.example.test"
        return [bytes(wrong_id), bytes(wrong_question), b"\x00junk", answer]

    net.server.scripts["v4only.example.test"] = spoof_first
    resolver = net.resolver()
    assert resolver.gethostbyname("v4only.example.test") == "192.0.2.81"
    assert resolver.stats.responses_unmatched.value == 2 and resolver.stats.responses_malformed.value == 1


def test_an_answer_that_is_only_a_wrong_id_times_out(net: Network) -> None:
    def wrong_id(query: DNS, answer: bytes) -> list[bytes]:
        forged = DNS(answer)
        forged.id = query.id ^ 1
        return [bytes(forged)]

    net.server.scripts["v4only.example.test"] = wrong_id
    resolver = net.resolver(timeout=0.05, attempts=1)
    assert raises(resolver.getaddrinfo, "v4only.example.test", 80, socket.AF_INET) == AGAIN


def test_answers_from_another_port_never_reach_the_resolver(net: Network) -> None:
    spoofer = net.server_stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER)
    spoofer.bind(FullAddress(0, bytes(Address.parse(SERVER_V4)), 5353))

    def race(query: DNS, answer: bytes) -> list[bytes]:
        forged = DNS(answer)
        forged.an[0].rdata = "203.0.113.66"
        spoofer.write(bytes(forged), WriteOptions(to=net.server.last_sender))
        gevent.sleep(0.01)          # the forgery arrives first
        return [answer]

    net.server.scripts["v4only.example.test"] = race
    resolver = net.resolver()
    assert resolver.gethostbyname("v4only.example.test") == "192.0.2.81"
    assert net.client.stats().udp.unknown_port_errors.value == 1, "the connected endpoint never saw it"


def test_names_that_are_not_host_names_are_neither_asked_nor_believed(net: Network) -> None:
    resolver = net.resolver()
    for name in ("-bad.example.test", "a b.example.test", "x" * 64):
        with pytest.raises((socket.gaierror, UnicodeError)):
            resolver.getaddrinfo(name, 80)
    assert net.server.log == []
    assert raises(resolver.getaddrinfo, "evil.example.test", 80, socket.AF_INET) == (
        socket.gaierror, (socket.EAI_NODATA, "No address associated with hostname"))
    assert resolver.stats.records_ignored.value == 2, "the CNAME to a name that is not a host name, and its A"


# --- search domains, reverse lookups, getnameinfo -----------------------------------------------------

def test_search_domains(net: Network) -> None:
    resolver = net.resolver(search=["nowhere.test", "example.test"])
    assert resolver.gethostbyname("web") == "192.0.2.80"
    assert net.server.questions() == [("web.nowhere.test", A), ("web.example.test", A)]
    net.server.log.clear()
    assert resolver.gethostbyname("web.example.test") == "192.0.2.80", "cached, with dots: as given first"
    assert resolver.gethostbyname("web.example.test.") == "192.0.2.80"
    assert raises(resolver.gethostbyname, "www.") == NONAME
    assert net.server.questions() == [("www", A)], "a final dot: no search"


def test_reverse_lookups(net: Network) -> None:
    resolver = net.resolver()
    assert resolver.gethostbyaddr("192.0.2.80") == ("web.example.test", [], ["192.0.2.80"])
    assert resolver.gethostbyaddr("2001:db8::80") == ("web.example.test", [], ["2001:db8::80"])
    assert resolver.gethostbyaddr("::ffff:192.0.2.80") == ("web.example.test", [], ["::ffff:192.0.2.80"])
    assert resolver.gethostbyaddr("www.example.test") == ("web.example.test", [], ["2001:db8::80"])
    assert raises(resolver.gethostbyaddr, "192.0.2.99") == (socket.herror, (1, "Unknown host"))
    assert net.server.questions(), "all of them over DNS"
    assert ("80.2.0.192.in-addr.arpa", PTR) in net.server.questions()


def test_reverse_lookup_failures(net: Network) -> None:
    resolver = net.resolver(nameservers=[SERVER_V4], timeout=0.05, attempts=1)
    net.server.scripts["99.2.0.192.in-addr.arpa"] = silent
    assert raises(resolver.gethostbyaddr, "192.0.2.99") == (socket.herror, (2, "Host name lookup failure"))
    assert raises(resolver.getnameinfo, ("192.0.2.99", 80), 0) == AGAIN
    assert raises(resolver.getnameinfo, ("192.0.2.98", 80), socket.NI_NAMEREQD) == NONAME
    assert resolver.getnameinfo(("192.0.2.98", 80), 0) == ("192.0.2.98", "http")


def test_getnameinfo(net: Network) -> None:
    resolver = net.resolver(search=["example.test"])
    assert resolver.getnameinfo(("192.0.2.80", 80), 0) == ("web.example.test", "http")
    assert resolver.getnameinfo(("192.0.2.80", 53), socket.NI_DGRAM | socket.NI_NOFQDN) == ("web", "domain")
    assert resolver.getnameinfo(("2001:db8::80", 80, 0, 0), socket.NI_NUMERICSERV) == ("web.example.test", "80")
    assert resolver.getnameinfo(("fe80::1", 80, 0, 1), socket.NI_NUMERICHOST) == ("fe80::1%eth0", "http")
    assert resolver.getnameinfo(("fe80::1", 80, 0, 7), socket.NI_NUMERICHOST) == ("fe80::1%7", "http")


# --- the hosts table ------------------------------------------------------------------------------------

def test_the_hosts_table_comes_before_dns(net: Network, tmp_path: Any) -> None:
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("# comment\n192.0.2.98 web.example.test web-alias  # trailing comment\n"
                          "192.0.2.97 files.example.test\nnot-an-address broken\n2001:db8::97 files.example.test\n")
    resolver = net.resolver(hosts_file=str(hosts_file), hosts={"www.example.test": ["192.0.2.99"]})
    assert resolver.gethostbyname_ex("WWW.example.test") == ("www.example.test", [], ["192.0.2.99"])
    assert resolver.gethostbyname_ex("web-alias") == ("web.example.test", ["web-alias"], ["192.0.2.98"])
    assert addresses(resolver.getaddrinfo("files.example.test", 1, **STREAM)) == ["2001:db8::97", "192.0.2.97"]
    resolver.add_host("db.test", "192.0.2.10")
    assert resolver.getaddrinfo("db.test", 5432, **STREAM, flags=socket.AI_CANONNAME) == [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "db.test", ("192.0.2.10", 5432))]
    assert resolver.gethostbyaddr("192.0.2.10") == ("db.test", [], ["192.0.2.10"])
    assert resolver.gethostbyaddr("192.0.2.98") == ("web.example.test", ["web-alias"], ["192.0.2.98"])
    assert net.server.log == []
    # Known to the table under IPv4 only: DNS answers for IPv6.
    assert addresses(resolver.getaddrinfo("www.example.test", 1, socket.AF_INET6, **STREAM)) == ["2001:db8::80"]
    hosts_file.write_text("192.0.2.96 web.example.test\n")
    assert resolver.gethostbyname("web.example.test") == "192.0.2.96", "the file is read again when it changes"


def test_localhost_is_the_loopback_and_never_asked(net: Network) -> None:
    resolver = net.resolver()
    for name in ("localhost", "LocalHost.", "db.localhost"):
        assert sorted(addresses(resolver.getaddrinfo(name, 80, **STREAM))) == ["127.0.0.1", "::1"]
    assert resolver.gethostbyaddr("::1") == ("localhost", [], ["::1"])
    assert net.server.log == []


def test_numeric_hosts_are_never_asked(net: Network) -> None:
    resolver = net.resolver()
    assert addresses(resolver.getaddrinfo("192.0.2.7", 80, **STREAM)) == ["192.0.2.7"]
    assert addresses(resolver.getaddrinfo("2001:db8::7", 80, **STREAM)) == ["2001:db8::7"]
    assert resolver.gethostbyname_ex("192.0.2.7") == ("192.0.2.7", [], ["192.0.2.7"])
    assert net.server.log == []


def test_addrconfig_looks_at_the_stacks_addresses(net: Network) -> None:
    resolver = net.resolver()
    assert len(addresses(resolver.getaddrinfo("web.example.test", 80, flags=socket.AI_ADDRCONFIG, **STREAM))) == 2
    net.client.remove_address(1, bytes(Address.parse(CLIENT_V6)))
    assert addresses(resolver.getaddrinfo("web.example.test", 80, flags=socket.AI_ADDRCONFIG, **STREAM)) == [
        "192.0.2.80"]
    assert raises(resolver.getaddrinfo, "web.example.test", 80, socket.AF_INET6, flags=socket.AI_ADDRCONFIG) == NONAME


# --- the cache --------------------------------------------------------------------------------------------

def test_answers_are_cached_for_their_ttl(net: Network) -> None:
    resolver = net.resolver()
    for _ in range(3):
        assert resolver.gethostbyname("short.example.test") == "192.0.2.82"
    assert net.server.questions() == [("short.example.test", A)]
    net.clock.advance(4.9)
    resolver.gethostbyname("short.example.test")
    assert len(net.server.questions()) == 1
    net.clock.advance(0.2)
    resolver.gethostbyname("short.example.test")
    assert len(net.server.questions()) == 2
    assert resolver.stats.cache_hits.value == 3


def test_a_cname_chain_is_cached_for_its_shortest_ttl(net: Network) -> None:
    resolver = net.resolver()
    resolver.gethostbyname("chain.example.test")
    net.clock.advance(59)
    resolver.gethostbyname("chain.example.test")
    net.clock.advance(2)
    resolver.gethostbyname("chain.example.test")
    assert net.server.questions() == [("chain.example.test", A)] * 2


def test_negative_answers_are_cached_for_the_soa_minimum(net: Network) -> None:
    resolver = net.resolver()
    for _ in range(2):
        assert raises(resolver.gethostbyname, "missing.example.test") == NONAME
        assert raises(resolver.getaddrinfo, "v4only.example.test", 80, socket.AF_INET6) == (
            socket.gaierror, (socket.EAI_NODATA, "No address associated with hostname"))
    assert net.server.questions() == [("missing.example.test", A), ("v4only.example.test", AAAA)]
    net.clock.advance(NEGATIVE_TTL + 1)
    resolver.gethostbyname_ex("v4only.example.test")
    assert raises(resolver.gethostbyname, "missing.example.test") == NONAME
    assert net.server.questions()[2:] == [("v4only.example.test", A), ("missing.example.test", A)]


def test_failures_are_not_cached(net: Network) -> None:
    resolver = net.resolver(attempts=1)
    for _ in range(2):
        assert raises(resolver.gethostbyname, "servfail.example.test") == AGAIN
    assert len(net.server.questions()) == 2


def test_the_cache_is_bounded(net: Network) -> None:
    resolver = net.resolver(cache_size=2)
    for name in ("web.example.test", "v4only.example.test", "short.example.test", "web.example.test"):
        resolver.gethostbyname(name)
    assert [name for name, _ in net.server.questions()] == [
        "web.example.test", "v4only.example.test", "short.example.test", "web.example.test"]


def test_concurrent_lookups_from_many_greenlets(net: Network) -> None:
    resolver = net.resolver(cache_size=0)
    names = ["web.example.test", "v4only.example.test", "short.example.test", "www.example.test"] * 3
    jobs = [gevent.spawn(resolver.gethostbyname, name) for name in names]
    gevent.joinall(jobs, timeout=5, raise_error=True)
    assert [job.value for job in jobs] == ["192.0.2.80", "192.0.2.81", "192.0.2.82", "192.0.2.80"] * 3


# --- the socket module's shapes, against the kernel's -------------------------------------------------

def loopback_resolver() -> Resolver:
    """A stack with only a loopback NIC ("lo", NIC 1, as the kernel's lo is ifindex 1), and the
    system's hosts file: the kernel's getaddrinfo and ours see the same world."""
    stack = Stack([IPv4Protocol, IPv6Protocol], [UDPProtocol], clock=ManualClock())
    stack.create_nic(1, LoopbackEndpoint(), name="lo")
    stack.add_address(1, IPV4_PROTOCOL_NUMBER, "127.0.0.1/8")
    stack.add_address(1, IPV6_PROTOCOL_NUMBER, "::1/128")
    stack.set_route_table([Route.parse("127.0.0.0/8", 1), Route.parse("::1/128", 1)])
    return Resolver(stack, hosts_file="/etc/hosts")


LOOPBACK = loopback_resolver()


def outcome(fn: Callable[..., Any], *args: Any) -> tuple:
    try:
        return "ok", fn(*args)
    except (OSError, TypeError, ValueError, OverflowError, UnicodeError) as error:
        return "error", type(error), error.args


NUMERIC_HOSTS = [None, "*", "127.0.0.1", b"127.0.0.1", "::1", "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1",
                 "::1.2.3.4", "127.1", "0x7f.0.0.1", "0177.0.0.1", "1.2.65535", "4294967295", "fe80::1%lo",
                 "fe80::1%1", "fe80::1%", "ff02::1%lo", "ff05::1%lo", "ff05::1%7", "fe80::1%4294967296",
                 "::ffff:1.2.3.4%1"]
# Not numeric: the kernel would ask its DNS server about these, so they go with AI_NUMERICHOST only.
NOT_NUMERIC_HOSTS = ["", "1.2.3.256", "09.1", "0x.1", "1.2.3.4.", "1.2.3.4%1", "1.2.65536", "localhost"]
PORTS = [None, 0, 80, "80", " 80", "+80", "http", "domain", "echo", "nosuchservice", -1, 70000, "4294967376",
         "18446744073709551696", "", "*", b"53", 80.0, True]
FAMILIES = [0, socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, 12345]
TYPES = [0, socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET, 6, 99,
         socket.SOCK_STREAM | socket.SOCK_NONBLOCK]
PROTOS = [0, 6, 17, 33, 132, 136, 99]
FLAGS = [0, socket.AI_PASSIVE, socket.AI_CANONNAME, socket.AI_NUMERICHOST, socket.AI_V4MAPPED,
         socket.AI_V4MAPPED | socket.AI_ALL, socket.AI_NUMERICSERV, socket.AI_CANONNAME | socket.AI_NUMERICHOST,
         0x10000]


@settings(max_examples=600, deadline=None)
@given(host=st.sampled_from(NUMERIC_HOSTS), port=st.sampled_from(PORTS), family=st.sampled_from(FAMILIES),
       type_=st.sampled_from(TYPES), proto=st.sampled_from(PROTOS), flags=st.sampled_from(FLAGS))
def test_getaddrinfo_of_numeric_hosts_is_the_kernels(host: Any, port: Any, family: int, type_: int, proto: int,
                                                     flags: int) -> None:
    args = (host, port, family, type_, proto, flags)
    assert outcome(LOOPBACK.getaddrinfo, *args) == outcome(socket.getaddrinfo, *args)


@settings(max_examples=200, deadline=None)
@given(host=st.sampled_from(NOT_NUMERIC_HOSTS), port=st.sampled_from(PORTS), family=st.sampled_from(FAMILIES),
       type_=st.sampled_from(TYPES), flags=st.sampled_from(FLAGS))
def test_getaddrinfo_refuses_names_with_numerichost_as_the_kernel(host: Any, port: Any, family: int, type_: int,
                                                                  flags: int) -> None:
    args = (host, port, family, type_, 0, flags | socket.AI_NUMERICHOST)
    assert outcome(LOOPBACK.getaddrinfo, *args) == outcome(socket.getaddrinfo, *args)


@pytest.mark.parametrize("args", [
    ("localhost", 80, socket.AF_INET), ("localhost", "http", socket.AF_INET, 0, 0, socket.AI_CANONNAME),
    ("LOCALHOST", None, socket.AF_INET, socket.SOCK_DGRAM), (None, 80), (None, 80, 0, 0, 0, socket.AI_PASSIVE),
    (None, None), (None, ""), ("*", "*"), (None, 80, socket.AF_INET6, 0, 0, socket.AI_V4MAPPED),
    (None, 1, 0, 0, 0, socket.AI_CANONNAME), (1, 80), ("127.0.0.1", bytearray(b"80")), ("127.0.0.1", 2**70),
    ("127.0.0.1", 2**63),
    ("127.0.0.1", 80, 2**31), ("127.0.0.1", 80, 0.0), ("a..b", 80), ("x" * 64, 80)])
def test_getaddrinfo_edges_are_the_kernels(args: tuple) -> None:
    assert outcome(LOOPBACK.getaddrinfo, *args) == outcome(socket.getaddrinfo, *args)


def test_localhost_for_any_family_has_the_kernels_ipv4_entries_and_the_ipv6_loopback() -> None:
    ours = LOOPBACK.getaddrinfo("localhost", 80)
    kernel = socket.getaddrinfo("localhost", 80)
    assert [e for e in ours if e[0] == socket.AF_INET] == [e for e in kernel if e[0] == socket.AF_INET]
    assert ours[:3] == [e for e in ours if e[0] == socket.AF_INET], "IPv4 first: no global IPv6 address"
    assert {e[4][0] for e in ours if e[0] == socket.AF_INET6} == {"::1"}


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "127.1", "0177.0.0.1", "", "<broadcast>",
                                  "255.255.255.255", "::1", b"127.0.0.1", bytearray(b"127.0.0.1"), "a\0b", 1, None])
def test_gethostbyname_and_gethostbyname_ex_are_the_kernels(name: Any) -> None:
    assert outcome(LOOPBACK.gethostbyname, name) == outcome(socket.gethostbyname, name)
    assert outcome(LOOPBACK.gethostbyname_ex, name) == outcome(socket.gethostbyname_ex, name)


def test_gethostbyname_takes_every_numeric_form_as_the_kernel() -> None:
    assert LOOPBACK.gethostbyname("0x7f.1") == socket.gethostbyname("0x7f.1") == "127.0.0.1"


@pytest.mark.parametrize("address", ["127.0.0.1", b"127.0.0.1", "", 1.5, None])
def test_gethostbyaddr_is_the_kernels(address: Any) -> None:
    assert outcome(LOOPBACK.gethostbyaddr, address) == outcome(socket.gethostbyaddr, address)


@pytest.mark.parametrize("sockaddr, flags", [
    (("127.0.0.1", 80), 0), (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 53), socket.NI_DGRAM), (("127.0.0.1", 80), socket.NI_DGRAM), (("127.0.0.1", 65000), 0),
    (("127.0.0.1", 70000), 0), (("127.0.0.1", -1), 0), (("127.0.0.1", 80), socket.NI_NAMEREQD),
    (("::1", 80), socket.NI_NUMERICHOST), (("::1", 80, 0, 0), socket.NI_NUMERICHOST),
    (("fe80::1", 80, 0, 1), socket.NI_NUMERICHOST), (("fe80::1", 80, 0, 5), socket.NI_NUMERICHOST),
    (("2001:db8::1", 80, 0, 1), socket.NI_NUMERICHOST), (("ff02::1", 80, 0, 1), socket.NI_NUMERICHOST),
    (("fe80::1%lo", 80), socket.NI_NUMERICHOST), (("::1", 80, 0, -1), socket.NI_NUMERICHOST),
    (("::1", 80, 2**40, 2**40), socket.NI_NUMERICHOST), (("::1", 80, 2**20, 0), 0), (("::1", 80, -1, 0), 0),
    (("127.0.0.1", 80, 0, 0), 0), (("localhost", 80), 0), (("*", 80), 0), (("127.0.0.1", "80"), 0),
    (("127.0.0.1",), 0), (["127.0.0.1", 80], 0), (("127.0.0.1", 80, 0, 0, 0), 0), ((1, 80), 0),
    ((b"127.0.0.1", 80), 0), (("a\0", 80), 0), (("127.0.0.1", 2**31), 0), (("127.0.0.1", 80), 0x1000),
    (("127.0.0.1", 80), "x")])
def test_getnameinfo_is_the_kernels(sockaddr: Any, flags: Any) -> None:
    assert outcome(LOOPBACK.getnameinfo, sockaddr, flags) == outcome(socket.getnameinfo, sockaddr, flags)
