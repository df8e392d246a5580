"""Test hosts in network namespaces, and the netsock sample processes that run in them.

Every integration test gets a namespace of its own, so the kernel peer, the TUN/TAP device and the
netsock process under test share a private network that nothing else on the machine can see or
disturb. Teardown kills what the test started (by PID) and deletes the namespace, which deletes its
devices with it; a namespace a crashed run left behind is removed by the next run.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PEERS = Path(__file__).resolve().with_name("peers.py")
NAME_PREFIX = "nsk-"
NETNS_DIR = Path("/run/netns")

_DISABLE_IPV6 = "for scope in all default; do echo 1 > /proc/sys/net/ipv6/conf/$scope/disable_ipv6; done"

_counter = itertools.count()
_open: dict[str, NetNS] = {}


class NetNS:
    """A network namespace with its devices and the processes started in it.

    ``run``/``popen`` execute inside the namespace via ``ip netns exec``, which keeps the environment.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._procs: list[subprocess.Popen[Any]] = []

    @classmethod
    def create(cls, ipv6: bool = False) -> NetNS:
        """Create a namespace with loopback up and, unless ``ipv6``, IPv6 off, so links carry only what
        a test sends. With IPv6 on, the kernel also sends what an IPv6 host does unasked (router
        solicitations, MLD reports, DAD for its link-local addresses)."""
        ns = cls(f"{NAME_PREFIX}{os.getpid()}-{next(_counter)}")
        _command(["ip", "netns", "add", ns.name])
        _open[ns.name] = ns
        try:
            ns.ip("link", "set", "lo", "up")
            if not ipv6:
                ns.run(["sh", "-c", _DISABLE_IPV6])
        except BaseException:
            ns.close()
            raise
        return ns

    def ip(self, *args: str) -> str:
        """Run ``ip -n NAME ARGS`` and return its stdout."""
        return _command(["ip", "-n", self.name, *args]).stdout

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 120,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside the namespace, capturing its output as text."""
        kwargs.setdefault("capture_output", True)
        try:
            return subprocess.run(["ip", "netns", "exec", self.name, *argv], check=check, text=True,
                                  timeout=timeout, **kwargs)
        except subprocess.CalledProcessError as e:
            raise AssertionError(f"{' '.join(argv)} exited {e.returncode}\n"
                                 f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside the namespace; it is terminated at teardown if still running."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def add_tun(self, name: str, host_cidr: str) -> None:
        """Create a persistent TUN device the sample attaches to; the kernel side gets host_cidr."""
        self._add_tuntap(name, "tun", host_cidr)

    def add_tap(self, name: str, host_cidr: str) -> None:
        """Create a persistent TAP device the sample attaches to; the kernel side gets host_cidr."""
        self._add_tuntap(name, "tap", host_cidr)

    def _add_tuntap(self, name: str, mode: str, host_cidr: str) -> None:
        self.ip("tuntap", "add", "dev", name, "mode", mode)
        self.ip("addr", "add", host_cidr, "dev", name)
        self.ip("link", "set", name, "up")

    def add_veth(self, name: str, cidr: str, peer: NetNS, peer_name: str, peer_cidr: str) -> None:
        """A veth pair from this namespace (``name``, ``cidr``) to ``peer`` (``peer_name``, ``peer_cidr``),
        created inside the namespaces: no device ever appears in the host's."""
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", peer.name)
        self.ip("addr", "add", cidr, "dev", name)
        self.ip("link", "set", name, "up")
        peer.ip("addr", "add", peer_cidr, "dev", peer_name)
        peer.ip("link", "set", peer_name, "up")

    def link_stats(self, device: str) -> dict[str, dict[str, int]]:
        """The kernel's counters for device: {"rx": {...}, "tx": {...}} (``ip -s -j link``).

        On a TUN/TAP device the kernel's tx is what the userspace reader read, rx what it wrote.
        """
        (link,) = json.loads(self.ip("-s", "-j", "link", "show", "dev", device))
        return {"rx": link["stats64"]["rx"], "tx": link["stats64"]["tx"]}

    def link_address(self, device: str) -> str:
        (link,) = json.loads(self.ip("-j", "link", "show", "dev", device))
        address: str = link["address"]
        return address

    def snmp(self, protocol: str, table: str = "snmp") -> dict[str, int]:
        """The kernel's counters for protocol ("Ip", "Tcp", "Udp", ...) in this namespace (/proc/net/snmp);
        ``table`` "netstat" for Linux's extensions ("TcpExt")."""
        header, values = (line.split()[1:] for line in self.run(["cat", f"/proc/net/{table}"]).stdout.splitlines()
                          if line.startswith(f"{protocol}:"))
        return dict(zip(header, map(int, values)))

    def neighbours(self, device: str) -> list[dict[str, Any]]:
        """The kernel's neighbour (ARP) table for device, as ``ip -j neigh`` reports it."""
        entries: list[dict[str, Any]] = json.loads(self.ip("-j", "neigh", "show", "dev", device) or "[]")
        return entries

    def close(self) -> None:
        """Stop this namespace's processes and delete it (idempotent)."""
        for proc in self._procs:
            _stop(proc)
        self._procs.clear()
        _delete_namespace(self.name)
        _open.pop(self.name, None)


def peer_argv(*args: str) -> list[str]:
    """The command line of an integration/peers.py subcommand (run by path: it imports nothing local)."""
    return [sys.executable, str(PEERS), *args]


def run_peer(ns: NetNS, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run a peer in ns to completion and return its JSON report; fail with its output unless it succeeded."""
    done = ns.run(peer_argv(*args), check=False, timeout=timeout)
    assert done.returncode == 0, f"peer {' '.join(args)} exited {done.returncode}\n{done.stdout}{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def finish(proc: Any, timeout: float = 60) -> tuple[str, str]:
    """Wait for a program a test started (gevent's Popen: the hub runs meanwhile) and return its output;
    if it has not ended within ``timeout``, stop it, by its PID."""
    try:
        return proc.communicate(timeout=timeout)  # type: ignore[no-any-return]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def ping(ns: NetNS, address: str, count: int) -> int:
    """Ping address from the namespace's kernel stack; return how many echo replies came back."""
    done = ns.run(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", address], check=False)
    match = re.search(r"(\d+) received", done.stdout)
    assert match, f"unexpected ping output:\n{done.stdout}{done.stderr}"
    return int(match.group(1))


def read_pcap(path: Path, fields: Sequence[str]) -> list[dict[str, str]]:
    """Dissect a pcap with tshark: one {field: value} per frame (first occurrence, "" when absent).

    tshark, not scapy, so the capture is checked by the tool people will open it with.
    """
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for field in fields:
        argv += ["-e", field]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"tshark cannot read {path}:\n{done.stderr}"
    return [dict(zip(fields, line.split("\t"))) for line in done.stdout.splitlines()]


def _command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(argv)} failed ({e.returncode}): {e.stderr.strip()}") from None


def _stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _delete_namespace(name: str) -> None:
    """Kill whatever still runs in the namespace (all of it was started by us), then delete it."""
    if not (NETNS_DIR / name).exists():
        return
    pids = subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True, text=True).stdout.split()
    for pid in map(int, pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def remove_stale_namespaces() -> None:
    """Delete namespaces left by test runs whose process no longer exists (e.g. after kill -9)."""
    for path in NETNS_DIR.glob(f"{NAME_PREFIX}*-*"):
        owner = path.name[len(NAME_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _delete_namespace(path.name)


@atexit.register
def _close_all() -> None:
    for ns in list(_open.values()):
        ns.close()


class EchoSample:
    """``python -m netsock.samples.udp_echo`` (or ``sample``, e.g. ``tun_tcp_echo``, which takes the
    same arguments) running in a namespace, with its output in workdir; ``options`` are appended."""

    def __init__(self, ns: NetNS, workdir: Path, *, device: str = "tun0", address: str = "192.0.2.2",
                 port: int = 7, tap: bool = False, pcap: bool = False, sample: str = "udp_echo",
                 options: Sequence[str] = ()) -> None:
        self.stats_path = workdir / f"{device}-stats.json"
        self.pcap_path = workdir / f"{device}.pcap"  # written only if pcap is true
        self._stdout_path = workdir / f"{device}-sample.out"
        self._stderr_path = workdir / f"{device}-sample.err"
        argv = [sys.executable, "-m", f"netsock.samples.{sample}", device, address, str(port),
                "--stats-json", str(self.stats_path), *options]
        if tap:
            argv.append("--tap")
        if pcap:
            argv += ["--pcap", str(self.pcap_path)]
        # cwd outside the checkout: the sample must import the installed netsock, not the source tree.
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = ns.popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def output(self) -> str:
        return (f"stdout:\n{self._stdout_path.read_text(errors='replace')}\n"
                f"stderr:\n{self._stderr_path.read_text(errors='replace')}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for the sample's line starting "ready": from then on it is attached and listening."""
        deadline = time.monotonic() + timeout
        while not self._is_ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sample exited {self.proc.returncode} before ready\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sample not ready after {timeout}s\n{self.output()}")
            time.sleep(0.02)

    def _is_ready(self) -> bool:
        lines = self._stdout_path.read_text(errors="replace").splitlines()
        return any(line.startswith("ready") for line in lines)

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """SIGTERM the sample, require a clean exit, and return the stack counters it wrote."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"sample ignored SIGTERM for {timeout}s\n{self.output()}") from None
        assert code == 0, f"sample exited {code}\n{self.output()}"
        stats: dict[str, Any] = json.loads(self.stats_path.read_text())
        return stats


def write_seeded(path: Path, seed: int, size: int) -> str:
    """Write ``size`` bytes of peers.py's seeded stream to path; their SHA-256."""
    from integration.peers import seeded_stream

    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for block in seeded_stream(seed, size):
            f.write(block)
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ConnectSample:
    """``python -m netsock.samples.tun_tcp_connect`` in a namespace: stdin from ``stdin`` (a file, or
    a pipe the caller writes to if None), stdout to a file in workdir."""

    def __init__(self, ns: NetNS, workdir: Path, remote: str, *, stdin: Path | None, device: str = "tun0",
                 address: str = "192.0.2.2", port: int = 0, options: Sequence[str] = ()) -> None:
        self.stats_path = workdir / f"{device}-connect-stats.json"
        self.stdout_path = workdir / f"{device}-connect.out"
        self._stderr_path = workdir / f"{device}-connect.err"
        host, remote_port = remote.rsplit(":", 1)
        argv = [sys.executable, "-m", "netsock.samples.tun_tcp_connect", device, address, str(port), host,
                remote_port, "--stats-json", str(self.stats_path), *options]
        with open(self.stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            if stdin is None:
                self.proc = ns.popen(argv, cwd=workdir, stdin=subprocess.PIPE, stdout=out, stderr=err)
            else:
                with open(stdin, "rb") as source:
                    self.proc = ns.popen(argv, cwd=workdir, stdin=source, stdout=out, stderr=err)

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")

    def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait for the sample's "connected" line on stderr."""
        deadline = time.monotonic() + timeout
        while not any(line.startswith("connected") for line in self.stderr().splitlines()):
            if self.proc.poll() is not None:
                raise AssertionError(f"tun_tcp_connect exited {self.proc.returncode} before connecting\n"
                                     f"{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"tun_tcp_connect not connected after {timeout}s\n{self.stderr()}")
            time.sleep(0.02)

    def wait(self, timeout: float) -> int:
        """Wait for the sample to exit; its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tun_tcp_connect still running after {timeout}s\n{self.stderr()}") from None

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self.stats_path.read_text())
        return stats


class PeerProcess:
    """A peers.py subcommand running in the background (a server), with its output lines."""

    def __init__(self, ns: NetNS, *args: str) -> None:
        self.proc = ns.popen(peer_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._args = " ".join(args)
        self._out = b""   # read so far, straight from the fd (a buffered reader would hide lines from select)

    def wait_line(self, expected: str, timeout: float = 20.0) -> None:
        """Wait until the peer prints the line ``expected`` (a readiness announcement)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while expected.encode() not in (line.strip() for line in self._out.split(b"\n")[:-1]):
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                self.proc.kill()
                _, err = self.proc.communicate()
                raise AssertionError(f"peer {self._args} did not print {expected!r}\n"
                                     f"{self._out.decode(errors='replace')}{err.decode(errors='replace')}")
            self._out += chunk

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the peer to finish; its JSON report (it must have succeeded)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            timed_out = True
        else:
            timed_out = False
        text = (self._out + out).decode(errors="replace")
        detail = f"{text}{err.decode(errors='replace')}"
        assert not timed_out, f"peer {self._args} still running after {timeout}s\n{detail}"
        assert self.proc.returncode == 0, f"peer {self._args} exited {self.proc.returncode}\n{detail}"
        report: dict[str, Any] = json.loads(text.splitlines()[-1])
        return report
