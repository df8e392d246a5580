"""Private networks: in-process virtual networks of hosts, switches, routers and faults, for tests
and demos that must never touch the machine's real network (see ``network``)."""

from .network import Host, Network
from .switch import Switch

__all__ = ["Host", "Network", "Switch"]
