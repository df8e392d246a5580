"""TCP urgent data under ``python -m netsock run``: an unmodified program (programs/urgent_data.py)
sends and receives MSG_OOB bytes, with and without SO_OOBINLINE, to and from a kernel peer, and must
see what it sees on the kernel's sockets; the kernel peer must read netsock's urgent byte as urgent."""

from __future__ import annotations

import json
from pathlib import Path

from integration.conftest import KERNEL_ADDRESS, KERNEL_CIDR
from integration.dropin import DEVICE, PROGRAMS, NetsockRun, kernel_side, run_plain
from integration.nsutil import NetNS

PEER = f"{KERNEL_ADDRESS}:7002"
# What Linux shows the program (checked against the kernel's sockets in the same run).
EXPECTED = {
    "inline by default": 0,
    "ready with urgent data": ["in", "pri"],
    "read stops at the mark": "hello",
    "peek the urgent byte": ["!", True],
    "read the urgent byte": "!",
    "read it again": "EINVAL",
    "ready once it is read": ["in"],
    "read past the mark": "world",
    "nothing urgent": "EINVAL",
    "nothing urgent, with a timeout": "timed out",
    "the peer read": {"before": "abc", "oob": "Z", "after": "def"},
    "inline when set": 1,
    "inline: ready": ["in", "pri"],
    "inline: read stops at the mark": "12",
    "inline: no out-of-band read": "EINVAL",
    "inline: the byte is in the stream": "345",
    "end": "",
}


def test_urgent_data_both_ways_as_on_the_kernel(netns: NetNS, tmp_path: Path) -> None:
    netns.add_tun(DEVICE, KERNEL_CIDR)
    peer = kernel_side(netns, tmp_path, "urgent-peer", "urgent-peer", PEER)
    peer.wait_port(KERNEL_ADDRESS, 7002)
    program = [str(PROGRAMS / "urgent_data.py"), PEER]

    kernel = run_plain(netns, program)
    assert kernel.returncode == 0, kernel.stdout + kernel.stderr
    assert json.loads(kernel.stdout) == EXPECTED
    run = NetsockRun(netns, tmp_path, program, create_device=False)
    assert run.wait() == 0, run.output()
    observed = json.loads(run.stdout())
    assert observed == EXPECTED, {step: (observed.get(step), value) for step, value in EXPECTED.items()
                                  if observed.get(step) != value}
    assert run.stats()["tcp"]["established_resets"] == 0
