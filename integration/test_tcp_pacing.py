"""SO_MAX_PACING_RATE under ``python -m netsock run``: an unmodified program (programs/paced_sender.py) sends
2 MB at 1 MB/s to a kernel receiver over the TUN, and exits while most of them are still to go; the receiver
gets them all, in as long as the rate says. The same program on the kernel's sockets (over its loopback,
64 KB segments) is paced by Linux's internal pacing the same way: the first ten segments at once, then each a
segment's length at the rate after the one before."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from integration.conftest import KERNEL_ADDRESS, KERNEL_CIDR
from integration.dropin import DEVICE, PROGRAMS, NetsockRun, run_plain
from integration.nsutil import NetNS, PeerProcess

SINK = f"{KERNEL_ADDRESS}:5003"
SIZE = 2_000_000
RATE = 1_000_000


def paced_seconds(mss: int) -> float:
    """The time the rate gives: all but the first ten segments, each with 32 bytes of TCP header (timestamps)."""
    return (SIZE - 10 * mss) * (mss + 32) / mss / RATE


def receive_time(netns: NetNS, run_program: object) -> tuple[dict[str, object], dict[str, object]]:
    """Start the kernel sink, run the program (a callable returning its JSON report), return both reports."""
    sink = PeerProcess(netns, "tcp-serve", SINK)
    sink.wait_line("listening")
    report = run_program()          # type: ignore[operator]
    return report, sink.result(timeout=30)


def test_an_unmodified_program_paces_its_upload_as_on_the_kernel(netns: NetNS, tmp_path: Path) -> None:
    netns.add_tun(DEVICE, KERNEL_CIDR)
    program = [str(PROGRAMS / "paced_sender.py"), SINK, "--bytes", str(SIZE), "--rate", str(RATE)]

    def on_kernel() -> dict[str, object]:
        done = run_plain(netns, program)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def on_netsock() -> dict[str, object]:
        run = NetsockRun(netns, tmp_path, program, create_device=False)
        assert run.wait() == 0, run.output()
        return json.loads(run.stdout())

    kernel, kernel_sink = receive_time(netns, on_kernel)
    ours, our_sink = receive_time(netns, on_netsock)
    print(f"\n{SIZE} bytes at {RATE} B/s: kernel {kernel_sink['seconds']} s (paced: {paced_seconds(65483):.3f}), "
          f"netsock {our_sink['seconds']} s (paced: {paced_seconds(1448):.3f})", file=sys.stderr)
    for report, sink in ((kernel, kernel_sink), (ours, our_sink)):
        assert report["rate"] == RATE and sink["received"] == SIZE
    assert our_sink["seconds"] == pytest.approx(paced_seconds(1448), rel=0.1)
    assert paced_seconds(65483) * 0.9 < kernel_sink["seconds"] < paced_seconds(65483) * 1.5
