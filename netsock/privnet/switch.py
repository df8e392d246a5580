"""An Ethernet switch for in-process networks: ports are Ethernet channel links, one per host NIC.

Frames a port's NIC writes enter the switch as they are written (learned, captured, faults decided
then, as on a wire) and are delivered from the gevent hub's callback queue, never inside the
sender's call, each port's share of a turn in one batch (each stack then sees frames as a device
would deliver them, and coalesces each flow's consecutive TCP segments: ``link.gro``). A host's TCP
hands its port 64 KB super-segments; they cross the switch whole, as Linux's bridge and veth pass
GSO packets (and are captured whole, as tcpdump sees them there), unless something on their way
needs the frames (a fault, a reset, a TAP device): then the switch cuts them at the port. The switch learns
source MACs; a frame to a known unicast MAC goes to that port, any other (broadcast, multicast,
unknown) to every other port. Between any two ports, each direction may carry faults: a
``FaultPipe`` (loss, delay, reordering, rate limit, corruption, blackhole ...) created the first
time that direction is configured; a direction without one forwards synchronously.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, Union

import gevent

from ..header import ethernet as eth
from ..header import ipv4, ipv6, tcp
from ..header.gso import segment
from ..link import LinkStats
from ..link.channel import ChannelEndpoint
from ..link.fault import FaultConfig, FaultDirectionStats, FaultPipe
from ..link.gro import coalesce_batch, mark_udp_flows
from ..stack import PacketBuffer
from ..stack.clock import TimerQueue

__all__ = ["Port", "Switch", "TapPort"]

# What crosses the switch: an Ethernet frame, or a TCP super-segment passed whole, as (frame, gso_size).
Frame = Union[bytes, tuple[bytes, int]]


class Port:
    """A switch port and the link its host's NIC is attached to."""

    __slots__ = ("switch", "name", "link", "mac")

    def __init__(self, switch: Switch, name: str, mac: bytes, mtu: int) -> None:
        self.switch = switch
        self.name = name
        self.mac = mac
        # GSO: the host's TCP hands over 64 KB super-segments whole (the switch cuts them where
        # frames are needed); GRO coalesces the frames that arrive (as Linux does on both sides of a wire).
        self.link = ChannelEndpoint(size=1 << 16, mtu=mtu, link_address=mac, ethernet=True, gso=True,
                                    cut_super_segments=False)
        self.link.on_outbound = lambda _packet: switch._sent(self)

    @property
    def stats(self) -> LinkStats:
        return self.link.stats

    def deliver(self, frames: list[Frame]) -> None:
        """Hand switched frames to what is on the port: a host's NIC takes each flow's consecutive
        TCP segments coalesced (``link.gro``), super-segments as they came, and, for its UDP_GRO
        sockets, each flow's consecutive datagrams marked as one."""
        packets = coalesce_batch(frames, eth.HEADER_SIZE)
        mark_udp_flows(packets, eth.HEADER_SIZE, self.link.dispatcher)
        for pkt in packets:
            self.link.inject(0, pkt)    # an Ethernet channel reads the protocol from the frame

    def drain(self) -> list[Frame]:
        """What was sent into the switch since the last call."""
        return [(packet.data, packet.gso_size) if packet.gso_size else packet.data for packet in self.link.drain()]

    def close(self) -> None:
        self.link.close()


class TapPort(Port):
    """A port with a TAP device on it: the kernel's side of the device is one more station on the
    switch (its frames come in from the device, switched frames are written to it), so a private
    network can include the real kernel, in a network namespace, say."""

    __slots__ = ("fd", "_stats", "_watcher", "_frames")

    def __init__(self, switch: Switch, name: str, fd: int) -> None:
        self.switch = switch
        self.name = name
        self.mac = b""
        self.fd = fd
        self._stats = LinkStats()
        self._frames: list[bytes] = []
        self._watcher = gevent.get_hub().loop.io(fd, 1)
        self._watcher.start(self._read)

    @property
    def stats(self) -> LinkStats:
        return self._stats

    def _read(self) -> None:
        while True:
            try:
                frame = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                self._stats.rx_read_errors.increment()
                break
            self._stats.rx_packets.increment()
            self._stats.rx_bytes.increment(len(frame))
            self._frames.append(frame)
        if self._frames:
            self.switch._sent(self)

    def drain(self) -> list[bytes]:
        frames, self._frames = self._frames, []
        return frames

    def deliver(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                os.write(self.fd, frame)
            except BlockingIOError:
                self._stats.tx_queue_full.increment()
                continue
            except OSError:
                self._stats.tx_errors.increment()
                continue
            self._stats.tx_packets.increment()
            self._stats.tx_bytes.increment(len(frame))

    def close(self) -> None:
        self._watcher.stop()
        os.close(self.fd)


class Switch:
    """A learning Ethernet switch with per-direction faults between its ports.

    ``capture`` receives every frame as it enters the switch, and its ``gso_size``: > 0 for a TCP
    super-segment crossing whole (``header.gso.segment_tcp`` gives its wire frames).
    """

    def __init__(self, name: str, timers: TimerQueue, seed: int, mtu: int = 1500,
                 capture: Callable[[bytes, int], None] | None = None) -> None:
        self.name = name
        self.mtu = mtu
        self.ports: list[Port] = []
        self._timers = timers
        self._seed = seed
        self._capture = capture
        self._by_mac: dict[bytes, Port] = {}
        self._pipes: dict[tuple[Port, Port], FaultPipe] = {}
        self._resetting: set[tuple[Port, Port]] = set()
        self._scheduled = False
        self._outgoing: dict[Port, list[bytes]] = {}     # switched this turn, by destination
        self._loop = gevent.get_hub().loop

    def add_port(self, name: str, mac: bytes) -> Port:
        port = Port(self, name, mac, self.mtu)
        self.ports.append(port)
        return port

    def add_tap(self, name: str, fd: int) -> TapPort:
        """Put the TAP device open on ``fd`` (non-blocking, no packet information) on a port."""
        port = TapPort(self, name, fd)
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

    def set_reset(self, source: Port, destination: Port, reset: bool) -> None:
        """Answer every TCP segment from ``source`` to ``destination`` with a reset (or stop)."""
        if reset:
            self._resetting.add((source, destination))
        else:
            self._resetting.discard((source, destination))

    def config(self, source: Port, destination: Port) -> FaultConfig:
        pipe = self._pipes.get((source, destination))
        return pipe.config if pipe is not None else FaultConfig()

    def pipe_stats(self) -> dict[str, dict[str, int]]:
        """Each configured direction's counters, as "source->destination"."""
        return {f"{s.name}->{d.name}": pipe.stats.as_dict() for (s, d), pipe in self._pipes.items()}

    # --- switching -----------------------------------------------------------------------------------

    def _sent(self, source: Port) -> None:
        """``source`` put frames on its wire: they enter the switch now, in the sender's call (learned,
        captured, their faults decided as they cross, as on a real wire), and reach their destinations
        in the switch's next turn on the hub, never inside the sender's call."""
        for frame in source.drain():
            if frame.__class__ is tuple:
                self._ingress_super_segment(source, *frame)     # type: ignore[misc]
            else:
                self._ingress(source, frame)                    # type: ignore[arg-type]

    def _send(self, destination: Port, frame: Frame) -> None:
        frames = self._outgoing.get(destination)
        if frames is not None:
            frames.append(frame)
            return
        self._outgoing[destination] = [frame]
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._switch)

    def _switch(self) -> None:
        """Deliver what was switched since the last turn: each port gets its share in one batch, as a
        device delivers what it read at once."""
        self._scheduled = False
        outgoing, self._outgoing = self._outgoing, {}
        for destination, frames in outgoing.items():
            destination.deliver(frames)

    def _destinations(self, source: Port, header: eth.EthernetHeader) -> list[Port]:
        """Learn where the sender is; where its frame goes (the known port of a unicast address, else
        every other port)."""
        if not eth.is_multicast(header.src):
            self._by_mac[header.src] = source
        target = self._by_mac.get(header.dst) if not eth.is_multicast(header.dst) else None
        if target is not None:
            return [target] if target is not source else []
        return [port for port in self.ports if port is not source]

    def _ingress_super_segment(self, source: Port, frame: bytes, gso_size: int) -> None:
        """Pass a super-segment whole where nothing on its way needs frames; else cut it into its
        wire segments and switch those."""
        destinations = self._destinations(source, eth.parse(frame))     # (a frame the port built)
        if all(self._passes_whole(source, destination) for destination in destinations):
            if self._capture is not None:
                self._capture(frame, gso_size)
            for destination in destinations:
                self._send(destination, (frame, gso_size))
            return
        for piece in segment(frame, gso_size, eth.HEADER_SIZE):
            self._ingress(source, piece)

    def _passes_whole(self, source: Port, destination: Port) -> bool:
        pipe = self._pipes.get((source, destination))
        return (destination.__class__ is Port and (pipe is None or not pipe.active)
                and (source, destination) not in self._resetting)

    def _ingress(self, source: Port, frame: bytes) -> None:
        if self._capture is not None:
            self._capture(frame, 0)
        header = eth.parse(frame)
        if not header:
            return
        for destination in self._destinations(source, header):
            if self._resetting and (source, destination) in self._resetting and self._reset(source, header, frame):
                continue
            pipe = self._pipes.get((source, destination))
            if pipe is None or not pipe.active:
                self._send(destination, frame)
            else:
                pipe.stats.packets.increment()
                pipe.stats.bytes.increment(len(frame) - eth.HEADER_SIZE)
                pipe.offer((frame[:eth.HEADER_SIZE], header.ethertype, PacketBuffer.inbound(frame[eth.HEADER_SIZE:])))

    def _reset(self, source: Port, header: eth.EthernetHeader, frame: bytes) -> bool:
        """Drop a TCP segment and send ``source`` the reset its destination would; False (let it
        pass) for anything else, or for a reset, which is never answered."""
        packet = memoryview(frame)[eth.HEADER_SIZE:]
        if header.ethertype == eth.ETHERTYPE_IPV4:
            ip = ipv4.parse(packet)
            if not ip or ip.protocol != tcp.PROTOCOL_NUMBER or ip.more_fragments or ip.flags_fragment & 0x1FFF:
                return False
            src, dst, segment = ip.src, ip.dst, packet[ip.header_length:ip.total_length]
            ip_size = ipv4.MIN_SIZE
        elif header.ethertype == eth.ETHERTYPE_IPV6:
            ip6 = ipv6.parse(packet)
            if not ip6 or ip6.next_header != tcp.PROTOCOL_NUMBER:     # (TCP behind extension headers passes)
                return False
            src, dst, segment = ip6.src, ip6.dst, packet[ipv6.HEADER_SIZE:ipv6.HEADER_SIZE + ip6.payload_length]
            ip_size = ipv6.HEADER_SIZE
        else:
            return False
        seg = tcp.parse(segment)
        if not seg or seg.flags & tcp.RST:
            return True
        if seg.flags & tcp.ACK:
            seq, ack, flags = seg.ack, 0, tcp.RST
        else:
            length = len(segment) - seg.data_offset + bool(seg.flags & tcp.SYN) + bool(seg.flags & tcp.FIN)
            seq, ack, flags = 0, (seg.seq + length) & 0xFFFFFFFF, tcp.RST | tcp.ACK
        reply = bytearray(eth.HEADER_SIZE + ip_size + tcp.MIN_SIZE)
        eth.build(reply, header.src, header.dst, header.ethertype)
        tcp_view = memoryview(reply)[eth.HEADER_SIZE + ip_size:]
        tcp.build(tcp_view, src_port=seg.dst_port, dst_port=seg.src_port, seq=seq, ack=ack, flags=flags, window=0)
        tcp.set_checksum(tcp_view, tcp.compute_checksum(dst, src, tcp_view))
        ip_view = memoryview(reply)[eth.HEADER_SIZE:]
        if ip_size == ipv4.MIN_SIZE:
            ipv4.build(ip_view, src=dst, dst=src, protocol=tcp.PROTOCOL_NUMBER, total_length=ip_size + tcp.MIN_SIZE)
        else:
            ipv6.build(ip_view, src=dst, dst=src, next_header=tcp.PROTOCOL_NUMBER, payload_length=tcp.MIN_SIZE)
        self._send(source, bytes(reply))
        return True

    def _deliver(self, destination: Port, packet: tuple[bytes, int, PacketBuffer]) -> None:
        link_header, ethertype, pkt = packet
        self._send(destination, link_header + b"".join(pkt.views()))
