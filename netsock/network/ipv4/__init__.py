"""IPv4: the protocol and its endpoints live in ``ipv4.py`` (a module of its own, which mypyc compiles: a
compiled package ``__init__`` would hide the package's other modules), ICMPv4 in ``icmp.py``, IGMP in
``igmp.py``."""

from .ipv4 import IPv4Endpoint, IPv4Protocol

__all__ = ["IPv4Endpoint", "IPv4Protocol"]
