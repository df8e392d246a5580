"""Private networks: in-process virtual networks of hosts, switches, routers and faults, for tests
and demos that must never touch the machine's real network (see ``network``).

The names load on first use, so that the pytest plugin (imported by every pytest run where netsock
is installed) costs nothing until a test asks for a network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .network import Host, Network
    from .switch import Switch

__all__ = ["Host", "Network", "Switch"]


def __getattr__(name: str) -> object:
    if name in ("Host", "Network"):
        from . import network
        return getattr(network, name)
    if name == "Switch":
        from .switch import Switch
        return Switch
    raise AttributeError(f"module 'netsock.privnet' has no attribute {name!r}")
