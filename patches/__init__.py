"""What ``netsock.patch_all()`` installs over the standard library: one module per patched module.

Installed as ``netsock.patches`` (see setup.py); it sits above the adapter, the highest layer of the
stack, and nothing in ``netsock`` imports it except ``netsock.patch_all``.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import Any

__all__ = ["PATCHED_MODULES", "patch_all", "patched", "replacements", "unpatch_all"]

# In patching order: ssl wraps sockets, selectors builds on select; signal and threading keep what CPython
# promises of threads once gevent has made them greenlets.
PATCHED_MODULES = ("socket", "select", "selectors", "ssl", "signal", "threading")
# Modules that hold the originals by design: the patched ones, netsock and what it runs on (pyroute2
# talks netlink, which stays the kernel's), and pytest-socket (which keeps the true socket to restore).
_OWN_PREFIXES = ("socket", "select", "selectors", "ssl", "_socket", "_ssl", "netsock", "gevent", "pyroute2",
                 "pytest_socket")


def _modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in PATCHED_MODULES]


def replacements() -> list[tuple[Any, str, Any]]:
    """(target, name, original) of every attribute the patch modules replaced, in patching order."""
    return [replaced for module in _modules() for replaced in module._patcher.replaced()]


def patched() -> bool:
    """Whether netsock's patches are installed."""
    return importlib.import_module(f"{__name__}.socket")._patcher.active


def patch_all(*, device: str | None = None, tap: bool = False, addresses: Iterable[str] = (),
              gateways: Iterable[str] = (), dns: Iterable[str] = (), mtu: int | None = None,
              pcap: str | None = None, gevent: bool = True) -> None:
    """Make the program's networking go through netsock (see ``netsock.patch_all``)."""
    from netsock.adapter.runtime import StackConfig, configure

    addresses, gateways, dns = tuple(addresses), tuple(gateways), tuple(dns)
    if device or addresses or gateways or dns or mtu or pcap or tap:
        configure(StackConfig(device=device, tap=tap, addresses=addresses, gateways=gateways, mtu=mtu, pcap=pcap,
                              dns_servers=dns))
    if patched():
        return
    originals = _originals()
    if gevent:
        from gevent import monkey

        # Threads, sleeps, queues, os and subprocess waits must yield to the hub that runs the stack;
        # sockets, select and ssl are netsock's own business.
        monkey.patch_all(socket=False, dns=False, select=False, ssl=False)
    for module in _modules():
        module.patch()
    _warn_early_bindings(originals)


def unpatch_all() -> None:
    """Put the standard library's socket, select, selectors, ssl, signal and threading objects back
    (gevent's patches, which cannot be undone, stay)."""
    for module in reversed(_modules()):
        module.unpatch()


def _originals() -> dict[int, str]:
    """The objects patching replaces, by identity, with their dotted names."""
    import select
    import socket

    names = ["socket.socket", "socket.getaddrinfo", "socket.create_connection", "select.select", "select.poll",
             "select.epoll"]
    found = {}
    for dotted in names:
        module, _, name = dotted.partition(".")
        value = getattr({"socket": socket, "select": select}[module], name, None)
        if value is not None:
            found[id(value)] = dotted
    return found


def _warn_early_bindings(originals: dict[int, str]) -> None:
    """Name the modules that copied a socket or select function before patching (``from socket import
    socket``): they keep the kernel's, which netsock cannot change."""
    early: list[str] = []
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.split(".")[0] in _OWN_PREFIXES:
            continue
        namespace: dict[str, Any] = getattr(module, "__dict__", {})
        for attribute, value in list(namespace.items()):
            dotted = originals.get(id(value))
            if dotted is not None and not attribute.startswith("__"):
                early.append(f"{module_name}.{attribute} ({dotted})")
    if early:
        warnings.warn("netsock.patch_all() ran after these names were bound to the kernel's objects; they keep "
                      "using the kernel: " + ", ".join(sorted(early)) + ". Call patch_all() first in the program.",
                      RuntimeWarning, stacklevel=3)
