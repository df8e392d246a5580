"""Transport protocols, one subpackage each: tcp; udp, udplite, icmp and raw on the shared datagram endpoint."""
