"""The kernel's CPU seconds per GB for bulk TCP over a veth pair: the kernel's column beside the
CPU figures of bench/tcp_bulk.py (figure 7 of the suite).

    sudo python bench/veth_cpu.py [--quick] [--bytes N] [--runs N] [--json FILE]

tcp_bulk.py's own kernel peers (its KERNEL_PEER program), one namespace each, joined by a veth
pair; each peer's CPU time (user + system) is read from the kernel when it exits (wait4). On a
veth pair the receive side's TCP work runs in the sender's system calls (softirq on the sending
CPU), so splitting the cost into sender and receiver says little: the figure that compares with
one netsock end is the mean of the two ends, and with two netsock stacks (tcp_bulk's in-process
transfer) their sum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from common import MIB, VETH_SERVER, NetNS, exit_on_sigterm, require_root, veth_hosts
from tcp_bulk import KERNEL_PEER, PORT


def peer_program(ns: NetNS, *args: str) -> subprocess.Popen[str]:
    return ns.popen([sys.executable, "-c", KERNEL_PEER, *args], stdout=subprocess.PIPE, text=True)


def cpu_on_exit(process: subprocess.Popen[str]) -> float:
    """Wait for ``process`` (a direct child: ``ip netns exec`` execs it) and return its CPU seconds."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"kernel peer exited {process.returncode}")
    return usage.ru_utime + usage.ru_stime


def transfer(size: int) -> dict[str, Any]:
    with veth_hosts() as (client, server):
        receiver = peer_program(server, "receive", VETH_SERVER, str(PORT))
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("kernel receiver did not start")
        sender = peer_program(client, "send", VETH_SERVER, str(PORT), str(size))
        received, seconds = receiver.stdout.read().split()[-2:]
        receiver_cpu, sender_cpu = cpu_on_exit(receiver), cpu_on_exit(sender)
    if int(received) != size:
        raise RuntimeError(f"{received} bytes arrived, {size} were sent")
    gigabytes = size / 1e9
    return {"bytes": size, "seconds": float(seconds), "mb_per_s": size / float(seconds) / 1e6,
            "sender_cpu_s_per_gb": sender_cpu / gigabytes, "receiver_cpu_s_per_gb": receiver_cpu / gigabytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bytes", type=int, default=4096 * MIB, help="bytes per transfer (default 4 GiB)")
    parser.add_argument("--runs", type=int, default=3, help="transfers; the medians are reported")
    parser.add_argument("--quick", action="store_true", help="one transfer of 1 GiB")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    require_root(parser)
    exit_on_sigterm()
    if args.quick:
        args.bytes, args.runs = 1024 * MIB, 1
    runs = [transfer(args.bytes) for _ in range(args.runs)]
    result = {key: statistics.median(run[key] for run in runs)
              for key in ("mb_per_s", "sender_cpu_s_per_gb", "receiver_cpu_s_per_gb")}
    result["one_end_cpu_s_per_gb"] = (result["sender_cpu_s_per_gb"] + result["receiver_cpu_s_per_gb"]) / 2
    result["both_ends_cpu_s_per_gb"] = result["sender_cpu_s_per_gb"] + result["receiver_cpu_s_per_gb"]
    print(f"kernel TCP over veth, median of {args.runs}: {result['mb_per_s']:.0f} MB/s; CPU s/GB: sender "
          f"{result['sender_cpu_s_per_gb']:.3f}, receiver {result['receiver_cpu_s_per_gb']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
