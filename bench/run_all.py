"""netsock's benchmark suite: every figure beside the kernel's for the same work, measured in the
same run, as a ratio and against its target (issue 7).

    sudo python bench/run_all.py [--quick] [--json FILE] [--only NAME ...]

    1 bulk TCP over a TUN device, each direction, with offloads and plain MTU 1500 (tcp_bulk.py);
      kernel: the same programs over a veth pair
    2 unmodified http.server under ``netsock run`` vs on the kernel: requests/s, latency (http_server.py)
    3 connections per second against the echo sample vs a kernel echo server (connection_rate.py)
    4 1-byte TCP ping-pong p50/p99, TUN vs veth, same CPU and different CPUs (latency.py)
    5 memory per idle established connection, 10,000 open (memory.py)
    6 in-process bulk TCP between two stacks (tcp_bulk.py's in-memory wire; inprocess.py's private
      network)
    7 CPU seconds per GB moved, for 1 (tcp_bulk.py; the kernel's from veth_cpu.py) and 6
    8 the shared-memory link between two processes: frames/s and bulk TCP (sharedmem.py)
    9 UDP send with and without UDP_SEGMENT, receive with and without UDP_GRO: netsock over a TUN with
      offloads, the kernel over veth (udp_gso.py)
    10 TCP's cost per step of a short connection inside the stack, and the Python calls of each
      (segment_costs.py: what a native engine would have to beat; no kernel counterpart)

Each benchmark runs in a process of its own (bench/SCRIPT --json FILE), one after the other; its own
output is shown as it runs, then the table. --quick makes every benchmark small (under two minutes
in all); the full run takes a few minutes. Needs root and wrk (Debian package wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import MIB, Figure, at_least, exit_on_sigterm, interpreter, memory_walk, require_root

BENCH = Path(__file__).resolve().parent


@dataclass
class Benchmark:
    """One script of the suite, run as ``python bench/SCRIPT ARGUMENTS --json FILE``."""

    script: str
    arguments: list[str] = field(default_factory=list)


def suite(quick: bool) -> dict[str, Benchmark]:
    bulk = ["--runs", "1", "--bytes", str(32 * MIB), "--plain-bytes", str(8 * MIB),
            "--kernel-bytes", str(1024 * MIB)] if quick else []
    size = ["--quick"] if quick else []
    return {"bulk": Benchmark("tcp_bulk.py", bulk), "bulk-cpu": Benchmark("veth_cpu.py", size),
            "http": Benchmark("http_server.py", size), "connections": Benchmark("connection_rate.py", size),
            "latency": Benchmark("latency.py", size), "memory": Benchmark("memory.py", size),
            "inprocess": Benchmark("inprocess.py", size), "sharedmem": Benchmark("sharedmem.py", size),
            "udp": Benchmark("udp_gso.py", size), "segments": Benchmark("segment_costs.py", size)}


def run(benchmark: Benchmark, output: Path) -> dict[str, Any]:
    """Run one benchmark to completion (its output passes through); the JSON it wrote."""
    process = subprocess.Popen([sys.executable, str(BENCH / benchmark.script), *benchmark.arguments,
                                "--json", str(output)])
    try:
        code = process.wait()
    except BaseException:
        # Interrupted: stop it with SIGINT, whose KeyboardInterrupt runs every script's cleanup
        # (namespaces, devices, processes). A Ctrl-C on the terminal has reached it already.
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        raise
    if code:
        raise RuntimeError(f"{benchmark.script} exited {code}")
    with open(output) as f:
        report: dict[str, Any] = json.load(f)
    return report


def bulk_figures(bulk: dict[str, Any], kernel_cpu: dict[str, Any] | None) -> list[Figure]:
    """tcp_bulk.py's results as figures, each against its veth reference of the same run; CPU per
    GB beside veth_cpu.py's kernel figure: one kernel end's for one netsock end (TUN), both ends'
    for two netsock stacks (in-process)."""
    results = bulk["results"]
    reference = results["kernel -> kernel (veth)"]
    big_tcp = results.get("kernel -> kernel (veth, BIG TCP)")
    figures = []
    for name, result in results.items():
        if name.startswith("kernel -> kernel"):
            continue
        gbit = result["mb_per_s"] * 8 / 1000
        throughput = Figure(f"bulk {name}", "Gbit/s", gbit, reference["mb_per_s"] * 8 / 1000,
                            detail={"netsock": result, "kernel": reference})
        if "in-process" in name:
            throughput.target, throughput.met = ">= 2 Gbit/s", at_least(gbit, 2)
        elif "offloads" in name:
            throughput.target, throughput.met = ">= 50% of kernel", at_least(throughput.ratio, 0.5)
        else:
            throughput.target, throughput.met = ">= 0.4 Gbit/s", at_least(gbit, 0.4)
        if big_tcp and name == "netsock -> kernel (TUN, offloads)":
            # The super-segments netsock writes are BIG TCP's: the kernel's own figure with it too.
            figures.append(Figure(f"bulk {name}, vs veth with BIG TCP", "Gbit/s", gbit, big_tcp["mb_per_s"] * 8 / 1000,
                                  detail={"netsock": result, "kernel": big_tcp}))
        ends = "both_ends" if "in-process" in name else "one_end"
        kernel = kernel_cpu[f"{ends}_cpu_s_per_gb"] if kernel_cpu else None
        figures += [throughput, Figure(f"CPU per GB, {name}", "CPU s/GB", result["cpu_s_per_gb"], kernel,
                                       detail={"kernel": f"veth, {ends.replace('_', ' ')}"})]
    return figures


SECTIONS = {
    "bulk": "1 bulk TCP over a TUN device (kernel: the same programs over veth)",
    "http": "2 http.server under netsock run (kernel: the same server over veth; wrk)",
    "connections": "3 connection rate (echo sample vs the same echo server on the kernel, over veth)",
    "latency": "4 1-byte TCP ping-pong (TUN vs veth)",
    "memory": "5 memory per idle established connection end",
    "inprocess": "6 in-process bulk TCP between two stacks (kernel: tcp_bulk's veth run; inprocess.py's "
                 "loopback, in one process)",
    "cpu": "7 CPU seconds per GB moved (netsock: its process; kernel over veth: one end beside a TUN row, "
           "both beside two netsock stacks; in-process rows: both ends each)",
    "sharedmem": "8 shared-memory link between two processes (kernel: AF_UNIX datagrams, TCP over loopback)",
    "udp": "9 UDP send, 1,472-byte datagrams, with and without UDP_SEGMENT (netsock: TUN with offloads; "
           "kernel: veth)",
    "segments": "10 TCP's cost per step of a connection inside the stack (a scripted peer, no link; no kernel "
                "counterpart)",
}


def section(key: str, figure: Figure) -> str:
    if figure.unit == "CPU s/GB" and key != "udp":
        return "cpu"
    if key == "bulk":
        return "inprocess" if "in-process" in figure.name else "bulk"
    return key


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2e}"


def print_table(rows: dict[str, list[Figure]], failures: dict[str, str]) -> None:
    width = max((len(f.name) for figures in rows.values() for f in figures), default=40)
    header = f"  {'figure':{width}}  {'netsock':>9}  {'kernel':>9}  {'unit':9}  {'ratio':>7}  {'target':18}  met"
    for key, title in SECTIONS.items():
        print(f"\n{title}")
        print(header)
        for f in rows.get(key, []):
            ratio = f"{f.ratio:.3f}" if f.ratio is not None else "-"
            met = {True: "yes", False: "NO", None: ""}[f.met]
            print(f"  {f.name:{width}}  {number(f.netsock):>9}  {number(f.kernel):>9}  {f.unit:9}  {ratio:>7}  "
                  f"{f.target:18}  {met}")
    for name, error in failures.items():
        print(f"\nFAILED: {name}: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs: the whole suite in under two minutes")
    parser.add_argument("--json", default="netsock-bench.json", help="write every figure here "
                        "(default netsock-bench.json in the current directory)")
    parser.add_argument("--only", nargs="+", choices=list(suite(False)), help="run only these benchmarks")
    args = parser.parse_args()
    require_root(parser)
    exit_on_sigterm()
    benchmarks = {name: b for name, b in suite(args.quick).items() if not args.only or name in args.only}
    reports: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    walk_before = memory_walk()
    load_before, started = os.getloadavg(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="netsock-bench-") as tmp:
        for name, benchmark in benchmarks.items():
            print(f"\n=== {name}: {' '.join([benchmark.script, *benchmark.arguments])}", flush=True)
            try:
                reports[name] = run(benchmark, Path(tmp) / f"{name}.json")
            except RuntimeError as error:
                failures[name] = str(error)
    rows: dict[str, list[Figure]] = {}
    for name, report in reports.items():
        if name == "bulk-cpu":
            continue
        figures = bulk_figures(report, reports.get("bulk-cpu")) if name == "bulk" else \
            [Figure(**{k: v for k, v in f.items() if k != "ratio"}) for f in report["figures"]]
        for figure in figures:
            rows.setdefault(section(name, figure), []).append(figure)
    seconds = time.monotonic() - started
    walk_after = memory_walk()
    print(f"\nnetsock benchmark suite ({'quick' if args.quick else 'full'} run, {seconds:.0f} s; "
          f"{interpreter()}, kernel {platform.release()}, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; a random walk from Python "
          f"{walk_before['8 Ki']:.0f} / {walk_before['1 Mi']:.0f} ns a step in a list of 8 Ki / 1 Mi ints before, "
          f"{walk_after['8 Ki']:.0f} / {walk_after['1 Mi']:.0f} after); ratio = netsock / kernel")
    print_table(rows, failures)
    with open(args.json, "w") as f:
        json.dump({"quick": args.quick, "seconds": seconds, "python": interpreter(),
                   "kernel": platform.release(), "cpus": os.cpu_count(),
                   "load_average": {"before": load_before, "after": os.getloadavg()},
                   "memory_walk_ns": {"before": walk_before, "after": walk_after},
                   "sections": {key: {"title": title, "figures": [f.as_dict() for f in rows[key]]}
                                for key, title in SECTIONS.items() if key in rows},
                   "failures": failures}, f, indent=1)
    print(f"\nJSON: {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
