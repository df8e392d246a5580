"""Send a stream with SO_MAX_PACING_RATE set, the way a program that paces its uploads would.

    python paced_sender.py HOST:PORT --bytes N --rate BYTES_PER_SECOND

Connects, sets the rate, sends N zero bytes, shuts its sending side and reads to EOF; prints one JSON line
(the bytes sent, the rate it read back, and the seconds from connect to EOF). Run by path, unmodified, on the
kernel's sockets or under ``python -m netsock run``.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("server")
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--rate", type=int, required=True)
    args = parser.parse_args()
    host, port = args.server.rsplit(":", 1)
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, args.rate)
        sock.sendall(bytes(args.bytes))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
        rate = sock.getsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE)
    print(json.dumps({"sent": args.bytes, "rate": rate, "seconds": round(time.monotonic() - start, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
