"""netsock's iptables command line against the kernel's iptables (and ip6tables) in a namespace: the same
commands, the same ``-S`` listing, word for word — so a rule means to netsock what it means to iptables."""

from __future__ import annotations

import shlex

import pytest

from netsock.stack.iptables import IPTables
from netsock.stack.iptables_syntax import command

from .nsutil import NetNS

NETNS_IPV6 = True

COMMANDS = {
    4: ["-A INPUT -p tcp --dport 22 -s 192.0.2.0/24 -j ACCEPT",
        "-A INPUT -p tcp --dport 1000:2000 -j REJECT --reject-with tcp-reset",
        "-A INPUT -p icmp --icmp-type echo-request -j DROP",
        "-A INPUT -s 192.0.2.7 -d 192.0.2.1 -j REJECT",
        "-I INPUT 2 -p udp --sport 53 --dport 1024:65535 -j ACCEPT",
        "-A FORWARD -i lan -o wan -p tcp --syn -m state --state ESTABLISHED,NEW -j ACCEPT",
        "-A FORWARD -p tcp --tcp-flags SYN,ACK,FIN SYN,ACK -j REJECT --reject-with icmp-host-unreachable",
        "-A OUTPUT -p udp --sport 53 -m mark --mark 0x10/0xff -j REJECT --reject-with icmp-admin-prohibited",
        "-A OUTPUT -m mark --mark 0x7 -j RETURN",
        "-N quarantine", "-A quarantine -j DROP", "-A INPUT -s 203.0.113.0/24 -j quarantine",
        "-P FORWARD DROP", "-D INPUT 1",
        "-A INPUT -p tcp -m multiport --dports 80,443,8000:8100 -j ACCEPT",
        "-A INPUT -p udp -m multiport --sports 53,123 -m state --state ESTABLISHED -j ACCEPT",
        "-A INPUT -p tcp -m multiport --ports 25 -j REJECT",
        "-A INPUT -m statistic --mode random --probability 0.1 -j DROP",
        "-A INPUT -p udp -m statistic --mode nth --every 3 --packet 1 -j DROP",
        "-D INPUT -m statistic --mode random --probability 0.1 -j DROP",
        "-A INPUT -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT",
        "-A INPUT -p tcp --dport 80 -m comment --comment 'allow web' -j ACCEPT",
        "-A INPUT -p icmp -m limit --limit 5/second -j ACCEPT",
        "-A INPUT -p icmp -m limit --limit 10/min --limit-burst 20 -j ACCEPT",
        "-A INPUT -m length --length 0:100 -m limit --limit 7/s -j ACCEPT",
        "-A INPUT -m length --length 1500 -j DROP",
        "-A INPUT -m limit --limit 1000/day -j ACCEPT",
        "-A INPUT -m limit --limit 3/hour --limit-burst 1 -j ACCEPT",
        "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A INPUT -m iprange --src-range 192.0.2.10-192.0.2.20 -j DROP",
        "-A FORWARD -m iprange --src-range 192.0.2.1-192.0.2.5 --dst-range 198.51.100.1-198.51.100.9 -j ACCEPT",
        "-A INPUT -p tcp -j LOG --log-prefix 'in: '", "-A INPUT -j LOG --log-level 6",
        "-A INPUT -j LOG --log-level debug --log-prefix x", "-A FORWARD -j LOG",
        "-t nat -A PREROUTING -i wan -p tcp --dport 8080 -j DNAT --to-destination 192.0.2.5:80",
        "-t nat -A PREROUTING -p udp --dport 53 -j REDIRECT --to-ports 5353",
        "-t nat -A OUTPUT -p tcp -d 198.51.100.9 -j DNAT --to-destination 192.0.2.5",
        "-t nat -A POSTROUTING -o wan -j MASQUERADE",
        "-t nat -A POSTROUTING -o wan2 -p tcp -j SNAT --to-source 198.51.100.1:5000-5100",
        "-t nat -A POSTROUTING -o wan3 -p udp -j MASQUERADE --to-ports 20000-30000",
        "-t mangle -A PREROUTING -p tcp --dport 80 -j TPROXY --on-port 3128 --on-ip 192.0.2.1",
        "-t mangle -A PREROUTING -p udp --dport 53 -j TPROXY --on-port 5353",
        "-t mangle -A PREROUTING -p tcp --dport 81 -j TPROXY --on-port 3128 --tproxy-mark 0x1/0x1",
        "-t mangle -N DIVERT", "-t mangle -A DIVERT -j MARK --set-mark 1", "-t mangle -A DIVERT -j ACCEPT",
        "-t mangle -A PREROUTING -p udp --dport 54 -j DIVERT", "-t mangle -A PREROUTING -j MARK --and-mark 0xff",
        "-t mangle -A PREROUTING -j MARK --or-mark 0x10", "-t mangle -A PREROUTING -j MARK --xor-mark 0x3",
        "-t mangle -A PREROUTING -j MARK --set-xmark 0x5/0xf", "-t mangle -A PREROUTING -j MARK --set-mark 0x4/0x6",
        "-A INPUT ! -s 192.0.2.0/24 ! -d 192.0.2.1 ! -i lo -j DROP", "-A FORWARD ! -o wan ! -p udp -j REJECT",
        "-A INPUT -p tcp ! --sport 1024:65535 ! --dport 22 -j DROP",
        "-A INPUT -p tcp ! --syn -m state --state NEW -j DROP",
        "-A INPUT -p tcp ! --tcp-flags SYN,ACK SYN -j ACCEPT", "-A INPUT -p icmp ! --icmp-type echo-request -j ACCEPT",
        "-A INPUT -m state ! --state ESTABLISHED,RELATED -j LOG", "-A INPUT -m conntrack ! --ctstate INVALID -j ACCEPT",
        "-A INPUT -p udp -m multiport ! --dports 53,123 -j DROP", "-A OUTPUT -m mark ! --mark 0x1/0xf -j RETURN",
        "-A INPUT -m length ! --length 0:1000 -j DROP",
        "-A INPUT -m iprange ! --src-range 192.0.2.1-192.0.2.9 --dst-range 192.0.2.10-192.0.2.20 -j DROP",
        "-D INPUT -m length ! --length 0:1000 -j DROP",
        "-t nat -A POSTROUTING ! -o lan ! -d 192.0.2.0/24 -j MASQUERADE"],
    6: ["-A INPUT -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT",
        "-A INPUT -s 2001:db8:1::/64 -p udp --dport 53 -j REJECT --reject-with icmp6-adm-prohibited",
        "-A INPUT -d 2001:db8::1 -p tcp -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p tcp --dport 25 -j REJECT",
        "-A INPUT -m conntrack --ctstate INVALID -m iprange --dst-range 2001:db8::1-2001:db8::ff -j DROP",
        "-A OUTPUT -p udp -m multiport --dports 53,5353 -m statistic --mode random --probability 0.25 -j DROP",
        "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination [2001:db8::5]:8080",
        "-t nat -A OUTPUT -p tcp -d 2001:db8::9 -j DNAT --to-destination 2001:db8::5",
        "-t nat -A POSTROUTING -o wan -j MASQUERADE",
        "-t nat -A PREROUTING -j LOG --log-prefix nat6",
        "-t mangle -A PREROUTING -p tcp --dport 80 -j TPROXY --on-port 3128",
        "-A INPUT ! -s 2001:db8:1::/64 -p ipv6-icmp ! --icmpv6-type echo-request -j DROP",
        "-A OUTPUT ! -p tcp -m iprange ! --dst-range 2001:db8::1-2001:db8::9 -j DROP"],
}


@pytest.mark.parametrize("version", [4, 6])
def test_the_same_commands_list_the_same_rules_as_the_kernels_iptables(netns: NetNS, version: int) -> None:
    tool = "iptables" if version == 4 else "ip6tables"
    ours = IPTables()
    for line in COMMANDS[version]:
        netns.run([tool, *shlex.split(line)])
        command(ours, line, version)
    for table in ("filter", "nat", "mangle"):
        kernel = netns.run([tool, "-t", table, "-S"]).stdout.splitlines()
        netsock = command(ours, f"-t {table} -S", version).splitlines()
        if table == "mangle":       # (netsock's mangle table has PREROUTING alone: its rules are compared)
            kernel = [line for line in kernel if not line.startswith("-P")]
            netsock = [line for line in netsock if not line.startswith("-P")]
        assert netsock == kernel, table


RULESETS = {
    4: """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:quarantine - [0:0]
-A INPUT -s 203.0.113.0/24 -j quarantine
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443 -m state --state NEW -j ACCEPT
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A quarantine -j LOG --log-prefix "quarantined: "
-A quarantine -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i wan -p tcp -m tcp --dport 2222 -j DNAT --to-destination 192.0.2.10:22
-A POSTROUTING -o wan -j MASQUERADE
COMMIT
""",
    6: """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -m limit --limit 10/sec -j ACCEPT
-A INPUT -s 2001:db8:1::/64 -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable
COMMIT
""",
}


@pytest.mark.parametrize("version", [4, 6])
def test_a_rule_set_restores_and_saves_as_with_the_kernels_tools(netns: NetNS, version: int) -> None:
    from netsock.stack.iptables_syntax import restore, save
    tool = "iptables" if version == 4 else "ip6tables"
    netns.run([f"{tool}-restore"], input=RULESETS[version])
    ours = IPTables()
    restore(ours, RULESETS[version], version)
    tables = [line[1:] for line in RULESETS[version].splitlines() if line.startswith("*")]
    kernel = [line for table in tables for line in netns.run([f"{tool}-save", "-t", table]).stdout.splitlines()
              if not line.startswith("#")]
    assert [line for line in save(ours, version).splitlines() if not line.startswith("#")] == kernel
