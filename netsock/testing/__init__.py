"""Helpers for testing programs that run over netsock: fixtures that the unit tests, the integration
tests and private test networks share.

``tls``: a throwaway certificate authority and certificates for given host names and addresses, so
TLS can be tested with verification on and without any network access. (It needs the
``cryptography`` package, a test dependency, and is not imported here.)
"""
