"""Network-layer protocols: one subpackage each (ipv4, arp)."""
