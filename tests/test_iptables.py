"""The filter table (iptables / ip6tables): rules and chains on their own, then at work in a private
network — INPUT on the server, FORWARD on the router between two subnets, OUTPUT on the client —
with what a program sees of each verdict as on Linux: a drop is a timeout, a reject ECONNREFUSED
(or the reset of a closed port), a dropped send EPERM. Then SO_MARK's mark condition, and
connection tracking's state condition (a stateful firewall)."""

from __future__ import annotations

import dataclasses
import errno
import socket
from collections.abc import Iterator

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.privnet import Host, Network
from netsock.stack.conntrack import TIMEOUTS, ConnTrack, State
from netsock.stack.iptables import (ACCEPT, DROP, RETURN, FilteredPacket, FilterTable, Hook, Jump, MultiPort, Reject,
                                    RejectWith, Rule)
from netsock.tcpip import TCP_PROTOCOL_NUMBER as TCP
from netsock.tcpip import UDP_PROTOCOL_NUMBER as UDP
from netsock.tcpip import Subnet

SUBNETS = {socket.AF_INET: ("192.0.2.0/24", "198.51.100.0/24"),
           socket.AF_INET6: ("2001:db8:1::/64", "2001:db8:2::/64")}


def head(sport: int = 40000, dport: int = 80, flags: int = 0x02) -> bytes:
    """A TCP header's first 16 bytes: the ports and the flags set."""
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(9) + bytes([flags]) + bytes(2)


def packet(protocol: int = TCP, dport: int = 80, source: str = "192.0.2.1", flags: int = 0x02) -> FilteredPacket:
    return FilteredPacket(protocol, socket.inet_aton(source), socket.inet_aton("198.51.100.1"), 60,
                          head(dport=dport, flags=flags), "left")


# --- the table on its own -----------------------------------------------------------------------------------

def test_first_matching_rule_decides_and_counts() -> None:
    table = FilterTable(4)
    assert not table.active
    web = Rule(DROP, protocol=TCP, destination_ports=(80, 80))
    table.append("INPUT", web)
    table.append("INPUT", Rule(Reject(), protocol=TCP))
    assert table.active
    assert table.check(Hook.INPUT, packet(dport=80)) is DROP
    assert table.check(Hook.INPUT, packet(dport=81)) == Reject(RejectWith.PORT_UNREACHABLE)
    assert table.check(Hook.INPUT, packet(protocol=UDP)) is ACCEPT        # the policy
    assert (web.packets, web.bytes) == (1, 60) and table.chains["INPUT"].packets == 1
    assert table.check(Hook.OUTPUT, packet(dport=80)) is ACCEPT           # other chains are untouched
    table.flush()
    assert not table.active


def test_conditions_each_narrow_the_match() -> None:
    table = FilterTable(4)
    table.append("FORWARD", Rule(DROP, protocol=TCP, source=Subnet.parse("192.0.2.0/25"), in_interface="left",
                                 source_ports=(40000, 40010), destination_ports=(79, 81), tcp_flags=(0x12, 0x02)))
    assert table.check(Hook.FORWARD, packet()) is DROP
    for other in (packet(source="192.0.2.200"), packet(dport=82), packet(flags=0x12), packet(protocol=UDP)):
        assert table.check(Hook.FORWARD, other) is ACCEPT, other
    fragment = FilteredPacket(TCP, socket.inet_aton("192.0.2.1"), bytes(4), 60, b"", "left")
    assert table.check(Hook.FORWARD, fragment) is ACCEPT, "no transport header: port conditions cannot hold"


def test_user_chains_jump_and_return_and_policies() -> None:
    table = FilterTable(4)
    table.new_chain("web")
    table.append("web", Rule(RETURN, protocol=TCP, source=Subnet.parse("192.0.2.0/24")))
    table.append("web", Rule(DROP))
    table.append("INPUT", Rule(Jump("web"), protocol=TCP, destination_ports=(80, 80)))
    table.append("INPUT", Rule(ACCEPT, protocol=TCP))
    table.set_policy("INPUT", DROP)
    assert table.check(Hook.INPUT, packet()) is ACCEPT                    # returned, then accepted
    assert table.check(Hook.INPUT, packet(source="203.0.113.9")) is DROP  # dropped in the user chain
    assert table.check(Hook.INPUT, packet(protocol=UDP)) is DROP          # the policy
    with pytest.raises(ValueError, match="not empty or is jumped to"):
        table.delete_chain("web")


@pytest.mark.parametrize(("chain", "rule", "message"), [
    ("INPUT", Rule(DROP, protocol=TCP), None),
    ("nowhere", Rule(DROP), "no chain"),
    ("INPUT", Rule(Jump("INPUT")), "user chain"),
    ("FORWARD", Rule(Reject(RejectWith.TCP_RESET), protocol=TCP), None),
    ("OUTPUT", Rule(Reject(RejectWith.TCP_RESET), protocol=TCP), None),
    ("INPUT", Rule(Reject(RejectWith.TCP_RESET), protocol=UDP), "only TCP"),
])
def test_rules_are_checked_when_added(chain: str, rule: Rule, message: str | None) -> None:
    table = FilterTable(4)
    if message is None:
        table.append(chain, rule)
        return
    with pytest.raises(ValueError, match=message):
        table.append(chain, rule)


BASE = dataclasses.replace(packet(), out_interface="right", mark=1)
ICMP_ECHO = dataclasses.replace(BASE, protocol=1, transport_head=bytes([8, 0]) + bytes(6))


# (condition, the rule's conditions, a packet the condition holds for, one it does not)
NEGATIONS = [
    ("protocol", {"protocol": TCP}, BASE, dataclasses.replace(BASE, protocol=UDP)),
    ("source", {"source": Subnet.parse("192.0.2.0/24")}, BASE,
     dataclasses.replace(BASE, source=socket.inet_aton("203.0.113.1"))),
    ("destination", {"destination": Subnet.parse("198.51.100.0/24")}, BASE,
     dataclasses.replace(BASE, destination=socket.inet_aton("203.0.113.1"))),
    ("in_interface", {"in_interface": "left"}, BASE, dataclasses.replace(BASE, in_interface="right")),
    ("out_interface", {"out_interface": "right"}, BASE, dataclasses.replace(BASE, out_interface="left")),
    ("source_ports", {"protocol": TCP, "source_ports": (40000, 40000)}, BASE,
     dataclasses.replace(BASE, transport_head=head(sport=1))),
    ("destination_ports", {"protocol": TCP, "destination_ports": (80, 80)}, BASE,
     dataclasses.replace(BASE, transport_head=head(dport=81))),
    ("tcp_flags", {"protocol": TCP, "tcp_flags": (0x12, 0x02)}, BASE,
     dataclasses.replace(BASE, transport_head=head(flags=0x12))),
    ("icmp_type", {"protocol": 1, "icmp_type": 8}, ICMP_ECHO,
     dataclasses.replace(ICMP_ECHO, transport_head=bytes(8))),
    ("mark", {"mark": (1, 0xFF)}, BASE, dataclasses.replace(BASE, mark=0x102)),
    ("multiport", {"protocol": TCP, "multiport": (MultiPort.DESTINATION, ((80, 80), (443, 443)))}, BASE,
     dataclasses.replace(BASE, transport_head=head(dport=8080))),
    ("length", {"length": (0, 100)}, BASE, dataclasses.replace(BASE, length=1500)),
    ("source_range", {"source_range": (socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.9"))}, BASE,
     dataclasses.replace(BASE, source=socket.inet_aton("192.0.2.10"))),
    ("destination_range", {"destination_range": (socket.inet_aton("198.51.100.0"),
                                                  socket.inet_aton("198.51.100.1"))}, BASE,
     dataclasses.replace(BASE, destination=socket.inet_aton("198.51.100.2"))),
]


@pytest.mark.parametrize(("name", "conditions", "holds", "fails"), NEGATIONS, ids=[case[0] for case in NEGATIONS])
def test_a_negated_condition_matches_what_the_plain_one_does_not(name: str, conditions: dict, holds: FilteredPacket,
                                                                 fails: FilteredPacket) -> None:
    plain, negated = Rule(DROP, **conditions), Rule(DROP, **conditions, inverted=frozenset({name}))
    assert [plain.matches(holds), plain.matches(fails)] == [True, False]
    assert [negated.matches(holds), negated.matches(fails)] == [False, True]


def test_negated_state_and_transport_conditions_without_a_header() -> None:
    new_only = Rule(DROP, state=frozenset({State.NEW}), inverted=frozenset({"state"}))
    assert [new_only.matches(BASE, state) for state in (State.NEW, State.ESTABLISHED, None)] == [False, True, True]
    # A later fragment has no transport header: conditions on it fail negated too, as Linux's tcp/icmp/multiport
    # matches return false for a fragment before they look at their inversion.
    fragment = dataclasses.replace(BASE, transport_head=b"")
    for name, conditions, _, _ in NEGATIONS:
        if name in ("source_ports", "destination_ports", "tcp_flags", "icmp_type", "multiport"):
            assert not Rule(DROP, **conditions, inverted=frozenset({name})).matches(fragment), name


def test_bad_rules_and_loops_are_refused() -> None:
    with pytest.raises(ValueError, match="ports match only"):
        Rule(DROP, destination_ports=(80, 80))
    with pytest.raises(ValueError, match="negated but not given"):
        Rule(DROP, inverted=frozenset({"source"}))
    with pytest.raises(ValueError, match="comment cannot be negated"):
        Rule(DROP, comment="x", inverted=frozenset({"comment"}))
    with pytest.raises(ValueError, match="not its negation"):
        Rule(DROP, protocol=TCP, destination_ports=(80, 80), inverted=frozenset({"protocol"}))
    with pytest.raises(ValueError, match="bad port range"):
        Rule(DROP, protocol=TCP, destination_ports=(90, 80))
    table = FilterTable(4)
    for name in ("a", "b"):
        table.new_chain(name)
    table.append("a", Rule(Jump("b")))
    with pytest.raises(ValueError, match="loop"):
        table.append("b", Rule(Jump("a")))
    with pytest.raises(ValueError, match="built-in"):
        table.set_policy("a", DROP)


# --- at work ------------------------------------------------------------------------------------------------

@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def routed(request: pytest.FixtureRequest) -> Iterator[tuple[Network, int, Host, Host, Host]]:
    """client.test on "left", server.test on "right" (TCP 80 and 81, UDP 53 listening), a router between."""
    family = request.param
    with Network(seed=3) as net:
        left, right = net.switch("left", SUBNETS[family][0]), net.switch("right", SUBNETS[family][1])
        router = net.router("router.test", left, right)
        server = net.host("server.test", right)
        client = net.host("client.test", left)
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        sockets = []
        for port in (80, 81):
            listener = NetsockSocket(family, stack=server.stack)
            listener.bind((wildcard, port))
            listener.listen()
            sockets.append(listener)
        udp = NetsockSocket(family, socket.SOCK_DGRAM, stack=server.stack)
        udp.bind((wildcard, 53))
        sockets.append(udp)
        yield net, family, client, router, server
        for sock in sockets:
            sock.close()


def connect(client: Host, family: int, port: int, timeout: float = 5) -> str:
    """How a connection from the client to server.test:port ends: "connected", "timeout" or an errno name."""
    with client, NetsockSocket(family) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(("server.test", port))
        except TimeoutError:
            return "timeout"
        except OSError as error:
            return errno.errorcode[error.errno]
        return "connected"


def table_of(host: Host, family: int) -> FilterTable:
    return host.stack.iptables.ipv6 if family == socket.AF_INET6 else host.stack.iptables.ipv4


def ip_stats(host: Host) -> dict:
    return host.stack.stats().ip.as_dict()


@pytest.mark.parametrize(("target", "outcome"), [
    (DROP, "timeout"), (Reject(), "ECONNREFUSED"), (Reject(RejectWith.TCP_RESET), "ECONNREFUSED"),
    (Reject(RejectWith.ADMIN_PROHIBITED), "EHOSTUNREACH"),
])
def test_input_on_the_server(routed: tuple, target, outcome: str) -> None:
    net, family, client, router, server = routed
    rule = Rule(target, protocol=TCP, destination_ports=(80, 80))
    table_of(server, family).append("INPUT", rule)
    assert connect(client, family, 80, timeout=1.5) == outcome
    assert connect(client, family, 81) == "connected"
    assert rule.packets >= 1 and ip_stats(server)["iptables_input_dropped"] == rule.packets


@pytest.mark.parametrize(("target", "outcome"), [(DROP, "timeout"), (Reject(), "ECONNREFUSED"),
                                                 (Reject(RejectWith.TCP_RESET), "ECONNREFUSED")])
def test_forward_on_the_router(routed: tuple, target, outcome: str) -> None:
    net, family, client, router, server = routed
    rule = Rule(target, protocol=TCP, source=Subnet.parse(SUBNETS[family][0]), in_interface="left",
                out_interface="right", destination_ports=(80, 80))
    table_of(router, family).append("FORWARD", rule)
    assert connect(client, family, 80, timeout=1.5) == outcome
    assert connect(client, family, 81) == "connected"
    assert rule.packets >= 1 and ip_stats(router)["iptables_forward_dropped"] == rule.packets
    table_of(router, family).delete("FORWARD", rule)
    assert connect(client, family, 80) == "connected"


@pytest.mark.parametrize(("target", "outcome"), [(DROP, "timeout"), (Reject(), "ECONNREFUSED"),
                                                 (Reject(RejectWith.TCP_RESET), "ECONNREFUSED")])
def test_output_on_the_client(routed: tuple, target, outcome: str) -> None:
    net, family, client, router, server = routed
    table_of(client, family).append("OUTPUT", Rule(target, protocol=TCP, destination_ports=(80, 80)))
    assert connect(client, family, 80, timeout=1.5) == outcome
    assert connect(client, family, 81) == "connected"


def test_a_reset_on_output_ends_an_established_connection(routed: tuple) -> None:
    # Linux hands the sending socket a RST as if from its peer: the connection is reset.
    net, family, client, router, server = routed
    with client, NetsockSocket(family) as sock:
        sock.settimeout(5)
        sock.connect(("server.test", 80))
        table_of(client, family).append("OUTPUT", Rule(Reject(RejectWith.TCP_RESET), protocol=TCP,
                                                       destination_ports=(80, 80)))
        assert sock.send(b"x") == 1                 # queued; its segment is refused on the way out ...
        gevent.sleep(0.1)
        with pytest.raises(ConnectionResetError):   # ... and the reset that answers it ends the connection
            sock.recv(10)


def test_a_datagram_dropped_on_output_fails_the_send_with_eperm(routed: tuple) -> None:
    net, family, client, router, server = routed
    table_of(client, family).append("OUTPUT", Rule(DROP, protocol=UDP, destination_ports=(53, 53)))
    with client, NetsockSocket(family, socket.SOCK_DGRAM) as sock:
        with pytest.raises(PermissionError) as info:
            sock.sendto(b"query", ("server.test", 53))
        assert info.value.errno == errno.EPERM
        sock.sendto(b"other", ("server.test", 54))      # another port is not filtered
    assert ip_stats(client)["iptables_output_dropped"] == 1


def test_a_udp_reject_on_input_reaches_a_connected_socket(routed: tuple) -> None:
    net, family, client, router, server = routed
    table_of(server, family).append("INPUT", Rule(Reject(), protocol=UDP, destination_ports=(53, 53)))
    with client, NetsockSocket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect(("server.test", 53))
        sock.send(b"query")
        with pytest.raises(ConnectionRefusedError):
            sock.recv(100)


def test_an_established_connection_is_cut_by_a_later_drop(routed: tuple) -> None:
    # No connection tracking: a rule added later applies to a connection already open.
    net, family, client, router, server = routed
    with client, NetsockSocket(family) as sock:
        sock.settimeout(5)
        sock.connect(("server.test", 80))
        table_of(router, family).append("FORWARD", Rule(DROP, protocol=TCP, destination_ports=(80, 80)))
        sock.send(b"x" * 100)
        gevent.sleep(0.5)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert ip_stats(router)["iptables_forward_dropped"] >= 1, "the data and its retransmissions"


def test_a_raw_socket_writing_whole_datagrams_is_filtered_on_output() -> None:
    with Network(seed=3) as net:
        lan = net.switch("lan", SUBNETS[socket.AF_INET][0])
        client, server = net.host("client.test", lan), net.host("server.test", lan)
        rule = Rule(DROP, protocol=UDP, destination_ports=(53, 53))
        client.stack.iptables.ipv4.append("OUTPUT", rule)
        udp = (40000).to_bytes(2, "big") + (53).to_bytes(2, "big") + (13).to_bytes(2, "big") + bytes(2) + b"query"
        with client, NetsockSocket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
            header = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, UDP, 0, 0]) + bytes(4) + socket.inet_aton(server.address)
            with pytest.raises(PermissionError):
                raw.sendto(header + udp, (server.address, 0))
        assert rule.packets == 1 and ip_stats(client)["iptables_output_dropped"] == 1


# --- SO_MARK and the mark condition ----------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
@pytest.mark.parametrize("value", [b"\x01\x00\x00\x00", b"\xff\xff\xff\xff", b"\x05\x00\x00\x00\x09", b"\x01", b""])
def test_so_mark_set_and_get_as_on_the_kernel(kind: int, value: bytes) -> None:
    # (As root here; without CAP_NET_ADMIN or CAP_NET_RAW both refuse the set with EPERM.)
    def outcome(sock) -> object:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 36, value)
            return sock.getsockopt(socket.SOL_SOCKET, 36), sock.getsockopt(socket.SOL_SOCKET, 36, 4)
        except OSError as error:
            return errno.errorcode[error.errno]

    with socket.socket(socket.AF_INET, kind) as kernel, NetsockSocket(socket.AF_INET, kind) as ours:
        assert outcome(ours) == outcome(kernel)


def test_the_mark_condition_picks_a_socket_s_packets_on_output(routed: tuple) -> None:
    net, family, client, router, server = routed
    rule = Rule(Reject(), mark=(0x10, 0xF0))
    table_of(client, family).append("OUTPUT", rule)
    for mark, outcome in ((0x13, "ECONNREFUSED"), (0x23, "connected"), (0, "connected")):
        with client, NetsockSocket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, 36, mark)
            sock.settimeout(5)
            try:
                sock.connect(("server.test", 80))
                result = "connected"
            except OSError as error:
                result = errno.errorcode[error.errno]
        assert result == outcome, mark
    assert rule.packets == 1


def test_a_marked_listener_s_connections_carry_its_mark(routed: tuple) -> None:
    net, family, client, router, server = routed
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    with NetsockSocket(family, stack=server.stack) as listener:
        listener.setsockopt(socket.SOL_SOCKET, 36, 7)
        listener.bind((wildcard, 8080))
        listener.listen()
        table_of(server, family).append("OUTPUT", Rule(DROP, mark=(7, 0xFFFFFFFF)))
        assert connect(client, family, 8080, timeout=1.5) == "timeout", "the SYN-ACK carries the mark"
        assert ip_stats(server)["iptables_output_dropped"] >= 1


# --- connection tracking and the state condition ------------------------------------------------------------

A, B = bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1])


def tcp_head(sport: int, dport: int, flags: int) -> bytes:
    return sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(9) + bytes([flags]) + bytes(6)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_tcp_connection_is_new_then_established_and_forgotten_after_it_closes() -> None:
    clock = Clock()
    track = ConnTrack(clock)
    steps = [(A, B, tcp_head(40000, 80, 0x02), State.NEW), (B, A, tcp_head(80, 40000, 0x12), State.ESTABLISHED),
             (A, B, tcp_head(40000, 80, 0x10), State.ESTABLISHED), (A, B, tcp_head(40000, 80, 0x11), State.ESTABLISHED)]
    for source, destination, head, expected in steps:
        assert track.state(TCP, source, destination, head) is expected
        track.accepted(TCP, source, destination, head)
    assert len(track) == 1
    assert track.state(TCP, A, B, tcp_head(40001, 80, 0x02)) is State.NEW    # another connection
    clock.now = TIMEOUTS["tcp_closing"] + 1
    assert track.state(TCP, B, A, tcp_head(80, 40000, 0x10)) is State.NEW    # gone: its FIN was 2 minutes ago


def test_udp_flows_icmp_errors_about_them_and_echo() -> None:
    clock = Clock()
    track = ConnTrack(clock)
    query = (53).to_bytes(2, "big")
    out = (40000).to_bytes(2, "big") + query + bytes(4)
    track.accepted(UDP, A, B, out)
    assert track.state(UDP, B, A, query + (40000).to_bytes(2, "big") + bytes(4)) is State.ESTABLISHED
    quote = bytes([0x45]) + bytes(8) + bytes([UDP]) + bytes(2) + A + B + out
    assert track.state(1, B, A, bytes([3, 3]) + bytes(6) + quote) is State.RELATED
    assert track.state(1, B, A, bytes([3, 3]) + bytes(6) + quote.replace(B, bytes(4))) is State.INVALID
    assert track.state(1, B, A, bytes([3, 3]) + bytes(10)) is State.INVALID
    echo = bytes([8, 0, 0, 0, 0, 7, 0, 1])
    track.accepted(1, A, B, echo)
    assert track.state(1, B, A, bytes([0]) + echo[1:]) is State.ESTABLISHED
    clock.now = TIMEOUTS["udp"] + 1
    assert track.state(UDP, B, A, query + (40000).to_bytes(2, "big") + bytes(4)) is State.NEW


def test_closed_connections_leave_nothing_behind() -> None:
    clock = Clock()
    track = ConnTrack(clock)
    for port in range(10000):
        for source, destination, head in ((A, B, tcp_head(port, 80, 0x02)), (B, A, tcp_head(80, port, 0x12)),
                                          (A, B, tcp_head(port, 80, 0x04))):
            track.accepted(TCP, source, destination, head)
    assert len(track) == 10000
    clock.now = TIMEOUTS["tcp_reset"] + 2
    track.accepted(UDP, A, B, bytes(8))          # the next packet sweeps
    assert len(track) == 1


def test_a_stateful_firewall_lets_replies_in_and_new_connections_only_where_allowed(routed: tuple) -> None:
    net, family, client, router, server = routed
    table = table_of(server, family)
    table.append("INPUT", Rule(ACCEPT, state=frozenset({State.ESTABLISHED, State.RELATED})))
    table.append("INPUT", Rule(ACCEPT, protocol=TCP, destination_ports=(80, 80), state=frozenset({State.NEW})))
    if family == socket.AF_INET6:       # neighbour discovery is ICMPv6: let it in, as an ip6tables admin must
        table.append("INPUT", Rule(ACCEPT, protocol=58))
    table.set_policy("INPUT", DROP)
    assert connect(client, family, 80) == "connected"
    assert connect(client, family, 81, timeout=1.5) == "timeout"
    wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
    with NetsockSocket(family, stack=client.stack) as listener:        # the server may connect out
        listener.bind((wildcard, 9000))
        listener.listen()
        with server, NetsockSocket(family) as out:
            out.settimeout(5)
            out.connect(("client.test", 9000))
        with server, NetsockSocket(family, socket.SOCK_DGRAM) as udp:   # and hears of a closed port (RELATED)
            udp.settimeout(5)
            udp.connect(("client.test", 9999))
            udp.send(b"anyone?")
            with pytest.raises(ConnectionRefusedError):
                udp.recv(10)
    assert table.chains["INPUT"].packets >= 1 and len(table.conntrack) >= 3
