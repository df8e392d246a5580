"""The ``netsock`` command.

    netsock demo                          the Quick-start demo (root: a namespace with a TUN)
    netsock run [OPTIONS] -- (SCRIPT | -m MODULE | -c CODE) [ARGS...]
                                          an unmodified Python program over netsock (see --help)
    netsock udp-echo DEVICE ADDRESS PORT  the udp_echo sample (same arguments)
    netsock tcp-echo DEVICE ADDRESS PORT  the tun_tcp_echo sample (same arguments)
    netsock tcp-connect DEVICE ADDRESS PORT REMOTE-ADDRESS REMOTE-PORT
                                          the tun_tcp_connect sample (same arguments)
    netsock version
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="netsock", description="netsock: a userspace TCP/IP stack for Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="run the demo (needs root and /dev/net/tun)")
    sub.add_parser("run", help="run an unmodified Python program over netsock (see --help)", add_help=False)
    sub.add_parser("udp-echo", help="UDP echo server on a TUN/TAP device (see --help)", add_help=False)
    sub.add_parser("tcp-echo", help="TCP echo server on a TUN/TAP device (see --help)", add_help=False)
    sub.add_parser("tcp-connect", help="TCP client on a TUN/TAP device, stdin/stdout to the connection (see --help)",
                   add_help=False)
    sub.add_parser("version", help="print the version")
    if argv and argv[0] == "run":
        from . import run
        return run.main(argv[1:])
    if argv and argv[0] == "udp-echo":
        from .samples import udp_echo
        return udp_echo.main(argv[1:])
    if argv and argv[0] == "tcp-echo":
        from .samples import tun_tcp_echo
        return tun_tcp_echo.main(argv[1:])
    if argv and argv[0] == "tcp-connect":
        from .samples import tun_tcp_connect
        return tun_tcp_connect.main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        from . import demo
        return demo.main()
    if args.command == "version":
        print(f"netsock {__version__}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
