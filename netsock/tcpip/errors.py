"""The one error space of the stack (netstack's ``tcpip.Err*``).

Every failure the stack reports to its users is one of these classes, and each carries exactly one
``errno`` so that the socket adapter raises what CPython's socket module raises for the same case.
They are exceptions because that is how Python code reports failure; ``ignore_stats`` marks the ones
that are part of normal flow (would-block, connect-started) and must not count as failures.
"""

from __future__ import annotations

import errno as _errno
import os


class Error(Exception):
    """Base of the netsock error space."""

    errno: int = _errno.EIO
    message: str = "unknown error"
    ignore_stats: bool = False
    note: str | None = None     # said after the errno's text in the OSError (None: exactly CPython's message)

    def __init__(self, detail: str | None = None, note: str | None = None) -> None:
        super().__init__(detail or self.message)
        if note is not None:
            self.note = note

    def to_oserror(self) -> OSError:
        """The OSError (with the right subclass, e.g. ConnectionRefusedError) CPython would raise."""
        text = os.strerror(self.errno)
        return OSError(self.errno, f"{text} ({self.note})" if self.note else text)


def _error(name: str, message: str, err: int, ignore_stats: bool = False) -> type[Error]:
    return type(name, (Error,), {"message": message, "errno": err, "ignore_stats": ignore_stats,
                                 "__doc__": message[0].upper() + message[1:] + "."})


ErrUnknownProtocol = _error("ErrUnknownProtocol", "unknown protocol", _errno.EINVAL)
ErrUnknownNICID = _error("ErrUnknownNICID", "unknown nic id", _errno.EINVAL)
ErrUnknownDevice = _error("ErrUnknownDevice", "unknown device", _errno.ENODEV)
ErrUnknownProtocolOption = _error("ErrUnknownProtocolOption", "unknown option for protocol", _errno.ENOPROTOOPT)
ErrDuplicateNICID = _error("ErrDuplicateNICID", "duplicate nic id", _errno.EEXIST)
ErrDuplicateAddress = _error("ErrDuplicateAddress", "duplicate address", _errno.EEXIST)
ErrNoRoute = _error("ErrNoRoute", "no route", _errno.EHOSTUNREACH)
ErrBadLinkEndpoint = _error("ErrBadLinkEndpoint", "bad link layer endpoint", _errno.EINVAL)
ErrAlreadyBound = _error("ErrAlreadyBound", "endpoint already bound", _errno.EINVAL, True)
ErrInvalidEndpointState = _error("ErrInvalidEndpointState", "endpoint is in invalid state", _errno.EINVAL)
ErrAlreadyConnecting = _error("ErrAlreadyConnecting", "endpoint is already connecting", _errno.EALREADY, True)
ErrAlreadyConnected = _error("ErrAlreadyConnected", "endpoint is already connected", _errno.EISCONN, True)
ErrNoPortAvailable = _error("ErrNoPortAvailable", "no ports are available", _errno.EAGAIN)
ErrPortInUse = _error("ErrPortInUse", "port is in use", _errno.EADDRINUSE)
ErrBadLocalAddress = _error("ErrBadLocalAddress", "bad local address", _errno.EADDRNOTAVAIL)
ErrClosedForSend = _error("ErrClosedForSend", "endpoint is closed for send", _errno.EPIPE)
ErrClosedForReceive = _error("ErrClosedForReceive", "endpoint is closed for receive", _errno.EIO)
ErrWouldBlock = _error("ErrWouldBlock", "operation would block", _errno.EAGAIN, True)
ErrConnectionRefused = _error("ErrConnectionRefused", "connection was refused", _errno.ECONNREFUSED)
ErrTimeout = _error("ErrTimeout", "operation timed out", _errno.ETIMEDOUT)
ErrAborted = _error("ErrAborted", "operation aborted", _errno.EPIPE)
ErrConnectStarted = _error("ErrConnectStarted", "connection attempt started", _errno.EINPROGRESS, True)
ErrDestinationRequired = _error("ErrDestinationRequired", "destination address is required", _errno.EDESTADDRREQ)
ErrNotSupported = _error("ErrNotSupported", "operation not supported", _errno.EOPNOTSUPP)
ErrQueueSizeNotSupported = _error("ErrQueueSizeNotSupported", "queue size querying not supported", _errno.ENOTTY)
ErrNotConnected = _error("ErrNotConnected", "endpoint not connected", _errno.ENOTCONN)
ErrConnectionReset = _error("ErrConnectionReset", "connection reset by peer", _errno.ECONNRESET)
ErrConnectionAborted = _error("ErrConnectionAborted", "connection aborted", _errno.ECONNABORTED)
ErrNoSuchFile = _error("ErrNoSuchFile", "no such file", _errno.ENOENT)
ErrInvalidOptionValue = _error("ErrInvalidOptionValue", "invalid option value specified", _errno.EINVAL)
ErrNoLinkAddress = _error("ErrNoLinkAddress", "no remote link address", _errno.EHOSTDOWN)
ErrBadAddress = _error("ErrBadAddress", "bad address", _errno.EFAULT)
ErrNetworkUnreachable = _error("ErrNetworkUnreachable", "network is unreachable", _errno.ENETUNREACH)
ErrMessageTooLong = _error("ErrMessageTooLong", "message too long", _errno.EMSGSIZE)
ErrNoBufferSpace = _error("ErrNoBufferSpace", "no buffer space available", _errno.ENOBUFS)
ErrBroadcastDisabled = _error("ErrBroadcastDisabled", "broadcast socket option disabled", _errno.EACCES)
ErrNotPermitted = _error("ErrNotPermitted", "operation not permitted", _errno.EPERM)
ErrAddressFamilyNotSupported = _error("ErrAddressFamilyNotSupported", "address family not supported by protocol",
                                      _errno.EAFNOSUPPORT)
# Beyond netstack's list: what the kernel reports for ICMP errors a transport endpoint receives.
ErrHostUnreachable = _error("ErrHostUnreachable", "no route to host", _errno.EHOSTUNREACH)
ErrHostDown = _error("ErrHostDown", "host is down", _errno.EHOSTDOWN)                   # ICMP host unknown
ErrProtocolError = _error("ErrProtocolError", "protocol error", _errno.EPROTO)          # parameter problem
ErrAccessDenied = _error("ErrAccessDenied", "permission denied", _errno.EACCES)         # ICMPv6 prohibited
ErrMalformedHeader = _error("ErrMalformedHeader", "header is malformed", _errno.EINVAL)
# UDP_SEGMENT asked of UDP-Lite: segmentation completes full checksums only, so Linux refuses the
# write rather than send datagrams with the wrong coverage.
ErrPartialChecksumOffload = _error("ErrPartialChecksumOffload", "UDP-Lite datagrams cannot be segmented",
                                   _errno.EIO)

ALL_ERRORS: tuple[type[Error], ...] = tuple(
    v for k, v in sorted(globals().items()) if k.startswith("Err") and isinstance(v, type))
