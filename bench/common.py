"""What the benchmarks share: the hosts they run on, pinned processes, figures and their targets.

Each benchmark compares netsock with the kernel doing the same work in the same run. Two kinds of
host carry the namespaced ones, both made fresh per measurement and removed with every device and
process in them, also on failure (``integration.nsutil.NetNS``):

    tun_host()     one namespace with tun0 (kernel side 192.0.2.1/24); the netsock program under
                   test attaches to tun0 as 192.0.2.2, the load generator runs on the kernel side
    veth_hosts()   two namespaces joined by a veth pair (198.51.100.1/24 <-> 198.51.100.2/24):
                   the same server program on the kernel's stack, the same load generator

Load generators and servers are pinned with taskset (``LOAD_CPU``, ``SERVER_CPU`` unless a
benchmark says otherwise), so netsock and the kernel are compared on the same placement.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))     # for integration.nsutil; the installed netsock keeps precedence

from integration.nsutil import NetNS, remove_stale_namespaces

PEERS = Path(__file__).resolve().with_name("peers.py")

TUN_KERNEL, TUN_NETSOCK = "192.0.2.1", "192.0.2.2"
VETH_CLIENT, VETH_SERVER = "198.51.100.1", "198.51.100.2"
LOAD_CPU, SERVER_CPU = 0, 1
KIB = 1024
MIB = 1024 * KIB


# --- figures ------------------------------------------------------------------------------------

@dataclass
class Figure:
    """One line of the suite's table: netsock's figure beside the kernel's for the same work.

    ``ratio`` is netsock / kernel. ``met`` is whether ``target`` holds (None where no target applies).
    """

    name: str
    unit: str
    netsock: float | None
    kernel: float | None
    target: str = ""
    met: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.netsock is None or not self.kernel:
            return None
        return self.netsock / self.kernel

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def interpreter() -> str:
    """The Python the servers run on, and the two build facts that move the stack's figures most:
    libpython linked as a shared library (calls through the PLT) and profile-guided optimization
    (pyenv builds with neither by default; distributions' and python.org's builds are PGO+LTO).
    Measured: the per-connection path costs 151 µs on pyenv's 3.11.7, 134 µs on Debian's 3.11.2."""
    import platform
    import sysconfig
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        shared = any("libpython" in line for line in maps)
    configured = sysconfig.get_config_var("CONFIG_ARGS") or ""
    pgo = "--enable-optimizations" in configured
    return (f"{platform.python_implementation()} {platform.python_version()} ({sys.executable}; libpython "
            f"{'shared' if shared else 'linked in'}{', configured --enable-optimizations' if pgo else ''})")


def memory_walk() -> dict[str, float]:
    """Nanoseconds per step of a random walk through a Python list of ints, of 8 Ki and of 1 Mi entries
    (64 KiB and 8 MiB of pointers, the int objects besides): what a cold object costs the interpreter.
    The stack's per-packet and per-connection paths touch a few MiB of code and objects, so their
    figures follow the second number far more than the kernel's do: on a machine of this kind whose L3
    cache was all but unavailable to us (a C pointer chase: 17 ns within 1 MiB, 150 ns within 4 MiB)
    the connection rate was a third of what it had been on others. Printed with the suite's figures so
    that runs on different machines can be told apart."""
    import random
    walk = {}
    for label, count in (("8 Ki", 8 << 10), ("1 Mi", 1 << 20)):
        order = list(range(count))
        random.Random(1).shuffle(order)
        following = [0] * count
        for index, slot in enumerate(order):
            following[slot] = order[(index + 1) % count]
        steps, slot = 200_000, 0
        started = time.perf_counter()
        for _ in range(steps):
            slot = following[slot]
        walk[label] = (time.perf_counter() - started) / steps * 1e9
    return walk


def at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def write_figures(path: str | None, figures: Sequence[Figure], **context: Any) -> None:
    """Print the figures and, with a path, write them (and ``context``) as JSON for run_all."""
    for figure in figures:
        ratio = f"{figure.ratio:.3f}" if figure.ratio is not None else "-"
        print(f"  {figure.name:52} netsock {_number(figure.netsock):>10}  kernel {_number(figure.kernel):>10} "
              f"{figure.unit:10} ratio {ratio}")
    if path:
        with open(path, "w") as f:
            json.dump({"figures": [figure.as_dict() for figure in figures], **context}, f, indent=1)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


# --- measuring ----------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """User + system CPU of this process and of its children waited for so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


STREAM_CHUNK = 64 * KIB


def stream_sink(listener: Any) -> dict[str, Any]:
    """Accept one connection and read it to EOF into a 1 MiB buffer: bytes, seconds from the accept to
    EOF and this process's CPU seconds meanwhile (any socket-like listener: netsock's or the kernel's)."""
    connection, _ = listener.accept()
    buffer = bytearray(MIB)
    received = 0
    start, cpu = time.perf_counter(), time.process_time()
    while count := connection.recv_into(buffer):
        received += count
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    connection.close()
    return {"bytes": received, "seconds": seconds, "cpu_seconds": cpu}


def stream_source(sock: Any, address: tuple[str, int], size: int) -> float:
    """Connect, write ``size`` bytes in 64 KiB bytes objects, half-close, wait for the peer's close:
    this process's CPU seconds from the connect on."""
    chunks = [os.urandom(STREAM_CHUNK) for _ in range(16)]
    sock.connect(address)
    cpu = time.process_time()
    sent = 0
    while sent < size:
        chunk = chunks[(sent // STREAM_CHUNK) % len(chunks)][:size - sent]
        sock.sendall(chunk)
        sent += len(chunk)
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)            # the receiver's close
    cpu = time.process_time() - cpu
    sock.close()
    return cpu


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- hosts and processes -----------------------------------------------------------------------

def require_root(parser: Any) -> None:
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces, TUN devices and veth pairs")


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind like an exception, so every ``finally`` and atexit cleanup runs."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


@contextmanager
def namespace() -> Iterator[NetNS]:
    """A fresh namespace, loopback up, removed with whatever runs in it at the end."""
    remove_stale_namespaces()
    ns = NetNS.create()
    try:
        yield ns
    finally:
        ns.close()


@contextmanager
def tun_host() -> Iterator[NetNS]:
    """A namespace with tun0 up, its kernel side TUN_KERNEL/24; netsock attaches as TUN_NETSOCK."""
    with namespace() as ns:
        ns.add_tun("tun0", f"{TUN_KERNEL}/24")
        yield ns


@contextmanager
def veth_hosts() -> Iterator[tuple[NetNS, NetNS]]:
    """(client, server): two namespaces joined by a veth pair, VETH_CLIENT/24 <-> VETH_SERVER/24."""
    remove_stale_namespaces()
    client = NetNS.create()
    try:
        server = NetNS.create()
        try:
            client.add_veth("veth0", f"{VETH_CLIENT}/24", server, "veth0", f"{VETH_SERVER}/24")
            yield client, server
        finally:
            server.close()
    finally:
        client.close()


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """argv run on one CPU (taskset), or as it is for None."""
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


def peer(*args: str) -> list[str]:
    """The command line of a bench/peers.py subcommand (a kernel-side program)."""
    return [sys.executable, str(PEERS), *args]


def start(ns: NetNS, argv: Sequence[str], log: Path, cpu: int | None = SERVER_CPU) -> subprocess.Popen[bytes]:
    """Start a server in ns on ``cpu``, its output to ``log`` and its working directory log's (outside
    the checkout: ``-m netsock...`` imports the installed package); stopped (by PID) when ns is closed."""
    with open(log, "wb") as out:
        return ns.popen(pinned(cpu, argv), cwd=log.parent, stdin=subprocess.DEVNULL, stdout=out,
                        stderr=subprocess.STDOUT)


def wait_listening(ns: NetNS, host: str, port: int, server: subprocess.Popen[bytes], log: Path,
                   timeout: float = 30.0) -> None:
    """Wait until ``server`` accepts TCP connections on host:port, as seen from ns."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited {server.returncode}:\n{log.read_text(errors='replace')}")
        if ns.run(peer("probe", f"{host}:{port}"), check=False).returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not listening on {host}:{port} after {timeout}s:\n"
                               f"{log.read_text(errors='replace')}")
        time.sleep(0.1)


def run_json(ns: NetNS, argv: Sequence[str], cpu: int | None = LOAD_CPU, timeout: float = 300) -> dict[str, Any]:
    """Run a peer in ns on ``cpu`` to completion; the JSON object it printed last."""
    done = ns.run(pinned(cpu, argv), check=False, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def widen_port_range(ns: NetNS) -> None:
    """Give ns's clients every port from 1024 up: a connection-rate run leaves one TIME_WAIT per connection."""
    ns.run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"])


# --- the echo servers (connection rate, latency) -------------------------------------------------

ECHO_PORT = 7


@contextmanager
def netsock_echo(workdir: Path, cpu: int | None = SERVER_CPU) -> Iterator[tuple[NetNS, str]]:
    """netsock's ``tun_tcp_echo`` sample on tun0 (on ``cpu``): (the kernel side's namespace, its address)."""
    with tun_host() as ns:
        log = workdir / "netsock-echo.log"
        server = start(ns, [sys.executable, "-m", "netsock.samples.tun_tcp_echo", "tun0", TUN_NETSOCK,
                            str(ECHO_PORT)], log, cpu)
        wait_listening(ns, TUN_NETSOCK, ECHO_PORT, server, log)
        yield ns, TUN_NETSOCK


@contextmanager
def kernel_echo(workdir: Path, cpu: int | None = SERVER_CPU) -> Iterator[tuple[NetNS, str]]:
    """The same echo server on the kernel's sockets (peers.py echo-server, on ``cpu``) across a veth
    pair: (the client's namespace, the server's address)."""
    with veth_hosts() as (client, server_ns):
        log = workdir / "kernel-echo.log"
        server = start(server_ns, peer("echo-server", f"{VETH_SERVER}:{ECHO_PORT}"), log, cpu)
        wait_listening(client, VETH_SERVER, ECHO_PORT, server, log)
        yield client, VETH_SERVER
