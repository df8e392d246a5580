"""iptables' command line on netsock's tables (netsock.stack.iptables_syntax): each word read as iptables(8)
reads it, the listing read back to the same rules, what cannot be said refused with a reason, and a
host of a private network configured by it."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsock.adapter import NetsockSocket
from netsock.privnet import Network
from netsock.stack.conntrack import State
from netsock.stack.iptables import (ACCEPT, DNAT, DROP, SNAT, IPTables, Jump, Masquerade, Redirect, Reject,
                                    RejectWith, TProxy)
from netsock.stack.iptables_syntax import command
from netsock.tcpip import TCP_PROTOCOL_NUMBER as TCP
from netsock.tcpip import UDP_PROTOCOL_NUMBER as UDP

RULES = {
    4: ["-A INPUT -p tcp --dport 22 -s 192.0.2.0/24 -j ACCEPT",
        "-A INPUT -p tcp --dport 1000:2000 -j REJECT --reject-with tcp-reset",
        "-A INPUT -p icmp --icmp-type echo-request -j DROP",
        "-A FORWARD -i lan -o wan -p tcp --syn -m state --state NEW,ESTABLISHED -j ACCEPT",
        "-A OUTPUT -m mark --mark 0x10/0xff -p udp --sport 53 -j REJECT --reject-with icmp-admin-prohibited",
        "-t nat -A PREROUTING -i wan -p tcp --dport 8080 -j DNAT --to-destination 192.0.2.5:80",
        "-t nat -A PREROUTING -p udp --dport 53 -j REDIRECT --to-ports 5353",
        "-t nat -A POSTROUTING -o wan -j MASQUERADE",
        "-t nat -A POSTROUTING -p tcp -o wan2 -j SNAT --to-source 198.51.100.1:5000-5100",
        "-t mangle -A PREROUTING -p tcp --dport 80 -j TPROXY --on-port 3128 --on-ip 192.0.2.1",
        "-A OUTPUT ! -o lo ! -d 192.0.2.0/24 -p tcp ! --dport 443 -m state ! --state ESTABLISHED -j REJECT"],
    6: ["-A INPUT -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT",
        "-A INPUT -s 2001:db8:1::/64 -p udp --dport 53 -j REJECT --reject-with icmp6-adm-prohibited",
        "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination [2001:db8::5]:8080",
        "-t nat -A OUTPUT -p tcp -d 2001:db8::9 -j DNAT --to-destination 2001:db8::5",
        "-A INPUT ! -p ipv6-icmp -m mark ! --mark 0x1 -m length ! --length 0:1280 -j DROP"],
}


@pytest.mark.parametrize("version", [4, 6])
def test_rules_read_as_iptables_reads_them_and_list_back_the_same(version: int) -> None:
    tables = IPTables()
    for line in RULES[version]:
        assert command(tables, line, version) == ""
    listed = {name: command(tables, f"-t {name} -L", version) for name in ("filter", "nat", "mangle")}
    again = IPTables()
    for name, text in listed.items():
        chain = None
        for line in text.splitlines():
            if line.startswith("Chain "):
                chain = line.split()[1]
            elif line:
                command(again, f"-t {name} -A {chain} {line}", version)
    assert {name: command(again, f"-t {name} -L", version) for name in listed} == listed


def test_each_word_means_what_it_means_to_iptables() -> None:
    tables = IPTables()
    for line in RULES[4]:
        command(tables, line)
    ssh, high, ping = tables.ipv4.chains["INPUT"].rules
    assert (ssh.protocol, ssh.destination_ports, ssh.target) == (TCP, (22, 22), ACCEPT)
    assert str(ssh.source.address) == "192.0.2.0" and ssh.source.prefix() == 24
    assert (high.destination_ports, high.target) == ((1000, 2000), Reject(RejectWith.TCP_RESET))
    assert (ping.icmp_type, ping.target) == (8, DROP)
    forward, = tables.ipv4.chains["FORWARD"].rules
    assert forward.tcp_flags == (0x17, 0x02) and forward.state == {State.NEW, State.ESTABLISHED}
    assert (forward.in_interface, forward.out_interface) == ("lan", "wan")
    output, negated = tables.ipv4.chains["OUTPUT"].rules
    assert (output.mark, output.source_ports) == ((0x10, 0xFF), (53, 53))
    assert (negated.out_interface, negated.destination_ports, negated.state) == ("lo", (443, 443), {State.ESTABLISHED})
    assert negated.inverted == {"out_interface", "destination", "destination_ports", "state"}
    dnat, redirect = tables.ipv4_nat.chains["PREROUTING"].rules
    assert dnat.target == DNAT(bytes([192, 0, 2, 5]), (80, 80)) and redirect.target == Redirect((5353, 5353))
    masquerade, snat = tables.ipv4_nat.chains["POSTROUTING"].rules
    assert masquerade.target == Masquerade() and snat.target == SNAT(bytes([198, 51, 100, 1]), (5000, 5100))
    tproxy, = tables.ipv4_mangle.chains["PREROUTING"].rules
    assert tproxy.target == TProxy(3128, bytes([192, 0, 2, 1]))
    command(tables, "-t nat -A PREROUTING -p tcp -j DNAT --to-destination [2001:db8::5]:8080", 6)
    assert tables.ipv6_nat.chains["PREROUTING"].rules[0].target.ports == (8080, 8080)


def test_chains_are_edited_as_iptables_edits_them() -> None:
    tables = IPTables()
    command(tables, "-N blocked")
    command(tables, "-A blocked -j DROP")
    command(tables, "-A INPUT -p tcp --dport 80 -j ACCEPT")
    command(tables, "-I INPUT -s 203.0.113.0/24 -j blocked")          # first, by default
    command(tables, "-I INPUT 2 -p udp -j ACCEPT")
    rules = tables.ipv4.chains["INPUT"].rules
    assert [rule.target for rule in rules] == [Jump("blocked"), ACCEPT, ACCEPT] and rules[1].protocol == UDP
    command(tables, "-D INPUT -p tcp --dport 80 -j ACCEPT")             # by its specification
    command(tables, "-D INPUT 1")                                      # by its number
    assert [rule.protocol for rule in tables.ipv4.chains["INPUT"].rules] == [UDP]
    command(tables, "-P FORWARD DROP")
    assert tables.ipv4.chains["FORWARD"].policy == DROP
    tables.ipv4.chains["INPUT"].rules[0].packets = 7
    command(tables, "-Z")
    assert tables.ipv4.chains["INPUT"].rules[0].packets == 0
    command(tables, "-F")
    command(tables, "-X blocked")
    assert "blocked" not in tables.ipv4.chains and not tables.ipv4.chains["INPUT"].rules
    assert "(policy DROP 0 packets, 0 bytes)" in command(tables, "-L FORWARD -v")


@pytest.mark.parametrize(("line", "reason"), [
    ("-A INPUT ! -m state --state NEW -j DROP", "-m cannot be negated"),
    ("-A INPUT -m comment ! --comment x -j DROP", "--comment cannot be negated"),
    ("-A INPUT -s 192.0.2.1 ! -j DROP", "-j cannot be negated"),
    ("-A INPUT ! ! -s 192.0.2.1 -j DROP", "multiple ! flags"),
    ("-A INPUT -s 192.0.2.1 !", "negates nothing"),
    ("-A INPUT ! -p tcp --dport 80 -j DROP", "not its negation"),
    ("-A INPUT -p tcp --dport 80", "needs a target"),
    ("-A INPUT --dport 80 -j DROP", "protocol TCP"),
    ("-A INPUT -j DNAT --to-destination 192.0.2.1", "not a target of the filter table"),
    ("-t nat -A POSTROUTING -j DNAT --to-destination 192.0.2.1", "PREROUTING"),
    ("-t nat -A PREROUTING -p tcp -j DNAT", "needs --to-destination"),
    ("-A INPUT -j REJECT --reject-with icmp-bogus", "reject type"),
    ("-A INPUT -j REJECT --to-ports 5", "unknown option"),
    ("-A INPUT -m owner --uid-owner 0 -j DROP", "unknown option"),
    ("-A INPUT -s 2001:db8::1 -j DROP", "not an IPv4 address"),
    ("-A INPUT -s nowhere.test -j DROP", "not found"),
    ("-A NOPE -j DROP", "NOPE"),
    ("-t raw -L", "Table does not exist"),
    ("-I INPUT 5 -j DROP", "too big"),
    ("-D INPUT -j DROP", "does a matching rule exist"),
    ("-P INPUT REJECT", "ACCEPT or DROP"),
    ("-A INPUT -p tcp --dport 99999 -j DROP", "bad port"),
    ("-Q INPUT", "unknown command"),
    ("-A INPUT -m multiport --dports 80 -j DROP", "protocol TCP"),
    ("-A INPUT -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16 -j DROP", "1 to 15 ports"),
    ("-A INPUT -m statistic --mode nth --every 3 --packet 3 -j DROP", "--packet"),
    ("-A INPUT -m statistic --mode random --probability 1.5 -j DROP", "between 0 and 1"),
    ("-A INPUT -m statistic --mode random -j DROP", "statistic: --mode"),
])
def test_what_cannot_be_said_is_refused_with_a_reason(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        command(IPTables(), line)


def test_a_private_networks_router_configured_by_command_line() -> None:
    with Network(seed=2) as net:
        lan, wan = net.switch("lan", "192.0.2.0/24"), net.switch("wan", "198.51.100.0/24")
        router = net.router("router.test", lan, wan)
        server, client = net.host("server.test", wan), net.host("client.test", lan)
        router.iptables("-t nat -A POSTROUTING -o wan -j MASQUERADE")
        server.iptables("-A INPUT -p tcp --dport 81 -j REJECT --reject-with tcp-reset")
        listeners = []
        for port in (80, 81):
            listener = NetsockSocket(socket.AF_INET, stack=server.stack)
            listener.bind(("0.0.0.0", port))
            listener.listen()
            listeners.append(listener)
        with client, NetsockSocket() as sock:
            sock.settimeout(5)
            sock.connect(("server.test", 80))
            conn, peer = listeners[0].accept()
            assert peer[0] == router.addresses[wan]
            conn.close()
        with client, NetsockSocket() as sock:
            sock.settimeout(5)
            with pytest.raises(ConnectionRefusedError):
                sock.connect(("server.test", 81))
        masquerade = router.iptables("-t nat -L POSTROUTING -v").splitlines()[1]
        assert masquerade.split()[0] == "2"         # each connection's first packet
        for listener in listeners:
            listener.close()


def test_a_negated_source_refuses_all_but_the_local_network() -> None:
    with Network(seed=3) as net:
        lan, wan = net.switch("lan", "192.0.2.0/24"), net.switch("wan", "198.51.100.0/24")
        net.router("router.test", lan, wan)
        server, near, far = net.host("server.test", lan), net.host("near.test", lan), net.host("far.test", wan)
        server.iptables("-A INPUT ! -s 192.0.2.0/24 -p tcp -j REJECT --reject-with tcp-reset")
        listener = NetsockSocket(socket.AF_INET, stack=server.stack)
        listener.bind(("0.0.0.0", 80))
        listener.listen()
        with near, NetsockSocket() as sock:
            sock.settimeout(5)
            sock.connect(("server.test", 80))
            listener.accept()[0].close()
        with far, NetsockSocket() as sock:
            sock.settimeout(5)
            with pytest.raises(ConnectionRefusedError):
                sock.connect(("server.test", 80))
        assert server.iptables("-S INPUT").splitlines()[1] == \
            "-A INPUT ! -s 192.0.2.0/24 -p tcp -j REJECT --reject-with tcp-reset"
        listener.close()


def test_multiport_and_statistic_match_as_linux_decides() -> None:
    from netsock.stack.iptables import FilteredPacket
    tables = IPTables()
    command(tables, "-A INPUT -p tcp -m multiport --dports 80,443,8000:8100 -j ACCEPT")
    command(tables, "-A INPUT -p tcp -m multiport --ports 25 -j ACCEPT")
    command(tables, "-A OUTPUT -p udp -m statistic --mode nth --every 3 --packet 1 -j DROP")
    command(tables, "-A OUTPUT -p udp -m statistic --mode random --probability 0.25 -j DROP")
    web, mail = tables.ipv4.chains["INPUT"].rules
    nth, coin = tables.ipv4.chains["OUTPUT"].rules

    def segment(sport: int, dport: int) -> FilteredPacket:
        return FilteredPacket(TCP, bytes(4), bytes(4), 60, sport.to_bytes(2, "big") + dport.to_bytes(2, "big"))
    assert [web.matches(segment(40000, port)) for port in (80, 443, 8050, 81, 8101)] == [True] * 3 + [False] * 2
    assert [mail.matches(segment(*ports)) for ports in ((25, 4000), (4000, 25), (4000, 26))] == [True, True, False]
    datagram = FilteredPacket(UDP, bytes(4), bytes(4), 40, bytes(8))
    # xt_statistic's nth: a counter from --packet, matching as it comes round: the 2nd, 5th, 8th ... packet.
    assert [number for number in range(1, 10) if nth.matches(datagram)] == [2, 5, 8]
    drawn = [coin.matches(datagram) for _ in range(4000)]
    assert 900 < sum(drawn) < 1100
    again = IPTables()
    command(again, "-A OUTPUT -p udp -m statistic --mode random --probability 0.25 -j DROP")
    assert [again.ipv4.chains["OUTPUT"].rules[0].matches(datagram) for _ in range(4000)] == drawn   # seeded


def test_limit_length_and_comment() -> None:
    from netsock.stack.iptables import FilteredPacket
    clock = [100.0]
    tables = IPTables(lambda: clock[0])
    command(tables, "-A INPUT -p icmp -m limit --limit 2/second --limit-burst 3 -m comment --comment 'ping flood' "
                    "-j ACCEPT")
    command(tables, "-A INPUT -m length --length 0:100 -j DROP")
    limited, short = tables.ipv4.chains["INPUT"].rules
    ping = FilteredPacket(1, bytes(4), bytes(4), 84, bytes([8, 0]))
    # xt_limit: a bucket of --limit-burst packets, full at first, one more each 1/rate s, never above the burst.
    assert [limited.matches(ping) for _ in range(5)] == [True, True, True, False, False]
    clock[0] += 0.5
    assert [limited.matches(ping) for _ in range(2)] == [True, False]
    clock[0] += 10
    assert sum(limited.matches(ping) for _ in range(10)) == 3
    assert [short.matches(FilteredPacket(6, bytes(4), bytes(4), size, bytes(20))) for size in (40, 100, 101)] == \
        [True, True, False]
    assert command(tables, "-S INPUT").splitlines()[1] == ('-A INPUT -p icmp -m comment --comment "ping flood" '
                                                           '-m limit --limit 2/sec --limit-burst 3 -j ACCEPT')


def test_log_notes_the_packet_and_the_next_rule_decides(caplog: pytest.LogCaptureFixture) -> None:
    from netsock.stack.iptables import FilteredPacket, Hook
    tables = IPTables()
    command(tables, "-A INPUT -p tcp -j LOG --log-prefix 'in: ' --log-level info")
    command(tables, "-A INPUT -p tcp --dport 22 -j DROP")
    syn = FilteredPacket(TCP, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 60,
                         (40000).to_bytes(2, "big") + (22).to_bytes(2, "big") + bytes(9) + b"\x02", "lan")
    with caplog.at_level("INFO", logger="netsock.iptables"):
        assert tables.ipv4.check(Hook.INPUT, syn) == DROP
    assert caplog.messages == ["in: IN=lan OUT= SRC=192.0.2.1 DST=192.0.2.2 LEN=60 PROTO=TCP SPT=40000 DPT=22 SYN"]
    assert command(tables, "-S INPUT").splitlines()[1] == '-A INPUT -p tcp -j LOG --log-prefix "in: " --log-level 6'


RULESET = """# a gateway, as iptables-save wrote it
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:blocked - [0:0]
-A INPUT -i lan -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -s 198.51.100.66/32 -j blocked
-A blocked -j LOG --log-prefix "blocked "
-A blocked -j REJECT --reject-with icmp-admin-prohibited
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i wan -p udp -m udp --dport 5353 -j REDIRECT --to-ports 53
-A POSTROUTING -s 192.0.2.0/24 -o wan -j MASQUERADE
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 3128 -j TPROXY --on-port 3129 --on-ip 0.0.0.0 --tproxy-mark 0x0/0x0
COMMIT
"""


def test_a_saved_rule_set_restores_whole_and_saves_the_same() -> None:
    from netsock.stack.iptables_syntax import restore, save
    tables = IPTables()
    command(tables, "-A OUTPUT -p udp -j DROP")         # replaced: a restored table is the rule set alone
    restore(tables, RULESET)
    saved = save(tables)
    assert [line for line in saved.splitlines() if not line.startswith("#")] == \
        [line for line in RULESET.splitlines() if not line.startswith("#")]
    assert tables.ipv4.chains["INPUT"].policy == DROP and not tables.ipv4.chains["OUTPUT"].rules
    again = IPTables()
    restore(again, saved)
    assert save(again) == saved
    restore(again, "*filter\n-A OUTPUT -p udp -j DROP\nCOMMIT\n", flush=False)     # --noflush: added to
    assert len(again.ipv4.chains["INPUT"].rules) == 2 and len(again.ipv4.chains["OUTPUT"].rules) == 1


@pytest.mark.parametrize(("text", "reason"), [
    ("*filter\n-A INPUT -j DROP\n", "not committed"),
    ("-A INPUT -j DROP\n", "no table given"),
    ("*raw\nCOMMIT\n", "no table 'raw'"),
    ("*filter\n:INPUT REJECT [0:0]\nCOMMIT\n", "bad chain line"),
    ("*filter\n-A INPUT -j DROP\n-A INPUT --bogus -j DROP\nCOMMIT\n", "line 3 failed: unknown option"),
])
def test_a_rule_set_with_a_bad_line_changes_nothing(text: str, reason: str) -> None:
    from netsock.stack.iptables_syntax import restore, save
    tables = IPTables()
    restore(tables, RULESET)
    before = save(tables)
    with pytest.raises(ValueError, match=reason):
        restore(tables, text)
    assert save(tables) == before


WORDS = ["-A", "-I", "-D", "-F", "-N", "-X", "-P", "-L", "-S", "-Z", "-t", "nat", "mangle", "filter", "INPUT",
         "OUTPUT", "PREROUTING", "POSTROUTING", "FORWARD", "x", "-p", "tcp", "udp", "icmp", "ipv6-icmp", "-s", "-d",
         "192.0.2.1", "192.0.2.0/24", "2001:db8::1", "[2001:db8::1]:80", "-i", "-o", "lan", "--dport", "--sport",
         "80", "1:2", "99999", "-1", "--tcp-flags", "SYN,ACK", "ALL", "NONE", "--syn", "--icmp-type", "echo-request",
         "-m", "state", "--state", "NEW", "NEW,BOGUS", "--mark", "0x1/0xff", "0xzz", "multiport", "--dports",
         "80,443", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", "statistic", "--mode", "random", "nth", "--every", "3",
         "--packet", "--probability", "0.5", "2", "limit", "--limit", "5/sec", "0/min", "5/fortnight",
         "--limit-burst", "--length", "--comment", "'a b'", "-j", "ACCEPT", "DROP", "RETURN", "REJECT",
         "--reject-with", "tcp-reset", "DNAT", "--to-destination", "192.0.2.1:80-90", "SNAT", "--to-source",
         "MASQUERADE", "REDIRECT", "--to-ports", "8080", "TPROXY", "--on-port", "--on-ip", "--tproxy-mark", "LOG",
         "--log-prefix", "--log-level", "debug", "!", "", "1", "-v"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=14), st.sampled_from([4, 6]))
def test_any_command_line_is_carried_out_or_refused_with_a_reason(words: list[str], version: int) -> None:
    """Whatever the words, the tables take the command or a ValueError says why, and stay listable."""
    tables = IPTables()
    command(tables, "-N x")
    try:
        command(tables, " ".join(words), version)
    except ValueError:
        pass
    for table in ("filter", "nat", "mangle"):
        for line in command(tables, f"-t {table} -S", version).splitlines():
            assert line.startswith(("-P ", "-N ", "-A "))


def test_the_mangle_tables_marks_are_what_the_filter_table_sees() -> None:
    with Network(seed=4) as net:
        lan = net.switch("lan", "192.0.2.0/24")
        server, client = net.host("server.test", lan), net.host("client.test", lan)
        server.iptables("-t mangle -A PREROUTING -p udp --dport 53 -j MARK --set-mark 0x7")
        server.iptables("-t mangle -A PREROUTING -p udp -j MARK --or-mark 0x100")
        server.iptables("-A INPUT -m mark --mark 0x107 -j DROP")
        with server, NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as dns, \
                NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            dns.bind(("0.0.0.0", 53))
            other.bind(("0.0.0.0", 54))
            for sock in (dns, other):
                sock.settimeout(0.5)
            with client, NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(b"query", ("server.test", 53))
                sender.sendto(b"other", ("server.test", 54))
            assert other.recv(100) == b"other"          # marked 0x100 only: let through
            with pytest.raises(TimeoutError):
                dns.recv(100)                           # marked 0x107: dropped by INPUT
        drop, = server.stack.iptables.ipv4.chains["INPUT"].rules
        assert drop.packets == 1


def test_iprange_and_conntrack_state() -> None:
    from netsock.stack.iptables import FilteredPacket
    tables = IPTables()
    command(tables, "-A INPUT -m iprange --src-range 192.0.2.10-192.0.2.20 -m conntrack --ctstate NEW -j DROP")
    rule, = tables.ipv4.chains["INPUT"].rules
    assert rule.state == {State.NEW}
    assert [rule.matches(FilteredPacket(UDP, bytes([192, 0, 2, last]), bytes(4), 40, bytes(8)), State.NEW)
            for last in (9, 10, 15, 20, 21)] == [False, True, True, True, False]
    assert command(tables, "-S INPUT").splitlines()[1] == \
        "-A INPUT -m conntrack --ctstate NEW -m iprange --src-range 192.0.2.10-192.0.2.20 -j DROP"
