"""Transport protocols, one subpackage each: tcp, and udp, udplite and icmp on the shared datagram endpoint."""
