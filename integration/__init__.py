"""Integration tests: netsock against the real Linux kernel, in throwaway network namespaces (root)."""
