"""The modules mypyc compiles (setup.py): those every TCP segment passes through. mypyc makes their classes C
structs and the calls between them C calls — bench/segment_costs.py measured a connection's steps in the stack
at 262 µs as pure Python, 143 µs compiled. The .py files stay beside the compiled modules, which are imported
ahead of them; a build without mypyc (or with NETSOCK_PURE=1) runs the same code as Python.

Stack itself is not among them: it is weakly referenced, which a compiled class cannot be.
"""

COMPILED = [
    "netsock.header.checksum",
    "netsock.header.ipv4",
    "netsock.header.tcp",
    "netsock.stack.clock",
    "netsock.stack.nic",
    "netsock.stack.packet_buffer",
    "netsock.stack.registration",
    "netsock.stack.route",
    "netsock.network.ipv4.ipv4",
    "netsock.transport.tcp.buffers",
    "netsock.transport.tcp.endpoint",
    "netsock.transport.tcp.protocol",
    "netsock.transport.tcp.rack",
    "netsock.transport.tcp.receiver",
    "netsock.transport.tcp.sack",
    "netsock.transport.tcp.segment",
    "netsock.transport.tcp.sender",
]
