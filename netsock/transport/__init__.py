"""Transport protocols, one subpackage each: tcp; udp, udplite, icmp, raw and packet on the datagram endpoint."""
