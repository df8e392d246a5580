"""A scripted-peer context for TCP tests (netstack's tcp/testing/context), and a two-stack pair.

``TCPContext`` puts a Stack(IPv4, TCP) on a ChannelEndpoint at 192.0.2.2/24 and lets the test play
the peer 192.0.2.1: it builds segments and injects them, and parses what the stack wrote. The wire
format code here (IPv4 + TCP headers, options, the RFC 1071 checksum) is the test's own, written
from the RFCs with ``struct``, so the stack's encoders and decoders are never checked against
themselves; every segment the stack emits is checked for valid IPv4 and TCP checksums as it is
parsed. Time moves only when the test says so (``advance``).

The peer's view of the connection is kept in wire (mod 2**32) numbers: ``nxt`` is the next
sequence number the peer sends, ``rcv_nxt`` the next one it expects from the stack. ``send`` never
moves them; ``send_data``/``send_fin`` and ``absorb`` do.

``Pair`` joins two stacks, each on its own ChannelEndpoint (optionally behind a FaultEndpoint), with
a pump that carries packets both ways.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from netsock.link.channel import ChannelEndpoint
from netsock.link.fault import FaultConfig, FaultEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import ManualClock, Stack
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, Address, ErrConnectStarted, ErrWouldBlock, FullAddress, Route,
                           ShutdownFlags)
from netsock.transport.icmp import ICMPv4Protocol
from netsock.transport.tcp import TCPEndpoint, TCPProtocol, TCPState
from netsock.waiter import WaiterQueue

TCP = 6
MOD = 1 << 32
LOCAL = "192.0.2.2"
PEER = "192.0.2.1"
OTHER = "192.0.2.3"
LOCAL_ADDR = bytes(Address.parse(LOCAL))
PEER_ADDR = bytes(Address.parse(PEER))
OTHER_ADDR = bytes(Address.parse(OTHER))
STACK_PORT = 80          # where the stack listens in passive opens
PEER_PORT = 40000        # the scripted peer's port
NIC_ID = 1

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_FLAG_LETTERS = (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), ("A", ACK), ("U", URG))


def flags_of(text: str) -> int:
    """Flag bits from letters: "SA" is SYN|ACK, "PA" is PSH|ACK."""
    bits = 0
    for letter in text:
        bits |= dict(_FLAG_LETTERS)[letter]
    return bits


def flag_str(bits: int) -> str:
    return "".join(letter for letter, bit in _FLAG_LETTERS if bits & bit)


def seq_add(a: int, n: int) -> int:
    return (a + n) % MOD


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space (signed, |result| < 2**31)."""
    d = (a - b) % MOD
    return d - MOD if d >= 1 << 31 else d


# --- wire format (the test's own) -----------------------------------------------------------------

def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071: the one's complement of the one's complement sum of 16-bit words."""
    if len(data) & 1:
        data += b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_sum(src: bytes, dst: bytes, length: int) -> int:
    return sum(struct.unpack("!4H", src + dst)) + TCP + length


@dataclass(frozen=True)
class Opts:
    """TCP options as values. ``ts`` is (TSval, TSecr); ``sack`` the SACK blocks, in order; ``md5`` an
    RFC 2385 signature's 16 bytes (first, as Linux puts it); ``fast_open`` RFC 7413's cookie (b"": a request)."""

    mss: int | None = None
    ws: int | None = None
    sack_perm: bool = False
    ts: tuple[int, int] | None = None
    sack: tuple[tuple[int, int], ...] = ()
    md5: bytes | None = None
    fast_open: bytes | None = None

    def encode(self) -> bytes:
        """RFC 9293/7323/2018/2385 layout, NOP-padded to a multiple of four bytes."""
        out = b""
        if self.md5 is not None:
            out += b"\x01\x01\x13\x12" + self.md5
        if self.mss is not None:
            out += struct.pack("!BBH", 2, 4, self.mss)
        if self.ws is not None:
            out += struct.pack("!BBBB", 1, 3, 3, self.ws)
        if self.sack_perm:
            out += b"\x01\x01\x04\x02"
        if self.ts is not None:
            out += struct.pack("!BBBBII", 1, 1, 8, 10, *self.ts)
        if self.sack:
            out += struct.pack("!BBBB", 1, 1, 5, 2 + 8 * len(self.sack))
            for s, e in self.sack:
                out += struct.pack("!II", s, e)
        if self.fast_open is not None:
            out += bytes((34, 2 + len(self.fast_open))) + self.fast_open
            out += b"\x01" * (-len(out) % 4)
        assert len(out) <= 40 and not len(out) % 4, len(out)
        return out

    @classmethod
    def decode(cls, raw: bytes) -> Opts:
        values: dict = {}
        i = 0
        while i < len(raw):
            kind = raw[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            length = raw[i + 1]
            assert length >= 2 and i + length <= len(raw), f"malformed options {raw.hex()}"
            body = raw[i + 2:i + length]
            if kind == 2:
                values["mss"] = struct.unpack("!H", body)[0]
            elif kind == 3:
                values["ws"] = body[0]
            elif kind == 4:
                values["sack_perm"] = True
            elif kind == 8:
                values["ts"] = struct.unpack("!II", body)
            elif kind == 5:
                values["sack"] = tuple(struct.iter_unpack("!II", body))
            elif kind == 19:
                values["md5"] = body
            elif kind == 34:
                values["fast_open"] = body
            else:
                raise AssertionError(f"unexpected option kind {kind}")
            i += length
        return cls(**values)


@dataclass(frozen=True)
class Seg:
    """One segment as seen on the wire."""

    src: bytes
    dst: bytes
    ttl: int
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: Opts
    raw_options: bytes
    payload: bytes
    time: float = 0.0   # when the stack sent it (TCPContext fills it in)
    raw: bytes = b""    # the whole IPv4 packet
    urgent: int = 0     # the urgent pointer field

    @property
    def flagstr(self) -> str:
        return flag_str(self.flags)

    @property
    def ctl(self) -> str:
        """The control flags without PSH (which RFC 9293 leaves to the sender's judgement)."""
        return flag_str(self.flags & ~PSH)

    @property
    def length(self) -> int:
        """Sequence space taken: payload plus SYN and FIN."""
        return len(self.payload) + bool(self.flags & SYN) + bool(self.flags & FIN)

    @property
    def end(self) -> int:
        return seq_add(self.seq, self.length)

    def __repr__(self) -> str:
        return (f"<Seg {self.src_port}->{self.dst_port} [{self.flagstr}] seq={self.seq} ack={self.ack} "
                f"win={self.window} len={len(self.payload)} {self.options}>")


def parse(raw: bytes) -> Seg:
    """Parse an IPv4 packet carrying TCP, asserting both checksums."""
    assert raw[0] >> 4 == 4, raw[:20].hex()
    ihl = (raw[0] & 15) * 4
    total = struct.unpack_from("!H", raw, 2)[0]
    assert total == len(raw), (total, len(raw))
    assert raw[9] == TCP, raw[9]
    assert internet_checksum(raw[:ihl]) == 0, "bad IPv4 header checksum"
    src, dst = raw[12:16], raw[16:20]
    tcp = raw[ihl:total]
    assert internet_checksum(tcp, _pseudo_sum(src, dst, len(tcp))) == 0, "bad TCP checksum"
    sport, dport, seq, ack, off, flags, window, _csum, urgent = struct.unpack_from("!HHIIBBHHH", tcp)
    hlen = (off >> 4) * 4
    raw_options = tcp[20:hlen]
    return Seg(src, dst, raw[8], sport, dport, seq, ack, flags, window, Opts.decode(raw_options), raw_options,
               tcp[hlen:], raw=raw, urgent=urgent)


def build(src: bytes, dst: bytes, src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int,
          options: bytes = b"", payload: bytes = b"", bad_checksum: bool = False, ttl: int = 64,
          urgent: int = 0) -> bytes:
    """An IPv4 packet carrying one TCP segment, checksums right unless ``bad_checksum``."""
    hlen = 20 + len(options)
    tcp = bytearray(struct.pack("!HHIIBBHHH", src_port, dst_port, seq % MOD, ack % MOD, (hlen // 4) << 4, flags,
                                window, 0, urgent) + options + payload)
    csum = internet_checksum(bytes(tcp), _pseudo_sum(src, dst, len(tcp)))
    struct.pack_into("!H", tcp, 16, csum ^ 0x5555 if bad_checksum else csum)
    return ipv4_packet(src, dst, bytes(tcp), ttl)


def ipv4_packet(src: bytes, dst: bytes, payload: bytes, ttl: int = 64, protocol: int = TCP) -> bytes:
    """``payload`` (whatever it holds) in an IPv4 header with a right checksum."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, ttl, protocol, 0, src, dst))
    struct.pack_into("!H", ip, 10, internet_checksum(bytes(ip)))
    return bytes(ip) + payload


def icmp_unreachable(quoting: Seg, code: int, mtu: int = 0, src: bytes = PEER_ADDR) -> bytes:
    """An ICMP destination-unreachable from ``src`` quoting ``quoting``'s IP header and 8 bytes of TCP
    (RFC 792; ``mtu`` is the next-hop MTU of code 4, RFC 1191)."""
    body = bytearray(struct.pack("!BBHHH", 3, code, 0, 0, mtu) + quoting.raw[:28])
    struct.pack_into("!H", body, 2, internet_checksum(bytes(body)))
    return ipv4_packet(src, quoting.src, bytes(body), protocol=1)


# --- the scripted-peer context --------------------------------------------------------------------

DEFAULT_PEER_OPTS = Opts(mss=1460)


class TCPContext:
    """A stack under test at 192.0.2.2 and a scripted peer at 192.0.2.1 (see the module docstring)."""

    def __init__(self, mtu: int = 1500, routes: Iterable[Route] = (), link: ChannelEndpoint | None = None) -> None:
        self.clock = ManualClock()
        self.stack = Stack([IPv4Protocol], [TCPProtocol, ICMPv4Protocol], clock=self.clock)
        self.link = link or ChannelEndpoint(size=1 << 16, mtu=mtu)
        self._send_times: deque[float] = deque()
        self.link.on_outbound = lambda info: self._send_times.append(self.clock.now())
        self.stack.create_nic(NIC_ID, self.link)
        self.stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, f"{LOCAL}/24")
        self.stack.set_route_table([*routes, Route.parse("192.0.2.0/24", NIC_ID),
                                    Route.parse("0.0.0.0/0", NIC_ID, PEER)])
        self.proto: TCPProtocol = self.stack.transport_protocols[TCP]
        self.ep: TCPEndpoint | None = None
        self.wq: WaiterQueue | None = None
        self.listener: TCPEndpoint | None = None
        # The scripted connection.
        self.peer = PEER_ADDR
        self.peer_port = PEER_PORT
        self.port = STACK_PORT
        self.nxt = 0                    # peer's next sequence number
        self.rcv_nxt = 0                # next sequence number the peer expects from the stack
        self.iss = 0                    # the stack's ISS
        self.ts_ok = False
        self.ts_base = 0                # the peer's TSval at time 0
        self.ts_recent = 0              # the stack's latest TSval (what the peer echoes)
        self.stack_ws = 0               # shift the peer applies to the stack's window field
        self.window = 65535             # the peer's window field
        self._in_event = False          # inside ``event()``: injections do not end the event

    # --- plumbing -------------------------------------------------------------------------------

    @property
    def stats(self):  # noqa: ANN201 - TCPStats
        return self.stack.stats().tcp

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def new_endpoint(self) -> tuple[TCPEndpoint, WaiterQueue]:
        wq = WaiterQueue()
        return self.stack.new_endpoint(TCP, IPV4_PROTOCOL_NUMBER, wq), wq

    def fix_isn(self, isn: int) -> None:
        """Make the stack pick ``isn`` for its next connections (and timestamp offsets)."""
        self.proto.initial_numbers = lambda *args: (isn, isn)

    def inject(self, raw: bytes) -> None:
        """Deliver one packet as an event of its own (unless inside ``event()``): what the stack
        defers to the end of the event (owed ACKs) is done before this returns."""
        self.link.inject(IPV4_PROTOCOL_NUMBER, raw)
        if not self._in_event:
            self.clock.run_pending()

    @contextmanager
    def event(self) -> Iterator[None]:
        """Packets injected and calls made inside are one event, as a batch a link reads at once
        and the application calls it wakes: the deferred work runs when the block ends."""
        self._in_event = True
        try:
            yield
        finally:
            self._in_event = False
        self.clock.run_pending()

    def connection_state(self) -> TCPState | None:
        """The state the stack holds the scripted connection in: its endpoint's, or TIME_WAIT while a
        TIME-WAIT record stands in for it; None once nothing is left of it (a listener aside)."""
        group = self.stack.demux.lookup(IPV4_PROTOCOL_NUMBER, TCP, NIC_ID, self.peer, LOCAL_ADDR, self.peer_port,
                                        self.port)
        states = [ep.state for ep in group or () if ep.state is not TCPState.LISTEN]
        return states[0] if states else None

    def tsval(self) -> int:
        """The peer's timestamp clock: 1 ms ticks from ``ts_base``."""
        return (self.ts_base + int(self.clock.now() * 1000)) % MOD

    def send(self, flags: int | str, *, seq: int | None = None, ack: int | None = None, payload: bytes = b"",
             window: int | None = None, options: Opts | bytes | None = None, src: bytes | None = None,
             src_port: int | None = None, dst_port: int | None = None, bad_checksum: bool = False,
             urgent: int = 0) -> None:
        """Inject one segment from the peer; unspecified fields come from the connection state.

        Without ``options`` a timestamp option is added when timestamps were negotiated.
        """
        if isinstance(flags, str):
            flags = flags_of(flags)
        if options is None:
            options = Opts(ts=(self.tsval(), self.ts_recent)) if self.ts_ok else Opts()
        raw_options = options.encode() if isinstance(options, Opts) else options
        self.inject(build(src or self.peer, LOCAL_ADDR, self.peer_port if src_port is None else src_port,
                          self.port if dst_port is None else dst_port, self.nxt if seq is None else seq,
                          (self.rcv_nxt if ack is None else ack) if flags & ACK else (ack or 0), flags,
                          self.window if window is None else window, raw_options, payload,
                          bad_checksum=bad_checksum, urgent=urgent))

    def send_data(self, payload: bytes, flags: str = "PA", **kw) -> None:
        """Data (and FIN if in ``flags``) at ``nxt``, which then moves past it."""
        self.send(flags, payload=payload, **kw)
        self.nxt = seq_add(self.nxt, len(payload) + ("F" in flags))

    def send_fin(self, **kw) -> None:
        self.send_data(b"", "FA", **kw)

    def ack(self, **kw) -> None:
        """A pure ACK of everything received so far (or of ``ack=``)."""
        self.send("A", **kw)

    def sent(self) -> list[Seg]:
        """What the stack wrote since the last call (the current event ended first: owed ACKs go out),
        parsed and stamped with the time it was sent; remembers the stack's latest TSval."""
        if not self._in_event:
            self.clock.run_pending()
        times = self._send_times
        segs = [dataclasses.replace(parse(info.data), time=times.popleft()) for info in self.link.drain()]
        for seg in segs:
            if seg.options.ts is not None:
                self.ts_recent = seg.options.ts[0]
        return segs

    def sent_one(self) -> Seg:
        segs = self.sent()
        assert len(segs) == 1, segs
        return segs[0]

    def assert_quiet(self) -> None:
        segs = self.sent()
        assert not segs, segs

    def absorb(self, segs: Iterable[Seg]) -> bytes:
        """Take the in-order payload of ``segs`` as a receiver would; moves ``rcv_nxt``."""
        out = bytearray()
        for seg in segs:
            if seg.seq == self.rcv_nxt and seg.length:
                out += seg.payload
                self.rcv_nxt = seq_add(self.rcv_nxt, len(seg.payload) + bool(seg.flags & FIN))
        return bytes(out)

    # --- handshakes -------------------------------------------------------------------------------

    def connect(self, *, peer_iss: int = 789_000, opts: Opts = DEFAULT_PEER_OPTS, stack_iss: int | None = None,
                window: int = 65535, rtt: float = 0.01, ep: TCPEndpoint | None = None) -> Seg:
        """Active open by the stack to the peer, completed with a SYN-ACK carrying ``opts`` ``rtt``
        seconds after the SYN. Returns the stack's SYN; ``self.ep`` is the established endpoint.
        """
        if stack_iss is not None:
            self.fix_isn(stack_iss)
        if ep is None:
            ep, self.wq = self.new_endpoint()
        self.ep = ep
        try:
            ep.connect(FullAddress(0, self.peer, self.peer_port))
        except ErrConnectStarted:
            pass
        syn = self.sent_one()
        assert syn.flags == SYN, syn
        self.port = syn.src_port
        self.iss = syn.seq
        self._negotiated(syn, opts)
        self.nxt = peer_iss
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.window = window
        self.advance(rtt)
        self.send("SA", options=opts if opts.ts is None else Opts(opts.mss, opts.ws, opts.sack_perm,
                                                                  (opts.ts[0], syn.options.ts[0])))
        self.nxt = seq_add(peer_iss, 1)
        ack = self.sent_one()
        assert ack.flagstr == "A" and ack.seq == self.rcv_nxt and ack.ack == self.nxt, ack
        return syn

    def listen(self, backlog: int = 10, port: int = STACK_PORT) -> TCPEndpoint:
        self.listener, _ = self.new_endpoint()
        self.listener.bind(FullAddress(0, b"", port))
        self.listener.listen(backlog)
        self.port = port
        return self.listener

    def accept(self, *, peer_iss: int = 789_000, opts: Opts = DEFAULT_PEER_OPTS, stack_iss: int | None = None,
               window: int = 65535, rtt: float = 0.01) -> Seg:
        """Passive open: the peer connects to the listener (created if needed), ACKs the SYN-ACK
        ``rtt`` seconds later, and the stack accepts. Returns the SYN-ACK; ``self.ep`` is the new endpoint.
        """
        if stack_iss is not None:
            self.fix_isn(stack_iss)
        if self.listener is None:
            self.listen()
        self.nxt = peer_iss
        self.window = window
        self.send("S", options=opts, ack=0)
        synack = self.sent_one()
        assert synack.flagstr == "SA" and synack.ack == seq_add(peer_iss, 1), synack
        self.iss = synack.seq
        self.advance(rtt)
        self.nxt = seq_add(peer_iss, 1)
        self.rcv_nxt = seq_add(synack.seq, 1)
        self._negotiated(synack, opts)
        self.ack()
        assert self.listener is not None
        self.ep, self.wq = self.listener.accept()
        return synack

    def _negotiated(self, stack_syn: Seg, opts: Opts) -> None:
        both_ws = opts.ws is not None and stack_syn.options.ws is not None
        self.stack_ws = stack_syn.options.ws if both_ws else 0
        self.ts_ok = opts.ts is not None and stack_syn.options.ts is not None
        if self.ts_ok:
            self.ts_base = (opts.ts[0] - int(self.clock.now() * 1000)) % MOD
            self.ts_recent = stack_syn.options.ts[0]

    # --- a peer that receives -------------------------------------------------------------------

    def receive_all(self, rounds: int = 10_000) -> bytes:
        """Take everything the stack sends, ACKing each batch, until it stops; returns the bytes."""
        out = bytearray()
        for _ in range(rounds):
            segs = self.sent()
            if not segs:
                return bytes(out)
            out += self.absorb(segs)
            self.ack()
        raise AssertionError("the stack never stopped sending")

    def read_all(self, ep: TCPEndpoint | None = None) -> bytes:
        """Everything readable on ``ep`` now (b'' if nothing)."""
        ep = ep or self.ep
        out = bytearray()
        while True:
            try:
                chunk = ep.read(1 << 20)
            except ErrWouldBlock:
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk


# --- two stacks -----------------------------------------------------------------------------------

@dataclass
class Node:
    stack: Stack
    link: ChannelEndpoint
    fault: FaultEndpoint | None
    address: bytes
    proto: TCPProtocol = field(init=False)

    def __post_init__(self) -> None:
        self.proto = self.stack.transport_protocols[TCP]

    def new_endpoint(self) -> tuple[TCPEndpoint, WaiterQueue]:
        wq = WaiterQueue()
        return self.stack.new_endpoint(TCP, IPV4_PROTOCOL_NUMBER, wq), wq


class Pair:
    """Stacks ``a`` (192.0.2.1) and ``b`` (192.0.2.2) on one ManualClock, joined by ``pump``.

    With ``faults``, each stack's link sits behind a FaultEndpoint applying them to what that
    stack sends (seeded, so a run is reproducible).
    """

    def __init__(self, faults: FaultConfig | None = None, seed: int = 1, mtu: int = 1500) -> None:
        self.clock = ManualClock()
        self.a = self._node(PEER, faults, seed, mtu)
        self.b = self._node(LOCAL, faults, seed + 1, mtu)

    def _node(self, address: str, faults: FaultConfig | None, seed: int, mtu: int) -> Node:
        stack = Stack([IPv4Protocol], [TCPProtocol, ICMPv4Protocol], clock=self.clock)
        link = ChannelEndpoint(size=1 << 16, mtu=mtu)
        fault = FaultEndpoint(link, self.clock, seed=seed, outbound=faults) if faults is not None else None
        stack.create_nic(NIC_ID, fault if fault is not None else link)
        stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, f"{address}/24")
        stack.set_route_table([Route.parse("192.0.2.0/24", NIC_ID)])
        return Node(stack, link, fault, bytes(Address.parse(address)))

    def pump(self) -> int:
        """Carry packets both ways until both links are empty; returns how many were carried."""
        moved = 0
        while True:
            batch = 0
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                for info in src.link.drain():
                    dst.link.inject(IPV4_PROTOCOL_NUMBER, info.data)
                    batch += 1
            self.clock.run_pending()    # one batch per round: an event's deferred work (owed ACKs) ends it
            if not batch:
                return moved
            moved += batch

    def run(self, done: Callable[[], bool], step: Callable[[], None] = lambda: None, *, tick: float = 0.001,
            limit: float = 600.0) -> float:
        """Alternate ``step`` (the applications) and the pump, advancing the clock by ``tick`` when
        the wire is quiet, until ``done()``; returns the simulated time taken."""
        start = self.clock.now()
        while True:
            step()
            if done():
                return self.clock.now() - start
            if not self.pump():
                assert self.clock.now() - start < limit, "no progress within the time limit"
                self.clock.advance(tick)

    def connect(self, port: int = 5001) -> tuple[TCPEndpoint, TCPEndpoint]:
        """A connection from a to a listener on b; returns (client, server)."""
        listener, _ = self.b.new_endpoint()
        listener.bind(FullAddress(0, b"", port))
        listener.listen(16)
        client, _ = self.a.new_endpoint()
        try:
            client.connect(FullAddress(0, self.b.address, port))
        except ErrConnectStarted:
            pass
        accepted: list[TCPEndpoint] = []

        def try_accept() -> None:
            if not accepted:
                try:
                    accepted.append(listener.accept()[0])
                except ErrWouldBlock:
                    pass

        self.run(lambda: bool(accepted) and client.state.name == "ESTABLISHED", try_accept, limit=120)
        listener.close()
        return client, accepted[0]


class Stream:
    """One direction of a transfer: ``data`` written into ``src``, read back from ``dst``."""

    def __init__(self, src: TCPEndpoint, dst: TCPEndpoint, size: int, seed: int) -> None:
        self.src, self.dst = src, dst
        self.data = random.Random(seed).randbytes(size)
        self.written = 0
        self.received = bytearray()
        self.shut = False
        self.eof = False

    def step(self) -> None:
        if self.written < len(self.data):
            try:
                self.written += self.src.write(memoryview(self.data)[self.written:self.written + 256 * 1024])
            except ErrWouldBlock:
                pass
        if self.written == len(self.data) and not self.shut:
            self.src.shutdown(ShutdownFlags.WRITE)
            self.shut = True
        while not self.eof:
            try:
                chunk = self.dst.read(1 << 20)
            except ErrWouldBlock:
                return
            if not chunk:
                self.eof = True
            self.received += chunk

    def check(self) -> None:
        assert len(self.received) == len(self.data)
        assert hashlib.sha256(self.received).hexdigest() == hashlib.sha256(self.data).hexdigest()


def transfer(pair: Pair, up: int, down: int, tick: float = 0.001, limit: float = 600.0) -> tuple[float, TCPEndpoint,
                                                                                                      TCPEndpoint]:
    client, server = pair.connect()
    streams = [Stream(client, server, up, 1), Stream(server, client, down, 2)]

    def step() -> None:
        for stream in streams:
            stream.step()

    elapsed = pair.run(lambda: all(s.eof for s in streams), step, tick=tick, limit=limit)
    for stream in streams:
        stream.check()
    return elapsed, client, server
