"""The nat table (iptables -t nat): its rules on their own, the checksum arithmetic it rewrites packets
with, then at work in a private network, over IPv4 and IPv6 — MASQUERADE and SNAT on a router (the
server sees the router; two clients with one source port stay apart), DNAT port forwarding, REDIRECT to
a local port (and SO_ORIGINAL_DST, as a transparent proxy asks it), OUTPUT's DNAT and REDIRECT of
a host's own connections, looped back to itself, ICMP errors and fragments translated; then the mangle
table's TPROXY handing connections and datagrams to a transparent proxy on the router."""

from __future__ import annotations

import errno
import logging
import random
import socket
import struct
from collections.abc import Iterator

import gevent
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from netsock.adapter import NetsockSocket
from netsock.header.checksum import checksum
from netsock.privnet import Host, Network
from netsock.stack.iptables import ACCEPT, DNAT, DROP, SNAT, Jump, Log, Mark, Masquerade, Redirect, Reject, Rule, TProxy
from netsock.stack.nat import NatTable, adjust_checksum, rewrite_transport
from netsock.tcpip import TCP_PROTOCOL_NUMBER as TCP
from netsock.tcpip import UDP_PROTOCOL_NUMBER as UDP
from netsock.tcpip import Subnet

from conftest import outcome
from test_forwarding import HOSTS, RB, V4, V6, A, B, Net, wire

SUBNETS = {socket.AF_INET: ("192.0.2.0/24", "198.51.100.0/24"),
           socket.AF_INET6: ("2001:db8:1::/64", "2001:db8:2::/64")}
SO_ORIGINAL_DST = 80


# --- the table on its own -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("chain", "target"), [("POSTROUTING", DNAT(b"\x01\x02\x03\x04")), ("INPUT", Redirect()),
                                               ("PREROUTING", SNAT(b"\x01\x02\x03\x04")), ("OUTPUT", Masquerade()),
                                               ("INPUT", Masquerade())])
def test_a_target_goes_only_where_linux_allows_it(chain: str, target) -> None:
    with pytest.raises(ValueError, match="only"):
        NatTable(4).append(chain, Rule(target))


def test_a_user_chain_takes_what_every_chain_reaching_it_allows() -> None:
    table = NatTable(4)
    table.new_chain("forwards")
    table.append("forwards", Rule(DNAT(b"\x01\x02\x03\x04")))
    table.append("PREROUTING", Rule(Jump("forwards")))
    with pytest.raises(ValueError, match="only"):
        table.append("POSTROUTING", Rule(Jump("forwards")))
    with pytest.raises(ValueError, match="only"):
        table.append("forwards", Rule(SNAT(b"\x01\x02\x03\x04")))     # PREROUTING reaches it


def test_the_nat_table_does_not_filter() -> None:
    table = NatTable(4)
    for target in (DROP, Reject()):
        with pytest.raises(ValueError, match="filter"):
            table.append("PREROUTING", Rule(target))
    with pytest.raises(ValueError, match="ACCEPT"):
        table.set_policy("PREROUTING", DROP)
    table.append("PREROUTING", Rule(ACCEPT))        # (ACCEPT ends the chain untranslated)


def test_a_translated_port_needs_a_protocol_with_ports_and_an_address_its_version() -> None:
    with pytest.raises(ValueError, match="port"):
        NatTable(4).append("PREROUTING", Rule(Redirect((8080, 8080))))
    with pytest.raises(ValueError, match="IPv6"):
        NatTable(6).append("PREROUTING", Rule(DNAT(b"\x01\x02\x03\x04")))
    with pytest.raises(ValueError, match="port range"):
        Redirect((0, 10))


def test_a_filter_table_refuses_nat_targets(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    with pytest.raises(ValueError, match="not a target of the filter table"):
        router.stack.iptables.ipv4.append("FORWARD", Rule(Masquerade()))


# --- checksums, adjusted ------------------------------------------------------------------------------------

def test_an_adjusted_checksum_is_the_one_computed_afresh() -> None:
    rng = random.Random(5)
    for _ in range(300):
        data = bytearray(rng.randbytes(2 * rng.randrange(4, 40)))
        at = 2 * rng.randrange(0, len(data) // 2 - 1)
        width = 2 * rng.randrange(1, (len(data) - at) // 2 + 1)
        before = ~checksum(data) & 0xFFFF
        old = bytes(data[at:at + width])
        data[at:at + width] = rng.randbytes(width)
        assert adjust_checksum(before, old, data[at:at + width]) in {~checksum(data) & 0xFFFF} | (
            {0, 0xFFFF} if ~checksum(data) & 0xFFFF in (0, 0xFFFF) else set())


def _pseudo(src: bytes, dst: bytes, protocol: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, protocol, length)
    return src + dst + struct.pack("!IxxxB", length, protocol)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("protocol", [TCP, UDP])
def test_a_rewritten_segment_verifies(version: int, protocol: int) -> None:
    rng = random.Random(version * protocol)
    size = 4 if version == 4 else 16
    src, dst, new_src, new_dst = (rng.randbytes(size) for _ in range(4))
    header = bytearray(rng.randbytes(20 if protocol == TCP else 8)) + rng.randbytes(101)
    field = 16 if protocol == TCP else 6
    header[field:field + 2] = b"\0\0"
    if protocol == UDP:
        header[4:6] = len(header).to_bytes(2, "big")
    header[field:field + 2] = (~checksum(_pseudo(src, dst, protocol, len(header)) + header) & 0xFFFF).to_bytes(2, "big")
    rewrite_transport(memoryview(header), protocol, src, new_src, dst, new_dst, 4321, 80, partial=False)
    assert header[:4] == struct.pack("!HH", 4321, 80)
    assert checksum(_pseudo(new_src, new_dst, protocol, len(header)) + header) == 0xFFFF


def test_a_partial_checksum_stays_the_pseudo_header_sum() -> None:
    # Left for the device (CHECKSUM_PARTIAL): the field holds the pseudo-header's sum, uncomplemented.
    src, dst, new_dst = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), bytes([203, 0, 113, 7])
    header = bytearray(20)
    header[16:18] = checksum(_pseudo(src, dst, TCP, 1000)).to_bytes(2, "big")
    rewrite_transport(memoryview(header), TCP, src, src, dst, new_dst, None, 8080, partial=True)
    assert int.from_bytes(header[16:18], "big") == checksum(_pseudo(src, new_dst, TCP, 1000))


# --- at work ------------------------------------------------------------------------------------------------

@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def router_pair(request: pytest.FixtureRequest) -> Iterator[tuple[Network, int, Host, Host, Host]]:
    """client.test on "inside", server.test on "outside", router.test between."""
    family = request.param
    with Network(seed=11) as net:
        inside, outside = net.switch("inside", SUBNETS[family][0]), net.switch("outside", SUBNETS[family][1])
        router = net.router("router.test", inside, outside)
        server = net.host("server.test", outside)
        client = net.host("client.test", inside)
        yield net, family, client, router, server


def on(host: Host, switch: str) -> str:
    """``host``'s address on the switch named ``switch``."""
    return next(address for each, address in host.addresses.items() if each.name == switch)


def nat(host: Host, family: int) -> NatTable:
    return host.stack.iptables.ipv6_nat if family == socket.AF_INET6 else host.stack.iptables.ipv4_nat


def packed(family: int, address: str) -> bytes:
    return socket.inet_pton(family, address)


def wildcard(family: int) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def serve_tcp(host: Host, family: int, port: int) -> tuple[NetsockSocket, list]:
    """A listener on ``host``:``port`` answering each connection with what it saw: its peer, its own
    address and SO_ORIGINAL_DST (or the errno name)."""
    listener = NetsockSocket(family, stack=host.stack)
    listener.bind((wildcard(family), port))
    listener.listen()
    seen: list = []

    def serve() -> None:
        while True:
            conn, peer = listener.accept()
            try:
                original = conn.getsockopt(socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.IPPROTO_IP,
                                           SO_ORIGINAL_DST, 28 if family == socket.AF_INET6 else 16)
                port_, = struct.unpack_from("!H", original, 2)
                addr = socket.inet_ntop(family, original[8:24] if family == socket.AF_INET6 else original[4:8])
                asked: object = (addr, port_)
            except OSError as error:
                asked = errno.errorcode[error.errno]
            seen.append((peer[:2], conn.getsockname()[:2], asked))
            conn.sendall(conn.recv(100).upper())
            conn.close()
    host.spawn(serve)
    return listener, seen


def exchange(host: Host, family: int, address: str, port: int, data: bytes = b"hello",
             source_port: int = 0) -> tuple[bytes, tuple]:
    """Connect from ``host``, send, read the answer: (it, the address the socket is connected to)."""
    with host, NetsockSocket(family) as sock:
        sock.settimeout(5)
        if source_port:
            sock.bind((wildcard(family), source_port))
        sock.connect((address, port))
        peer = sock.getpeername()[:2]
        sock.sendall(data)
        return sock.recv(100), peer


def test_masquerade_shows_the_server_the_router(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    rule = Rule(Masquerade(), out_interface="outside")
    nat(router, family).append("POSTROUTING", rule)
    listener, seen = serve_tcp(server, family, 80)
    for _ in range(3):
        assert exchange(client, family, server.address, 80) == (b"HELLO", (server.address, 80))
    assert [peer[0] for peer, _, _ in seen] == [on(router, "outside")] * 3
    assert [asked for _, _, asked in seen] == ["ENOENT"] * 3       # (the server's own stack tracks nothing)
    assert rule.packets == 3            # a connection's first packet alone goes through the rules
    listener.close()


def test_snat_keeps_two_clients_with_one_source_port_apart(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    inside = net.switches["inside"]
    other = net.host("other.test", inside)
    outside_address = on(router, "outside")
    nat(router, family).append("POSTROUTING", Rule(SNAT(packed(family, outside_address), (5000, 5010)),
                                                   protocol=TCP, out_interface="outside"))
    listener, seen = serve_tcp(server, family, 80)
    results = [client.spawn(exchange, client, family, server.address, 80, b"one", 40000),
               other.spawn(exchange, other, family, server.address, 80, b"two", 40000)]
    gevent.joinall(results, raise_error=True)
    assert sorted(r.value[0] for r in results) == [b"ONE", b"TWO"]
    peers = sorted(peer for peer, _, _ in seen)
    assert peers == [(outside_address, 5000), (outside_address, 5001)]
    listener.close()


def test_udp_is_translated_both_ways(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    nat(router, family).append("POSTROUTING", Rule(Masquerade(), protocol=UDP, out_interface="outside"))
    outside_address = on(router, "outside")
    with server, NetsockSocket(family, socket.SOCK_DGRAM) as echo, client, NetsockSocket(family,
                                                                                         socket.SOCK_DGRAM) as sock:
        echo.bind((wildcard(family), 53))
        sock.settimeout(5)
        echo.settimeout(5)
        sock.sendto(b"query", (server.address, 53))
        data, peer = echo.recvfrom(100)
        assert (data, peer[0]) == (b"query", outside_address)
        echo.sendto(b"answer", peer)
        data, peer = sock.recvfrom(100)
        assert (data, peer[:2]) == (b"answer", (server.address, 53))


def test_dnat_forwards_a_port_to_a_host_inside(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    # The roles turned: server.test (outside) connects to the router's outside address, port 8080,
    # which the router forwards to client.test's port 80 inside.
    outside_address = on(router, "outside")
    nat(router, family).append("PREROUTING", Rule(DNAT(packed(family, client.address), (80, 80)), protocol=TCP,
                                                  in_interface="outside", destination_ports=(8080, 8080)))
    listener, seen = serve_tcp(client, family, 80)
    assert exchange(server, family, outside_address, 8080) == (b"HELLO", (outside_address, 8080))
    assert seen[0][0][0] == server.address          # the inside host sees who really connected
    with server, NetsockSocket(family) as sock:     # a port the rule does not name is the router's own
        sock.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            sock.connect((outside_address, 8081))
    listener.close()


def test_redirect_and_so_original_dst(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    nat(server, family).append("PREROUTING", Rule(Redirect((8080, 8080)), protocol=TCP, destination_ports=(80, 80)))
    listener, seen = serve_tcp(server, family, 8080)
    assert exchange(client, family, server.address, 80) == (b"HELLO", (server.address, 80))
    (peer, own, asked), = seen
    assert peer[0] == client.address and own == (server.address, 8080) and asked == (server.address, 80)
    listener.close()


def test_output_dnat_and_redirect_of_the_hosts_own_connections(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    nowhere = "198.51.100.200" if family == socket.AF_INET else "2001:db8:2::200"   # routed, but no host has it
    table = nat(client, family)
    table.append("OUTPUT", Rule(DNAT(packed(family, server.address)), protocol=TCP, destination=None,
                                destination_ports=(80, 80)))
    listener, seen = serve_tcp(server, family, 80)
    assert exchange(client, family, nowhere, 80) == (b"HELLO", (nowhere, 80))
    assert seen[-1][0][0] == client.address
    # REDIRECT in OUTPUT: to this very host (its loopback), as a local transparent proxy is reached.
    table.flush()
    table.append("OUTPUT", Rule(Redirect((9090, 9090)), protocol=TCP, destination_ports=(80, 80)))
    proxy, proxied = serve_tcp(client, family, 9090)
    assert exchange(client, family, nowhere, 80) == (b"HELLO", (nowhere, 80))
    (peer, own, asked), = proxied
    assert own[1] == 9090 and asked == (nowhere, 80)
    listener.close()
    proxy.close()


def test_a_ping_is_masqueraded_its_identifier_kept_apart(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    icmp, request = ((socket.IPPROTO_ICMPV6, 128) if family == socket.AF_INET6 else (socket.IPPROTO_ICMP, 8))
    nat(router, family).append("POSTROUTING", Rule(Masquerade(), out_interface="outside"))
    # The server answers no echo from the inside subnet: only one that comes from the router.
    table = server.stack.iptables.ipv6 if family == socket.AF_INET6 else server.stack.iptables.ipv4
    table.append("INPUT", Rule(DROP, source=Subnet.parse(SUBNETS[family][0])))
    with client, NetsockSocket(family, socket.SOCK_DGRAM, icmp) as ping:
        ping.settimeout(3)
        ping.sendto(bytes([request, 0, 0, 0, 0, 0, 0, 1]) + b"ping", (server.address, 0))
        reply, peer = ping.recvfrom(100)
        assert reply.endswith(b"ping") and peer[0] == server.address


@pytest.mark.parametrize("where", ["beyond the router", "redirected here"])
def test_an_icmp_error_about_a_translated_datagram_reaches_its_socket(router_pair: tuple, where: str) -> None:
    # The error quotes the datagram as translated; the sender must see it about the datagram it sent
    # (Linux's nf_nat_icmp_reply_translation): a connected UDP socket then reads ECONNREFUSED.
    net, family, client, router, server = router_pair
    if where == "beyond the router":
        nat(router, family).append("POSTROUTING", Rule(Masquerade(), out_interface="outside"))
    else:
        nat(server, family).append("PREROUTING", Rule(Redirect((5353, 5353)), protocol=UDP,
                                                      destination_ports=(53, 53)))
    with client, NetsockSocket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((server.address, 53))
        sock.send(b"query")
        with pytest.raises(ConnectionRefusedError):
            sock.recv(100)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_so_original_dst_of_an_untracked_connection_answers_as_the_kernel(stack, family: int) -> None:
    # Each kind of socket, at both levels, into too little room and enough: EINVAL, ENOENT, ENOPROTOOPT.
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    answers = []
    for make in (socket.socket, NetsockSocket):
        listener = make(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
        listener.listen()
        client = make(family, socket.SOCK_STREAM)
        client.connect(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        udp = make(family, socket.SOCK_DGRAM)
        levels = (socket.IPPROTO_IP, socket.IPPROTO_IPV6) if family == socket.AF_INET6 else (socket.IPPROTO_IP,)
        answers.append([outcome(lambda: sock.getsockopt(level, SO_ORIGINAL_DST, room))
                        for sock in (client, accepted, listener, udp) for level in levels for room in (4, 16, 28)])
        for sock in (client, accepted, listener, udp):
            sock.close()
    assert answers[1] == answers[0]


@pytest.mark.parametrize("router_pair", [socket.AF_INET], indirect=True, ids=["ipv4"])
def test_a_fragmented_datagram_is_translated_whole(router_pair: tuple) -> None:
    # Fragments are reassembled at the router, translated, and cut again for the next link (Linux's
    # nf_defrag_ipv4 ahead of connection tracking); the server sees the router, the client the server.
    net, family, client, router, server = router_pair
    nat(router, family).append("POSTROUTING", Rule(Masquerade(), protocol=UDP, out_interface="outside"))
    outside_address = on(router, "outside")
    big = bytes(range(256)) * 16        # 4 KiB: three fragments each way at MTU 1500
    with server, NetsockSocket(family, socket.SOCK_DGRAM) as echo, client, NetsockSocket(family,
                                                                                         socket.SOCK_DGRAM) as sock:
        echo.bind((wildcard(family), 53))
        sock.settimeout(5)
        echo.settimeout(5)
        sock.sendto(big, (server.address, 53))
        data, peer = echo.recvfrom(8192)
        assert (data, peer[0]) == (big, outside_address)
        echo.sendto(data[::-1], peer)
        data, peer = sock.recvfrom(8192)
        assert (data, peer[:2]) == (big[::-1], (server.address, 53))
    assert router.stack.stats().ip.as_dict()["fragments_received"] >= 6


def test_a_full_table_makes_room_from_connections_never_replied_to() -> None:
    # Linux's early drop: a flood of connection attempts cannot push out the connections in use.
    from netsock.stack.conntrack import ConnTrack
    track = ConnTrack(lambda: 0.0, max_connections=3)
    answered = (TCP, b"\x01" * 4, 1000, b"\x02" * 4, 80)
    track.refresh(track.track(answered), answered, b"")
    track.refresh(track.lookup(answered), (TCP, b"\x02" * 4, 80, b"\x01" * 4, 1000), b"")    # its reply
    attempts = [(TCP, b"\x03" * 4, port, b"\x02" * 4, 80) for port in range(1, 6)]
    for key in attempts:
        entry = track.track(key)
        assert entry is not None
        track.refresh(entry, key, b"")
    assert len(track) == 3 and track.lookup(answered) is not None
    assert [track.lookup(key) is not None for key in attempts] == [False, False, False, True, True]
    for key in attempts[3:]:        # now every one has been replied to: the next is refused
        track.refresh(track.lookup(key), (TCP, b"\x02" * 4, 80, b"\x03" * 4, key[2]), b"")
    assert track.track((TCP, b"\x04" * 4, 1, b"\x02" * 4, 80)) is None and track.refused == 1


def test_the_mangle_tables_mark_is_what_the_nat_tables_rules_see(router_pair: tuple) -> None:
    # A mark set on arrival (mangle PREROUTING) goes with the packet through nat PREROUTING and, forwarded,
    # to POSTROUTING: here it alone decides which connections are masqueraded.
    net, family, client, router, server = router_pair
    tool = router.iptables if family == socket.AF_INET else router.ip6tables
    tool("-t mangle -A PREROUTING -i inside -p tcp --dport 80 -j MARK --set-mark 0x7")
    tool("-t nat -A POSTROUTING -o outside -m mark --mark 0x7 -j MASQUERADE")
    served = [serve_tcp(server, family, port) for port in (80, 81)]
    for port in (80, 81):
        assert exchange(client, family, server.address, port) == (b"HELLO", (server.address, port))
    assert [seen[0][0][0] for _, seen in served] == [on(router, "outside"), on(client, "inside")]
    for listener, _ in served:
        listener.close()


def test_a_new_connection_finding_the_table_full_is_dropped_as_linux_drops_it(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    table = nat(router, family)
    table.append("POSTROUTING", Rule(Masquerade(), out_interface="outside"))
    table.conntrack.max_connections = 2
    with server:
        echo = NetsockSocket(family, socket.SOCK_DGRAM)
        echo.bind((wildcard(family), 53))
    server.spawn(lambda: [echo.sendto(*echo.recvfrom(100)) for _ in range(2)])
    with client:
        socks = [NetsockSocket(family, socket.SOCK_DGRAM) for _ in range(3)]
        for sock in socks[:2]:      # two connections, each answered: nothing for the early drop to take
            sock.settimeout(5)
            sock.sendto(b"hello", (server.address, 53))
            assert sock.recv(100) == b"hello"
        socks[2].settimeout(0.5)
        socks[2].sendto(b"third", (server.address, 53))
        with pytest.raises(TimeoutError):
            socks[2].recv(100)
    assert router.stack.stats().ip.as_dict()["iptables_prerouting_dropped"] == 1 and table.conntrack.refused == 1
    for sock in [*socks, echo]:
        sock.close()


def test_a_host_s_own_packet_finding_the_table_full_fails_its_send_with_eperm() -> None:
    with Network(seed=12) as net:
        host = net.host("host.test", net.switch("lan", "192.0.2.0/24"))
        host.iptables("-t nat -A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 5353")
        host.stack.iptables.ipv4_nat.conntrack.max_connections = 1
        with host, NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as resolver, \
                NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as first, \
                NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as second:
            resolver.bind(("127.0.0.1", 5353))
            resolver.settimeout(5)
            first.settimeout(5)
            first.sendto(b"query", ("127.0.0.1", 53))
            query, peer = resolver.recvfrom(100)
            resolver.sendto(query, peer)
            assert first.recvfrom(100) == (b"query", ("127.0.0.1", 53))
            with pytest.raises(PermissionError):
                second.sendto(b"query", ("127.0.0.1", 53))
        assert host.stack.stats().ip.as_dict()["iptables_output_dropped"] == 1


# --- TPROXY (the mangle table) ------------------------------------------------------------------------------

IP_TRANSPARENT = {socket.AF_INET: (socket.IPPROTO_IP, 19), socket.AF_INET6: (socket.IPPROTO_IPV6, 75)}


def transparent(sock: NetsockSocket, family: int) -> NetsockSocket:
    sock.setsockopt(*IP_TRANSPARENT[family], 1)
    return sock


def mangle(host: Host, family: int):
    return host.stack.iptables.ipv6_mangle if family == socket.AF_INET6 else host.stack.iptables.ipv4_mangle


def test_tproxy_hands_a_connection_to_a_transparent_proxy_on_the_router(router_pair: tuple) -> None:
    # The client connects to the server; the router's proxy takes the connection in the server's name: its
    # accepted socket is addressed as the client addressed the server, and it answers from there.
    net, family, client, router, server = router_pair
    rule = Rule(TProxy(8080), protocol=TCP, destination_ports=(80, 80))
    mangle(router, family).append("PREROUTING", rule)
    listener = transparent(NetsockSocket(family, stack=router.stack), family)
    listener.bind((wildcard(family), 8080))
    listener.listen()
    seen = []

    def proxy() -> None:
        conn, peer = listener.accept()
        with conn:
            seen.append((peer[:2], conn.getsockname()[:2]))
            conn.sendall(b"proxied: " + conn.recv(100))
    router.spawn(proxy)
    plain, untouched = serve_tcp(server, family, 80)     # the real server never sees it
    reply, peer = exchange(client, family, server.address, 80)
    assert (reply, peer) == (b"proxied: hello", (server.address, 80))
    assert seen == [((client.address, seen[0][0][1]), (server.address, 80))]
    assert untouched == [] and rule.packets >= 3       # every packet of the connection goes through the rule
    listener.close()
    plain.close()


def test_tproxy_without_a_transparent_socket_drops(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    mangle(router, family).append("PREROUTING", Rule(TProxy(8080), protocol=TCP, destination_ports=(80, 80)))
    with NetsockSocket(family, stack=router.stack) as opaque:      # listening, but not transparent
        opaque.bind((wildcard(family), 8080))
        opaque.listen()
        with client, NetsockSocket(family) as sock:
            sock.settimeout(1)
            with pytest.raises(TimeoutError):
                sock.connect((server.address, 80))
    assert router.stack.stats().ip.as_dict()["iptables_prerouting_dropped"] >= 1


def test_tproxy_steers_datagrams_and_the_proxy_answers_in_the_servers_name(router_pair: tuple) -> None:
    net, family, client, router, server = router_pair
    mangle(router, family).append("PREROUTING", Rule(TProxy(5353), protocol=UDP, destination_ports=(53, 53)))
    level = socket.IPPROTO_IPV6 if family == socket.AF_INET6 else socket.IPPROTO_IP
    recv_original = 74 if family == socket.AF_INET6 else 20      # IPV6_RECVORIGDSTADDR, IP_RECVORIGDSTADDR
    with router, transparent(NetsockSocket(family, socket.SOCK_DGRAM), family) as proxy, \
            client, NetsockSocket(family, socket.SOCK_DGRAM) as sock:
        proxy.setsockopt(level, recv_original, 1)
        proxy.bind((wildcard(family), 5353))
        proxy.settimeout(5)
        sock.settimeout(5)
        sock.sendto(b"query", (server.address, 53))
        data, ancillary, _, peer = proxy.recvmsg(100, 256)
        (cmsg_level, _, original), = ancillary
        port, = struct.unpack_from("!H", original, 2)
        asked = original[8:24] if family == socket.AF_INET6 else original[4:8]
        assert (data, cmsg_level, socket.inet_ntop(family, asked), port) == (b"query", level, server.address, 53)
        with router, transparent(NetsockSocket(family, socket.SOCK_DGRAM), family) as answer:
            answer.bind((server.address, 53))       # an address of another host: IP_TRANSPARENT's
            answer.sendto(b"answer", peer)
        data, peer = sock.recvfrom(100)
        assert (data, peer[:2]) == (b"answer", (server.address, 53))


def test_each_table_takes_its_own_targets() -> None:
    from netsock.stack.iptables import FilterTable
    from netsock.stack.mangle import MangleTable
    with pytest.raises(ValueError, match="filter table"):
        FilterTable(4).append("INPUT", Rule(TProxy(8080), protocol=TCP))
    with pytest.raises(ValueError, match="nat table"):
        NatTable(4).append("PREROUTING", Rule(TProxy(8080), protocol=TCP))
    with pytest.raises(ValueError, match="mangle"):
        MangleTable(4).append("PREROUTING", Rule(Redirect((80, 80)), protocol=TCP))
    with pytest.raises(ValueError, match="TCP or UDP"):
        MangleTable(4).append("PREROUTING", Rule(TProxy(8080)))
    with pytest.raises(ValueError, match="IPv4"):
        MangleTable(4).append("PREROUTING", Rule(TProxy(8080, bytes(16)), protocol=UDP))
    MangleTable(6).append("PREROUTING", Rule(DROP, protocol=UDP))     # (the mangle table may drop)


# --- hostile input ------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([4, 6]), protocol=st.sampled_from(["tcp", "udp", "icmp"]),
       transport=st.binary(max_size=90), error=st.booleans(), quote=st.binary(max_size=70))
def test_malformed_packets_never_escape_the_nat_tables(version: int, protocol: str, transport: bytes, error: bool,
                                                       quote: bytes) -> None:
    """Packets of any length and content, ICMP errors quoting anything, through a router with each nat target,
    TPROXY, MARK and LOG: dropped, passed or translated, never an exception; what leaves has its addresses whole."""
    net = Net()
    proto = V4 if version == 4 else V6
    hosts = HOSTS[proto]
    number = {"tcp": TCP, "udp": UDP, "icmp": 1 if version == 4 else 58}[protocol]
    iptables = net.r.iptables
    nat, mangle = (iptables.ipv4_nat, iptables.ipv4_mangle) if version == 4 else (iptables.ipv6_nat,
                                                                                iptables.ipv6_mangle)
    nat.append("POSTROUTING", Rule(Masquerade()))
    nat.append("PREROUTING", Rule(DNAT(wire(hosts[B]), (53, 53)), protocol=UDP, destination_ports=(5300, 5300)))
    nat.append("PREROUTING", Rule(Redirect((8080, 8080)), protocol=TCP, destination_ports=(80, 80)))
    mangle.append("PREROUTING", Rule(TProxy(3128), protocol=TCP, destination_ports=(81, 81)))
    mangle.append("PREROUTING", Rule(Mark(0x5, 0xFF)))
    filter_table = iptables.ipv4 if version == 4 else iptables.ipv6
    filter_table.append("FORWARD", Rule(Log("fuzz ", 7)))           # (written at DEBUG: formatted when enabled)
    filter_table.append("FORWARD", Rule(ACCEPT, mark=(0x5, 0xFF)))
    logger = logging.getLogger("netsock.iptables")
    level = logger.level
    logger.setLevel(logging.DEBUG)          # so that LOG writes its lines
    try:
        route_through(net, version, protocol, number, transport, error, quote)
    finally:
        logger.setLevel(level)
    length = len(wire(hosts[A]))
    at = 12 if version == 4 else 8
    for end in (net.a_end, net.b_end):
        for ethertype, packet, _ in net.received[end]:
            if ethertype == proto:
                assert len(packet) >= at + 2 * length


def route_through(net: Net, version: int, protocol: str, number: int, transport: bytes, error: bool,
                  quote: bytes) -> None:
    """Hand the router the fuzzed packet (or an error about a datagram it masqueraded), and let it all settle."""
    hosts = HOSTS[V4 if version == 4 else V6]
    src, dst = wire(hosts[A]), wire(hosts[B])
    if protocol == "icmp" and error:
        # From B, an error about a datagram A sent it, which the router masqueraded (its source port kept):
        # the error's quote cut anywhere, then anything.
        net.from_a(datagram(src, dst, UDP, struct.pack("!HHHH", 4321, 9, 8, 0)))
        inner = struct.pack("!HHHH", 4321, 9, 8, 0) + quote
        quoted = datagram(wire(hosts[RB]), dst, UDP, inner)
        message = bytes([3 if version == 4 else 1, 3, 0, 0, 0, 0, 0, 0]) + quoted[:len(transport) + 20]
        net.rb_end.inject(V4 if version == 4 else V6, datagram(dst, wire(hosts[RB]), number, message))
    else:
        net.from_a(datagram(src, dst, number, transport))
    net.clock.advance(1)
    net.pump()


def datagram(src: bytes, dst: bytes, protocol: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet (by the addresses' length) around ``payload``, its IPv4 header checksummed."""
    if len(src) == 4:
        raw = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, protocol, 0, src, dst)
                        + payload)
        raw[10:12] = struct.pack("!H", ~checksum(bytes(raw[:20])) & 0xFFFF)
        return bytes(raw)
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), protocol, 64, src, dst) + payload


def test_no_state_is_left_after_translated_connections_close(router_pair: tuple) -> None:
    # 300 connections through a masquerading router: tracked while they live, then forgotten once their
    # closing timeout (Linux's 120 s after a FIN) has passed, as the next one finds.
    net, family, client, router, server = router_pair
    table = nat(router, family)
    table.append("POSTROUTING", Rule(Masquerade(), out_interface="outside"))
    listener, seen = serve_tcp(server, family, 80)
    for _ in range(300):
        assert exchange(client, family, server.address, 80)[0] == b"HELLO"
    assert 250 <= len(table.conntrack) <= 301
    clock = table.conntrack._now
    table.conntrack._now = lambda: clock() + 121       # two minutes on
    assert exchange(client, family, server.address, 80)[0] == b"HELLO"
    # The new connection, and at most the last one again: its final ACK, late, is tracked anew (and will expire).
    assert len(table.conntrack) <= 2 and len(table.conntrack._entries) <= 8    # (4 tuples each: NatTable._retuple)
    listener.close()


def test_hairpin_nat_reaches_an_inside_server_by_the_outside_address(router_pair: tuple) -> None:
    # A host inside asks for the router's public address and port, forwarded to a server inside: both the
    # destination (DNAT) and, so that the answer comes back through the router, the source (SNAT on the
    # inside interface) are translated, on one connection — as a Linux home router needs both rules.
    net, family, client, router, server = router_pair
    web = net.host("web.test", net.switches["inside"])
    outside_address = on(router, "outside")
    table = nat(router, family)
    public = Subnet.parse(f"{outside_address}/{32 if family == socket.AF_INET else 128}")
    table.append("PREROUTING", Rule(DNAT(packed(family, web.address), (80, 80)), protocol=TCP, destination=public,
                                    destination_ports=(8080, 8080)))
    table.append("POSTROUTING", Rule(Masquerade(), out_interface="inside", source=Subnet.parse(SUBNETS[family][0]),
                                     destination=Subnet.parse(SUBNETS[family][0])))
    listener, seen = serve_tcp(web, family, 80)
    assert exchange(client, family, outside_address, 8080) == (b"HELLO", (outside_address, 8080))
    assert seen[0][0][0] == on(router, "inside")            # the server saw the router (SNAT) ...
    assert exchange(server, family, outside_address, 8080)[0] == b"HELLO"
    assert seen[1][0][0] == server.address                   # ... and an outside client as itself (DNAT only)
    listener.close()
