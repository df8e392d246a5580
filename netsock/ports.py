"""Port reservations (netstack's ports package): who may bind which port, and ephemeral port choice.

A reservation is (network protocols, transport, address, port, flags, device, destination). Two
reservations of one transport port collide when their network protocols, addresses and devices
overlap, unless their flags allow sharing:

- SO_REUSEPORT on both: a load-balancing group (the demultiplexer spreads packets across it);
- SO_REUSEADDR on both: shared, as Linux allows for datagram sockets (TCP refuses a second
  listener itself, since only it knows which endpoint listens);
- both are connected to different destinations (a 4-tuple each), as an ephemeral port shared by
  outgoing connections to different peers.

Ephemeral ports are chosen by RFC 6056: a random offset per bind (Algorithm 1), or a keyed hash of
the connection's addresses for connect (Algorithm 3), probing linearly from there.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Callable

from .tcpip import ErrNoPortAvailable, ErrPortInUse, FullAddress

# Linux's default net.ipv4.ip_local_port_range.
EPHEMERAL_FIRST = 32768
EPHEMERAL_LAST = 60999


@dataclass(frozen=True)
class PortFlags:
    reuse_addr: bool = False
    reuse_port: bool = False


NO_FLAGS = PortFlags()


@dataclass(frozen=True)
class Reservation:
    networks: frozenset[int]
    transport: int
    addr: bytes
    port: int
    flags: PortFlags
    device: int
    dest: FullAddress | None

    def collides_with(self, other: Reservation) -> bool:
        if not self.networks & other.networks:
            return False
        if self.addr and other.addr and self.addr != other.addr:
            return False
        if self.device and other.device and self.device != other.device:
            return False
        if self.flags.reuse_port and other.flags.reuse_port:
            return False
        if self.flags.reuse_addr and other.flags.reuse_addr:
            return False
        if self.dest is not None and other.dest is not None and self.dest != other.dest:
            return False
        return True


class PortManager:
    """All port reservations of one stack."""

    def __init__(self, first: int = EPHEMERAL_FIRST, last: int = EPHEMERAL_LAST) -> None:
        self._reservations: dict[tuple[int, int], list[Reservation]] = {}
        self._secret = secrets.token_bytes(16)
        self._next_ephemeral = secrets.randbelow(1 << 16)
        self.set_port_range(first, last)

    def set_port_range(self, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"invalid ephemeral port range {first}-{last}")
        self.first, self.last = first, last

    def reserve(self, networks: tuple[int, ...] | frozenset[int], transport: int, addr: bytes, port: int,
                flags: PortFlags = NO_FLAGS, device: int = 0, dest: FullAddress | None = None,
                local_range: int = 0) -> int:
        """Reserve ``port`` (0: pick an ephemeral one, within the socket's ``local_range`` if it has one)
        and return it.

        Raises ErrPortInUse when the requested port collides, ErrNoPortAvailable when no ephemeral
        port is free.
        """
        nets = frozenset(networks)

        def make(p: int) -> Reservation:
            return Reservation(nets, transport, bytes(addr), p, flags, device, dest)

        if port:
            res = make(port)
            if not self._available(res):
                raise ErrPortInUse()
            self._add(res)
            return port

        offset = self.connect_offset(addr, dest) if dest is not None else secrets.randbelow(1 << 31)

        def try_port(p: int) -> bool:
            res = make(p)
            if self._available(res):
                self._add(res)
                return True
            return False

        return self.pick_ephemeral_port(try_port, offset, local_range)

    def release(self, networks: tuple[int, ...] | frozenset[int], transport: int, addr: bytes, port: int,
                flags: PortFlags = NO_FLAGS, device: int = 0, dest: FullAddress | None = None) -> None:
        """Drop exactly the reservation ``reserve`` made with these arguments."""
        key = (transport, port)
        group = self._reservations.get(key)
        if not group:
            return
        res = Reservation(frozenset(networks), transport, bytes(addr), port, flags, device, dest)
        try:
            group.remove(res)
        except ValueError:
            return
        if not group:
            del self._reservations[key]

    def is_reserved(self, transport: int, port: int) -> bool:
        return (transport, port) in self._reservations

    def pick_ephemeral_port(self, try_port: Callable[[int], bool], offset: int, local_range: int = 0) -> int:
        """Probe the ephemeral range from ``offset`` until ``try_port`` accepts a port."""
        first, last = self.ephemeral_range(local_range)
        count = last - first + 1
        for i in range(count):
            port = first + (offset + i) % count
            if try_port(port):
                return port
        raise ErrNoPortAvailable()

    def ephemeral_range(self, local_range: int = 0) -> tuple[int, int]:
        """The stack's range, narrowed by a socket's IP_LOCAL_PORT_RANGE (low port in the low 16 bits, high
        in the high; 0: no bound) at whichever ends lie inside it, as Linux's inet_sk_get_local_port_range."""
        first, last = self.first, self.last
        low, high = local_range & 0xFFFF, local_range >> 16
        if first <= low <= last:
            first = low
        if first <= high <= last:
            last = high
        return first, last

    def connect_offset(self, local: bytes, dest: FullAddress) -> int:
        """RFC 6056 Algorithm 3: a secret-keyed hash of the connection's addresses plus a counter, so
        ports to one peer are spread out and unpredictable to anyone else."""
        digest = hashlib.blake2s(bytes(local) + bytes(dest.addr) + dest.port.to_bytes(2, "big"),
                                 key=self._secret, digest_size=4).digest()
        self._next_ephemeral += 1
        return int.from_bytes(digest, "big") + self._next_ephemeral

    def _available(self, res: Reservation) -> bool:
        return not any(res.collides_with(other) for other in self._reservations.get((res.transport, res.port), ()))

    def _add(self, res: Reservation) -> None:
        self._reservations.setdefault((res.transport, res.port), []).append(res)

    def __len__(self) -> int:
        return sum(len(g) for g in self._reservations.values())
