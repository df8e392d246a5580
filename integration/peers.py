"""Kernel-side peers for the integration tests, run inside a test's namespace.

    ip netns exec NS python integration/peers.py udp-exchange 192.0.2.2:7 --count 10000 --seed 1
    ip netns exec NS python integration/peers.py udp-refused 192.0.2.2:9
    ip netns exec NS python integration/peers.py udp-receive 192.0.2.1:5555 --expect 6869
    ip netns exec NS python integration/peers.py udp-multicast 239.1.2.3:7 --device tun0 --count 5
    ip netns exec NS python integration/peers.py udp-gso-send 192.0.2.2:6000 --writes 20 --size 30000 --gso 1200
    ip netns exec NS python integration/peers.py udp-gather 192.0.2.1:6001 --bytes 600000
    ip netns exec NS python integration/peers.py inject tun0 FRAMES.hex
    ip netns exec NS python integration/peers.py tcp-echo 192.0.2.2:7 --bytes 100000000 --seed 1
    ip netns exec NS python integration/peers.py tcp-many 192.0.2.2:7 --connections 1000 --bytes 4096
    ip netns exec NS python integration/peers.py tcp-refused 192.0.2.2:9
    ip netns exec NS python integration/peers.py tcp-serve 192.0.2.1:5001 --send 100000000 --seed 2

Each prints one JSON line with what it observed and exits 0 only if the peer saw what it expects.
These use the kernel's own sockets: they are the real-world counterpart netsock must interoperate with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import select
import selectors
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ETH_P_IP = 0x0800
UDP_SEGMENT = 103           # <linux/udp.h>: the socket module does not export it
SO_RCVBUFFORCE = 33         # <asm-generic/socket.h>: nor this


def _endpoint(text: str) -> tuple[str, int]:
    """'192.0.2.2:7', '2001:db8::2:7' or '[2001:db8::2]:7' -> (host, port)."""
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _report(result: dict[str, object], ok: bool) -> int:
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


def udp_exchange(server: tuple[str, int], *, count: int | None, duration: float | None, seed: int,
                 max_size: int, window: int, retry_after: float, give_up_after: float, min_size: int = 1) -> int:
    """Send datagrams of seeded random sizes and contents to an echo server; check every echo.

    Up to ``window`` datagrams are outstanding at once. An echo completes the oldest outstanding
    datagram with identical content (tiny payloads repeat, so content, not position, identifies a
    datagram). A datagram not echoed within ``retry_after`` is sent again; an echo of an already
    completed datagram is a duplicate caused by such a retry; anything else is corruption.
    The run sends ``count`` datagrams, or new ones for ``duration`` seconds.
    """
    rng = random.Random(seed)
    sock = socket.socket(_family(server[0]), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect(server)
    outstanding: OrderedDict[int, tuple[bytes, float]] = OrderedDict()  # seq -> (payload, last sent)
    waiting: dict[bytes, deque[int]] = {}  # payload -> outstanding seqs carrying it, oldest first
    completed_payloads: set[bytes] = set()
    generated = completed = sent = retries = duplicates = corrupt = 0
    start = time.monotonic()

    def more_to_generate() -> bool:
        if count is not None:
            return generated < count
        assert duration is not None
        return time.monotonic() - start < duration

    def send(seq: int, payload: bytes) -> None:
        nonlocal sent
        sock.send(payload)
        sent += 1
        outstanding[seq] = (payload, time.monotonic())
        outstanding.move_to_end(seq)

    while outstanding or more_to_generate():
        now = time.monotonic()
        if now - start > give_up_after:
            break
        while len(outstanding) < window and more_to_generate():
            payload = rng.randbytes(rng.randint(min_size, max_size))
            waiting.setdefault(payload, deque()).append(generated)
            send(generated, payload)
            generated += 1
        oldest_sent = next(iter(outstanding.values()))[1] if outstanding else now
        readable, _, _ = select.select([sock], [], [], max(0.0, oldest_sent + retry_after - now))
        while readable:
            try:
                echo = sock.recv(65535, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            seqs = waiting.get(echo)
            if seqs:
                del outstanding[seqs.popleft()]
                if not seqs:
                    del waiting[echo]
                completed_payloads.add(echo)
                completed += 1
            elif echo in completed_payloads:
                duplicates += 1
            else:
                corrupt += 1
        now = time.monotonic()
        for seq, (payload, last_sent) in list(outstanding.items()):
            if now - last_sent < retry_after:
                break  # ordered by last send: the rest are younger
            send(seq, payload)
            retries += 1

    result = {"local_port": sock.getsockname()[1], "datagrams": generated, "completed": completed, "sent": sent,
              "retries": retries, "duplicates": duplicates, "corrupt": corrupt,
              "seconds": round(time.monotonic() - start, 3)}
    return _report(result, completed == generated and corrupt == 0)


def udp_refused(server: tuple[str, int], timeout: float) -> int:
    """Send to a closed port from a connected socket: the ICMP port unreachable must surface as ECONNREFUSED."""
    sock = socket.socket(_family(server[0]), socket.SOCK_DGRAM)
    sock.connect(server)
    sock.settimeout(timeout)
    sock.send(b"anyone there?")
    try:
        data = sock.recv(65535)
        outcome = f"unexpected reply {data!r}"
    except ConnectionRefusedError:
        outcome = "ECONNREFUSED"
    except TimeoutError:
        outcome = "timeout"
    return _report({"local_port": sock.getsockname()[1], "outcome": outcome}, outcome == "ECONNREFUSED")


def udp_receive(bind: tuple[str, int], expect: bytes, timeout: float) -> int:
    """Wait for one datagram on bind and compare it with expect; prints "bound" once listening."""
    sock = socket.socket(_family(bind[0]), socket.SOCK_DGRAM)
    sock.bind(bind)
    sock.settimeout(timeout)
    print("bound", flush=True)
    try:
        data, sender = sock.recvfrom(65535)
    except TimeoutError:
        return _report({"received": None}, False)
    return _report({"received": data.hex(), "from": f"{sender[0]}:{sender[1]}"}, data == expect)


def udp_gso_send(server: tuple[str, int], writes: int, size: int, gso_size: int, seed: int, gap: float) -> int:
    """``writes`` writes of ``size`` seeded bytes, each cut by the kernel's UDP GSO (UDP_SEGMENT) into
    datagrams of ``gso_size``; reports the SHA-256 of everything sent."""
    sock = socket.socket(_family(server[0]), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, gso_size)
    stream = b"".join(seeded_stream(seed, writes * size))
    for offset in range(0, len(stream), size):
        sock.sendto(stream[offset:offset + size], server)
        time.sleep(gap)
    return _report({"sent": len(stream), "sha256": hashlib.sha256(stream).hexdigest()}, True)


def udp_gather(bind: tuple[str, int], expect: int, timeout: float) -> int:
    """Receive datagrams until ``expect`` bytes have come; reports how many datagrams, the largest, the
    SHA-256 of their payloads in order. Prints "bound" once listening."""
    sock = socket.socket(_family(bind[0]), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)     # root: past rmem_max
    sock.bind(bind)
    sock.settimeout(timeout)
    print("bound", flush=True)
    digest, sizes = hashlib.sha256(), []
    while sum(sizes) < expect:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        digest.update(data)
        sizes.append(len(data))
    return _report({"bytes": sum(sizes), "datagrams": len(sizes), "largest": max(sizes, default=0),
                    "sha256": digest.hexdigest()}, sum(sizes) == expect)


def udp_multicast(group: tuple[str, int], device: str, count: int, size: int, timeout: float) -> int:
    """Send ``count`` datagrams to a multicast group out of ``device``, one at a time, each until it is
    echoed (up to 3 tries): group members answer from their unicast address, which an unconnected
    socket receives. Reports who answered."""
    family = _family(group[0])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    index = socket.if_nametoindex(device)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("4s4si", bytes(4), bytes(4), index))
    sock.settimeout(timeout)
    echoed = sent = 0
    sources: set[str] = set()
    for seq in range(count):
        payload = seq.to_bytes(4, "big") + random.Random(seq).randbytes(size - 4)
        for _ in range(3):
            sock.sendto(payload, group)
            sent += 1
            try:
                while True:
                    data, sender = sock.recvfrom(65535)
                    if data == payload:
                        break
            except TimeoutError:
                continue
            echoed += 1
            sources.add(f"{sender[0]}:{sender[1]}")
            break
    return _report({"datagrams": count, "sent": sent, "echoed": echoed, "sources": sorted(sources)}, echoed == count)


def inject(device: str, frames_file: Path, gap: float) -> int:
    """Write raw frames (hex, one per line) into device's transmit path through an AF_PACKET socket.

    The kernel passes these bytes to the TUN/TAP reader unchanged, unlike a raw IP socket, which
    would fix the very checksums and lengths a malformed-packet test needs to get wrong.
    """
    frames = [bytes.fromhex(line) for line in frames_file.read_text().split()]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: send only, receive nothing
    sock.bind((device, ETH_P_IP))
    for frame in frames:
        sock.send(frame)
        time.sleep(gap)
    return _report({"injected": len(frames)}, True)


# --- TCP ------------------------------------------------------------------------------------------

BLOCK = 1 << 20


def seeded_stream(seed: int, size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in blocks of up to 1 MiB, each block different (no repeating
    pattern could hide a misplaced block); the same seed gives the same bytes."""
    rng = random.Random(seed)
    while size > 0:
        block = rng.randbytes(min(BLOCK, size))
        size -= len(block)
        yield block


def _send_stream(sock: socket.socket, seed: int, size: int, fin: bool = True) -> str:
    """Send the seeded stream, then FIN (unless not ``fin``); the SHA-256 of what was sent."""
    digest = hashlib.sha256()
    for block in seeded_stream(seed, size):
        sock.sendall(block)
        digest.update(block)
    if fin:
        sock.shutdown(socket.SHUT_WR)
    return digest.hexdigest()


def _receive_all(sock: socket.socket) -> tuple[int, str]:
    """Read to EOF: (byte count, SHA-256)."""
    digest = hashlib.sha256()
    received = 0
    buffer = bytearray(BLOCK)
    while count := sock.recv_into(buffer):
        digest.update(memoryview(buffer)[:count])
        received += count
    return received, digest.hexdigest()


def _exchange(sock: socket.socket, seed: int, size: int, fin: bool = True) -> dict[str, Any]:
    """Send the seeded stream and receive to EOF at the same time (a sender thread: neither side may
    wait for the other to drain, or two full windows deadlock)."""
    sent: list[str] = []
    sender = threading.Thread(target=lambda: sent.append(_send_stream(sock, seed, size, fin)), daemon=True)
    start = time.monotonic()
    sender.start()
    received, received_sha256 = _receive_all(sock)
    sender.join()
    seconds = time.monotonic() - start
    return {"sent": size, "sent_sha256": sent[0] if sent else None, "received": received,
            "received_sha256": received_sha256, "seconds": round(seconds, 3)}


def tcp_echo(server: tuple[str, int], size: int, seed: int, connections: int, timeout: float) -> int:
    """Send ``size`` seeded bytes through an echo server (``connections`` times, one after another)
    and check that exactly the same bytes come back."""
    results = []
    for i in range(connections):
        with socket.create_connection(server, timeout=timeout) as sock:
            result = _exchange(sock, seed + i, size)
        result["ok"] = result["received_sha256"] == result["sent_sha256"] and result["received"] == size
        results.append(result)
    ok = all(r["ok"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    return _report({"connections": len(results), "ok": sum(bool(r["ok"]) for r in results), "bytes": size,
                    "seconds": round(seconds, 3), "results": results if not ok else []}, ok)


def tcp_many(server: tuple[str, int], connections: int, size: int, seed: int, timeout: float) -> int:
    """``connections`` echo exchanges at once from one thread (non-blocking sockets, a selector):
    each sends ``size`` seeded bytes of its own, then FIN, and must get exactly them back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 64)), hard))
    rng = random.Random(seed)
    selector = selectors.DefaultSelector()
    payloads: dict[socket.socket, bytes] = {}
    to_send: dict[socket.socket, memoryview] = {}
    received: dict[socket.socket, bytearray] = {}
    start = time.monotonic()
    for _ in range(connections):
        sock = socket.socket(_family(server[0]), socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(server)
        payloads[sock] = rng.randbytes(size)
        to_send[sock] = memoryview(payloads[sock])
        received[sock] = bytearray()
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    done = failed = 0
    errors: dict[str, int] = {}
    while done + failed < connections and time.monotonic() - start < timeout:
        for key, events in selector.select(timeout=1.0):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                if events & selectors.EVENT_WRITE:
                    data = to_send[sock]
                    data = to_send[sock] = data[sock.send(data):]
                    if not data:
                        sock.shutdown(socket.SHUT_WR)
                        selector.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    chunk = sock.recv(65536)
                    if chunk:
                        received[sock] += chunk
                        continue
                    selector.unregister(sock)
                    sock.close()
                    if received[sock] == payloads[sock]:
                        done += 1
                    else:
                        failed += 1
                        errors["wrong echo"] = errors.get("wrong echo", 0) + 1
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                selector.unregister(sock)
                sock.close()
                failed += 1
                name = type(e).__name__
                errors[name] = errors.get(name, 0) + 1
    return _report({"connections": connections, "completed": done, "failed": failed, "errors": errors,
                    "unfinished": connections - done - failed, "seconds": round(time.monotonic() - start, 3)},
                   done == connections)


def tcp_refused(server: tuple[str, int], timeout: float) -> int:
    """Connect to a closed port: the RST must surface as ECONNREFUSED."""
    start = time.monotonic()
    try:
        socket.create_connection(server, timeout=timeout).close()
        outcome = "connected"
    except ConnectionRefusedError:
        outcome = "ECONNREFUSED"
    except OSError as e:
        outcome = type(e).__name__
    return _report({"outcome": outcome, "seconds": round(time.monotonic() - start, 3)}, outcome == "ECONNREFUSED")


def tcp_serve(bind: tuple[str, int], size: int, seed: int, fin: bool) -> int:
    """Accept one connection; send ``size`` seeded bytes (then FIN, if ``fin``) while reading to EOF.

    Prints "listening" once it accepts connections and "accepted" once it has one.
    """
    with socket.create_server(bind, family=_family(bind[0])) as listener:
        print("listening", flush=True)
        sock, peer = listener.accept()
    print("accepted", flush=True)
    with sock:
        result = _exchange(sock, seed, size, fin)
    result["peer"] = f"{peer[0]}:{peer[1]}"
    return _report(result, True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peers.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("udp-exchange", help="echo exchange of random datagrams, every byte checked")
    p.add_argument("server", type=_endpoint)
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--count", type=int, help="number of datagrams")
    amount.add_argument("--duration", type=float, help="seconds to keep starting new datagrams")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-size", type=int, default=1472, help="largest payload (1472: a 1500-byte IP packet)")
    p.add_argument("--min-size", type=int, default=1, help="smallest payload")
    p.add_argument("--window", type=int, default=32, help="datagrams outstanding at once")
    p.add_argument("--retry-after", type=float, default=0.5, help="seconds before an unanswered datagram is resent")
    p.add_argument("--give-up-after", type=float, default=60.0, help="seconds before the whole run fails")

    p = commands.add_parser("udp-refused", help="expect ECONNREFUSED from a closed UDP port")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--timeout", type=float, default=5.0)

    p = commands.add_parser("udp-receive", help="receive one datagram and compare it")
    p.add_argument("bind", type=_endpoint)
    p.add_argument("--expect", type=bytes.fromhex, required=True, help="expected payload, hex")
    p.add_argument("--timeout", type=float, default=10.0)

    p = commands.add_parser("udp-multicast", help="send datagrams to a multicast group, expect each echoed")
    p.add_argument("group", type=_endpoint)
    p.add_argument("--device", required=True, help="send out of this device")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--size", type=int, default=100, help="payload bytes (at least 4)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each echo")

    p = commands.add_parser("udp-gso-send", help="send seeded bytes in writes the kernel's UDP GSO cuts")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--writes", type=int, required=True)
    p.add_argument("--size", type=int, required=True, help="bytes per write")
    p.add_argument("--gso", type=int, required=True, help="UDP_SEGMENT: datagram payload size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gap", type=float, default=0.002, help="seconds between writes")

    p = commands.add_parser("udp-gather", help="receive datagrams until a byte count, report their sizes")
    p.add_argument("bind", type=_endpoint)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for any one datagram")

    p = commands.add_parser("inject", help="send raw frames into a device via AF_PACKET")
    p.add_argument("device")
    p.add_argument("frames", type=Path, help="file of hex-encoded frames, one per line")
    p.add_argument("--gap", type=float, default=0.001, help="seconds between frames (keeps the device queue short)")

    p = commands.add_parser("tcp-echo", help="send seeded bytes through a TCP echo server, check they come back")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--connections", type=int, default=1, help="exchanges, one after another")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds any one socket call may block")

    p = commands.add_parser("tcp-many", help="many concurrent TCP echo exchanges")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--bytes", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before the whole run fails")

    p = commands.add_parser("tcp-refused", help="expect ECONNREFUSED from a closed TCP port")
    p.add_argument("server", type=_endpoint)
    p.add_argument("--timeout", type=float, default=10.0)

    p = commands.add_parser("tcp-serve", help="accept one TCP connection, send seeded bytes, read to EOF")
    p.add_argument("bind", type=_endpoint)
    p.add_argument("--send", type=int, default=0, help="bytes to send")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fin", dest="fin", action="store_false", help="keep the sending side open")

    args = parser.parse_args(argv)
    if args.command == "tcp-echo":
        return tcp_echo(args.server, args.bytes, args.seed, args.connections, args.timeout)
    if args.command == "tcp-many":
        return tcp_many(args.server, args.connections, args.bytes, args.seed, args.timeout)
    if args.command == "tcp-refused":
        return tcp_refused(args.server, args.timeout)
    if args.command == "tcp-serve":
        return tcp_serve(args.bind, args.send, args.seed, args.fin)
    if args.command == "udp-exchange":
        return udp_exchange(args.server, count=args.count, duration=args.duration, seed=args.seed,
                            max_size=args.max_size, window=args.window, retry_after=args.retry_after,
                            give_up_after=args.give_up_after, min_size=args.min_size)
    if args.command == "udp-refused":
        return udp_refused(args.server, args.timeout)
    if args.command == "udp-receive":
        return udp_receive(args.bind, args.expect, args.timeout)
    if args.command == "udp-multicast":
        return udp_multicast(args.group, args.device, args.count, args.size, args.timeout)
    if args.command == "udp-gso-send":
        return udp_gso_send(args.server, args.writes, args.size, args.gso, args.seed, args.gap)
    if args.command == "udp-gather":
        return udp_gather(args.bind, args.bytes, args.timeout)
    return inject(args.device, args.frames, args.gap)


if __name__ == "__main__":
    sys.exit(main())
