"""Kernel-side peers for the integration tests, run inside a test's namespace.

    ip netns exec NS python integration/peers.py udp-exchange 192.0.2.2:7 --count 10000 --seed 1
    ip netns exec NS python integration/peers.py udp-refused 192.0.2.2:9
    ip netns exec NS python integration/peers.py udp-receive 192.0.2.1:5555 --expect 6869
    ip netns exec NS python integration/peers.py inject tun0 FRAMES.hex

Each prints one JSON line with what it observed and exits 0 only if the peer saw what it expects.
These use the kernel's own sockets: they are the real-world counterpart netsock must interoperate with.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import sys
import time
from collections import OrderedDict, deque
from pathlib import Path

ETH_P_IP = 0x0800


def _endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def _report(result: dict[str, object], ok: bool) -> int:
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


def udp_exchange(server: tuple[str, int], *, count: int | None, duration: float | None, seed: int,
                 max_size: int, window: int, retry_after: float, give_up_after: float) -> int:
    """Send datagrams of seeded random sizes and contents to an echo server; check every echo.

    Up to ``window`` datagrams are outstanding at once. An echo completes the oldest outstanding
    datagram with identical content (tiny payloads repeat, so content, not position, identifies a
    datagram). A datagram not echoed within ``retry_after`` is sent again; an echo of an already
    completed datagram is a duplicate caused by such a retry; anything else is corruption.
    The run sends ``count`` datagrams, or new ones for ``duration`` seconds.
    """
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
            payload = rng.randbytes(rng.randint(1, max_size))
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
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(bind)
    sock.settimeout(timeout)
    print("bound", flush=True)
    try:
        data, sender = sock.recvfrom(65535)
    except TimeoutError:
        return _report({"received": None}, False)
    return _report({"received": data.hex(), "from": f"{sender[0]}:{sender[1]}"}, data == expect)


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

    p = commands.add_parser("inject", help="send raw frames into a device via AF_PACKET")
    p.add_argument("device")
    p.add_argument("frames", type=Path, help="file of hex-encoded frames, one per line")
    p.add_argument("--gap", type=float, default=0.001, help="seconds between frames (keeps the device queue short)")

    args = parser.parse_args(argv)
    if args.command == "udp-exchange":
        return udp_exchange(args.server, count=args.count, duration=args.duration, seed=args.seed,
                            max_size=args.max_size, window=args.window, retry_after=args.retry_after,
                            give_up_after=args.give_up_after)
    if args.command == "udp-refused":
        return udp_refused(args.server, args.timeout)
    if args.command == "udp-receive":
        return udp_receive(args.bind, args.expect, args.timeout)
    return inject(args.device, args.frames, args.gap)


if __name__ == "__main__":
    sys.exit(main())
