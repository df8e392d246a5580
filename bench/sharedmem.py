"""Two processes joined by the shared-memory link (``netsock.link.sharedmem``): frames per second on
the bare link, and bulk TCP between a netsock stack in each, with the CPU seconds per GB of both
processes, at MTU 1500 and 65535; beside the kernel doing the same between two processes.

    python bench/sharedmem.py [--quick] [--frames N] [--bytes N] [--kernel-bytes N] [--no-gso] [--json FILE]

The parent makes the link and starts this script again as the child (``--child ...``), handing it
the region and the eventfds with ``pass_fds``; with two CPUs or more the parent runs on CPU 0 and
the child on CPU 1. Needs no root.

frames: the parent writes raw IPv4 frames in batches of 64 (``write_packets``), retrying what a full
ring refused, so none is lost; the child's link hands them to a counter. Timed at the child from the
first frame to the last; CPU is each process's own over that time (a sender that waits for room
spins: its CPU is the receiver's time, not its work). Kernel: one ``send``/``recv`` per frame on an
AF_UNIX datagram socket pair, the cheapest packet medium between two processes.

TCP: the child runs a sink on its stack (192.0.2.2) that reads to EOF into a 1 MiB buffer; the parent
connects from its stack (192.0.2.1), writes 64 KiB bytes objects, shuts down its sending side and
waits for the sink's close. Timed at the child from the accept to EOF (as bench/inprocess.py times);
CPU s/GB is both processes' user + system time over the transfer, per 10^9 bytes. The regions offer
GSO unless ``--no-gso``: TCP then hands the link 64 KB super-segments, each one record, which the
other stack takes whole (at MTU 65535 a segment is already that large: nothing changes there); the
detail counts the sender's records and super-segments. Kernel: the same program on gevent's kernel
sockets over loopback (MTU 65536, with GSO and GRO), one figure for both MTUs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import gevent
import gevent.event
import gevent.socket
import gevent.subprocess

from netsock.adapter.socket import NetsockSocket
from netsock.link.sharedmem import SharedMemoryEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.stack import Stack
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, Route
from netsock.tcpip.errors import ErrNoBufferSpace
from netsock.transport.icmp import ICMPv4Protocol
from netsock.transport.tcp import TCPProtocol

from common import LOAD_CPU, MIB, SERVER_CPU, Figure, exit_on_sigterm, stream_sink, stream_source, write_figures

BATCH = 64
PORT = 5001
SMALL_FRAME = 60
MTUS = (1500, 65535)
FAST_SCALE = 8      # TCP moves --bytes this many times where it is that much faster: MTU 65535, or GSO
RING_BYTES = {1500: 2 * MIB, 65535: 8 * MIB}
PINNED = (os.cpu_count() or 1) >= 2


def frame_of(size: int) -> bytes:
    """A raw-IP frame of ``size`` bytes (IPv4 by its first byte: the receiving link passes it up)."""
    return b"\x45" + bytes(size - 1)


def tcp_stack(link: SharedMemoryEndpoint, address: str) -> Stack:
    stack = Stack([IPv4Protocol], [TCPProtocol, ICMPv4Protocol])
    stack.create_nic(1, link)
    stack.add_address(1, IPV4_PROTOCOL_NUMBER, f"{address}/24")
    stack.set_route_table([Route.parse("192.0.2.0/24", 1)])
    return stack


class FrameCounter:
    """A dispatcher that counts frames, timing the first to the last."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.seconds = self.cpu_seconds = 0.0
        self.done = gevent.event.Event()

    def deliver_network_packet(self, remote: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        if not self.seen:
            self.seconds, self.cpu_seconds = -time.perf_counter(), -time.process_time()
        self.seen += 1
        if self.seen == self.count:
            self.seconds += time.perf_counter()
            self.cpu_seconds += time.process_time()
            self.done.set()


def child(role: str, argument: str, count: int) -> None:
    """Run one measurement's receiving side; its result goes to stdout as one JSON line."""
    report = print_json
    if role == "frames":
        link = SharedMemoryEndpoint.open(argument)
        counter = FrameCounter(count)
        link.attach(counter)
        print("ready", flush=True)
        counter.done.wait()
        report({"frames": counter.seen, "seconds": counter.seconds, "cpu_seconds": counter.cpu_seconds,
                "ring_errors": link.stats.rx_ring_errors.value})
    elif role == "kernel-frames":
        receiver = socket.socket(fileno=int(argument))
        buffer = bytearray(65536)
        receiver.recv_into(buffer)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(count - 1):
            receiver.recv_into(buffer)
        report({"frames": count, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu})
    elif role == "tcp":
        stack = tcp_stack(SharedMemoryEndpoint.open(argument), "192.0.2.2")
        listener = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=stack)
        listener.bind(("192.0.2.2", PORT))
        listener.listen()
        print("ready", flush=True)
        report(stream_sink(listener))
    else:
        listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))     # a free port on the machine's loopback
        listener.listen()
        print(f"ready {listener.getsockname()[1]}", flush=True)
        report(stream_sink(listener))
    gevent.socket.wait_read(sys.stdin.fileno())     # the stack stays up until the parent is done


def print_json(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


# --- the parent -------------------------------------------------------------------------------------

def start_child(role: str, argument: str, count: int = 0, pass_fds: tuple[int, ...] = ()) -> tuple[Any, str]:
    """This script as the child in ``role``, and what its "ready" line said after the word (the
    kernel TCP sink's port); the kernel's frame receiver says nothing."""
    argv = [sys.executable, __file__, "--child", role, argument, str(count)]
    if PINNED:
        argv = ["taskset", "-c", str(SERVER_CPU), *argv]
    process = gevent.subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if role == "kernel-frames":
        return process, ""
    ready = process.stdout.readline().decode()
    if not ready.startswith("ready"):
        process.kill()
        process.wait()
        raise RuntimeError(f"the {role} child did not start")
    return process, ready[len("ready"):].strip()


def finish_child(process: Any) -> dict[str, Any]:
    """The child's report; it then exits."""
    try:
        result: dict[str, Any] = json.loads(process.stdout.readline())
        process.stdin.close()
        if process.wait(60):
            raise RuntimeError(f"the child exited {process.returncode}")
        return result
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def netsock_frames(mtu: int, size: int, count: int, gso: bool) -> dict[str, Any]:
    link, peer = SharedMemoryEndpoint.create(mtu=mtu, ring_bytes=RING_BYTES[mtu], gso=gso)
    try:
        with peer:
            process, _ = start_child("frames", peer.spec, count, peer.fds)
        pkts = [PacketBuffer(0, frame_of(size)) for _ in range(BATCH)]    # raw IP: written as they are
        cpu = time.process_time()
        sent = 0
        while sent < count:
            try:
                sent += link.write_packets(b"", IPV4_PROTOCOL_NUMBER, pkts[:count - sent])
            except ErrNoBufferSpace:
                gevent.sleep(0)
        result = finish_child(process)
        result["sender_cpu_seconds"] = time.process_time() - cpu
        result["ring_full"] = link.stats.tx_queue_full.value
        result["wakeups"] = link.stats.tx_wakeups.value
        return frames_result(result, size)
    finally:
        link.close()


def kernel_frames(size: int, count: int) -> dict[str, Any]:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sender:
        with receiver:
            process, _ = start_child("kernel-frames", str(receiver.fileno()), count, (receiver.fileno(),))
        frame = frame_of(size)
        cpu = time.process_time()
        for _ in range(count):
            sender.send(frame)
        result = finish_child(process)
        result["sender_cpu_seconds"] = time.process_time() - cpu
    return frames_result(result, size)


def frames_result(result: dict[str, Any], size: int) -> dict[str, Any]:
    result["frame_bytes"] = size
    result["frames_per_s"] = result["frames"] / result["seconds"]
    return result


def netsock_tcp(mtu: int, size: int, gso: bool) -> dict[str, Any]:
    link, peer = SharedMemoryEndpoint.create(mtu=mtu, ring_bytes=RING_BYTES[mtu], gso=gso)
    stack = tcp_stack(link, "192.0.2.1")
    try:
        with peer:
            process, _ = start_child("tcp", peer.spec, 0, peer.fds)
        sender = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=stack)
        sender_cpu = stream_source(sender, ("192.0.2.2", PORT), size)
        result = tcp_result(finish_child(process), size, sender_cpu)
        result["gso"] = gso
        result["records"] = link.stats.tx_packets.value
        result["super_segments"] = link.stats.tx_super_segments.value
        result["ring_full"] = link.stats.tx_queue_full.value
        result["wakeups"] = link.stats.tx_wakeups.value
        return result
    finally:
        stack.close()
        link.close()


def kernel_tcp(size: int) -> dict[str, Any]:
    process, port = start_child("kernel-tcp", "-")
    sender_cpu = stream_source(gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("127.0.0.1", int(port)), size)
    return tcp_result(finish_child(process), size, sender_cpu)


def tcp_result(result: dict[str, Any], size: int, sender_cpu: float) -> dict[str, Any]:
    if result["bytes"] != size:
        raise RuntimeError(f"{result['bytes']} bytes arrived, {size} were sent")
    cpu = result["cpu_seconds"] + sender_cpu
    return {**result, "sender_cpu_seconds": sender_cpu, "mb_per_s": size / result["seconds"] / 1e6,
            "cpu_seconds_per_gb": cpu / (size / 1e9)}


def measure(frames: int, size: int, kernel_size: int, gso: bool) -> list[Figure]:
    figures = []
    for mtu, frame_size, count in ((1500, SMALL_FRAME, frames), (1500, 1500, frames), (65535, 65535, frames // 10)):
        netsock, kernel = netsock_frames(mtu, frame_size, count, gso), kernel_frames(frame_size, count)
        figures.append(Figure(f"frames/s, {frame_size}-byte frames, MTU {mtu}", "frames/s", netsock["frames_per_s"],
                              kernel["frames_per_s"], detail={"netsock": netsock, "kernel": kernel,
                                                              "kernel_path": "AF_UNIX datagram socket pair"}))
    kernel = kernel_tcp(kernel_size)
    for mtu in MTUS:
        netsock = netsock_tcp(mtu, size * (FAST_SCALE if gso or mtu > 1500 else 1), gso)
        detail = {"netsock": netsock, "kernel": kernel, "kernel_path": "gevent sockets over loopback (MTU 65536)"}
        figures += [Figure(f"bulk TCP between two processes, MTU {mtu}", "MB/s", netsock["mb_per_s"],
                           kernel["mb_per_s"], detail=detail),
                    Figure(f"CPU per GB, both processes, MTU {mtu}", "CPU s/GB", netsock["cpu_seconds_per_gb"],
                           kernel["cpu_seconds_per_gb"])]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=500_000,
                        help="frames per small-frame measurement, a tenth of it at 64 KB (default 500,000)")
    parser.add_argument("--bytes", type=int, default=256 * MIB,
                        help="TCP bytes at MTU 1500 without GSO, 8 times that at 65535 or with GSO (default 256 MiB)")
    parser.add_argument("--kernel-bytes", type=int, default=4096 * MIB,
                        help="bytes for the kernel's TCP transfer (default 4 GiB)")
    parser.add_argument("--quick", action="store_true", help="100,000 frames, 32 MiB, 1 GiB for the kernel")
    parser.add_argument("--gso", action=argparse.BooleanOptionalAction, default=True,
                        help="regions that carry TCP super-segments whole (default: on)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", nargs=3, metavar=("ROLE", "ARGUMENT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, argument, count = args.child
        child(role, argument, int(count))
        return 0
    if args.quick:
        args.frames, args.bytes, args.kernel_bytes = 100_000, 32 * MIB, 1024 * MIB
    exit_on_sigterm()
    if PINNED:
        os.sched_setaffinity(0, {LOAD_CPU})
    print(f"Two processes over the shared-memory link (kernel: AF_UNIX datagrams, TCP over loopback); "
          f"GSO {'on' if args.gso else 'off'}; {'parent on CPU 0, child on CPU 1' if PINNED else 'unpinned'}")
    write_figures(args.json, measure(args.frames, args.bytes, args.kernel_bytes, args.gso),
                  command=" ".join([os.path.basename(sys.executable), *sys.argv]), gso=args.gso)
    return 0


if __name__ == "__main__":
    sys.exit(main())
