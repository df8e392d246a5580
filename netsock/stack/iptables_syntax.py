"""iptables' command line, for netsock's tables: ``host.iptables("-t nat -A POSTROUTING -o wan -j MASQUERADE")``.

What a rule can say is what ``iptables.Rule`` and the targets hold; this reads the usual spelling of it
(iptables(8), iptables-extensions(8)) and refuses, with iptables' own words where it has them, what it cannot
express: matches and targets netsock lacks, a target's option given to another, ``!`` before an option that has
no negation (``--comment``, ``--limit``, ``-m``, ``-j``...).

Commands: ``-A``, ``-I`` (at a 1-based position), ``-D`` (by rule or by number), ``-F``, ``-N``, ``-X``,
``-P``, ``-Z``, ``-L`` (returns the listing, with ``-v`` the counters) and ``-S`` (the rules as ``iptables
-S`` prints them, word for word). Matches: ``-p``, ``-s``, ``-d``, ``-i``, ``-o``, ``--sport``/``--dport`` (a
port or ``first:last``), ``--tcp-flags``, ``--syn``, ``--icmp-type``/``--icmpv6-type`` (a number or a name),
``-m state --state`` (``-m conntrack --ctstate`` alike), ``-m iprange --src-range``/``--dst-range``, ``-m mark
--mark value[/mask]``, ``-m multiport --dports``/``--sports``/``--ports``, ``-m statistic`` (``--mode random
--probability``, ``--mode nth --every --packet``), ``-m limit --limit --limit-burst``, ``-m length --length``,
``-m comment --comment``. Targets: ACCEPT, DROP, RETURN, REJECT (``--reject-with``), DNAT
(``--to-destination``), SNAT (``--to-source``), MASQUERADE and REDIRECT (``--to-ports``), TPROXY
(``--on-port``, ``--on-ip``, ``--tproxy-mark``), MARK (``--set-xmark``, ``--set-mark``, ``--and-mark``,
``--or-mark``, ``--xor-mark``), LOG (``--log-prefix``, ``--log-level``), or a user chain's name.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import Any

from ..tcpip import ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Subnet
from .conntrack import State
from .iptables import (ACCEPT, DNAT, DROP, LIMIT_SCALE, RETURN, SNAT, Chain, IPTables, Jump, Limit, Log, Mark,
                       Masquerade, MultiPort, Redirect, Reject, RejectWith, Rule, RuleTable, Statistic, TProxy)

PROTOCOLS = {"tcp": TCP_PROTOCOL_NUMBER, "udp": UDP_PROTOCOL_NUMBER, "udplite": 136, "icmp": ICMPV4_PROTOCOL_NUMBER,
             "ipv6-icmp": ICMPV6_PROTOCOL_NUMBER, "icmpv6": ICMPV6_PROTOCOL_NUMBER}
TCP_FLAGS = {"FIN": 0x01, "SYN": 0x02, "RST": 0x04, "PSH": 0x08, "ACK": 0x10, "URG": 0x20, "ECE": 0x40, "CWR": 0x80,
             "ALL": 0xFF, "NONE": 0}
ICMP_TYPES = {4: {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
                  "echo-request": 8, "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
                  "timestamp-reply": 14},
              6: {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
                  "echo-request": 128, "echo-reply": 129, "router-solicitation": 133, "router-advertisement": 134,
                  "neighbour-solicitation": 135, "neighbour-advertisement": 136, "redirect": 137}}
# --reject-with's names, iptables' and ip6tables' (and RejectWith's own, which the listing shows).
REJECT_WITH = {**{kind.value: kind for kind in RejectWith},
               "icmp-port-unreachable": RejectWith.PORT_UNREACHABLE, "port-unreach": RejectWith.PORT_UNREACHABLE,
               "icmp6-port-unreachable": RejectWith.PORT_UNREACHABLE,
               "icmp-host-unreachable": RejectWith.HOST_UNREACHABLE,
               "icmp6-addr-unreachable": RejectWith.HOST_UNREACHABLE, "addr-unreach": RejectWith.HOST_UNREACHABLE,
               "icmp-net-unreachable": RejectWith.NET_UNREACHABLE, "icmp6-no-route": RejectWith.NET_UNREACHABLE,
               "no-route": RejectWith.NET_UNREACHABLE, "icmp-admin-prohibited": RejectWith.ADMIN_PROHIBITED,
               "icmp6-adm-prohibited": RejectWith.ADMIN_PROHIBITED, "adm-prohibited": RejectWith.ADMIN_PROHIBITED}
_REJECT_NAMES = {4: {RejectWith.PORT_UNREACHABLE: "icmp-port-unreachable", RejectWith.HOST_UNREACHABLE:
                     "icmp-host-unreachable", RejectWith.NET_UNREACHABLE: "icmp-net-unreachable",
                     RejectWith.ADMIN_PROHIBITED: "icmp-admin-prohibited", RejectWith.TCP_RESET: "tcp-reset"},
                 6: {RejectWith.PORT_UNREACHABLE: "icmp6-port-unreachable", RejectWith.HOST_UNREACHABLE:
                     "icmp6-addr-unreachable", RejectWith.NET_UNREACHABLE: "icmp6-no-route",
                     RejectWith.ADMIN_PROHIBITED: "icmp6-adm-prohibited", RejectWith.TCP_RESET: "tcp-reset"}}
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items() if name != "icmpv6"}
_STATE_ORDER = (State.INVALID, State.NEW, State.RELATED, State.ESTABLISHED)     # as the kernel's listing orders them
_BUILTIN_TARGETS = {"ACCEPT": ACCEPT, "DROP": DROP, "RETURN": RETURN}
_SYSLOG_LEVELS = ("emerg", "alert", "crit", "error", "warning", "notice", "info", "debug")
# MARK's options as libxt_MARK turns them into --set-xmark's (value, mask), from their (value, mask) given.
_MARK_OPTIONS = {"--set-xmark": lambda value, mask: (value, mask),
                 "--set-mark": lambda value, mask: (value, mask | value),
                 "--and-mark": lambda value, mask: (0, ~value & 0xFFFFFFFF),
                 "--or-mark": lambda value, mask: (value, value),
                 "--xor-mark": lambda value, mask: (value, 0)}
_COMMANDS = ("-A", "-I", "-D", "-F", "-N", "-X", "-P", "-Z", "-L", "-S")
_LONG_COMMANDS = {"--append": "-A", "--insert": "-I", "--delete": "-D", "--flush": "-F", "--new-chain": "-N",
                  "--delete-chain": "-X", "--policy": "-P", "--zero": "-Z", "--list": "-L",
                  "--list-rules": "-S"}
_RULE_FIELDS = ("target", "protocol", "source", "destination", "in_interface", "out_interface", "source_ports",
                "destination_ports", "tcp_flags", "icmp_type", "mark", "state", "multiport", "length", "comment",
                "source_range", "destination_range", "inverted")
# The options ``!`` may stand before, and the condition (a Rule field) each then negates.
_NEGATES = {"-p": "protocol", "--protocol": "protocol", "-s": "source", "--source": "source", "-d": "destination",
            "--destination": "destination", "-i": "in_interface", "--in-interface": "in_interface",
            "-o": "out_interface", "--out-interface": "out_interface", "--sport": "source_ports",
            "--source-port": "source_ports", "--dport": "destination_ports", "--destination-port": "destination_ports",
            "--tcp-flags": "tcp_flags", "--syn": "tcp_flags", "--icmp-type": "icmp_type", "--icmpv6-type": "icmp_type",
            "--state": "state", "--ctstate": "state", "--src-range": "source_range", "--dst-range": "destination_range",
            "--mark": "mark", "--length": "length",
            **dict.fromkeys(("--sports", "--source-ports", "--dports", "--destination-ports", "--ports"), "multiport")}


def command(iptables: IPTables, line: str, version: int = 4) -> str:
    """Carry out one iptables (``version`` 4) or ip6tables (6) command line on a stack's tables; returns what
    it prints (``-L``'s listing, else ""). ValueError says what is wrong."""
    return run(_tables(iptables, version), version, line)


def save(iptables: IPTables, version: int = 4) -> str:
    """``iptables-save``: every table in use (rules, user chains or a policy not ACCEPT), as the kernel's
    iptables-save writes it — ``*table``, a ``:chain policy [packets:bytes]`` line per chain, the rules as
    ``-A``, ``COMMIT`` — which ``restore`` reads back."""
    lines = ["# Generated by netsock"]
    for name, table in _tables(iptables, version).items():
        if not (table.active or len(table.chains) > len(table.builtin)):
            continue
        lines.append(f"*{name}")
        for chain_name, chain in table.chains.items():
            policy = "-" if chain.policy is None else "ACCEPT" if chain.policy is ACCEPT else "DROP"
            lines.append(f":{chain_name} {policy} [{chain.packets}:{chain.bytes}]")
        lines += [f"-A {chain_name} {describe(rule, version)}" for chain_name, chain in table.chains.items()
                  for rule in chain.rules]
        lines.append("COMMIT")
    return "".join(line + "\n" for line in lines + ["# Completed"])


def restore(iptables: IPTables, text: str, version: int = 4, flush: bool = True) -> None:
    """``iptables-restore``: load ``text`` (``save``'s format, as the kernel's iptables-save writes it) into
    the tables it names, each replaced whole unless not ``flush`` (``--noflush``); all or nothing, as
    iptables-restore commits. ValueError names the line that failed."""
    _restore(IPTables(), text, version, flush)     # every line checked before any table changes
    _restore(iptables, text, version, flush)


def _restore(iptables: IPTables, text: str, version: int, flush: bool) -> None:
    tables = _tables(iptables, version)
    table: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("*"):
                if table is not None:
                    raise ValueError(f"table {table!r} was not committed")
                table = line[1:]
                if table not in tables:
                    raise ValueError(f"no table {table!r}")
                if flush:
                    _empty(tables[table])
            elif table is None:
                raise ValueError("no table given (*filter, *nat, *mangle)")
            elif line == "COMMIT":
                table = None
            elif line.startswith(":"):
                name, policy = (line[1:].split() + ["", ""])[:2]
                if policy == "-":
                    if name not in tables[table].chains:
                        tables[table].new_chain(name)
                elif name in tables[table].builtin and policy in ("ACCEPT", "DROP"):
                    tables[table].set_policy(name, _BUILTIN_TARGETS[policy])
                else:
                    raise ValueError(f"bad chain line {line!r}")
            else:
                run(tables, version, f"-t {table} {line}")
        except ValueError as error:
            raise ValueError(f"ip{'6' * (version == 6)}tables-restore: line {number} failed: {error}") from None
    if table is not None:
        raise ValueError(f"ip{'6' * (version == 6)}tables-restore: table {table!r} was not committed")


def _empty(table: RuleTable) -> None:
    """A table as new: no rules, no user chains, every policy ACCEPT."""
    table.flush()
    for name in [name for name, chain in table.chains.items() if chain.policy is None]:
        table.delete_chain(name)
    for name in table.builtin:
        table.set_policy(name, ACCEPT)


def _tables(iptables: IPTables, version: int) -> dict[str, RuleTable]:
    if version == 4:
        return {"filter": iptables.ipv4, "nat": iptables.ipv4_nat, "mangle": iptables.ipv4_mangle}
    return {"filter": iptables.ipv6, "nat": iptables.ipv6_nat, "mangle": iptables.ipv6_mangle}


def run(tables: dict[str, RuleTable], version: int, line: str) -> str:
    """``command`` on ``tables`` (by name: filter, nat, mangle)."""
    words = shlex.split(line)
    if words and words[0] in ("iptables", "ip6tables"):
        words = words[1:]
    table_name = "filter"
    if "-t" in words or "--table" in words:
        at = words.index("-t") if "-t" in words else words.index("--table")
        if at + 1 >= len(words):
            raise ValueError("option \"-t\" requires an argument")
        table_name = words[at + 1]
        del words[at:at + 2]
    table = tables.get(table_name)
    if table is None:
        raise ValueError(f"can't initialize ip{'6' * (version == 6)}tables table `{table_name}': "
                         "Table does not exist")
    verbose = False
    for flag in ("-v", "--verbose", "-n", "--numeric"):
        while flag in words:
            verbose |= flag in ("-v", "--verbose")
            words.remove(flag)
    if not words:
        raise ValueError("no command specified")
    command = _LONG_COMMANDS.get(words[0], words[0])
    if command not in _COMMANDS:
        raise ValueError(f"unknown command {words[0]!r} (one of {', '.join(_COMMANDS)})")
    rest = words[1:]
    if command == "-L":
        return listing(table, rest[0] if rest else None, verbose, version)
    if command == "-S":
        return rule_lines(table, rest[0] if rest else None, version)
    if command in ("-F", "-Z"):
        for name in rest[:1] or list(table.chains):
            chain = _chain(table, name)
            if command == "-F":
                table.flush(name)
            else:
                chain.packets = chain.bytes = 0
                for rule in chain.rules:
                    rule.packets = rule.bytes = 0
        return ""
    if not rest:
        raise ValueError(f"{command} needs a chain")
    chain_name, rest = rest[0], rest[1:]
    if command == "-N":
        table.new_chain(chain_name)
    elif command == "-X":
        table.delete_chain(chain_name)
    elif command == "-P":
        if len(rest) != 1 or rest[0] not in ("ACCEPT", "DROP"):
            raise ValueError("-P takes a chain and a policy, ACCEPT or DROP")
        table.set_policy(chain_name, _BUILTIN_TARGETS[rest[0]])
    elif command == "-A":
        table.append(chain_name, parse_rule(rest, version))
    elif command == "-I":
        position = 1
        if rest and rest[0].isdigit():
            position, rest = int(rest[0]), rest[1:]
        if not 1 <= position <= len(_chain(table, chain_name).rules) + 1:
            raise ValueError("index of insertion too big")
        table.insert(chain_name, position - 1, parse_rule(rest, version))
    else:   # -D
        rules = _chain(table, chain_name).rules
        if len(rest) == 1 and rest[0].isdigit():
            number = int(rest[0])
            if not 1 <= number <= len(rules):
                raise ValueError("index of deletion too big")
            table.delete(chain_name, rules[number - 1])
        else:
            wanted = _spec(parse_rule(rest, version))
            found = next((rule for rule in rules if _spec(rule) == wanted), None)
            if found is None:
                raise ValueError("Bad rule (does a matching rule exist in that chain?)")
            table.delete(chain_name, found)
    return ""


def parse_rule(words: list[str], version: int) -> Rule:
    """A rule from its specification (matches, then ``-j`` and the target's options)."""
    fields: dict[str, Any] = {}
    statistic: dict[str, str] = {}
    limit: dict[str, int] = {}
    target_words: list[str] = []
    inverted: set[str] = set()
    negate = False
    words = list(words)
    while words:
        option = words.pop(0)
        if option == "!":
            if negate:
                raise ValueError("multiple ! flags not allowed")
            negate = True
            continue
        if negate:
            if option not in _NEGATES:
                raise ValueError(f"{option} cannot be negated (!)")
            inverted.add(_NEGATES[option])
            negate = False
        if option in ("-j", "--jump"):
            target_words, words = words, []
            break
        if option in ("-m", "--match"):
            _take(words, option)        # a module's options follow; they are read by name below
            continue
        if option == "--syn":
            fields["tcp_flags"] = (TCP_FLAGS["SYN"] | TCP_FLAGS["ACK"] | TCP_FLAGS["RST"] | TCP_FLAGS["FIN"],
                                   TCP_FLAGS["SYN"])
            continue
        value = _take(words, option)
        if option in ("-p", "--protocol"):
            fields["protocol"] = PROTOCOLS[value] if value in PROTOCOLS else _number(value, "protocol", 255)
        elif option in ("-s", "--source", "-d", "--destination"):
            fields["source" if option in ("-s", "--source") else "destination"] = _subnet(value, version)
        elif option in ("-i", "--in-interface"):
            fields["in_interface"] = value
        elif option in ("-o", "--out-interface"):
            fields["out_interface"] = value
        elif option in ("--sport", "--source-port", "--dport", "--destination-port"):
            key = "source_ports" if option in ("--sport", "--source-port") else "destination_ports"
            fields[key] = _port_range(value, ":")
        elif option == "--tcp-flags":
            fields["tcp_flags"] = (_flags(value), _flags(_take(words, option)))
        elif option in ("--icmp-type", "--icmpv6-type"):
            names = ICMP_TYPES[version]
            fields["icmp_type"] = names[value] if value in names else _number(value, "ICMP type", 255)
        elif option in ("--state", "--ctstate"):
            try:
                fields["state"] = frozenset(State[name] for name in value.split(","))
            except KeyError:
                raise ValueError(f"bad state {value!r} (NEW, ESTABLISHED, RELATED, INVALID)") from None
            fields["state_match"] = "state" if option == "--state" else "conntrack"
        elif option in ("--src-range", "--dst-range"):
            first, _, last = value.partition("-")
            bounds = (_address(first, version), _address(last or first, version))
            if bounds[0] > bounds[1]:
                raise ValueError(f"bad range {value!r}")
            fields["source_range" if option == "--src-range" else "destination_range"] = bounds
        elif option == "--mark":
            mark, _, mask = value.partition("/")
            fields["mark"] = (int(mark, 0), int(mask, 0) if mask else 0xFFFFFFFF)
        elif option in ("--sports", "--source-ports", "--dports", "--destination-ports", "--ports"):
            which = MultiPort.SOURCE if option in ("--sports", "--source-ports") else MultiPort.DESTINATION \
                if option in ("--dports", "--destination-ports") else MultiPort.EITHER
            fields["multiport"] = (which, tuple(_port_range(part, ":") for part in value.split(",")))
        elif option in ("--mode", "--probability", "--every", "--packet"):
            statistic[option] = value
        elif option == "--comment":
            fields["comment"] = value
        elif option == "--length":
            fields["length"] = _port_range(value, ":")
        elif option == "--limit":
            limit["period"] = _period(value)
        elif option == "--limit-burst":
            limit["burst"] = _number(value, "--limit-burst", 10000)
        else:
            raise ValueError(f"unknown option {option!r}")
    if negate:
        raise ValueError("! negates nothing")
    if not target_words:
        raise ValueError("a rule needs a target (-j)")
    if inverted:
        fields["inverted"] = frozenset(inverted)
    if statistic:
        fields["statistic"] = _statistic(statistic)
    if limit:
        fields["limit"] = Limit(limit.get("period", _period("3/hour")), limit.get("burst", 5))     # (its defaults)
    fields["target"] = _target(target_words, version)
    return Rule(**fields)


# libxt_limit's units: the word a rate's unit may be any prefix of, the one it prints, their seconds.
_RATE_UNITS = (("day", "day", 24 * 60 * 60), ("hour", "hour", 60 * 60), ("minute", "min", 60), ("second", "sec", 1))


def _period(text: str) -> int:
    """``--limit``'s rate (``N/second``, ``/minute``, ``/hour``, ``/day``, any prefix of the unit) as xt_limit
    keeps it: the period between packets, in 1/10000 s."""
    count, _, unit = text.partition("/")
    seconds = 1
    if unit:
        seconds = next((each for word, _, each in _RATE_UNITS if word.startswith(unit.lower())), 0)
        if not seconds:
            raise ValueError(f"bad rate {text!r}")
    rate = _number(count, "rate", 0xFFFFFFFF)
    period = LIMIT_SCALE * seconds // rate if rate else 0
    if not period:
        raise ValueError(f"Rate too fast \"{text}\"")
    return period


def _rate(period: int) -> str:
    """A period back into the words libxt_limit prints it in (its print_rate: the unit that says it best)."""
    units = [(name, LIMIT_SCALE * seconds) for _, name, seconds in _RATE_UNITS]
    chosen = units[0]
    for unit in units[1:]:
        if period > unit[1] or unit[1] // period < unit[1] % period:
            break
        chosen = unit
    return f"{chosen[1] // period}/{chosen[0]}"


def _mark_value(text: str) -> tuple[int, int]:
    """``value[/mask]`` (the mask 0xffffffff if not given), each 32 bits."""
    value, _, mask = text.partition("/")
    try:
        numbers = int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF
    except ValueError:
        raise ValueError(f"bad mark {text!r}") from None
    if not all(0 <= number <= 0xFFFFFFFF for number in numbers):
        raise ValueError(f"bad mark {text!r}")
    return numbers


def _statistic(options: dict[str, str]) -> Statistic:
    """``-m statistic``'s options: ``--mode random --probability p`` or ``--mode nth --every n [--packet p]``."""
    mode = options.get("--mode")
    if mode == "random" and set(options) == {"--mode", "--probability"}:
        try:
            probability = float(options["--probability"])
        except ValueError:
            probability = -1.0
        if not 0 <= probability <= 1:
            raise ValueError("--probability must be between 0 and 1")
        return Statistic.random(probability)
    if mode == "nth" and "--every" in options and set(options) <= {"--mode", "--every", "--packet"}:
        every = _number(options["--every"], "--every", 0xFFFFFFFF)
        packet = _number(options.get("--packet", "0"), "--packet", 0xFFFFFFFF)
        if not every or packet >= every:
            raise ValueError("--packet can't be bigger than --every - 1")
        return Statistic(every=every, packet=packet)
    raise ValueError("statistic: --mode random --probability p, or --mode nth --every n [--packet p]")


def _target(words: list[str], version: int) -> Any:
    name, options = words[0], _options(words[1:])
    accepted = {"REJECT": {"--reject-with"}, "DNAT": {"--to-destination"}, "SNAT": {"--to-source"},
                "MASQUERADE": {"--to-ports"}, "REDIRECT": {"--to-ports"},
                "TPROXY": {"--on-port", "--on-ip", "--tproxy-mark"}, "LOG": {"--log-prefix", "--log-level"},
                "MARK": set(_MARK_OPTIONS)}
    unknown = set(options) - accepted.get(name, set())
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r} for target {name}")
    if name in _BUILTIN_TARGETS:
        return _BUILTIN_TARGETS[name]
    if name == "REJECT":
        kind = options.get("--reject-with", "icmp-port-unreachable" if version == 4 else "icmp6-port-unreachable")
        if kind not in REJECT_WITH:
            raise ValueError(f"unknown reject type {kind!r}")
        return Reject(REJECT_WITH[kind])
    if name in ("DNAT", "SNAT"):
        option = "--to-destination" if name == "DNAT" else "--to-source"
        if option not in options:
            raise ValueError(f"{name} needs {option}")
        address, ports = _address_and_ports(options[option], version)
        return DNAT(address, ports) if name == "DNAT" else SNAT(address, ports)
    if name in ("MASQUERADE", "REDIRECT"):
        ports = _port_range(options["--to-ports"], "-") if "--to-ports" in options else None
        return Masquerade(ports) if name == "MASQUERADE" else Redirect(ports)
    if name == "LOG":
        level = options.get("--log-level", "4")
        level = str(_SYSLOG_LEVELS.index(level)) if level in _SYSLOG_LEVELS else level
        return Log(options.get("--log-prefix", ""), _number(level, "log level", 7))
    if name == "TPROXY":
        if "--on-port" not in options:
            raise ValueError("TPROXY needs --on-port")
        address = _address(options["--on-ip"], version) if "--on-ip" in options else b""
        address = address if any(address) else b""       # the unspecified address: the arriving interface's
        mark = _mark_value(options["--tproxy-mark"]) if "--tproxy-mark" in options else (0, 0)
        return TProxy(_number(options["--on-port"], "port", 0xFFFF), address, Mark(*mark) if any(mark) else None)
    if name == "MARK":
        given = [option for option in options if option in _MARK_OPTIONS]
        if len(given) != 1:
            raise ValueError(f"MARK takes one of {', '.join(_MARK_OPTIONS)}")
        return Mark(*_MARK_OPTIONS[given[0]](*_mark_value(options[given[0]])))
    if options:
        raise ValueError(f"unknown option {next(iter(options))!r} for a jump to {name}")
    return Jump(name)


def listing(table: RuleTable, chain: str | None, verbose: bool, version: int) -> str:
    """``iptables -L -n`` (``-v``: with the counters), for one chain or all."""
    lines: list[str] = []
    for name in [chain] if chain else list(table.chains):
        each = _chain(table, name)
        if each.policy is not None:
            counters = f" {each.packets} packets, {each.bytes} bytes" if verbose else ""
            head = f"Chain {name} (policy {'ACCEPT' if each.policy is ACCEPT else 'DROP'}{counters})"
        else:
            head = f"Chain {name}"
        lines += [head] + [("%d %d " % (rule.packets, rule.bytes) if verbose else "") + describe(rule, version)
                           for rule in each.rules] + [""]
    return "\n".join(lines)


def rule_lines(table: RuleTable, chain: str | None, version: int) -> str:
    """``iptables -S``: the policies, the user chains, then every rule as the ``-A`` that makes it."""
    names = [chain] if chain else list(table.chains)
    chains = [(name, _chain(table, name)) for name in names]
    lines = [f"-P {name} {'ACCEPT' if each.policy is ACCEPT else 'DROP'}" for name, each in chains
             if each.policy is not None]
    lines += [f"-N {name}" for name, each in chains if each.policy is None]
    lines += [f"-A {name} {describe(rule, version)}" for name, each in chains for rule in each.rules]
    return "".join(line + "\n" for line in lines)


def describe(rule: Rule, version: int) -> str:
    """A rule in the words ``iptables -S`` prints it with (which read back to the same rule): addresses and
    interfaces, the protocol and its match's options, then the other matches in a fixed order — multiport,
    state, iprange, mark, comment, length, limit, statistic (the kernel lists them as they were written: the
    same words when written in this order) — then ``-j``."""
    words = []

    def negated(name: str) -> list[str]:       # a negated condition's words follow a "!"
        return ["!"] if name in rule.inverted else []
    for name, option, subnet in (("source", "-s", rule.source), ("destination", "-d", rule.destination)):
        if subnet is not None:
            words += [*negated(name), option, f"{ipaddress.ip_address(bytes(subnet.address))}/{subnet.prefix()}"]
    for name, option, interface in (("in_interface", "-i", rule.in_interface),
                                    ("out_interface", "-o", rule.out_interface)):
        if interface is not None:
            words += [*negated(name), option, interface]
    if rule.protocol is not None:
        words += [*negated("protocol"), "-p", _PROTOCOL_NAMES.get(rule.protocol, str(rule.protocol))]
        match: list[str] = []
        for name, option, ports in (("source_ports", "--sport", rule.source_ports),
                                    ("destination_ports", "--dport", rule.destination_ports)):
            if ports is not None:
                match += [*negated(name), option, _ports_words(ports, ":")]
        if rule.tcp_flags is not None:
            match += [*negated("tcp_flags"), "--tcp-flags", _flag_names(rule.tcp_flags[0]),
                      _flag_names(rule.tcp_flags[1])]
        if rule.icmp_type is not None:
            match += [*negated("icmp_type"), "--icmp-type" if version == 4 else "--icmpv6-type", str(rule.icmp_type)]
        if match:
            module = _PROTOCOL_NAMES[rule.protocol] if rule.protocol != ICMPV6_PROTOCOL_NUMBER else "icmp6"
            words += ["-m", module, *match]
    if rule.multiport is not None:
        which, ranges = rule.multiport
        words += ["-m", "multiport", *negated("multiport"), which.value,
                  ",".join(_ports_words(each, ":") for each in ranges)]
    if rule.state is not None:
        option = "--state" if rule.state_match == "state" else "--ctstate"
        words += ["-m", rule.state_match, *negated("state"), option,
                  ",".join(state.name for state in _STATE_ORDER if state in rule.state)]
    ranges = [(name, option, bounds) for name, option, bounds in (
        ("source_range", "--src-range", rule.source_range),
        ("destination_range", "--dst-range", rule.destination_range)) if bounds is not None]
    if ranges:
        words += ["-m", "iprange"]
        for name, option, (first, last) in ranges:
            words += [*negated(name), option, f"{ipaddress.ip_address(first)}-{ipaddress.ip_address(last)}"]
    if rule.mark is not None:
        value, mask = rule.mark
        words += ["-m", "mark", *negated("mark"), "--mark",
                  f"{value:#x}" if mask == 0xFFFFFFFF else f"{value:#x}/{mask:#x}"]
    if rule.comment is not None:
        words += ["-m", "comment", "--comment", _quoted(rule.comment)]
    if rule.length is not None:
        words += ["-m", "length", *negated("length"), "--length", _ports_words(rule.length, ":")]
    if rule.limit is not None:
        words += ["-m", "limit", "--limit", _rate(rule.limit.period)]
        if rule.limit.burst != 5:
            words += ["--limit-burst", str(rule.limit.burst)]
    statistic = rule.statistic
    if statistic is not None:
        words += ["-m", "statistic", "--mode", "nth", "--every", str(statistic.every), "--packet",
                  str(statistic.packet)] if statistic.every else \
            ["-m", "statistic", "--mode", "random", "--probability", f"{statistic.probability / (1 << 31):.11f}"]
    return " ".join(words + ["-j", *_target_words(rule.target, version)])


def _target_words(target: Any, version: int) -> list[str]:
    if isinstance(target, Jump):
        return [target.chain]
    if isinstance(target, Reject):
        return ["REJECT", "--reject-with", _REJECT_NAMES[version][target.with_]]
    if isinstance(target, (DNAT, SNAT)):
        address = str(ipaddress.ip_address(target.address)) if target.address else ""
        ports = _ports_words(target.ports, "-")
        if len(target.address) == 16 and ports:
            address = f"[{address}]"
        ports = f":{ports}" if ports else ""
        return ["DNAT" if isinstance(target, DNAT) else "SNAT",
                "--to-destination" if isinstance(target, DNAT) else "--to-source", address + ports]
    if isinstance(target, (Masquerade, Redirect)):
        ports = ["--to-ports", _ports_words(target.ports, "-")] if target.ports else []
        return ["MASQUERADE" if isinstance(target, Masquerade) else "REDIRECT", *ports]
    if isinstance(target, Log):
        prefix = ["--log-prefix", _quoted(target.prefix)] if target.prefix else []
        return ["LOG", *prefix, *(["--log-level", str(target.level)] if target.level != 4 else [])]
    if isinstance(target, TProxy):
        # (the unspecified address: the arriving interface's)
        on_ip = str(ipaddress.ip_address(target.address or bytes(4 if version == 4 else 16)))
        mark = target.mark or Mark(0, 0)
        return ["TPROXY", "--on-port", str(target.port), "--on-ip", on_ip, "--tproxy-mark",
                f"{mark.value:#x}/{mark.mask:#x}"]
    if isinstance(target, Mark):
        return ["MARK", "--set-xmark", f"{target.value:#x}/{target.mask:#x}"]
    return [{ACCEPT: "ACCEPT", DROP: "DROP", RETURN: "RETURN"}[target]]


def _quoted(text: str) -> str:
    """As iptables -S prints a string: in double quotes if it has a space."""
    return f'"{text}"' if " " in text else text


def _ports_words(ports: tuple[int, int] | None, separator: str) -> str:
    if ports is None:
        return ""
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}{separator}{ports[1]}"


def _spec(rule: Rule) -> tuple[Any, ...]:
    """What identifies a rule for ``-D``: its matches and target (not its counters)."""
    statistic = rule.statistic
    return (*((bytes(value.address), value.prefix()) if isinstance(value, Subnet) else value
              for value in (getattr(rule, name) for name in _RULE_FIELDS)),
            None if statistic is None else (statistic.every, statistic.packet, statistic.probability),
            None if rule.limit is None else (rule.limit.period, rule.limit.burst))


def _chain(table: RuleTable, name: str) -> Chain:
    chain = table.chains.get(name)
    if chain is None:
        raise ValueError(f"no chain/target/match by the name {name!r}")
    return chain


def _take(words: list[str], option: str) -> str:
    if not words:
        raise ValueError(f"option \"{option}\" requires an argument")
    return words.pop(0)


def _options(words: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    while words:
        option = words.pop(0)
        if not option.startswith("--"):
            raise ValueError(f"bad argument {option!r}")
        options[option] = _take(words, option)
    return options


def _number(text: str, what: str, most: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"bad {what} {text!r}") from None
    if not 0 <= value <= most:
        raise ValueError(f"bad {what} {text!r}")
    return value


def _port_range(text: str, separator: str) -> tuple[int, int]:
    first, _, last = text.partition(separator)
    low = _number(first, "port", 0xFFFF)
    high = _number(last, "port", 0xFFFF) if last else low
    if low > high:
        raise ValueError(f"bad port range {text!r}")
    return low, high


def _flags(text: str) -> int:
    value = 0
    for name in text.split(","):
        if name not in TCP_FLAGS:
            raise ValueError(f"unknown TCP flag {name!r}")
        value |= TCP_FLAGS[name]
    return value


def _flag_names(value: int) -> str:
    if value == 0xFF:
        return "ALL"
    return ",".join(name for name, bit in TCP_FLAGS.items() if bit and name != "ALL" and value & bit) or "NONE"


def _address(text: str, version: int) -> bytes:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"host/network {text!r} not found") from None
    if address.version != version:
        raise ValueError(f"{text} is not an IPv{version} address")
    return address.packed


def _subnet(text: str, version: int) -> Subnet:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"host/network {text!r} not found") from None
    if network.version != version:
        raise ValueError(f"{text} is not an IPv{version} address")
    return Subnet(network.network_address.packed, network.netmask.packed)


def _address_and_ports(text: str, version: int) -> tuple[bytes, tuple[int, int] | None]:
    """``address[:port[-port]]``, IPv6's in brackets when a port follows (``[2001:db8::1]:80``)."""
    if version == 6 and text.startswith("["):
        address, _, rest = text[1:].partition("]")
        ports = rest[1:] if rest.startswith(":") else ""
    elif version == 4 and ":" in text:
        address, _, ports = text.partition(":")
    else:
        address, ports = text, ""
    return (_address(address, version) if address else b""), (_port_range(ports, "-") if ports else None)
