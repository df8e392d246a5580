"""A resolved route: everything needed to send to one remote address (netstack's stack.Route).

``Stack.find_route`` builds one from the route table; transports cache it on connected endpoints so
the per-packet path does no table lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..tcpip import address_str
from .packet_buffer import PacketBuffer

if TYPE_CHECKING:
    from .nic import NIC
    from .registration import NetworkEndpoint
    from .stack import Stack


class PathMTUCache:
    """Path MTUs learned from ICMP "fragmentation needed" / "packet too big" (RFC 1191, RFC 8201).

    Entries age out after ``lifetime`` (RFC 8201 §5.3: try a larger MTU again after 10 minutes), and
    the table is bounded, so forged ICMP cannot grow it without limit.
    """

    def __init__(self, now: Callable[[], float], lifetime: float = 600.0, max_entries: int = 4096,
                 minimum: int = 552) -> None:
        self._now = now
        self._lifetime = lifetime
        self._max = max_entries
        self._minimum = minimum          # Linux's min_pmtu: no forged ICMP makes us send tiny packets
        self._entries: dict[bytes, tuple[int, float]] = {}

    def update(self, destination: bytes, mtu: int) -> None:
        if len(destination) == 16:
            mtu = max(mtu, 1280)
        mtu = max(mtu, self._minimum if len(destination) == 4 else 1280)
        current = self.get(destination)
        if current and current <= mtu:
            return
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries[bytes(destination)] = (mtu, self._now() + self._lifetime)

    def get(self, destination: bytes) -> int:
        """The learned MTU towards ``destination``, 0 if none."""
        if not self._entries:
            return 0
        entry = self._entries.get(destination)
        if entry is None:
            return 0
        if entry[1] <= self._now():
            del self._entries[destination]
            return 0
        return entry[0]

    def __len__(self) -> int:
        return len(self._entries)


class Route:
    __slots__ = ("local_address", "remote_address", "next_hop", "nic", "net_proto", "network_endpoint",
                 "loop", "broadcast", "multicast", "_mtu")

    def __init__(self, local_address: bytes, remote_address: bytes, next_hop: bytes, nic: NIC, net_proto: int,
                 loop: bool = False, broadcast: bool = False, multicast: bool = False, mtu: int = 0) -> None:
        self.local_address = local_address
        self.remote_address = remote_address
        self.next_hop = next_hop            # gateway, or the remote address itself when on-link
        self.nic = nic
        self.net_proto = net_proto
        self.network_endpoint: NetworkEndpoint = nic.network_endpoints[net_proto]
        self.loop = loop                    # destination is this stack: deliver without the link
        self.broadcast = broadcast
        self.multicast = multicast
        self._mtu = mtu                     # route-table MTU; 0 means the NIC's

    @property
    def stack(self) -> Stack:
        return self.nic.stack

    def mtu(self, learned: bool = True) -> int:
        """Largest network-layer packet on this path: link, route table and (``learned``) what ICMP
        taught us."""
        mtu = self.network_endpoint.mtu()
        if self._mtu and self._mtu < mtu:
            mtu = self._mtu
        path = self.nic.stack.path_mtu.get(self.remote_address) if learned else None
        return path if path and path < mtu else mtu

    def path_mtu(self) -> int:
        """The path MTU as IP_MTU / IPV6_MTU report it: ``mtu()``, an IPv4 path's at most 65535 (the
        largest total length; Linux's IP_MAX_MTU)."""
        mtu = self.mtu()
        return min(mtu, 0xFFFF) if len(self.remote_address) == 4 else mtu

    def max_header_length(self) -> int:
        """Room a transport must reserve in front of its header for the layers below."""
        return self.network_endpoint.max_header_length()

    def write_packet(self, transport: int, pkt: PacketBuffer, ttl: int, tos: int, dont_fragment: bool = True,
                     path_mtu: bool = True) -> None:
        """Prepend the network header and send (raises a tcpip Error if the packet cannot go).

        ``dont_fragment``: an IPv4 packet that fits the path goes with DF set, as Linux sends a
        socket's (IP_PMTUDISC_WANT, for path MTU discovery, RFC 1191); the stack's own ICMP
        replies and errors go without, as Linux's. ``path_mtu``: fragment to the path's MTU as learned
        (else to the link's: IP_PMTUDISC_PROBE and the like)."""
        self.network_endpoint.write_packet(self, transport, pkt, ttl, tos, dont_fragment, path_mtu)

    def default_ttl(self) -> int:
        return self.network_endpoint.default_ttl()

    def __repr__(self) -> str:
        return (f"<Route {address_str(self.local_address)} -> {address_str(self.remote_address)}"
                f" via {address_str(self.next_hop)} nic {self.nic.id}{' loop' if self.loop else ''}>")
