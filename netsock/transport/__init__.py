"""Transport protocols: one subpackage each (udp, icmp; tcp to come)."""
