"""The socket adapter: CPython's ``socket.socket`` API over a netsock stack (issue "Drop-in").

``NetsockSocket`` behaves as ``socket.socket`` does on Linux; ``runtime`` decides which stack a new
socket belongs to (``default_stack``, ``use_stack``); ``fds`` maps socket descriptors back to sockets.
"""

from .runtime import StackConfig, build_stack, configure, current_stack, default_stack, stack_config, use_stack
from .socket import NetsockSocket

__all__ = ["NetsockSocket", "StackConfig", "build_stack", "configure", "current_stack", "default_stack",
           "stack_config", "use_stack"]
