"""``netsock run``: an unmodified Python program, with netsock patched in before any of its imports.

    netsock run [--tun NAME | --tap NAME] --address CIDR [--address CIDR ...] [--gateway IP] [--dns IP]
                [--mtu N] [--pcap FILE] [--stats-json FILE] [--host-address CIDR ...]
                [--iptables COMMAND ...] [--ip6tables COMMAND ...] [--iptables-restore FILE]
                [--ip6tables-restore FILE] -- (SCRIPT | -m MODULE | -c CODE) [ARGS...]

The program runs in this process, as ``python SCRIPT`` (``-m``, ``-c``) would run it: the same
``sys.argv`` and ``sys.path[0]``, its exit code, streams and signals. A device that does not exist is
created for the run, its kernel side given the ``--host-address`` addresses, and removed at exit.
Without a device the program has netsock's loopback only. ``--iptables`` (``--ip6tables``) commands
configure the stack's packet filter and translation before the program starts, in iptables' words
(``netsock.stack.iptables_syntax``), after ``--iptables-restore``'s rule set (iptables-save's format):
a firewall to test the program against. When the program ends, its connections
deliver what they still owe before the process exits, as the kernel's would after it (up to ten seconds,
and not to a peer that takes nothing: see ``adapter.runtime.finish_connections``).

Child Python processes the program starts with the same environment run under netsock too (the
environment carries a ``sitecustomize`` that patches them), each with a loopback-only stack of its
own: a TUN/TAP device serves one process. Children that are not Python, and C extensions that open
their own sockets, use the kernel.
"""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import runpy
import sys
import types
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["main"]

CHILD_ENVIRONMENT = "NETSOCK_CHILD"
_CHILD_HOOK_DIRECTORY = os.path.join(os.path.dirname(__file__), "_child")
_PROGRAM_SWITCHES = ("--", "-m", "-c")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netsock run", description="Run a Python program with its networking on netsock's stack.",
        usage="netsock run [OPTIONS] -- (SCRIPT | -m MODULE | -c CODE) [ARGS...]")
    device = parser.add_mutually_exclusive_group()
    device.add_argument("--tun", metavar="NAME", help="TUN device (created for the run if absent)")
    device.add_argument("--tap", metavar="NAME", help="TAP device (created for the run if absent)")
    parser.add_argument("--address", action="append", default=[], metavar="CIDR",
                        help="netsock's address on the device, e.g. 192.0.2.2/24 (repeatable)")
    parser.add_argument("--gateway", action="append", default=[], metavar="IP",
                        help="default router (at most one per IP version)")
    parser.add_argument("--dns", action="append", default=[], metavar="IP", help="DNS server (repeatable)")
    parser.add_argument("--mtu", type=int, help="device MTU")
    parser.add_argument("--pcap", metavar="FILE", help="record the device's (or loopback's) traffic")
    parser.add_argument("--stats-json", metavar="FILE", help="write the stack's counters here at exit")
    parser.add_argument("--host-address", action="append", default=[], metavar="CIDR",
                        help="the kernel side's address on a device created for the run (repeatable)")
    parser.add_argument("--iptables", action="append", default=[], metavar="COMMAND",
                        help="an iptables command for netsock's tables, e.g. \"-A OUTPUT -p tcp --dport 443 -j "
                        "REJECT\" (repeatable, in order)")
    parser.add_argument("--ip6tables", action="append", default=[], metavar="COMMAND",
                        help="the same for the IPv6 tables")
    parser.add_argument("--iptables-restore", metavar="FILE",
                        help="a rule set to load first, as iptables-save wrote it (a real firewall's, say)")
    parser.add_argument("--ip6tables-restore", metavar="FILE", help="the same for the IPv6 tables")
    return parser


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """(netsock's options, the program and its arguments): the program starts at ``--``, ``-m`` or
    ``-c``, or else at the first argument that is neither an option nor an option's value (every
    option of ``netsock run`` but --help takes a value)."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in _PROGRAM_SWITCHES:
            return argv[:index], argv[index + 1:] if arg == "--" else argv[index:]
        if not arg.startswith("-"):
            return argv[:index], argv[index:]
        index += 1 if "=" in arg or arg in ("-h", "--help") else 2
    return argv, []


@contextmanager
def _device(name: str | None, tap: bool, host_addresses: list[str], mtu: int | None) -> Iterator[None]:
    """The device for the run: an existing one as it is, else one created now and removed at the end."""
    if name is None:
        yield
        return
    from .link import tun

    try:
        fd = tun.create_device(name, tap=tap, persist=True)
    except OSError as error:
        if host_addresses:
            raise SystemExit(f"netsock run: --host-address needs a device to create, and {name}: {error}") from None
        yield                       # it exists: use it as configured
        return
    os.close(fd)
    try:
        tun.configure_host_side(name, host_addresses, mtu)
        yield
    finally:
        tun.delete_device(name)


def _child_environment() -> None:
    """What child Python processes inherit: the hook that patches them, and no device of ours."""
    paths = [_CHILD_HOOK_DIRECTORY, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ[CHILD_ENVIRONMENT] = "1"
    for name in ("NETSOCK_DEVICE", "NETSOCK_TAP", "NETSOCK_ADDRESSES", "NETSOCK_GATEWAYS", "NETSOCK_MTU",
                 "NETSOCK_PCAP"):
        os.environ.pop(name, None)


def _fresh_main() -> types.ModuleType:
    """A new, empty ``__main__`` module in sys.modules, as the interpreter makes for a program."""
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    return main


def _run_program(program: list[str]) -> None:
    """Run it as the interpreter would: ``sys.argv``, ``sys.path[0]`` and ``__main__`` as python sets them."""
    if not program:
        raise SystemExit("netsock run: nothing to run (SCRIPT, -m MODULE or -c CODE)")
    switch = program[0]
    if switch == "-m":
        if len(program) < 2:
            raise SystemExit("netsock run: -m needs a module name")
        sys.argv = [program[1], *program[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    elif switch == "-c":
        if len(program) < 2:
            raise SystemExit("netsock run: -c needs code")
        sys.argv = ["-c", *program[2:]]
        sys.path[0] = ""
        exec(compile(program[1], "<string>", "exec"), _fresh_main().__dict__)
    else:
        sys.argv = list(program)
        path = os.path.abspath(switch)
        sys.path[0] = os.path.dirname(path)
        if os.path.isfile(path) and not zipfile.is_zipfile(path):
            # As python runs a script: __file__ absolute (runpy.run_path would keep it as given).
            main = _fresh_main()
            main.__file__ = path
            main.__cached__ = None  # type: ignore[attr-defined]
            with io.open_code(path) as source:
                code = compile(source.read(), path, "exec")
            exec(code, main.__dict__)
        else:
            runpy.run_path(switch, run_name="__main__")     # a directory or zip with __main__.py


def main(argv: list[str]) -> int:
    """Run the program; its exit code (SystemExit passes through) is the command's."""
    options_argv, program = _split(argv)
    options = _parser().parse_args(options_argv)
    name = options.tun or options.tap
    if not name and (options.address or options.gateway or options.mtu or options.host_address):
        raise SystemExit("netsock run: --address, --gateway, --mtu and --host-address need --tun or --tap")
    with _device(name, bool(options.tap), options.host_address, options.mtu):
        from . import patch_all

        patch_all(device=name, tap=bool(options.tap), addresses=options.address, gateways=options.gateway,
                  dns=options.dns, mtu=options.mtu, pcap=options.pcap)
        _firewall(options.iptables, options.ip6tables, options.iptables_restore, options.ip6tables_restore)
        _child_environment()
        _quiet_interrupts()
        try:
            _run_program(program)
        finally:
            _finish(options.stats_json)
    return 0


def _firewall(iptables: list[str], ip6tables: list[str], rule_set: str | None, rule_set6: str | None) -> None:
    """Load the --iptables-restore rule sets, then run the --iptables and --ip6tables commands, on the
    program's stack, before the program starts."""
    if not (iptables or ip6tables or rule_set or rule_set6):
        return
    from .adapter.runtime import default_stack
    from .stack.iptables_syntax import command, restore

    tables = default_stack().iptables
    for version, path in ((4, rule_set), (6, rule_set6)):
        if path is not None:
            try:
                with open(path) as rules:
                    restore(tables, rules.read(), version)
            except (OSError, ValueError) as error:
                raise SystemExit(f"netsock run: --ip{'6' * (version == 6)}tables-restore {path}: {error}") from None
    for version, lines in ((4, iptables), (6, ip6tables)):
        for line in lines:
            try:
                command(tables, line, version)
            except ValueError as error:
                raise SystemExit(f"netsock run: --ip{'6' * (version == 6)}tables {line!r}: {error}") from None


def _quiet_interrupts() -> None:
    """Ctrl-C arriving while the hub runs stack code goes to the program as KeyboardInterrupt, as
    always, without gevent printing it as a failed callback first (python prints nothing there)."""
    import gevent

    hub = gevent.get_hub()
    hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)


def _finish(stats_json: str | None) -> None:
    """Let the program's connections deliver what they owe, write the counters if asked, and close the stack's
    links (which completes a pcap file)."""
    from .adapter.runtime import default_stack_if_built, finish_connections
    from .samples.common import all_counters, close

    stack = default_stack_if_built()
    if stack is not None:
        finish_connections(stack)
    if stats_json:
        with open(stats_json, "w") as out:
            json.dump(all_counters(stack) if stack is not None else {}, out, indent=1, sort_keys=True)
    if stack is not None:
        close(stack)
