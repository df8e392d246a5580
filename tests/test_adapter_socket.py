"""NetsockSocket as a socket object: creation, identity (fileno, repr), life cycle (close, detach,
dup), blocking modes, argument errors, generic options, descriptor readiness seen by the real
select(), and the runtime that picks the stack. Expected values are what CPython on Linux gives."""

from __future__ import annotations

import errno
import gc
import os
import pickle
import select
import socket
import struct
import warnings

import gevent
import pytest

from netsock.adapter import NetsockSocket, StackConfig, build_stack, current_stack, fds, stack_config, use_stack
from netsock.tcpip import IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, Address


def readable(sock: NetsockSocket) -> bool:
    """What the kernel's select() says of the socket's descriptor right now."""
    return bool(select.select([sock.fileno()], [], [], 0)[0])


# --- creation and identity -----------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_defaults_and_properties() -> None:
    with NetsockSocket() as s:
        assert (s.family, s.type, s.proto) == (socket.AF_INET, socket.SOCK_STREAM, 0)
        assert isinstance(s.family, socket.AddressFamily) and isinstance(s.type, socket.SocketKind)
        assert s.gettimeout() is None and s.timeout is None and s.getblocking()
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as s:
        assert (s.family, s.type, s.proto) == (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_UDP
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET6
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM


@pytest.mark.usefixtures("stack")
def test_sock_nonblock_in_the_type_makes_a_non_blocking_socket() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC) as s:
        assert s.type == socket.SOCK_STREAM
        assert s.gettimeout() == 0.0 and not s.getblocking()


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("args, code", [
    ((socket.AF_UNIX, socket.SOCK_STREAM), errno.EAFNOSUPPORT),
    ((socket.AF_INET, socket.SOCK_SEQPACKET), errno.ESOCKTNOSUPPORT),
    ((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_UDP), errno.EPROTONOSUPPORT),
    ((socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMP), errno.EPROTONOSUPPORT),
])
def test_unsupported_socket_kinds_fail_as_linux(args: tuple[int, ...], code: int) -> None:
    with pytest.raises(OSError) as info:
        NetsockSocket(*args)
    assert info.value.errno == code


@pytest.mark.usefixtures("stack")
def test_repr_is_cpythons() -> None:
    with NetsockSocket() as s:
        fd = s.fileno()
        assert repr(s) == f"<netsock.socket fd={fd}, family=2, type=1, proto=0, laddr=('0.0.0.0', 0)>"
        s.bind(("127.0.0.1", 8080))
        assert repr(s) == f"<netsock.socket fd={fd}, family=2, type=1, proto=0, laddr=('127.0.0.1', 8080)>"
    assert repr(s) == "<netsock.socket [closed] fd=-1, family=2, type=1, proto=0>"
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.connect(("::1", 9))
        port = s.getsockname()[1]
        assert repr(s) == (f"<netsock.socket fd={s.fileno()}, family=10, type=2, proto=0, "
                           f"laddr=('::1', {port}, 0, 0), raddr=('::1', 9, 0, 0)>")


@pytest.mark.usefixtures("stack")
def test_every_socket_has_its_own_real_descriptor() -> None:
    sockets = [NetsockSocket(family, kind) for family in (socket.AF_INET, socket.AF_INET6)
               for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM) for _ in range(10)]
    try:
        numbers = [s.fileno() for s in sockets]
        assert len(set(numbers)) == len(numbers)
        for s, fd in zip(sockets, numbers):
            os.fstat(fd)                               # a descriptor the kernel knows
            assert fds.lookup(fd) is s._core
            assert not s.get_inheritable()
    finally:
        for s in sockets:
            s.close()
    assert all(fds.lookup(fd) is None for fd in numbers)


@pytest.mark.usefixtures("stack")
def test_pickling_is_refused() -> None:
    with NetsockSocket() as s, pytest.raises(TypeError, match="cannot pickle 'NetsockSocket' object"):
        pickle.dumps(s)


# --- life cycle -----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_close_is_idempotent_and_later_calls_fail_with_ebadf() -> None:
    s = NetsockSocket()
    fd = s.fileno()
    s.close()
    s.close()
    assert s.fileno() == -1
    assert fds.lookup(fd) is None
    for call in (lambda: s.send(b"x"), s.getsockname, s.getpeername, s.listen, lambda: s.shutdown(2),
                 lambda: s.connect(("127.0.0.1", 1)), lambda: s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
                 lambda: s.recv(1), s.dup, s.accept, lambda: s.settimeout(1.0), lambda: s.setblocking(False)):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF, call
    assert s.gettimeout() == 0.0         # as CPython: the value is set before the descriptor is found bad
    assert s.recv(0) == b""              # CPython asks nothing of the kernel for zero bytes
    assert s.connect_ex(("127.0.0.1", 1)) == errno.EBADF
    assert s.detach() == -1


@pytest.mark.usefixtures("stack")
def test_a_context_manager_closes() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert s.fileno() >= 0
    assert s.fileno() == -1


@pytest.mark.usefixtures("stack")
def test_closed_sockets_are_freed_without_the_cyclic_gc() -> None:
    # A server closes a socket per connection: left to the cyclic GC, each would survive into the
    # older generations and make every full collection longer.
    with NetsockSocket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        gc.collect()
        gc.disable()
        try:
            client = NetsockSocket()
            client.connect(listener.getsockname())
            server, _ = listener.accept()
            client.sendall(b"x")
            assert server.recv(1) == b"x"
            client.close()
            server.close()
            del client, server
            assert gc.collect() == 0
        finally:
            gc.enable()


@pytest.mark.usefixtures("stack")
def test_detach_keeps_the_socket_for_a_new_object() -> None:
    s = NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    name = s.getsockname()
    fd = s.detach()
    assert s.fileno() == -1 and fds.lookup(fd) is not None
    with NetsockSocket(fileno=fd) as again:
        assert again.fileno() == fd and again.getsockname() == name
        assert (again.family, again.type) == (socket.AF_INET, socket.SOCK_DGRAM)
    assert fds.lookup(fd) is None


def test_fileno_must_be_a_netsock_descriptor() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            NetsockSocket(fileno=r)
        assert info.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(ValueError, match="negative file descriptor"):
        NetsockSocket(fileno=-1)


@pytest.mark.usefixtures("stack")
def test_dup_is_another_descriptor_for_the_same_socket() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as a, NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        b.bind(("127.0.0.1", 0))
        b.settimeout(2.5)
        twin = b.dup()
        assert twin.fileno() != b.fileno() and twin.getsockname() == b.getsockname()
        assert twin.gettimeout() == 2.5
        a.sendto(b"one", b.getsockname())
        assert twin.recv(10) == b"one"
        b.close()                                  # the socket lives on in the duplicate
        a.sendto(b"two", twin.getsockname())
        assert twin.recv(10) == b"two"
        twin.close()


@pytest.mark.usefixtures("stack")
def test_an_unclosed_socket_warns_when_collected() -> None:
    s = NetsockSocket()
    fd = s.fileno()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del s
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == [
        f"unclosed <netsock.socket fd={fd}, family=2, type=1, proto=0, laddr=('0.0.0.0', 0)>"]
    gevent.sleep(0)                     # closed from the hub loop
    assert fds.lookup(fd) is None


@pytest.mark.usefixtures("stack")
def test_makefile_checks_its_mode() -> None:
    with NetsockSocket() as s:
        with pytest.raises(ValueError, match=r"invalid mode 'rx' \(only r, w, b allowed\)"):
            s.makefile("rx")
        with pytest.raises(ValueError, match="unbuffered streams must be binary"):
            s.makefile("r", buffering=0)


# --- blocking modes -------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_timeouts_are_validated_as_cpython_does() -> None:
    with NetsockSocket() as s:
        s.settimeout(5)
        assert s.gettimeout() == 5.0 and s.getblocking()
        s.setblocking(False)
        assert s.gettimeout() == 0.0 and not s.getblocking()
        s.setblocking(True)
        assert s.gettimeout() is None
        with pytest.raises(ValueError, match="Timeout value out of range"):
            s.settimeout(-1)
        with pytest.raises(ValueError, match=r"Invalid value NaN \(not a number\)"):
            s.settimeout(float("nan"))
        with pytest.raises(TypeError, match="'str' object cannot be interpreted as an integer"):
            s.settimeout("1")


@pytest.mark.usefixtures("stack")
def test_new_sockets_take_the_default_timeout() -> None:
    socket.setdefaulttimeout(3.0)
    try:
        with NetsockSocket() as s:
            assert s.gettimeout() == 3.0
    finally:
        socket.setdefaulttimeout(None)


# --- addresses ------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_unbound_names() -> None:
    with NetsockSocket() as s4, NetsockSocket(socket.AF_INET6) as s6:
        assert s4.getsockname() == ("0.0.0.0", 0)
        assert s6.getsockname() == ("::", 0, 0, 0)
        for s in (s4, s6):
            with pytest.raises(OSError) as info:
                s.getpeername()
            assert info.value.errno == errno.ENOTCONN


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, address, error, message", [
    (socket.AF_INET, "127.0.0.1", TypeError, "connect(): AF_INET address must be tuple, not str"),
    (socket.AF_INET, ["127.0.0.1", 80], TypeError, "connect(): AF_INET address must be tuple, not list"),
    (socket.AF_INET, ("127.0.0.1",), TypeError, "AF_INET address must be a pair (host, port)"),
    (socket.AF_INET, ("127.0.0.1", 80, 0), TypeError, "AF_INET address must be a pair (host, port)"),
    (socket.AF_INET, (1234, 80), TypeError, "str, bytes or bytearray expected, not int"),
    (socket.AF_INET, ("127.0.0.1", "80"), TypeError, "'str' object cannot be interpreted as an integer"),
    (socket.AF_INET, ("127.0.0.1", 70000), OverflowError, "connect(): port must be 0-65535."),
    (socket.AF_INET, ("127.0.0.1", -1), OverflowError, "connect(): port must be 0-65535."),
    (socket.AF_INET6, "::1", TypeError, "connect(): AF_INET6 address must be tuple, not str"),
    (socket.AF_INET6, ("::1",), TypeError, "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])"),
    (socket.AF_INET6, ("::1", 80, 0, 0, 0), TypeError,
     "AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])"),
    (socket.AF_INET6, ("::1", 80, 1 << 20), OverflowError, "connect(): flowinfo must be 0-1048575."),
    (socket.AF_INET6, ("::1", 65536), OverflowError, "connect(): port must be 0-65535."),
])
def test_malformed_addresses_raise_what_cpython_raises(family: int, address: object, error: type[Exception],
                                                       message: str) -> None:
    with NetsockSocket(family) as s:
        with pytest.raises(error) as info:
            s.connect(address)
        assert str(info.value) == message


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host, code, message", [
    (socket.AF_INET, "no.such.host.invalid", socket.EAI_NONAME, "Name or service not known"),
    (socket.AF_INET, "300.1.1.1", socket.EAI_NONAME, "Name or service not known"),
    (socket.AF_INET, "::1", socket.EAI_ADDRFAMILY, "Address family for hostname not supported"),
    (socket.AF_INET6, "127.0.0.1", socket.EAI_ADDRFAMILY, "Address family for hostname not supported"),
])
def test_names_that_do_not_resolve_are_gaierrors(family: int, host: str, code: int, message: str) -> None:
    with NetsockSocket(family) as s:
        with pytest.raises(socket.gaierror) as info:
            s.connect((host, 80))
        assert info.value.args == (code, message)
        with pytest.raises(socket.gaierror):
            s.connect_ex((host, 80))       # resolution errors are raised, not returned


@pytest.mark.usefixtures("stack")
def test_numeric_hosts_localhost_and_the_wildcard() -> None:
    with NetsockSocket() as a, NetsockSocket() as b, NetsockSocket(socket.AF_INET6) as c, NetsockSocket() as d:
        a.bind(("localhost", 0))
        assert a.getsockname()[0] == "127.0.0.1"
        b.bind((b"127.1", 0))               # bytes, and the short form getaddrinfo accepts
        assert b.getsockname()[0] == "127.0.0.1"
        c.bind(("localhost", 0))
        assert c.getsockname()[0] == "::1"
        d.bind(("", 0))
        assert d.getsockname()[0] == "0.0.0.0"
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as s, pytest.raises(OSError, match="family mismatched"):
        s.sendto(b"x", ("<broadcast>", 9))


@pytest.mark.usefixtures("stack")
def test_scope_ids() -> None:
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for call, code in ((s.bind, errno.ENODEV), (s.connect, errno.ENETUNREACH)):
            with pytest.raises(OSError) as info:
                call(("fe80::1", 9, 0, 99))                 # no interface 99
            assert info.value.errno == code
        s.connect(("::1", 9, 0, 99))                        # not link-local: the scope does not matter
        assert s.getpeername() == ("::1", 9, 0, 0)


@pytest.mark.usefixtures("stack")
def test_bind_errors() -> None:
    with NetsockSocket() as a, NetsockSocket() as b:
        a.bind(("127.0.0.1", 0))
        for sock, address, code in ((a, ("127.0.0.1", 0), errno.EINVAL), (b, a.getsockname(), errno.EADDRINUSE),
                                    (b, ("192.0.2.1", 0), errno.EADDRNOTAVAIL)):
            with pytest.raises(OSError) as info:
                sock.bind(address)
            assert info.value.errno == code


# --- options --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_socket_level_options(kind: int) -> None:
    with NetsockSocket(socket.AF_INET, kind) as s:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 7)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, True)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 131072    # doubled, as Linux
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 65536
        for name in (socket.SO_KEEPALIVE, socket.SO_BROADCAST):    # kept even where they do nothing
            assert s.getsockopt(socket.SOL_SOCKET, name) == 0
            s.setsockopt(socket.SOL_SOCKET, name, 1)
            assert s.getsockopt(socket.SOL_SOCKET, name) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == bytes(8)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 5))
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == struct.pack("ii", 1, 5)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER) == 1     # without buflen: the first int
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 1) == bytes([kind])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 500000))
        assert struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) == (1, 500000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo\0")
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16) == b"lo\0"


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("call, code", [
    (lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 1), errno.EINVAL),      # not a struct linger
    (lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 10**6)), errno.EDOM),
    (lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 1), errno.ENOPROTOOPT),   # read-only
    (lambda s: s.setsockopt(socket.SOL_SOCKET, 9999, 1), errno.ENOPROTOOPT),
    (lambda s: s.getsockopt(socket.SOL_SOCKET, 9999), errno.ENOPROTOOPT),
    (lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth9\0"), errno.ENODEV),
    (lambda s: s.setsockopt(12345, 1, 1), errno.ENOPROTOOPT),
    (lambda s: s.getsockopt(12345, 1), errno.EOPNOTSUPP),                               # Linux differs by direction
    (lambda s: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1), errno.ENOPROTOOPT),
    (lambda s: s.getsockopt(socket.IPPROTO_IP, 9999), errno.ENOPROTOOPT),
    (lambda s: s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 0), errno.EINVAL),
    (lambda s: s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 256), errno.EINVAL),
    (lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, None, 4), errno.EFAULT),
])
def test_option_errors_are_linuxs(call, code: int) -> None:
    with NetsockSocket() as s:
        with pytest.raises(OSError) as info:
            call(s)
        assert info.value.errno == code


@pytest.mark.usefixtures("stack")
def test_option_argument_errors_are_cpythons() -> None:
    with NetsockSocket() as s:
        with pytest.raises(OSError, match="getsockopt buflen out of range") as info:
            s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE, 1025)
        assert info.value.errno is None
        with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, "1")
        with pytest.raises(TypeError, match="a bytes-like object is required, not 'int'"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1 << 40)


@pytest.mark.usefixtures("stack")
def test_ip_ttl_and_tos() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, b"\x05")          # IP options take a byte too
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 5
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1) == b"\x05"
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, -1)                # back to the default
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 64
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xFF)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xFF
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 64
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 9)
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 9
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)                # for its IPv4 (mapped) traffic
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 33
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 9
        with pytest.raises(OSError) as info:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 256)
        assert info.value.errno == errno.EINVAL


# --- descriptor readiness -------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_the_kernel_select_sees_datagrams_queued() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as rx, NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        assert not readable(rx)
        assert select.select([], [rx.fileno()], [], 0)[1] == [rx.fileno()]    # an eventfd is always writable
        tx.sendto(b"a", rx.getsockname())
        tx.sendto(b"b", rx.getsockname())
        assert readable(rx)
        assert rx.recv(1) == b"a"
        assert readable(rx)                 # one left
        assert rx.recv(1) == b"b"
        assert not readable(rx)
        poller = select.poll()
        poller.register(rx.fileno(), select.POLLIN)
        tx.sendto(b"c", rx.getsockname())
        assert poller.poll(0) == [(rx.fileno(), select.POLLIN)]


@pytest.mark.usefixtures("stack")
def test_readiness_reaches_the_descriptor_once_its_number_is_out() -> None:
    """Mirroring costs a system call per change: a socket whose number nobody took pays none, and the
    descriptor shows the truth from the moment fileno() hands it out."""
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as rx, NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"a", rx.getsockname())
        fd = rx._fd                                        # (the number, without handing it out)
        assert not select.select([fd], [], [], 0)[0]        # readable, but not mirrored yet
        assert readable(rx)                                 # fileno(): mirrored from now on
        assert rx.recv(1) == b"a"
        assert not readable(rx)


@pytest.mark.usefixtures("stack")
def test_the_kernel_select_sees_connections_data_and_eof() -> None:
    with NetsockSocket() as listener, NetsockSocket() as client:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not readable(listener)
        client.connect(listener.getsockname())
        assert readable(listener)           # a connection to accept
        server, _ = listener.accept()
        with server:
            assert not readable(listener) and not readable(server)
            client.sendall(b"data")
            assert readable(server)
            assert server.recv(10) == b"data"
            assert not readable(server)
            client.shutdown(socket.SHUT_WR)
            assert readable(server)         # end of stream is readable too
            dup = server.dup()
            assert readable(dup)
            assert server.recv(10) == b""
            dup.close()


# --- the runtime ----------------------------------------------------------------------------------------

def test_a_built_stack_has_the_loopback() -> None:
    net = build_stack()
    try:
        lo = net.nic_by_name("lo")
        assert lo is not None and lo.id == 1 and lo.loopback
        assert [str(a.address) for a in lo.addresses[IPV4_PROTOCOL_NUMBER]] == ["127.0.0.1"]
        assert [str(a.address) for a in lo.addresses[IPV6_PROTOCOL_NUMBER]] == ["::1"]
        assert net.find_route(0, b"", Address.parse("127.1.2.3"), IPV4_PROTOCOL_NUMBER).nic is lo
        assert net.find_route(0, b"", Address.parse("::1"), IPV6_PROTOCOL_NUMBER).nic is lo
        assert stack_config(net) == StackConfig()
    finally:
        net.close()


def test_use_stack_reaches_spawned_greenlets() -> None:
    first, second = build_stack(), build_stack()
    try:
        with use_stack(first):
            assert current_stack() is first
            child = gevent.spawn(lambda: (current_stack(), gevent.spawn(current_stack).get()))
            with use_stack(second):
                assert current_stack() is second
                with NetsockSocket() as s:
                    assert s._core.stack is second
            assert child.get() == (first, first)
    finally:
        first.close()
        second.close()


def test_stack_config_is_validated_and_read_from_the_environment() -> None:
    with pytest.raises(ValueError, match="configure a device"):
        StackConfig(addresses=("192.0.2.2/24",))
    with pytest.raises(ValueError, match="at most one gateway per IP version"):
        StackConfig(device="tun0", gateways=("192.0.2.1", "192.0.2.254"))
    with pytest.raises(ValueError):
        StackConfig(device="tun0", addresses=("192.0.2.300/24",))
    config = StackConfig.from_environ({"NETSOCK_DEVICE": "tun0", "NETSOCK_ADDRESSES": "192.0.2.2/24, 2001:db8::2/64",
                                       "NETSOCK_GATEWAYS": "192.0.2.1", "NETSOCK_MTU": "1400",
                                       "NETSOCK_DNS": "192.0.2.53", "NETSOCK_TAP": "1"})
    assert config == StackConfig(device="tun0", tap=True, addresses=("192.0.2.2/24", "2001:db8::2/64"),
                                 gateways=("192.0.2.1",), mtu=1400, dns_servers=("192.0.2.53",))
    assert StackConfig.from_environ({}) == StackConfig()
