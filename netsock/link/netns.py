"""Entering a network namespace for a moment, to open or create a device that must live there.

A TUN/TAP fd belongs to the namespace in which /dev/net/tun was opened, and sockets to the one they
were created in; switching this thread back afterwards leaves both where they were made.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"        # where `ip netns add` puts named namespaces


def setns(fd: int) -> None:
    """Move this thread into the network namespace ``fd`` refers to (os.setns exists from 3.12 only)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block in the named namespace; back home afterwards, however the block ends."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
        try:
            setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
