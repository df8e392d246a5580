"""patches/ssl.py: TLS over netsock sockets, as CPython's SSLSocket behaves over kernel sockets.

Servers and clients are greenlets on one stack (loopback NIC), certificates come from
``netsock.testing.tls`` and verification is on. Where an error must be the stdlib's (certificate
verification, alerts, ragged EOF, the messages of timeouts and of SSLWantWriteError), the test
runs the same exchange with the stdlib over a kernel socket pair and compares.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import http.client
import http.server
import os
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from gevent import select as gselect

from netsock.adapter import NetsockSocket
from netsock.patches import ssl as patch_ssl
from netsock.patches.ssl import NetsockSSLSocket
from netsock.testing.tls import CertificateAuthority, CertificateFiles

LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


# --- certificates and contexts ------------------------------------------------------------------------------

class PKI:
    """A trusted CA with certificates for the loopback names, "other.test" and a client; and a second
    CA nobody trusts, with a certificate for "localhost"."""

    def __init__(self, directory: Any) -> None:
        ca = CertificateAuthority(directory / "trusted")
        self.server = ca.issue("localhost", "127.0.0.1", "::1")
        self.other = ca.issue("other.test")
        self.client = ca.issue("client.test")
        self.untrusted = CertificateAuthority(directory / "untrusted", "unknown CA").issue("localhost")

    def server_context(self, files: CertificateFiles | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        files = files or self.server
        context.load_cert_chain(files.cert, files.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.server.ca))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def patched(stack: Any) -> Iterator[None]:
    patch_ssl.patch()
    yield
    patch_ssl.unpatch()


# --- helpers --------------------------------------------------------------------------------------------------

def tls_pair(client_context: ssl.SSLContext, server_context: ssl.SSLContext, server_hostname: str | None = "localhost",
             family: int = socket.AF_INET, host: str = "127.0.0.1", handshake: bool = True,
             **client_options: Any) -> tuple[NetsockSSLSocket, NetsockSSLSocket]:
    """(client, server) of one TLS connection; the server side is accepted on a wrapped listener.
    Without ``handshake``, neither side has done it."""
    with server_context.wrap_socket(NetsockSocket(family), server_side=True,
                                    do_handshake_on_connect=handshake) as listener:
        listener.bind((host, 0))
        listener.listen()
        accepting = gevent.spawn(listener.accept)
        raw = NetsockSocket(family)
        raw.connect(listener.getsockname())
        client = client_context.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=handshake,
                                            **client_options)
        server, _ = accepting.get(timeout=10)
    return client, server


def accept_failure(listener: NetsockSSLSocket) -> BaseException:
    """What the accept of a connection whose handshake fails raises."""
    with pytest.raises(OSError) as failed:
        listener.accept()
    return failed.value


def failed_handshake(client_context: ssl.SSLContext, server_context: ssl.SSLContext,
                     server_hostname: str) -> tuple[BaseException, BaseException]:
    """The errors of a netsock handshake that fails: (the client's, the server's)."""
    with server_context.wrap_socket(NetsockSocket(), server_side=True) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepting = gevent.spawn(accept_failure, listener)
        raw = NetsockSocket()
        raw.connect(listener.getsockname())
        # Handshake apart from wrap_socket, which would close the socket at once: with the rest of the
        # server's flight unread, that resets the connection.
        with client_context.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=False) as client:
            with pytest.raises(ssl.SSLError) as client_error:
                client.do_handshake()
            server_error = accepting.get(timeout=10)
    return client_error.value, server_error


def handshake_on_connect_error(client_context: ssl.SSLContext, server_context: ssl.SSLContext,
                               server_hostname: str) -> BaseException:
    """The client's error from a wrap_socket whose handshake fails; the socket must be closed after."""
    with server_context.wrap_socket(NetsockSocket(), server_side=True) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepting = gevent.spawn(accept_failure, listener)
        raw = NetsockSocket()
        raw.connect(listener.getsockname())
        fd = raw.fileno()
        with pytest.raises(ssl.SSLError) as client_error:
            client_context.wrap_socket(raw, server_hostname=server_hostname)
        accepting.get(timeout=10)
    assert raw.fileno() == -1
    with pytest.raises(OSError):
        os.fstat(fd)        # closed with the failure
    return client_error.value


def kernel_pair(client_context: ssl.SSLContext, server_context: ssl.SSLContext,
                server_hostname: str = "localhost") -> tuple[ssl.SSLSocket, ssl.SSLSocket, dict[str, BaseException]]:
    """The reference: stdlib TLS over a kernel socket pair, both ends non-blocking, the handshake
    driven in turns. Returns (client, server, the handshake errors by side)."""
    a, b = socket.socketpair()
    client = client_context.wrap_socket(a, server_hostname=server_hostname, do_handshake_on_connect=False)
    server = server_context.wrap_socket(b, server_side=True, do_handshake_on_connect=False)
    client.setblocking(False)
    server.setblocking(False)
    pending = {"client": client, "server": server}
    errors: dict[str, BaseException] = {}
    for _ in range(50):
        for side, sock in list(pending.items()):
            try:
                sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except ssl.SSLError as error:
                errors[side] = error
            del pending[side]
        if not pending:
            return client, server, errors
    raise AssertionError("the kernel handshake did not finish")


def error_signature(error: BaseException) -> tuple[Any, ...]:
    return (type(error), error.args, getattr(error, "verify_code", None), getattr(error, "verify_message", None),
            getattr(error, "reason", None), getattr(error, "library", None))


def receive_exactly(sock: Any, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "EOF before all the data came"
        data += chunk
    return bytes(data)


def echo(sock: NetsockSSLSocket) -> gevent.Greenlet:
    """Echo everything until EOF (close_notify or ragged), then close."""
    def serve() -> None:
        with sock:
            while data := sock.recv(65536):
                sock.sendall(data)
    return gevent.spawn(serve)


# --- the connection ---------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_echo_with_verification(pki: PKI, family: int, host: str) -> None:
    raw = NetsockSocket(family)
    with pki.server_context().wrap_socket(NetsockSocket(family), server_side=True) as listener:
        listener.bind((host, 0))
        listener.listen()
        accepting = gevent.spawn(listener.accept)
        raw.connect(listener.getsockname())
        fd = raw.fileno()
        client = pki.client_context().wrap_socket(raw, server_hostname=host)
        server, address = accepting.get(timeout=10)
    assert address == client.getsockname()
    assert isinstance(client, ssl.SSLSocket) and isinstance(client, socket.socket)
    assert type(server) is NetsockSSLSocket and server.server_side and not client.server_side
    assert raw.fileno() == -1 and client.fileno() == fd      # wrap_socket took over the descriptor
    assert (client.family, client.type, client.proto) == (family, socket.SOCK_STREAM, 0)
    assert client.getpeername() == server.getsockname()
    server_done = echo(server)
    with client:
        for message in (b"hello", os.urandom(100_000), b"bye"):
            client.sendall(message)
            assert receive_exactly(client, len(message)) == message
    server_done.get(timeout=10)
    assert client.fileno() == -1


@pytest.mark.usefixtures("patched")
def test_connection_properties(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    with client, server:
        assert client.version() == server.version() == "TLSv1.3"
        assert client.cipher() == server.cipher()
        assert client.cipher()[1] == "TLSv1.3"
        assert client.compression() is None and server.compression() is None
        shared = server.shared_ciphers()
        assert shared and client.cipher() in shared
        assert client.selected_alpn_protocol() is None
        peer = client.getpeercert()
        assert peer["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"),
                                          ("IP Address", "0:0:0:0:0:0:0:1"))
        assert peer["subject"] == ((("commonName", "localhost"),),)
        der = client.getpeercert(binary_form=True)
        assert der == ssl.PEM_cert_to_DER_cert(pki.server.cert.read_text())
        assert server.getpeercert() is None         # the client sent no certificate
        if sys.version_info >= (3, 13):
            ca_der = ssl.PEM_cert_to_DER_cert(pki.server.ca.read_text())
            assert client.get_verified_chain() == client.get_unverified_chain()[:1] + [ca_der]
            assert client.get_unverified_chain() == [der]
        binding = client.get_channel_binding("tls-unique")
        assert binding and binding == server.get_channel_binding("tls-unique")
        with pytest.raises(ValueError, match="'tls-server-end-point' channel binding type not implemented"):
            client.get_channel_binding("tls-server-end-point")
        assert client.context is not server.context and client.server_hostname == "localhost"
        server.sendall(b"x" * 100)
        assert client.recv(10) == b"x" * 10
        assert client.pending() == 90
        assert client.recv(1000) == b"x" * 90 and client.pending() == 0


@pytest.mark.usefixtures("patched")
def test_client_certificate(pki: PKI) -> None:
    server_context = pki.server_context()
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_verify_locations(pki.client.ca)
    client_context = pki.client_context()
    client_context.load_cert_chain(pki.client.cert, pki.client.key)
    client, server = tls_pair(client_context, server_context)
    with client, server:
        assert server.getpeercert()["subjectAltName"] == (("DNS", "client.test"),)


@pytest.mark.usefixtures("patched")
def test_alpn(pki: PKI) -> None:
    server_context = pki.server_context()
    server_context.set_alpn_protocols(["h2", "http/1.1"])
    client_context = pki.client_context()
    client_context.set_alpn_protocols(["http/1.1", "spdy/2"])
    client, server = tls_pair(client_context, server_context)
    with client, server:
        assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == "http/1.1"


@pytest.mark.usefixtures("patched")
def test_sni_callback_switches_the_certificate(pki: PKI) -> None:
    other = pki.server_context(pki.other)
    calls = []

    def choose(connection: ssl.SSLSocket, server_name: str, context: ssl.SSLContext) -> None:
        calls.append((connection, server_name, context))
        if server_name == "other.test":
            connection.context = other

    server_context = pki.server_context()
    server_context.sni_callback = choose
    client, server = tls_pair(pki.client_context(), server_context, server_hostname="other.test")
    with client, server:
        assert calls == [(server, "other.test", server_context)]
        assert server.context is other
        assert client.getpeercert()["subjectAltName"] == (("DNS", "other.test"),)


@pytest.mark.usefixtures("patched")
def test_session_reuse(pki: PKI) -> None:
    client_context, server_context = pki.client_context(), pki.server_context()
    first, first_server = tls_pair(client_context, server_context)
    with first, first_server:
        first_server.sendall(b"ticket first")      # TLS 1.3 tickets come after the handshake
        assert receive_exactly(first, 12) == b"ticket first"
        session = first.session
        assert session is not None and not first.session_reused
    second, second_server = tls_pair(client_context, server_context, session=session)
    with second, second_server:
        assert second.session_reused and second_server.session_reused


# --- certificate verification, as the stdlib does it --------------------------------------------------------------

@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("case, server_hostname, verify_code", [
    ("wrong host name", "example.org", 62),
    ("wrong address", "127.0.0.2", 64),
    ("unknown CA", "localhost", 20),
])
def test_verification_errors_are_the_stdlibs(pki: PKI, case: str, server_hostname: str, verify_code: int) -> None:
    server_files = pki.untrusted if case == "unknown CA" else pki.server
    client_error, server_error = failed_handshake(pki.client_context(), pki.server_context(server_files),
                                                  server_hostname)
    kernel_client, kernel_server, kernel_errors = kernel_pair(pki.client_context(), pki.server_context(server_files),
                                                              server_hostname)
    kernel_client.close()
    kernel_server.close()
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert client_error.verify_code == verify_code
    assert error_signature(client_error) == error_signature(kernel_errors["client"])
    assert error_signature(server_error) == error_signature(kernel_errors["server"])
    on_connect = handshake_on_connect_error(pki.client_context(), pki.server_context(server_files), server_hostname)
    assert error_signature(on_connect) == error_signature(client_error)


@pytest.mark.usefixtures("patched")
def test_plaintext_peer_is_the_stdlibs_error(pki: PKI) -> None:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    kernel_client, kernel_server = socket.socketpair()
    with kernel_client, kernel_server:
        kernel_client.sendall(request)
        with pytest.raises(ssl.SSLError) as kernel_error:
            pki.server_context().wrap_socket(kernel_server, server_side=True)
    with pki.server_context().wrap_socket(NetsockSocket(), server_side=True) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepting = gevent.spawn(accept_failure, listener)
        with NetsockSocket() as client:
            client.connect(listener.getsockname())
            client.sendall(request)
            error = accepting.get(timeout=10)
    assert error_signature(error) == error_signature(kernel_error.value)
    assert error.reason == "HTTP_REQUEST"


@pytest.mark.usefixtures("patched")
def test_wrap_socket_argument_errors(pki: PKI) -> None:
    with NetsockSocket() as raw, pytest.raises(ValueError, match="check_hostname requires server_hostname"):
        pki.client_context().wrap_socket(raw)
    with NetsockSocket() as raw, pytest.raises(ValueError, match="server_hostname can only be specified in client"):
        pki.server_context().wrap_socket(raw, server_side=True, server_hostname="localhost")
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as raw, \
            pytest.raises(NotImplementedError, match="only stream sockets are supported"):
        pki.client_context().wrap_socket(raw, server_hostname="localhost")


# --- connecting and closing -------------------------------------------------------------------------------------

@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("use_connect_ex", [False, True])
def test_connect_after_wrap(pki: PKI, use_connect_ex: bool) -> None:
    with pki.server_context().wrap_socket(NetsockSocket(), server_side=True) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()
        accepting = gevent.spawn(listener.accept)
        client = pki.client_context().wrap_socket(NetsockSocket(), server_hostname="localhost")
        assert client.version() is None and client.cipher() is None     # not connected yet
        with pytest.raises(OSError) as unconnected:
            client.getpeercert()
        assert unconnected.value.errno == errno.ENOTCONN
        if use_connect_ex:
            assert client.connect_ex(address) == 0
        else:
            client.connect(address)
        server, _ = accepting.get(timeout=10)
    with client, server:
        assert client.version() == "TLSv1.3"
        with pytest.raises(ValueError, match="attempt to connect already-connected SSLSocket!"):
            client.connect(address)
        server.sendall(b"connected")
        assert receive_exactly(client, 9) == b"connected"


@pytest.mark.usefixtures("patched")
def test_handshake_on_demand(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context(), handshake=False)
    with client, server:
        assert client.version() is None and server.version() is None
        accepting = gevent.spawn(server.do_handshake)
        client.do_handshake()
        accepting.get(timeout=10)
        assert client.version() == server.version() == "TLSv1.3"
        client.sendall(b"late")
        assert receive_exactly(server, 4) == b"late"


@pytest.mark.usefixtures("patched")
def test_a_dropped_wrapper_leaves_the_unwrapped_socket_open(pki: PKI) -> None:
    """After unwrap() the plain socket is the caller's: the wrapper, dropped and collected (by the cyclic
    GC, at whatever moment it runs), must not close it — CPython hands back the wrapper itself, so there
    nothing could. (It did here: CPython's test_starttls saw a reset whenever the collector ran mid-test.)"""
    client, server = tls_pair(pki.client_context(), pki.server_context())

    def serve() -> NetsockSocket:
        assert server.recv(100) == b""          # close_notify
        return server.unwrap()

    serving = gevent.spawn(serve)
    plain_client = client.unwrap()
    plain_server = serving.get(timeout=10)
    client = server = serving = None            # the wrappers are dropped (the closure's too)
    gc.collect()
    gevent.sleep(0.05)                          # (a wrapper's finalizer closes from the hub loop)
    with plain_client, plain_server:
        plain_client.sendall(b"still open")
        assert receive_exactly(plain_server, 10) == b"still open"


@pytest.mark.usefixtures("patched")
def test_unwrap_then_plaintext(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())

    def serve() -> None:
        assert receive_exactly(server, 6) == b"secret"
        assert server.recv(100) == b""          # close_notify
        plain = server.unwrap()
        assert type(plain) is NetsockSocket
        plain.sendall(b"in clear")
        assert receive_exactly(plain, 5) == b"plain"
        plain.close()

    serving = gevent.spawn(serve)
    client.sendall(b"secret")
    plain = client.unwrap()
    assert type(plain) is NetsockSocket and plain.fileno() == client.fileno()
    with pytest.raises(ValueError, match="No SSL wrapper around"):
        client.unwrap()
    assert client.version() is None and client.pending() == 0
    plain.sendall(b"plain")
    assert receive_exactly(plain, 8) == b"in clear"
    serving.get(timeout=10)
    assert plain.recv(10) == b""
    plain.close()
    client.close()


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("suppress_ragged_eofs", [True, False])
def test_ragged_eof(pki: PKI, suppress_ragged_eofs: bool) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context(), suppress_ragged_eofs=suppress_ragged_eofs)
    kernel_client, kernel_server, _ = kernel_pair(pki.client_context(), pki.server_context())
    kernel_client.suppress_ragged_eofs = suppress_ragged_eofs
    kernel_client.setblocking(True)
    with client, kernel_client:
        server.close()          # no close_notify: the TCP connection just ends
        kernel_server.close()
        if suppress_ragged_eofs:
            assert client.recv(10) == b"" and kernel_client.recv(10) == b""
            assert client.recv_into(bytearray(10)) == 0
        else:
            with pytest.raises(ssl.SSLEOFError) as ragged:
                client.recv(10)
            with pytest.raises(ssl.SSLEOFError) as kernel_ragged:
                kernel_client.recv(10)
            assert error_signature(ragged.value) == error_signature(kernel_ragged.value)


@pytest.mark.usefixtures("patched")
def test_close_and_plain_socket_methods(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    with server:
        server.sendall(b"hi")
        assert client.recv(2) == b"hi"     # and the session tickets before: unread, they would make close reset
        with pytest.raises(ValueError, match="non-zero flags not allowed in calls to send"):
            client.send(b"x", socket.MSG_DONTWAIT)
        with pytest.raises(ValueError, match="sendto not allowed on instances of"):
            client.sendto(b"x", ("127.0.0.1", 9))
        with pytest.raises(ValueError, match="recvfrom not allowed on instances of"):
            client.recvfrom(10)
        with pytest.raises(NotImplementedError, match="recvmsg not allowed on instances of"):
            client.recvmsg(10)
        with pytest.raises(NotImplementedError, match="Can't dup"):
            client.dup()
        with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
            client.send("text")
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert "NetsockSSLSocket fd=" in repr(client)
        client.close()
        assert client.fileno() == -1 and "[closed]" in repr(client)
        with pytest.raises(ValueError, match="Read on closed or unwrapped SSL socket"):
            client.read(10)
        with pytest.raises(ValueError, match="Write on closed or unwrapped SSL socket"):
            client.write(b"x")
        with pytest.raises(OSError) as closed:
            client.recv(10)         # as CPython's: the plain socket's recv, on a closed descriptor
        assert closed.value.errno == errno.EBADF
        assert server.recv(10) == b""       # a ragged EOF, suppressed


# --- blocking modes --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("patched")
def test_non_blocking_read(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    reference = pki.client_context()._wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), False, "localhost")
    with pytest.raises(ssl.SSLWantReadError) as reference_want:
        reference.read(10)     # the C object's read: the same _ssl.c function and line as CPython's socket read
    with client, server:
        client.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError) as want:
            client.recv(10)
        assert error_signature(want.value) == error_signature(reference_want.value)
        gevent.spawn_later(0.05, server.sendall, b"later")
        assert gselect.select([client], [], [], 5)[0] == [client]
        assert client.recv(10) == b"later"


@pytest.mark.usefixtures("patched")
def test_non_blocking_handshake(pki: PKI) -> None:
    with NetsockSocket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        raw = NetsockSocket()
        raw.connect(listener.getsockname())
        raw.setblocking(False)
        with pytest.raises(ValueError, match="do_handshake_on_connect should not be specified for non-blocking"):
            pki.client_context().wrap_socket(raw, server_hostname="localhost")
        assert raw.fileno() == -1
    client, server = tls_pair(pki.client_context(), pki.server_context(), handshake=False)
    with client, server:
        accepting = gevent.spawn(server.do_handshake)
        client.setblocking(False)
        waits = 0
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                waits += 1
                gselect.select([client], [], [], 5)
        accepting.get(timeout=10)
        assert waits and client.version() == "TLSv1.3"


@pytest.mark.usefixtures("patched")
def test_non_blocking_write_and_its_retry(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    kernel_client, kernel_server, _ = kernel_pair(pki.client_context(), pki.server_context())
    with kernel_client, kernel_server, pytest.raises(ssl.SSLWantWriteError) as kernel_want:
        while True:
            kernel_client.send(b"x" * 65536)
    payload = os.urandom(1 << 22)
    with client, server:
        client.setblocking(False)
        sent, want, reader = 0, None, None
        while sent < len(payload):
            try:
                sent += client.send(payload[sent:sent + 65536])      # after a WantWrite: the same data again
            except ssl.SSLWantWriteError as error:
                if reader is None:
                    want = error
                    reader = gevent.spawn(receive_exactly, server, len(payload))
                gevent.sleep(0.001)
        assert want is not None, "the socket took 4 MiB without blocking"
        assert error_signature(want) == error_signature(kernel_want.value)
        assert hashlib.sha256(reader.get(timeout=30)).digest() == hashlib.sha256(payload).digest()


@pytest.mark.usefixtures("patched")
def test_read_timeout(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    with client, server:
        client.settimeout(0.2)
        assert client.gettimeout() == 0.2 and client.timeout == 0.2
        started = time.monotonic()
        with pytest.raises(TimeoutError) as timed_out:
            client.recv(10)
        assert timed_out.value.args == ("The read operation timed out",)
        assert 0.19 <= time.monotonic() - started < 1
        server.sendall(b"still there")
        assert receive_exactly(client, 11) == b"still there"


@pytest.mark.usefixtures("patched")
def test_write_timeout(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    with client, server:
        client.settimeout(0.2)
        started = time.monotonic()
        with pytest.raises(TimeoutError) as timed_out:
            client.sendall(bytes(16 << 20))          # the server reads none of it
        assert timed_out.value.args == ("The write operation timed out",)
        assert time.monotonic() - started < 5


@pytest.mark.usefixtures("patched")
def test_handshake_timeout_is_the_stdlibs(pki: PKI) -> None:
    kernel_client, kernel_server = socket.socketpair()
    with kernel_client, kernel_server:
        kernel_client.settimeout(0.05)
        with pytest.raises(TimeoutError) as kernel_timed_out:
            pki.client_context().wrap_socket(kernel_client, server_hostname="localhost")
    with NetsockSocket() as silent:     # accepts the connection, never answers the hello
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        raw = NetsockSocket()
        raw.settimeout(0.2)
        raw.connect(silent.getsockname())
        started = time.monotonic()
        with pytest.raises(TimeoutError) as timed_out:
            pki.client_context().wrap_socket(raw, server_hostname="localhost")
        assert 0.19 <= time.monotonic() - started < 1
    assert timed_out.value.args == kernel_timed_out.value.args
    assert timed_out.value.args[0].endswith(": The handshake operation timed out")


# --- streams and bulk ---------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("patched")
def test_makefile(pki: PKI) -> None:
    client, server = tls_pair(pki.client_context(), pki.server_context())
    with server:
        reader = client.makefile("rb")
        writer = client.makefile("w", encoding="ascii", newline="\r\n")
        client.close()              # the files keep the connection open
        writer.write("first line\nsecond line\n")
        writer.flush()
        assert receive_exactly(server, 25) == b"first line\r\nsecond line\r\n"
        server.sendall(b"one\ntwo\n" + bytes(100_000))
        assert reader.readline() == b"one\n" and reader.readline() == b"two\n"
        assert reader.read(100_000) == bytes(100_000)
        writer.close()
        reader.close()              # the last one closes the socket
        assert client.fileno() == -1
        assert server.recv(1) == b""


@pytest.mark.usefixtures("patched")
def test_sendall_of_megabytes(pki: PKI) -> None:
    payload = os.urandom(8 << 20)
    client, server = tls_pair(pki.client_context(), pki.server_context())

    def digest() -> None:
        server.sendall(hashlib.sha256(receive_exactly(server, len(payload))).digest())

    with client, server:
        summing = gevent.spawn(digest)
        client.sendall(payload)
        assert receive_exactly(client, 32) == hashlib.sha256(payload).digest()
        summing.get(timeout=30)


@pytest.mark.usefixtures("patched")
def test_full_duplex(pki: PKI) -> None:
    """Both ends send megabytes at once, each reading in one greenlet and writing in another."""
    upstream, downstream = os.urandom(4 << 20), os.urandom(4 << 20)
    client, server = tls_pair(pki.client_context(), pki.server_context())
    with client, server:
        transfers = [gevent.spawn(client.sendall, upstream), gevent.spawn(server.sendall, downstream),
                     gevent.spawn(receive_exactly, server, len(upstream)),
                     gevent.spawn(receive_exactly, client, len(downstream))]
        gevent.joinall(transfers, timeout=30, raise_error=True)
        assert [t.value for t in transfers[2:]] == [upstream, downstream]


# --- a stdlib HTTPS client and server ---------------------------------------------------------------------------

class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello {self.path} over {self.request.version()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.usefixtures("patched")
def test_http_client_against_http_server(pki: PKI) -> None:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Hello, bind_and_activate=False)
    httpd.socket.close()            # a kernel socket: serve on a netsock one
    listener = NetsockSocket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    httpd.socket = pki.server_context().wrap_socket(listener, server_side=True)
    port = httpd.socket.getsockname()[1]

    def serve_one_connection() -> None:
        request, address = httpd.get_request()
        httpd.process_request(request, address)

    serving = gevent.spawn(serve_one_connection)

    def connect(address: tuple[str, int], timeout: float | None = None, source_address: Any = None) -> NetsockSocket:
        sock = NetsockSocket()
        sock.settimeout(timeout)
        sock.connect(address)
        return sock

    conn = http.client.HTTPSConnection("localhost", port, context=pki.client_context(), timeout=5)
    conn._create_connection = connect
    try:
        for path in ("/first", "/second"):      # one connection, kept alive
            conn.request("GET", path)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, f"hello {path} over TLSv1.3".encode())
        assert isinstance(conn.sock, NetsockSSLSocket)
    finally:
        conn.close()
        serving.get(timeout=10)
        httpd.server_close()


# --- patching -------------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_patch_and_unpatch(pki: PKI) -> None:
    assert ssl.SSLContext.sslsocket_class is ssl.SSLSocket
    patch_ssl.patch()
    patch_ssl.patch()
    try:
        assert ssl.SSLContext.sslsocket_class is NetsockSSLSocket
        context = pki.client_context()
        with context.wrap_socket(socket.socket(), server_hostname="localhost") as kernel:
            assert type(kernel) is ssl.SSLSocket        # a kernel socket gets CPython's SSLSocket
        with context.wrap_socket(NetsockSocket(), server_hostname="localhost") as netsock:
            assert type(netsock) is NetsockSSLSocket
    finally:
        patch_ssl.unpatch()
    assert ssl.SSLContext.sslsocket_class is ssl.SSLSocket
    patch_ssl.unpatch()
    assert ssl.SSLContext.sslsocket_class is ssl.SSLSocket


def test_a_contexts_own_sslsocket_class_wraps_netsock_sockets_too(patched: None) -> None:
    class Tagged(ssl.SSLSocket):
        def tag(self) -> str:
            return "tagged"

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslsocket_class = Tagged
    with context.wrap_socket(NetsockSocket(), server_side=True) as wrapped:
        assert isinstance(wrapped, Tagged) and isinstance(wrapped, NetsockSSLSocket)
        assert wrapped.tag() == "tagged"


def test_an_unclosed_tls_socket_warns_under_its_own_name(patched: None) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    wrapped = context.wrap_socket(NetsockSocket(), server_side=True)
    name = repr(wrapped)
    with pytest.warns(ResourceWarning) as caught:
        del wrapped
        gc.collect()
    assert [str(w.message) for w in caught] == [f"unclosed {name}"]
    gevent.sleep(0)                       # the transport closes from the hub loop
