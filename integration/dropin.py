"""Unmodified programs under ``python -m netsock run`` in a test's namespace, and the kernel-side
programs they talk to.

netsock runs on tun0 at 192.0.2.2/24; the kernel side of tun0 is 192.0.2.1/24. A program either has
``netsock run`` create tun0 (and remove it at exit), or attaches to a tun0 the test made first, which
a kernel-side server must do to bind 192.0.2.1 before the netsock program starts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from integration.conftest import KERNEL_CIDR
from integration.nsutil import NetNS

NETSOCK_CIDR = "192.0.2.2/24"
DEVICE = "tun0"
PROGRAMS = Path(__file__).resolve().with_name("programs")
KERNEL_SIDE = PROGRAMS / "kernel_side.py"

# Connect to HOST PORT until it accepts (exit 0) or TIMEOUT seconds pass (exit 1). Before netsock has
# attached to tun0 the device is missing or drops what it is sent; before the program listens, netsock
# refuses: both are retried.
_PROBE = """
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while True:
    try:
        socket.create_connection((host, port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.05)
"""


class Program:
    """A process started in the namespace, its stdout and stderr going to files in workdir."""

    def __init__(self, ns: NetNS, workdir: Path, name: str, argv: Sequence[str], *, cwd: Path | None = None) -> None:
        self.name = name
        self._ns = ns
        self._stdout_path = workdir / f"{name}.out"
        self._stderr_path = workdir / f"{name}.err"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self.proc = ns.popen(argv, cwd=cwd or workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def stdout(self) -> str:
        return self._stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"{self.name} stdout:\n{self.stdout()}\n{self.name} stderr:\n{self.stderr()}"

    def wait_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Wait until a kernel TCP connection from the namespace to host:port succeeds: the program
        (or whatever it talks to) listens. Fails at once if the program exits first."""
        probe = self._ns.popen([sys.executable, "-c", _PROBE, host, str(port), str(timeout)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while probe.poll() is None:
            if self.proc.poll() is not None:
                probe.kill()
                probe.wait()
                raise AssertionError(f"{self.name} exited {self.proc.returncode} before {host}:{port} "
                                     f"accepted connections\n{self.output()}")
            time.sleep(0.02)
        assert probe.returncode == 0, f"{host}:{port} refused connections for {timeout}s\n{self.output()}"

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the program to exit; its exit status."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout}s\n{self.output()}") from None

    def interrupt(self, timeout: float = 15.0) -> int:
        """Ctrl-C it (SIGINT, to its PID); its exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)


class NetsockRun(Program):
    """``python -m netsock run --tun tun0 --address 192.0.2.2/24 ... -- PROGRAM`` in the namespace.

    ``program`` is what follows ``--``: ``["-m", MODULE, ...]``, ``["-c", CODE, ...]`` or
    ``[SCRIPT, ...]``. With ``create_device``, netsock run creates tun0 with the kernel side at
    192.0.2.1/24 and removes it at exit; without, tun0 must exist. The stack's counters are written
    at exit (``stats``).
    """

    def __init__(self, ns: NetNS, workdir: Path, program: Sequence[str], *, name: str = "netsock",
                 create_device: bool = True, cwd: Path | None = None) -> None:
        self.stats_path = workdir / f"{name}-stats.json"
        argv = [sys.executable, "-m", "netsock", "run", "--tun", DEVICE, "--address", NETSOCK_CIDR,
                "--stats-json", str(self.stats_path)]
        if create_device:
            argv += ["--host-address", KERNEL_CIDR]
        super().__init__(ns, workdir, name, [*argv, "--", *program], cwd=cwd)

    def stats(self) -> dict[str, Any]:
        """The stack's counters, which netsock run wrote at exit."""
        assert self.stats_path.exists(), f"{self.name} wrote no counters\n{self.output()}"
        stats: dict[str, Any] = json.loads(self.stats_path.read_text())
        return stats


def kernel_side(ns: NetNS, workdir: Path, name: str, *args: str) -> Program:
    """A server of programs/kernel_side.py on the namespace's kernel sockets (plain CPython)."""
    return Program(ns, workdir, name, [sys.executable, str(KERNEL_SIDE), *args])


def run_kernel_side(ns: NetNS, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run a client of programs/kernel_side.py to completion; its JSON report (it must have succeeded)."""
    done = ns.run([sys.executable, str(KERNEL_SIDE), *args], check=False, timeout=timeout)
    assert done.returncode == 0, f"kernel_side.py {' '.join(args)} exited {done.returncode}\n{done.stdout}{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def run_plain(ns: NetNS, program: Sequence[str], *, cwd: Path | None = None,
              timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python PROGRAM`` on the kernel's sockets in the namespace: what netsock must match."""
    return ns.run([sys.executable, *program], check=False, timeout=timeout, cwd=cwd)
