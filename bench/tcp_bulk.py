"""Bulk TCP throughput of netsock against the Linux kernel, beside the kernel against itself.

    sudo python bench/tcp_bulk.py [--bytes N] [--plain-bytes N] [--kernel-bytes N] [--runs N]
                                  [--only TEXT] [--profile] [--json FILE]

Seven transfers, each timed by its receiver from the established connection to the sender's FIN (the
handshake and process start-up are not counted):

    kernel -> netsock    the kernel's TCP sends to netsock over a TUN device, with the virtio-net
                         header offloads (64 KB super-segments both ways) and plain (MTU 1500)
    netsock -> kernel    the other way, both ways again
    netsock -> netsock   two netsock stacks in this process joined by in-memory links at MTU 1500 (GSO
                         on the way out, GRO on the way in): no device, no kernel
    kernel -> kernel     two namespaces joined by a veth pair: the reference the ratios are taken against;
                         and again with BIG TCP on the veth (super-segments as large as those netsock
                         writes the kernel over the TUN, see ``link.fdbased``), where the kernel has it

netsock runs in this process on the gevent hub; the kernel's ends are small Python programs run in
network namespaces this script creates and removes (root needed). The kernel's reference moves
more bytes (``--kernel-bytes``): it is some hundred times faster, and a short run would mostly time
its start. Each transfer runs ``--runs`` times and the median is printed (all runs go to the JSON),
since on a shared machine single runs scatter widely. "CPU s/GB" is the CPU time (user + system)
this process spent per 10^9 bytes moved: netsock's cost, steadier than the rate when other work
competes for the cores. ``--profile`` runs each selected netsock transfer once under cProfile and
prints its ten most expensive functions (by time spent in the function itself) instead.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
from gevent import subprocess

from netsock.header.checksum import USING_NATIVE
from netsock.link.wire import Wire
from netsock.link.fdbased import BIG_TCP_GSO_MAX_SIZE, FdEndpoint
from netsock.link.netns import inside
from netsock.link.tun import kernel_has_big_tcp_ipv4, set_big_tcp
from netsock.network.ipv4 import IPv4Protocol
from netsock.scheduler import blocking, wait_for
from netsock.stack import Stack
from netsock.stack.interfaces import LinkEndpoint
from netsock.tcpip import ErrConnectStarted, ErrWouldBlock, FullAddress, Route, ShutdownFlags, SockOpt
from netsock.transport.tcp import TCPEndpoint, TCPProtocol, TCPState
from netsock.waiter import EventMask, WaiterQueue

Transfer = tuple[int, float, float]   # bytes, seconds, CPU seconds of this process (0: not measured)

KERNEL = "192.0.2.1"
NETSOCK = "192.0.2.2"
VETH_A, VETH_B = "198.51.100.1", "198.51.100.2"
PORT = 5001
CHUNK = 64 * 1024
MIB = 1024 * 1024

# The kernel's end of a transfer: "send HOST PORT BYTES" or "receive HOST PORT" (prints "ready", then
# "BYTES SECONDS" once the sender's FIN arrived).
KERNEL_PEER = r"""
import os, socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "send":
    size, block = int(sys.argv[4]), memoryview(os.urandom(1 << 20))
    with socket.create_connection((host, port)) as sock:
        while size:
            size -= sock.send(block[:size])
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
else:
    with socket.create_server((host, port)) as listener:
        print("ready", flush=True)
        sock, _ = listener.accept()
    start, received, buffer = time.perf_counter(), 0, bytearray(1 << 20)
    while count := sock.recv_into(buffer):
        received += count
    print(received, time.perf_counter() - start, flush=True)
"""


# --- namespaces -----------------------------------------------------------------------------------

def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def namespaces(*names: str) -> Iterator[list[str]]:
    """Fresh namespaces (loopback up), deleted with their devices and processes however the block ends."""
    full = [f"nsk-bench-{os.getpid()}-{name}" for name in names]
    try:
        for ns in full:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        yield full
    finally:
        for ns in full:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                os.kill(int(pid), 9)    # only our kernel peers run there
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def kernel_peer(ns: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", KERNEL_PEER, *args],
                            stdout=subprocess.PIPE, text=True)


def kernel_result(peer: subprocess.Popen) -> tuple[int, float]:
    out, _ = peer.communicate(timeout=600)
    if peer.returncode:
        raise RuntimeError(f"kernel peer failed ({peer.returncode})")
    received, seconds = out.split()[-2:]
    return int(received), float(seconds)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- netsock's ends -------------------------------------------------------------------------------

def netsock_stack(link: LinkEndpoint, address: str) -> Stack:
    stack = Stack([IPv4Protocol], [TCPProtocol])
    stack.create_nic(1, link)
    stack.add_address(1, 0x0800, f"{address}/24")
    stack.set_route_table([Route.parse("0.0.0.0/0", 1)])
    return stack


def receive_all(endpoint: TCPEndpoint, queue: WaiterQueue) -> Transfer:
    """Read to EOF: (bytes, seconds and CPU seconds from now)."""
    buffer = bytearray(1 << 20)
    received = 0
    start, cpu = time.perf_counter(), cpu_seconds()
    while True:
        count = blocking(endpoint, queue, EventMask.IN, lambda: endpoint.read_into(buffer))
        if not count:
            return received, time.perf_counter() - start, cpu_seconds() - cpu
        received += count


def send_all(endpoint: TCPEndpoint, queue: WaiterQueue, size: int) -> None:
    """Write ``size`` bytes (in CHUNK-sized bytes objects, as an application writes), FIN, and wait
    until the peer has acknowledged everything and closed too."""
    writable = lambda: bool(endpoint.readiness(EventMask.OUT))  # noqa: E731
    chunks = [os.urandom(CHUNK) for _ in range(16)]
    sent = 0
    while sent < size:
        chunk = chunks[(sent // CHUNK) % len(chunks)][:size - sent]
        while chunk:
            wait_for(queue, EventMask.OUT, writable)
            try:
                written = endpoint.write(chunk)
            except ErrWouldBlock:
                continue
            sent += written
            chunk = chunk[written:]
    endpoint.shutdown(ShutdownFlags.WRITE)
    wait_for(queue, EventMask.IN, lambda: bool(endpoint.readiness(EventMask.IN)))
    endpoint.read(1)
    wait_for(queue, EventMask.HUP, lambda: endpoint.state in (TCPState.TIME_WAIT, TCPState.CLOSED))


def listen(stack: Stack, port: int) -> tuple[TCPEndpoint, WaiterQueue]:
    queue = WaiterQueue()
    listener = stack.new_endpoint(TCPProtocol.number, 0x0800, queue)
    listener.bind(FullAddress(0, b"", port))
    listener.listen(16)
    return listener, queue


def sink(listener: TCPEndpoint, queue: WaiterQueue) -> Transfer:
    """Accept one connection, read it to EOF and close it: (bytes, seconds and CPU seconds from
    accept to EOF)."""
    wait_for(queue, EventMask.IN, lambda: bool(listener.readiness(EventMask.IN)))
    endpoint, endpoint_queue = listener.accept()
    result = receive_all(endpoint, endpoint_queue)
    endpoint.close()
    return result


def connect(stack: Stack, address: str, port: int) -> tuple[TCPEndpoint, WaiterQueue]:
    queue = WaiterQueue()
    endpoint = stack.new_endpoint(TCPProtocol.number, 0x0800, queue)
    try:
        endpoint.connect(FullAddress(0, bytes(map(int, address.split("."))), port))
    except ErrConnectStarted:
        wait_for(queue, EventMask.OUT, lambda: bool(endpoint.readiness(EventMask.OUT)))
    err = endpoint.get_sock_opt(SockOpt.ERROR)
    if err is not None:
        raise err
    return endpoint, queue


# --- the transfers --------------------------------------------------------------------------------

@contextmanager
def tun_namespace(offload: bool) -> Iterator[tuple[str, Stack]]:
    """A namespace with tun0 (the kernel: 192.0.2.1/24) and netsock (192.0.2.2) attached to it here,
    with the virtio-net header offloads or without."""
    with namespaces("tun") as (ns,):
        ip("-n", ns, "tuntap", "add", "dev", "tun0", "mode", "tun")
        ip("-n", ns, "addr", "add", f"{KERNEL}/24", "dev", "tun0")
        ip("-n", ns, "link", "set", "tun0", "up")
        with inside(ns):
            link = FdEndpoint.open_tun("tun0", offload=offload)
        if link.vnet_header != offload:
            link.close()
            raise RuntimeError("the kernel refused the TUN offloads")
        stack = netsock_stack(link, NETSOCK)
        try:
            yield ns, stack
        finally:
            stack.close()
            link.close()


def kernel_to_netsock(size: int, offload: bool) -> Transfer:
    with tun_namespace(offload) as (ns, stack):
        listener, queue = listen(stack, PORT)
        sender = kernel_peer(ns, "send", NETSOCK, str(PORT), str(size))
        result = sink(listener, queue)
        sender.wait(60)
        return result


def netsock_to_kernel(size: int, offload: bool) -> Transfer:
    with tun_namespace(offload) as (ns, stack):
        receiver = kernel_peer(ns, "receive", KERNEL, str(PORT))
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("kernel receiver did not start")
        cpu = cpu_seconds()
        endpoint, queue = connect(stack, KERNEL, PORT)
        send_all(endpoint, queue, size)
        endpoint.close()
        cpu = cpu_seconds() - cpu
        return (*kernel_result(receiver), cpu)


def netsock_to_netsock(size: int) -> Transfer:
    """Two stacks joined by an in-memory wire (see ``link.wire``): the CPU time is both stacks'."""
    links = Wire(size=1 << 16, gso=True).ends
    receiver_stack, sender_stack = netsock_stack(links[0], KERNEL), netsock_stack(links[1], NETSOCK)
    try:
        receiving = gevent.spawn(sink, *listen(receiver_stack, PORT))
        send_all(*connect(sender_stack, KERNEL, PORT), size)
        return receiving.get()
    finally:
        sender_stack.close()
        receiver_stack.close()


def kernel_to_kernel(size: int, big_tcp: bool = False) -> Transfer:
    with namespaces("a", "b") as (a, b):
        ip("-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", b)
        for ns, address in ((a, VETH_A), (b, VETH_B)):
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "veth0")
            if big_tcp:
                with inside(ns):
                    set_big_tcp("veth0", BIG_TCP_GSO_MAX_SIZE)
            ip("-n", ns, "link", "set", "veth0", "up")
        receiver = kernel_peer(b, "receive", VETH_B, str(PORT))
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("kernel receiver did not start")
        sender = kernel_peer(a, "send", VETH_B, str(PORT), str(size))
        result = kernel_result(receiver)
        sender.wait(60)
        return (*result, 0.0)


def profiled(run: Callable[[], Transfer]) -> str:
    """The ten functions ``run`` spent most time in (their own time, callees excluded)."""
    profile = cProfile.Profile()
    received, seconds, _ = profile.runcall(run)
    out = io.StringIO()
    print(f"{received} bytes in {seconds:.3f} s under the profiler", file=out)
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(10)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bytes", type=int, default=256 * MIB,
                        help="bytes per netsock transfer with offloads and in-process (default 256 MiB)")
    parser.add_argument("--plain-bytes", type=int, default=64 * MIB,
                        help="bytes per netsock transfer over a plain TUN (default 64 MiB)")
    parser.add_argument("--kernel-bytes", type=int, default=4096 * MIB,
                        help="bytes for the kernel-to-kernel reference (default 4 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each transfer; the median is printed")
    parser.add_argument("--only", help="run only the transfers whose name contains this text (and the kernel's)")
    parser.add_argument("--profile", action="store_true", help="profile one run of each netsock transfer")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces, a TUN device and a veth pair")

    reference = "kernel -> kernel (veth)"
    runs: dict[str, tuple[Callable[[int], Transfer], int]] = {
        "kernel -> netsock (TUN, offloads)": (lambda size: kernel_to_netsock(size, True), args.bytes),
        "netsock -> kernel (TUN, offloads)": (lambda size: netsock_to_kernel(size, True), args.bytes),
        "kernel -> netsock (TUN, MTU 1500)": (lambda size: kernel_to_netsock(size, False), args.plain_bytes),
        "netsock -> kernel (TUN, MTU 1500)": (lambda size: netsock_to_kernel(size, False), args.plain_bytes),
        "netsock -> netsock (in-process)": (netsock_to_netsock, args.bytes),
        reference: (kernel_to_kernel, args.kernel_bytes),
        # What the kernel makes of BIG TCP itself: netsock writes the kernel super-segments that large.
        "kernel -> kernel (veth, BIG TCP)": (lambda size: kernel_to_kernel(size, True), args.kernel_bytes),
    }
    runs = {name: run for name, run in runs.items()
            if args.only is None or args.only in name or name.startswith("kernel -> kernel")}
    if not kernel_has_big_tcp_ipv4():
        del runs["kernel -> kernel (veth, BIG TCP)"]
    if args.profile:
        for name, (run, size) in runs.items():
            if not name.startswith("kernel -> kernel"):
                print(f"== {name}\n{profiled(lambda: run(size))}")
        return 0

    results = {}
    for name, (run, size) in runs.items():
        transfers = []
        for _ in range(args.runs):
            received, seconds, cpu = run(size)
            if received != size:
                raise RuntimeError(f"{name}: {received} bytes arrived, {size} were sent")
            transfers.append({"seconds": round(seconds, 4), "mb_per_s": round(received / seconds / 1e6, 2),
                              "cpu_s_per_gb": round(cpu / received * 1e9, 3) if cpu else None})
        cpu_figures = [t["cpu_s_per_gb"] for t in transfers if t["cpu_s_per_gb"] is not None]
        results[name] = {"bytes": size,
                         "mb_per_s": round(statistics.median(t["mb_per_s"] for t in transfers), 2),
                         "best_mb_per_s": max(t["mb_per_s"] for t in transfers),
                         "cpu_s_per_gb": round(statistics.median(cpu_figures), 3) if cpu_figures else None,
                         "runs": transfers}
    kernel = results[reference]["mb_per_s"]
    for result in results.values():
        result["vs_kernel"] = round(result["mb_per_s"] / kernel, 5)

    print(f"TCP bulk throughput, median of {args.runs} (MB/s = 10^6 bytes/s; native code: {USING_NATIVE}; "
          f"Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  {'path':36} {'bytes':>11} {'MB/s':>9} {'best':>9} {'vs kernel':>10} {'CPU s/GB':>9}")
    for name, result in results.items():
        cpu = f"{result['cpu_s_per_gb']:9.2f}" if result["cpu_s_per_gb"] is not None else f"{'-':>9}"
        print(f"  {name:36} {result['bytes']:11d} {result['mb_per_s']:9.2f} {result['best_mb_per_s']:9.2f} "
              f"{result['vs_kernel']:10.4f} {cpu}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"native": USING_NATIVE, "python": sys.version.split()[0], "runs": args.runs,
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
