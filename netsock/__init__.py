"""netsock: a userspace TCP/IP stack for Python, after gVisor's netstack.

Start with ``netsock.stack.Stack``; link endpoints live in ``netsock.link``, protocols in
``netsock.network`` and ``netsock.transport``.
"""

__version__ = "0.1.0"
