"""Name resolution over netsock: the socket module's getaddrinfo family, answered from a hosts
table and by a stub DNS resolver whose queries travel through a netsock stack."""

from .hosts import HostEntry, HostsTable
from .netdb import Resolver
from .stub import Answer, ResolverStats, Status, StubResolver

__all__ = ["Answer", "HostEntry", "HostsTable", "Resolver", "ResolverStats", "Status", "StubResolver"]
