"""select.select, select.poll, select.epoll and selectors.DefaultSelector under ``python -m netsock
run``, with netsock sockets connected to kernel peers and a pipe in the same call: an unmodified
program (programs/select_readiness.py) must see what it sees on the kernel's sockets."""

from __future__ import annotations

import json
from pathlib import Path

from integration.conftest import KERNEL_ADDRESS, KERNEL_CIDR
from integration.dropin import DEVICE, PROGRAMS, NetsockRun, kernel_side, run_plain
from integration.nsutil import NetNS

ECHO = f"{KERNEL_ADDRESS}:7000"
SINK = f"{KERNEL_ADDRESS}:7001"

# The steps of select_readiness.py: on "socket" (to the echo server), "sink" (to a peer that never
# reads, filled until sending blocks) and the two ends of a pipe. Only poll and epoll can report the
# hang-up of a connection closed both ways.
STEPS = {
    "idle": {"socket": ["out"], "pipe-w": ["out"]},
    "data arrives": {"socket": ["in"]},
    "both readable": {"socket": ["in"], "pipe-r": ["in"]},
    "pipe written meanwhile": {"pipe-r": ["in"]},
    "nothing ready": {},
    "peer closed": {"socket": ["in"]},
}
EXPECTED = {
    "select": STEPS,
    "poll": {**STEPS, "peer closed": {"socket": ["in", "hup"]}},
    "epoll": {**STEPS, "peer closed": {"socket": ["in", "hup"]}},
    "selectors": STEPS,
}


def test_select_apis_report_netsock_sockets_and_a_pipe_as_the_kernel_does(netns: NetNS, tmp_path: Path) -> None:
    netns.add_tun(DEVICE, KERNEL_CIDR)
    peers = kernel_side(netns, tmp_path, "select-peers", "select-peers", "--echo", ECHO, "--sink", SINK)
    peers.wait_port(KERNEL_ADDRESS, 7000)
    program = [str(PROGRAMS / "select_readiness.py"), ECHO, SINK]

    run = NetsockRun(netns, tmp_path, program, create_device=False)
    assert run.wait() == 0, run.output()
    observed = json.loads(run.stdout())
    kernel = run_plain(netns, program)
    assert kernel.returncode == 0, kernel.stdout + kernel.stderr
    assert json.loads(kernel.stdout) == EXPECTED            # the expectation is Linux's behaviour
    differences = {(api, step): {"netsock": observed[api].get(step), "kernel": expected}
                   for api, steps in EXPECTED.items() for step, expected in steps.items()
                   if observed[api].get(step) != expected}
    assert not differences, differences
    tcp = run.stats()["tcp"]
    assert tcp["active_connection_openings"] == 1 + len(EXPECTED), tcp     # the sink, an echo connection per API
