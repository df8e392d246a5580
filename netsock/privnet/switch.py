"""An Ethernet switch for in-process networks: ports are Ethernet channel links, one per host NIC.

Frames a port's NIC writes are switched from the gevent hub's callback queue, never inside the
sender's call (each stack then sees frames as a device would deliver them). The switch learns
source MACs; a frame to a known unicast MAC goes to that port, any other (broadcast, multicast,
unknown) to every other port. Between any two ports, each direction may carry faults: a
``FaultPipe`` (loss, delay, reordering, rate limit, corruption, blackhole ...) created the first
time that direction is configured; a direction without one forwards synchronously.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gevent

from ..header import ethernet as eth
from ..link.channel import ChannelEndpoint, PacketInfo
from ..link.fault import FaultConfig, FaultDirectionStats, FaultPipe
from ..stack import PacketBuffer
from ..stack.clock import TimerQueue

__all__ = ["Port", "Switch"]


class Port:
    """A switch port and the link its host's NIC is attached to."""

    __slots__ = ("switch", "name", "link", "mac")

    def __init__(self, switch: Switch, name: str, mac: bytes, mtu: int) -> None:
        self.switch = switch
        self.name = name
        self.mac = mac
        self.link = ChannelEndpoint(size=1 << 16, mtu=mtu, link_address=mac, ethernet=True)
        self.link.on_outbound = switch._on_outbound


class Switch:
    """A learning Ethernet switch with per-direction faults between its ports.

    ``capture`` receives every frame as it enters the switch.
    """

    def __init__(self, name: str, timers: TimerQueue, seed: int, mtu: int = 1500,
                 capture: Callable[[bytes], None] | None = None) -> None:
        self.name = name
        self.mtu = mtu
        self.ports: list[Port] = []
        self._timers = timers
        self._seed = seed
        self._capture = capture
        self._by_mac: dict[bytes, Port] = {}
        self._pipes: dict[tuple[Port, Port], FaultPipe] = {}
        self._scheduled = False
        self._loop = gevent.get_hub().loop

    def add_port(self, name: str, mac: bytes) -> Port:
        port = Port(self, name, mac, self.mtu)
        self.ports.append(port)
        return port

    # --- faults -------------------------------------------------------------------------------------

    def configure(self, source: Port, destination: Port, **changes: Any) -> FaultConfig:
        """Change the faults from ``source`` to ``destination`` (FaultConfig fields); returns the new config."""
        pipe = self._pipes.get((source, destination))
        if pipe is None:
            config = dataclasses.replace(FaultConfig(), **changes)
            pipe = FaultPipe(f"{self.name}/{source.name}->{destination.name}", self._seed, config,
                             self._timers.clock, self._timers, FaultDirectionStats(),
                             lambda packet, port=destination: self._deliver(port, packet))
            self._pipes[(source, destination)] = pipe
        else:
            pipe.set_config(dataclasses.replace(pipe.config, **changes))
        return pipe.config

    def config(self, source: Port, destination: Port) -> FaultConfig:
        pipe = self._pipes.get((source, destination))
        return pipe.config if pipe is not None else FaultConfig()

    def pipe_stats(self) -> dict[str, dict[str, int]]:
        """Each configured direction's counters, as "source->destination"."""
        return {f"{s.name}->{d.name}": pipe.stats.as_dict() for (s, d), pipe in self._pipes.items()}

    # --- switching -----------------------------------------------------------------------------------

    def _on_outbound(self, _packet: PacketInfo) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._switch)

    def _switch(self) -> None:
        self._scheduled = False
        for port in self.ports:
            for packet in port.link.drain():
                self._ingress(port, packet.data)

    def _ingress(self, source: Port, frame: bytes) -> None:
        if self._capture is not None:
            self._capture(frame)
        header = eth.parse(frame)
        if not header:
            return
        if not eth.is_multicast(header.src):
            self._by_mac[header.src] = source
        target = self._by_mac.get(header.dst) if not eth.is_multicast(header.dst) else None
        destinations = [target] if target is not None else [p for p in self.ports if p is not source]
        for destination in destinations:
            if destination is source:
                continue
            pipe = self._pipes.get((source, destination))
            if pipe is None or not pipe.active:
                destination.link.inject(header.ethertype, frame)
            else:
                pipe.stats.packets.increment()
                pipe.stats.bytes.increment(len(frame) - eth.HEADER_SIZE)
                pipe.offer((frame[:eth.HEADER_SIZE], header.ethertype, PacketBuffer.inbound(frame[eth.HEADER_SIZE:])))

    def _deliver(self, destination: Port, packet: tuple[bytes, int, PacketBuffer]) -> None:
        link_header, ethertype, pkt = packet
        destination.link.inject(ethertype, link_header + b"".join(pkt.views()))
