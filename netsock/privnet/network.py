"""``Network``: hosts, switches, routers and faults, all inside this process.

Every host is a netsock stack of its own (loopback, plus one Ethernet NIC per switch it joins, with ARP or NDP:
a switch carries an IPv4 or an IPv6 subnet); switches are learning Ethernet switches (see ``switch``); a router
is a host that forwards between its switches, and the other hosts get routes through it to the subnets behind
it. Nothing else is routable: a destination outside the network's subnets has no route (ENETUNREACH), and names
resolve from the network's own hosts table, so code running here cannot reach the machine's real network.
Sockets belong to a host when they are made in ``with host:`` or in ``host.spawn``'s greenlets (and the
greenlets those spawn).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import gevent

from ..adapter.runtime import StackConfig, build_stack, use_stack
from ..header.ethernet import HEADER_SIZE as ETHERNET_HEADER_SIZE
from ..header.gso import segment
from ..link.pcap import PcapWriter
from ..resolver import Resolver
from ..samples.common import all_counters
from ..scheduler import GeventClock
from ..stack import Stack
from ..stack import iptables_syntax
from ..stack.clock import TimerQueue
from ..tcpip import IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, AddressWithPrefix, Route
from .switch import Port, Switch, TapPort

__all__ = ["Host", "Network"]

_LINKTYPE_ETHERNET = 1
_FIRST_NIC_ID = 2                  # 1 is the loopback
# FaultConfig fields by the names the public API uses.
_FAULT_NAMES = {"loss": "loss", "latency": "delay", "delay": "delay", "jitter": "jitter", "duplicate": "duplicate",
                "reorder": "reorder", "reorder_hold": "reorder_hold", "corrupt": "corrupt", "bandwidth": "rate",
                "rate": "rate", "queue": "queue_limit", "queue_limit": "queue_limit", "burst": "burst",
                "blackhole": "blackhole"}


class Host:
    """One host of a ``Network``: a netsock stack with a name and addresses.

    ``with host:`` makes it the current stack for the block (and the greenlets spawned in it);
    ``spawn`` runs a function on it in a new greenlet.
    """

    def __init__(self, network: Network, name: str, router: bool = False) -> None:
        self.network = network
        self.name = name
        self.router = router
        self.stack: Stack = build_stack(StackConfig())
        # Addresses come from the network, unique by construction: no IPv6 autoconfiguration chatter
        # (randomly timed) on the switches, so that a seed reproduces a workload's traffic frame for
        # frame, and no duplicate address detection holding a new host's address back for a second.
        ipv6 = self.stack.network_protocols[IPV6_PROTOCOL_NUMBER]
        ipv6.autoconfigure = False  # type: ignore[attr-defined]
        ipv6.dad_transmits = 0      # type: ignore[attr-defined]
        self.stack.unreachable_note = f"{name} is a host of a netsock private network: no route outside it"
        # Names come from the network alone: not /etc/hosts, no DNS server outside.
        self.resolver = Resolver(self.stack, hosts_file=None)
        self.stack.extensions["resolver"] = self.resolver
        self._known_names: set[tuple[str, str]] = set()
        self.ports: dict[Switch, Port] = {}
        self.addresses: dict[Switch, str] = {}
        self._contexts: list[ExitStack] = []
        if router:
            for protocol in (IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER):
                self.stack.set_forwarding(protocol, True)

    @property
    def address(self) -> str:
        """The host's first address."""
        return next(iter(self.addresses.values()))

    def __repr__(self) -> str:
        return f"<Host {self.name} {', '.join(self.addresses.values())}>"

    def __enter__(self) -> Host:
        context = ExitStack()
        context.enter_context(use_stack(self.stack))
        self._contexts.append(context)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._contexts.pop().close()

    def iptables(self, line: str) -> str:
        """Run an iptables command line on this host's tables, e.g. ``"-t nat -A POSTROUTING -o wan -j
        MASQUERADE"`` (see ``netsock.stack.iptables_syntax``); returns what it prints (``-L``)."""
        return iptables_syntax.command(self.stack.iptables, line, 4)

    def ip6tables(self, line: str) -> str:
        """``iptables`` for the IPv6 tables."""
        return iptables_syntax.command(self.stack.iptables, line, 6)

    def iptables_restore(self, rules: str, version: int = 4, flush: bool = True) -> None:
        """Load a whole rule set, as ``iptables-restore`` (``version`` 6: ``ip6tables-restore``) reads it from
        ``iptables-save`` — a real firewall's, say, to test against."""
        iptables_syntax.restore(self.stack.iptables, rules, version, flush)

    def iptables_save(self, version: int = 4) -> str:
        """This host's rules as ``iptables-save`` (``ip6tables-save``) writes them."""
        return iptables_syntax.save(self.stack.iptables, version)

    def spawn(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> gevent.Greenlet:
        """Run ``function(*args, **kwargs)`` on this host in a new greenlet (killed with the network)."""
        def run() -> Any:
            with use_stack(self.stack):
                return function(*args, **kwargs)
        greenlet = gevent.spawn(run)
        self.network._greenlets.append(greenlet)
        return greenlet

    def counters(self) -> dict[str, Any]:
        return all_counters(self.stack)


class Network:
    """A private network; see the module docstring. ``seed`` makes every fault decision reproducible.

    ``capture_bytes`` bounds what is kept for ``pcap``, as tcpdump's ring buffer does: the most recent
    frames that fit (a TCP super-segment that crossed a switch whole counts its bytes); 0 keeps none.
    Bytes, not frames: the capture holds the very frames that crossed, and a bound in frames let a
    gigabyte transfer keep a gigabyte, which halved in-process throughput in page faults alone.
    """

    def __init__(self, seed: int = 0, capture_bytes: int = 64 << 20) -> None:
        self.seed = seed
        self.hosts: dict[str, Host] = {}
        self.switches: dict[str, Switch] = {}
        self._subnets: dict[Switch, ipaddress.IPv4Network | ipaddress.IPv6Network] = {}
        self._timers = TimerQueue(GeventClock())
        self._capture: deque[tuple[int, bytes, int]] = deque()
        self._captured_bytes = 0
        self._capture_limit = capture_bytes
        self._greenlets: list[gevent.Greenlet] = []
        self._macs = 0
        self._bridged: dict[Switch, str] = {}                   # the kernel's address on a bridged switch
        self._kernel_names: list[tuple[str, str]] = []

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- building -------------------------------------------------------------------------------------

    def switch(self, name: str, subnet: str, mtu: int = 1500) -> Switch:
        """An Ethernet segment carrying ``subnet``, IPv4 or IPv6 ("192.0.2.0/24", "2001:db8:1::/64")."""
        if name in self.switches:
            raise ValueError(f"there is a switch named {name!r} already")
        network = ipaddress.ip_network(subnet)
        for other in self._subnets.values():
            if network.overlaps(other):
                raise ValueError(f"{subnet} overlaps {other}")
        switch = Switch(name, self._timers, self.seed, mtu, self._record if self._capture_limit else None)
        self.switches[name] = switch
        self._subnets[switch] = network
        return switch

    def host(self, name: str, *switches: Switch, address: str | None = None) -> Host:
        """A host on ``switches``: the next free address of each, or ``address`` on the first."""
        return self._add_host(Host(self, name), switches, address)

    def router(self, name: str, *switches: Switch, address: str | None = None) -> Host:
        """A host that forwards between ``switches``; the others route through it."""
        if len(switches) < 2:
            raise ValueError("a router joins two switches or more")
        return self._add_host(Host(self, name, router=True), switches, address)

    def _add_host(self, host: Host, switches: tuple[Switch, ...], address: str | None) -> Host:
        if host.name in self.hosts:
            raise ValueError(f"there is a host named {host.name!r} already")
        if not switches:
            raise ValueError("a host joins one switch or more")
        for index, switch in enumerate(switches):
            self._attach(host, switch, address if index == 0 else None)
        self.hosts[host.name] = host
        self._update_names()
        self._update_routes()
        return host

    def _attach(self, host: Host, switch: Switch, address: str | None) -> None:
        subnet = self._subnets[switch]
        if address is None:
            address = self._free_address(switch)
        elif ipaddress.ip_address(address) not in subnet or address in self._used(switch):
            raise ValueError(f"{address} is not a free address of {subnet}")
        self._macs += 1
        mac = b"\x02\x00" + self._macs.to_bytes(4, "big")
        port = switch.add_port(host.name, mac)
        nic_id = _FIRST_NIC_ID + len(host.ports)
        host.stack.create_nic(nic_id, port.link, name=switch.name)
        protocol = IPV4_PROTOCOL_NUMBER if subnet.version == 4 else IPV6_PROTOCOL_NUMBER
        host.stack.add_address(nic_id, protocol, AddressWithPrefix.parse(f"{address}/{subnet.prefixlen}"))
        host.ports[switch] = port
        host.addresses[switch] = address

    def _used(self, switch: Switch) -> set[str]:
        used = {h.addresses[switch] for h in self.hosts.values() if switch in h.addresses}
        if switch in self._bridged:
            used.add(self._bridged[switch])
        return used

    def _free_address(self, switch: Switch) -> str:
        used = self._used(switch)
        for candidate in self._subnets[switch].hosts():
            if str(candidate) not in used:
                return str(candidate)
        raise ValueError(f"{switch.name} ({self._subnets[switch]}) has no free address left")

    def _update_names(self) -> None:
        names = [(other.name, address) for other in self.hosts.values() for address in other.addresses.values()]
        names += self._kernel_names
        for host in self.hosts.values():
            for entry in names:
                if entry not in host._known_names:
                    host._known_names.add(entry)
                    host.resolver.add_host(*entry)

    def _update_routes(self) -> None:
        """Each host: its own subnets on-link, every other subnet through the first router on the
        way (breadth-first over switches and routers); nothing else."""
        for host in self.hosts.values():
            routes = [r for r in host.stack.get_route_table() if r.nic == 1]      # the loopback's
            via: dict[Switch, str | None] = {}
            frontier = deque()
            for switch, port in host.ports.items():
                via[switch] = None
                frontier.append((switch, None))
            while frontier:
                switch, gateway = frontier.popleft()
                for router in self.hosts.values():
                    if not router.router or router is host or switch not in router.ports:
                        continue
                    for beyond in router.ports:
                        if beyond not in via:
                            via[beyond] = gateway if gateway is not None else router.addresses[switch]
                            frontier.append((beyond, via[beyond]))
            nic_of = {switch: _FIRST_NIC_ID + index for index, switch in enumerate(host.ports)}
            for switch, gateway in via.items():
                subnet = str(self._subnets[switch])
                if gateway is None:
                    routes.append(Route.parse(subnet, nic_of[switch]))
                else:
                    first_hop = next(s for s in host.ports if ipaddress.ip_address(gateway) in self._subnets[s])
                    routes.append(Route.parse(subnet, nic_of[first_hop], gateway))
            host.stack.set_route_table(routes)

    def bridge(self, switch: Switch, device: str, kernel_address: str | None = None,
               name: str | None = None) -> TapPort:
        """Put the kernel on ``switch`` through TAP device ``device`` (created if absent, in the calling
        thread's network namespace, and removed by ``close``): the kernel's side gets ``kernel_address``
        (default: the next free one) and, with ``name``, the hosts resolve it by that name. Root only."""
        from ..link import tun

        subnet = self._subnets[switch]
        address = kernel_address or self._free_address(switch)
        if ipaddress.ip_address(address) not in subnet or address in self._used(switch):
            raise ValueError(f"{address} is not a free address of {subnet}")
        fd = tun.create_device(device, tap=True, persist=False)
        os.set_blocking(fd, False)
        tun.configure_host_side(device, [f"{address}/{subnet.prefixlen}"], mtu=switch.mtu)
        port = switch.add_tap(device, fd)
        self._bridged[switch] = address
        if name is not None:
            self._kernel_names.append((name, address))
            self._update_names()
        return port

    # --- faults ---------------------------------------------------------------------------------------

    def _ports_between(self, source: Host | str, destination: Host | str) -> list[tuple[Switch, Port, Port]]:
        a, b = self._host(source), self._host(destination)
        shared = [(switch, a.ports[switch], b.ports[switch]) for switch in a.ports if switch in b.ports]
        if not shared:
            raise ValueError(f"{a.name} and {b.name} share no switch: set faults on each hop (host, router)")
        return shared

    def _host(self, host: Host | str) -> Host:
        return host if isinstance(host, Host) else self.hosts[host]

    def faults(self, source: Host | str, destination: Host | str, *, both: bool = False, **faults: Any) -> None:
        """Faults on the direction ``source`` -> ``destination`` (and back, with ``both``), changed at once:
        loss, burst (a GilbertElliott), latency and jitter (seconds), duplicate, reorder, corrupt
        (probabilities), bandwidth (bits/s) with queue (bytes), blackhole, and reset (every TCP segment
        answered with a reset, as a middlebox killing connections does). Unnamed faults keep their
        current setting; 0 or False turns one off."""
        reset = faults.pop("reset", None)
        unknown = set(faults) - set(_FAULT_NAMES)
        if unknown:
            raise TypeError(f"unknown faults: {', '.join(sorted(unknown))} (known: {', '.join(_FAULT_NAMES)}, reset)")
        changes = {_FAULT_NAMES[name]: value for name, value in faults.items()}
        directions = [(source, destination), (destination, source)] if both else [(source, destination)]
        for a, b in directions:
            for switch, port_a, port_b in self._ports_between(a, b):
                if changes:
                    switch.configure(port_a, port_b, **changes)
                if reset is not None:
                    switch.set_reset(port_a, port_b, bool(reset))

    def partition(self, a: Host | str, b: Host | str) -> None:
        """Cut ``a`` and ``b`` apart, both ways: every packet between them is dropped."""
        self.faults(a, b, both=True, blackhole=True)

    def heal(self, a: Host | str, b: Host | str) -> None:
        """Undo ``partition``: the other faults stay."""
        self.faults(a, b, both=True, blackhole=False)

    # --- observing ----------------------------------------------------------------------------------

    def _record(self, frame: bytes, gso_size: int) -> None:
        capture = self._capture
        capture.append((time.time_ns(), frame, gso_size))
        kept = self._captured_bytes + len(frame)
        while kept > self._capture_limit and capture:
            kept -= len(capture.popleft()[1])
        self._captured_bytes = kept

    def pcap(self, path: str | os.PathLike[str]) -> str:
        """Write every switch's frames (as they entered the switch, in time order) to ``path``; a
        super-segment that crossed whole is written as the wire frames it stands for."""
        with PcapWriter(path, _LINKTYPE_ETHERNET) as writer:
            for timestamp, frame, gso_size in self._capture:
                for piece in segment(frame, gso_size, ETHERNET_HEADER_SIZE) if gso_size else (frame,):
                    writer.write(piece, timestamp_ns=timestamp)
        return os.fspath(path)

    def counters(self) -> dict[str, Any]:
        """Per host, its stack's counters; per switch, each port's link counters and each faulty
        direction's (packets, bytes, drops by cause) — plain data."""
        return {
            "hosts": {name: host.counters() for name, host in self.hosts.items()},
            "switches": {name: {"ports": {p.name: p.stats.as_dict() for p in switch.ports},
                                "faults": switch.pipe_stats()}
                         for name, switch in self.switches.items()},
        }

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def close(self) -> None:
        """Kill the greenlets ``spawn`` started and close every host's stack."""
        gevent.killall([g for g in self._greenlets if not g.dead], timeout=5)
        self._greenlets.clear()
        for host in self.hosts.values():
            links = [nic.link for nic in host.stack.nics.values()]
            host.stack.close()
            for link in links:
                link.close()
        for switch in self.switches.values():
            for port in switch.ports:
                if isinstance(port, TapPort):
                    port.close()        # the device was not persistent: it goes with its descriptor
        self._timers.close()            # the fault pipes' (delays): nothing armed outlives the network
