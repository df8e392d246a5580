"""Kernel-side programs of the benchmarks, run in their namespaces on the kernel's own sockets.

    python bench/peers.py probe HOST:PORT
    python bench/peers.py echo-server HOST:PORT [--backlog N]
    python bench/peers.py connect-rate HOST:PORT --connections N [--concurrency C] [--size BYTES]
    python bench/peers.py ping-pong HOST:PORT --count N [--warmup N]
    python bench/peers.py hold-connections --connections N
    python bench/peers.py udp-send HOST:PORT --bytes N [--segment BYTES] [--write BYTES]
    python bench/peers.py udp-sink HOST:PORT [--idle SECONDS] [--gro]

The measuring ones print one JSON line. echo-server is the kernel's counterpart of netsock's
``tun_tcp_echo`` sample: the same runtime (gevent, a greenlet per connection) and the same
behaviour (echo every byte, close after the peer's EOF), so that only the TCP/IP stack differs.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

READ_SIZE = 256 * 1024   # as the echo sample reads
UDP_SEGMENT = 103         # <linux/udp.h> (the socket module does not name it)
UDP_GRO = 104
SO_RCVBUFFORCE = 33       # <asm-generic/socket.h>: a receive buffer past rmem_max (root)


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def probe(server: tuple[str, int]) -> int:
    """Exit 0 if a TCP connection to server opens within a second."""
    try:
        socket.create_connection(server, timeout=1).close()
    except OSError:
        return 1
    return 0


def echo_server(bind: tuple[str, int], backlog: int) -> int:
    import gevent
    from gevent.event import Event
    from gevent.server import StreamServer

    def echo(sock: Any, _peer: Any) -> None:
        with sock:
            while data := sock.recv(READ_SIZE):
                sock.sendall(data)

    server = StreamServer(bind, echo, backlog=backlog)
    server.start()
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    print("ready", flush=True)
    stop.wait()
    server.stop(timeout=1)
    return 0


def connect_rate(server: tuple[str, int], connections: int, concurrency: int, size: int, stall: float) -> int:
    """Open ``connections`` connections, ``concurrency`` at a time: each connects, sends ``size`` bytes,
    reads them back and closes. Reports connections per second and each one's time (connect to close).

    Non-blocking sockets on epoll, so one client process keeps many connections in flight and
    the server, not the client's round trips, sets the pace.
    """
    request = b"x" * size
    selector = selectors.DefaultSelector()
    started = completed = failed = 0
    durations: list[float] = []
    begun: dict[socket.socket, float] = {}
    received: dict[socket.socket, int] = {}

    def open_one() -> None:
        nonlocal started
        started += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        begun[sock] = time.perf_counter()
        selector.register(sock, selectors.EVENT_WRITE)
        if sock.connect_ex(server) not in (0, errno.EINPROGRESS):
            finish(sock, ok=False)

    def finish(sock: socket.socket, ok: bool) -> None:
        nonlocal completed, failed
        if ok:
            completed += 1
            durations.append(time.perf_counter() - begun[sock])
        else:
            failed += 1
        selector.unregister(sock)
        del begun[sock]
        received.pop(sock, None)
        sock.close()

    start = time.perf_counter()
    cpu = _cpu()
    while started < min(concurrency, connections):
        open_one()
    last_progress = time.monotonic()
    while begun:
        events = selector.select(timeout=1.0)
        if not events and time.monotonic() - last_progress > stall:
            break
        for key, _ in events:
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            last_progress = time.monotonic()
            try:
                if sock not in received:                # connected (or failed to)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        finish(sock, ok=False)
                    else:
                        sock.send(request)
                        received[sock] = 0
                        selector.modify(sock, selectors.EVENT_READ)
                        continue
                else:
                    data = sock.recv(size)
                    if not data:
                        finish(sock, ok=False)
                    else:
                        received[sock] += len(data)
                        if received[sock] < size:
                            continue
                        finish(sock, ok=True)
            except OSError:
                finish(sock, ok=False)
            if started < connections:
                open_one()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu
    stalled = len(begun)
    for sock in list(begun):
        finish(sock, ok=False)
    durations.sort()
    print(json.dumps({"connections": completed, "failed": failed, "stalled": stalled, "seconds": seconds,
                      "per_second": completed / seconds, "client_cpu_share": cpu / seconds,
                      "p50_ms": _percentile(durations, 50) * 1e3 if durations else None,
                      "p99_ms": _percentile(durations, 99) * 1e3 if durations else None}))
    return 0 if completed else 1


def ping_pong(server: tuple[str, int], count: int, warmup: int) -> int:
    """1-byte request, 1-byte reply, ``count`` times on one connection (after ``warmup`` untimed ones)."""
    with socket.create_connection(server, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clock = time.perf_counter_ns
        rtts = []
        for index in range(warmup + count):
            begin = clock()
            sock.sendall(b"p")
            if sock.recv(1) != b"p":
                raise RuntimeError("the echo server closed or answered something else")
            if index >= warmup:
                rtts.append(clock() - begin)
    rtts.sort()
    print(json.dumps({"count": count, "p50_us": _percentile(rtts, 50) / 1e3, "p99_us": _percentile(rtts, 99) / 1e3,
                      "min_us": rtts[0] / 1e3, "mean_us": sum(rtts) / len(rtts) / 1e3}))
    return 0


def _slabs() -> dict[str, tuple[int, int]]:
    """/proc/slabinfo: cache -> (objects, bytes of the slabs holding them)."""
    page = resource.getpagesize()
    caches = {}
    with open("/proc/slabinfo") as f:
        for line in f.readlines()[2:]:
            fields = line.split()
            name, objects, pages_per_slab, slabs = fields[0], int(fields[2]), int(fields[5]), int(fields[14])
            caches[name] = (objects, slabs * pages_per_slab * page)
    return caches


def hold_connections(connections: int, settle: float) -> int:
    """Open ``connections`` idle TCP connections over loopback and report what the kernel's slab
    caches grew by meanwhile. A child process holds the connecting ends, this one the accepted
    ends (one process could run out of descriptors).

    Slab caches are machine-wide, so other work's allocations can show up too: only caches that
    grew by at least one object per two connections count (TCP socks, socket inodes, files,
    dentries, bind buckets, ...); their names are in the report.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < connections + 64:
        raise SystemExit(f"hold-connections: {connections} connections need {connections + 64} descriptors, "
                         f"the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as listener:
        held_r, held_w = os.pipe()       # the child writes a byte once all its connections are open
        done_r, done_w = os.pipe()       # and keeps them until this one is closed
        before = _slabs()
        child = os.fork()
        if child == 0:
            status = 1
            try:
                address = listener.getsockname()
                listener.close()
                os.close(held_r)
                os.close(done_w)
                clients = [socket.create_connection(address) for _ in range(connections)]
                os.write(held_w, b"x")
                os.read(done_r, 1)
                del clients
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        listener.settimeout(30)          # a child that failed connects no more
        os.close(held_w)
        os.close(done_r)
        accepted = [listener.accept()[0] for _ in range(connections)]
        if os.read(held_r, 1) != b"x":
            raise RuntimeError("the connecting process failed")
        time.sleep(settle)
        after = _slabs()
        with open("/proc/net/sockstat") as f:
            sockstat = f.read()
        os.close(done_w)
        os.waitpid(child, 0)
        for sock in accepted:
            sock.close()
    grown = {name: (after[name][0] - objects, after[name][1] - size) for name, (objects, size) in before.items()
             if name in after and after[name][0] - objects >= connections / 2}
    print(json.dumps({"connections": connections, "sockets": 2 * connections,
                      "slab_bytes": sum(size for _, size in grown.values()),
                      "caches": {name: {"objects": objects, "bytes": size} for name, (objects, size) in grown.items()},
                      "sockstat": sockstat}))
    return 0


def udp_send(server: tuple[str, int], size: int, segment: int, write: int) -> int:
    """Send ``size`` bytes as fast as sendto goes, ``write`` bytes a call, with UDP_SEGMENT ``segment``
    (0: each write one datagram); reports the seconds and this process's CPU seconds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if segment:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, segment)
    block = memoryview(os.urandom(write))
    start, cpu = time.perf_counter(), _cpu()
    for _ in range(size // write):
        sock.sendto(block, server)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    print(json.dumps({"bytes": size // write * write, "seconds": seconds, "cpu_seconds": cpu}), flush=True)
    return 0


def udp_sink(bind: tuple[str, int], idle: float, gro: bool = False) -> int:
    """Count what arrives until ``idle`` seconds pass without a datagram (after the first): bytes, reads,
    the seconds from the first to the last and this process's CPU seconds meanwhile; ``gro``: with
    UDP_GRO on. Prints "ready" once bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    if gro:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
    sock.bind(bind)
    print("ready", flush=True)
    buffer = bytearray(65536)
    received = datagrams = 0
    first = last = cpu = 0.0
    sock.settimeout(None)
    while True:
        try:
            count = sock.recv_into(buffer)
        except TimeoutError:
            break
        last = time.perf_counter()
        if not datagrams:
            first, cpu = last, _cpu()
            sock.settimeout(idle)
        received += count
        datagrams += 1
    cpu = _cpu() - cpu      # (waiting out the idle time costs none)
    print(json.dumps({"bytes": received, "datagrams": datagrams, "seconds": last - first, "cpu_seconds": cpu}),
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("probe", help="exit 0 if a TCP connection opens")
    p.add_argument("server", type=_address)
    p = commands.add_parser("echo-server", help="gevent TCP echo server on the kernel's sockets")
    p.add_argument("bind", type=_address)
    p.add_argument("--backlog", type=int, default=1024)
    p = commands.add_parser("connect-rate", help="connect, request/response, close, many times")
    p.add_argument("server", type=_address)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--size", type=int, default=64, help="request (and echoed response) bytes")
    p.add_argument("--stall", type=float, default=10.0, help="give up after this long without progress (s)")
    p = commands.add_parser("ping-pong", help="1-byte TCP round trips")
    p.add_argument("server", type=_address)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--warmup", type=int, default=200)
    p = commands.add_parser("hold-connections", help="kernel memory of idle TCP connections")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--settle", type=float, default=0.5, help="seconds to wait before measuring")
    p = commands.add_parser("udp-send", help="send UDP as fast as sendto goes, with or without UDP_SEGMENT")
    p.add_argument("server", type=_address)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--segment", type=int, default=0, help="UDP_SEGMENT datagram size (0: none)")
    p.add_argument("--write", type=int, default=1472, help="bytes per sendto")
    p = commands.add_parser("udp-sink", help="count the UDP that arrives until it stops")
    p.add_argument("bind", type=_address)
    p.add_argument("--idle", type=float, default=1.0, help="seconds without a datagram that end the count")
    p.add_argument("--gro", action="store_true", help="read with UDP_GRO on")
    args = parser.parse_args(argv)
    if args.command == "udp-send":
        return udp_send(args.server, args.bytes, args.segment, args.write)
    if args.command == "udp-sink":
        return udp_sink(args.bind, args.idle, args.gro)
    if args.command == "probe":
        return probe(args.server)
    if args.command == "echo-server":
        return echo_server(args.bind, args.backlog)
    if args.command == "connect-rate":
        return connect_rate(args.server, args.connections, args.concurrency, args.size, args.stall)
    if args.command == "ping-pong":
        return ping_pong(args.server, args.count, args.warmup)
    return hold_connections(args.connections, args.settle)


if __name__ == "__main__":
    sys.exit(main())
