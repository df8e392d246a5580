"""The ``ssl`` module under netsock: ``SSLContext.wrap_socket`` on a netsock socket gives TLS over it.

OpenSSL cannot read or write a netsock descriptor, so for a ``NetsockSocket`` it runs on a pair of
memory BIOs (the engine ``SSLContext.wrap_bio`` gives asyncio) and ``NetsockSSLSocket`` moves the
ciphertext between them and the socket. Any other socket gets CPython's own ``SSLSocket``.

How, and why so:

- The patch point is ``SSLContext.sslsocket_class``, CPython's hook: ``wrap_socket`` calls
  ``sslsocket_class._create``. The class itself stays: ssl.py's property setters reach their base
  class through the module global ``SSLContext`` (``super(SSLContext, SSLContext)``), so a
  replacement class recurses forever (gevent users see RecursionError), and code that did
  ``from ssl import SSLContext`` before patching would keep the original class, while it still
  sees the attribute.
- ``NetsockSSLSocket`` derives from ``ssl.SSLSocket`` (so from ``socket.socket``): http.client,
  urllib3 and requests test ``isinstance`` against both. That also lets it run ssl.py's own
  ``SSLSocket`` methods unchanged, in every Python version (argument checks, the ragged-EOF rule,
  errors, makefile, ``get_verified_chain`` ...). Its C socket part is never opened (descriptor -1)
  and never used: ``_NetsockTransport``, which comes between ``SSLSocket`` and ``socket.socket`` in
  the MRO, sends the plain socket calls that SSLSocket makes through ``super()`` (recv, send,
  getpeername, settimeout, close ...) to the NetsockSocket. And SSLSocket's ``_sslobj`` – in
  CPython a C object doing its own socket I/O – is a ``_TLSChannel``: that C object on memory BIOs,
  plus the I/O.
- Like CPython's, ``wrap_socket`` detaches the socket it is given; the wrapper holds a new
  ``NetsockSocket`` on the same descriptor, which ``fileno()`` returns and ``unwrap()`` hands back.
- Ciphertext is read as OpenSSL reads a socket (read-ahead off): a record header, then that
  record, never more. So after ``unwrap()`` what the peer sends in clear is still in the socket.
- Waiting: one deadline per TLS operation over all its socket waits (as _ssl.c does), socket calls
  with MSG_DONTWAIT, and waits on the socket's netsock waiter queue (``fds.lookup``,
  ``scheduler.wait_for``): the greenlet parks exactly as in the NetsockSocket's own blocking calls,
  without changing the socket's timeout, which another greenlet using the socket would see.
- Errors: OpenSSL's come through as they are (certificate verification with its verify_code and
  verify_message, alerts, SSLWantReadError, SSLEOFError). What _ssl.c raises from its own socket
  waits is reproduced: TimeoutError "The read/write operation timed out" and, with _ssl.c's
  file:line prefix, "The handshake operation timed out"; and SSLWantWriteError, which a memory BIO
  never reports: it is raised when the socket takes no more ciphertext. Their _ssl.c line numbers
  are those of the running interpreter, which is asked once.
"""

from __future__ import annotations

import _socket
import functools
import re
import ssl
import sys
import time
import warnings
from errno import EINVAL, ENOTCONN
from socket import MSG_DONTWAIT, SO_TYPE, SOCK_STREAM, SOL_SOCKET, SOMAXCONN, AddressFamily, SocketKind
from typing import Any

from netsock.adapter import NetsockSocket, fds
from netsock.scheduler import wait_for
from netsock.waiter import EventMask

from ._patcher import Patcher

__all__ = ["NetsockSSLSocket", "patch", "unpatch"]

_patcher = Patcher()
_KERNEL_SOCKET: type = ssl.SSLSocket.__bases__[0]  # the socket.socket that ssl.py built SSLSocket on
_RECORD_HEADER = 5                              # content type, version, length
_WRITE_CHUNK = 1 << 16                          # plaintext encrypted at a time: bounds the ciphertext held
_NO_WAIT = float("-inf")                        # a deadline that has always passed
_IN, _OUT = EventMask.IN, EventMask.OUT
_GONE = EventMask.ERR | EventMask.HUP
# Up to 3.12, _ssl reads with SSL_read_ex, which reports a socket error under a read as an unexpected EOF
# (a ragged EOF: b"" with suppress_ragged_eofs); 3.13 raises the socket's error itself.
_READ_ERRORS_ARE_EOF = sys.version_info < (3, 13)
_READ_TIMED_OUT = "The read operation timed out"
_WRITE_TIMED_OUT = "The write operation timed out"
_SOURCE_LINE = re.compile(r"\(_ssl\.c:(\d+)\)$")


# --- what _ssl.c says -----------------------------------------------------------------------------------

def _probe_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _ProbeSocket(_socket.socket):
    __slots__ = ("__weakref__",)        # _ssl holds its socket by weak reference


@functools.cache
def _handshake_timed_out() -> str:
    """_ssl.c's message for a handshake that timed out, which names its source line: a client
    handshake on a kernel socket pair whose other end never answers says it."""
    first, second = _socket.socketpair()
    sock = _ProbeSocket(fileno=first.detach())
    try:
        sock.settimeout(1e-3)
        _probe_context()._wrap_socket(sock, False, None).do_handshake()  # type: ignore[attr-defined]
    except TimeoutError as timed_out:
        return str(timed_out)
    finally:
        sock.close()
        second.close()
    raise RuntimeError("_ssl.c finished a handshake that nobody answered")


@functools.cache
def _error_line(operation: str) -> str:
    """The _ssl.c line that reports the failures of ``operation`` (do_handshake, write, shutdown),
    in each SSLError message it makes: every one of them fails on an engine that never started."""
    tls = _probe_context()._wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), False, None)  # type: ignore[attr-defined]
    try:
        getattr(tls, operation)(*((b"x",) if operation == "write" else ()))
    except ssl.SSLError as error:
        found = _SOURCE_LINE.search(error.strerror or "")
        if found:
            return found.group(1)
    raise RuntimeError(f"_ssl.c reports no source line for {operation}")


def _want_write(operation: str) -> ssl.SSLWantWriteError:
    """The SSLWantWriteError ``operation`` raises on a non-blocking socket that takes no more."""
    error = ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE,
                                  f"The operation did not complete (write) (_ssl.c:{_error_line(operation)})")
    error.reason = error.library = None  # type: ignore[assignment]  # as _ssl.c sets them
    return error


def _timed_out(operation: str, sending: bool) -> TimeoutError:
    """The TimeoutError of ``operation`` waiting to send (``sending``) or to receive."""
    if operation == "do_handshake":
        return TimeoutError(_handshake_timed_out())
    return TimeoutError(_WRITE_TIMED_OUT if operation == "write" or sending else _READ_TIMED_OUT)


def _bytes_view(data: Any) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# --- the TLS engine and its I/O ---------------------------------------------------------------------------

class _TLSChannel:
    """What ``SSLSocket._sslobj`` is for CPython (the C SSL object that reads and writes the socket),
    for a netsock socket: the C object on memory BIOs, and the moving of ciphertext.

    Outgoing ciphertext the socket did not take yet waits in ``_backlog``; it is sent before any
    new plaintext is encrypted, so a write that could not finish (SSLWantWriteError, a timeout) is
    finished by retrying it with the same data, as OpenSSL requires of its own writes.
    """

    __slots__ = ("_backlog", "_body_left", "_header", "_incoming", "_outgoing", "_tls", "_transport", "_written")

    def __init__(self, owner: NetsockSSLSocket, transport: NetsockSocket, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None, session: ssl.SSLSession | None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        # The owner is what SNI and message callbacks get as the connection, as with CPython's.
        self._tls = context._wrap_bio(self._incoming, self._outgoing, server_side, server_hostname,  # type: ignore[attr-defined]
                                      owner=owner, session=session)
        self._transport = transport
        self._backlog = b""
        self._header = bytearray()          # of the record being received
        self._body_left = 0
        self._written = 0                   # plaintext of an unfinished write already encrypted

    # The rest of the C object's interface (getpeercert, cipher, version, pending ...) as it is.
    def __getattr__(self, name: str) -> Any:
        return getattr(self._tls, name)

    @property
    def context(self) -> ssl.SSLContext:
        return self._tls.context

    @context.setter
    def context(self, context: ssl.SSLContext) -> None:
        self._tls.context = context

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._tls.session

    @session.setter
    def session(self, session: ssl.SSLSession) -> None:
        self._tls.session = session

    # --- moving ciphertext ------------------------------------------------------------------------------

    def _limits(self) -> tuple[float | None, bool]:
        """(deadline of the operation starting now, None for none; whether the socket is non-blocking)."""
        timeout = self._transport.gettimeout()
        if timeout is None:
            return None, False
        return time.monotonic() + timeout, timeout == 0.0

    def _wait(self, mask: EventMask, deadline: float | None) -> bool:
        """Park until the socket is ready for ``mask`` (or failed, or was closed); False if the
        deadline passed first."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        fd = self._transport.fileno()
        state = fds.lookup(fd)
        if state is None:
            return True                     # closed: the next socket call says so
        interest = mask | _GONE
        return wait_for(state.waiter_queue, interest,
                        lambda: self._transport.fileno() != fd or bool(state.readiness(interest)), remaining)

    def _send(self, deadline: float | None) -> bool:
        """Send the ciphertext OpenSSL produced; False if the socket would not take it all by the deadline."""
        if self._outgoing.pending:
            self._backlog += self._outgoing.read()
        while self._backlog:
            try:
                sent = self._transport.send(self._backlog, MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            if sent:
                self._backlog = self._backlog[sent:]
            elif not self._wait(_OUT, deadline):
                return False
        return True

    def _receive(self, deadline: float | None) -> bool:
        """Give OpenSSL the ciphertext that arrived, up to the end of the record it is in (end of
        stream as end of stream); False if none came by the deadline. Waiting, it keeps sending."""
        while True:
            size = _RECORD_HEADER - len(self._header) if len(self._header) < _RECORD_HEADER else self._body_left
            try:
                data = self._transport.recv(size, MSG_DONTWAIT)
                break
            except BlockingIOError:
                pass
            if not self._wait((_IN | _OUT) if self._backlog else _IN, deadline):
                return False
            self._send(_NO_WAIT)
        if not data:
            self._incoming.write_eof()
            return True
        self._incoming.write(data)
        if len(self._header) < _RECORD_HEADER:
            self._header += data
            if len(self._header) == _RECORD_HEADER:
                self._body_left = int.from_bytes(self._header[3:], "big")
        else:
            self._body_left -= len(data)
        if len(self._header) == _RECORD_HEADER and not self._body_left:
            self._header.clear()
        return True

    def _exchange(self, want: ssl.SSLWantReadError, deadline: float | None, nonblocking: bool, operation: str) -> None:
        """OpenSSL awaits the peer's answer: send what it has for the peer, then receive."""
        if not self._send(deadline):
            raise _want_write(operation) if nonblocking else _timed_out(operation, sending=True)
        if not self._receive(deadline):
            raise want if nonblocking else _timed_out(operation, sending=False)

    def _finish(self, deadline: float | None, nonblocking: bool, operation: str) -> None:
        if not self._send(deadline):
            raise _want_write(operation) if nonblocking else _timed_out(operation, sending=True)

    # --- the C object's I/O methods ---------------------------------------------------------------------

    def do_handshake(self) -> None:
        deadline, nonblocking = self._limits()
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError as error:
                want = error
            except ssl.SSLError:
                self._send(_NO_WAIT)        # the alert that tells the peer why, as far as it goes at once
                raise
            else:
                self._finish(deadline, nonblocking, "do_handshake")
                return
            self._exchange(want, deadline, nonblocking, "do_handshake")

    def read(self, len: int = 1024, buffer: Any = None) -> bytes | int:
        deadline, nonblocking = self._limits()
        while True:
            try:
                data = self._tls.read(len) if buffer is None else self._tls.read(len, buffer)
            except ssl.SSLWantReadError as error:
                want = error
            else:
                self._send(_NO_WAIT)        # what reading made OpenSSL say (key updates, tickets)
                return data
            self._send(_NO_WAIT)
            try:
                received = self._receive(deadline)
            except OSError as error:
                if _READ_ERRORS_ARE_EOF:
                    raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol") from error
                raise
            if not received:
                raise want if nonblocking else TimeoutError(_READ_TIMED_OUT)

    def write(self, data: Any) -> int:
        deadline, nonblocking = self._limits()
        with _bytes_view(data) as view:
            self._finish(deadline, nonblocking, "write")
            while True:
                try:
                    self._written += self._tls.write(view[self._written:self._written + _WRITE_CHUNK])
                except ssl.SSLWantReadError as error:    # a handshake to complete first
                    want = error
                else:
                    self._finish(deadline, nonblocking, "write")
                    if self._written >= len(view):
                        written, self._written = self._written, 0
                        return written
                    continue
                self._exchange(want, deadline, nonblocking, "write")

    def shutdown(self) -> NetsockSocket:
        """Send close_notify and receive the peer's; the socket, then free of TLS."""
        deadline, nonblocking = self._limits()
        while True:
            try:
                self._tls.shutdown()
            except ssl.SSLWantReadError as error:
                want = error
            else:
                self._finish(deadline, nonblocking, "shutdown")
                return self._transport
            self._exchange(want, deadline, nonblocking, "shutdown")


# --- the socket -------------------------------------------------------------------------------------------

class _NetsockTransport(_KERNEL_SOCKET):  # type: ignore[misc, valid-type]
    """socket.socket's methods, served by the NetsockSocket ``_transport`` instead of the kernel
    descriptor this object never has."""

    __slots__ = ()
    _transport: NetsockSocket

    @property
    def family(self) -> AddressFamily:
        return self._transport.family

    @property
    def type(self) -> SocketKind:
        return self._transport.type

    @property
    def proto(self) -> int:
        return self._transport.proto

    @property
    def timeout(self) -> float | None:
        return self._transport.timeout

    def fileno(self) -> int:
        return self._transport.fileno()

    def gettimeout(self) -> float | None:
        return self._transport.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self._transport.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._transport.setblocking(flag)

    def getblocking(self) -> bool:
        return self._transport.getblocking()

    def getsockname(self) -> Any:
        return self._transport.getsockname()

    def getpeername(self) -> Any:
        return self._transport.getpeername()

    def getsockopt(self, *args: Any) -> Any:
        return self._transport.getsockopt(*args)

    def setsockopt(self, *args: Any) -> None:
        self._transport.setsockopt(*args)

    def bind(self, address: Any) -> None:
        self._transport.bind(address)

    def listen(self, backlog: int = min(SOMAXCONN, 128), /) -> None:
        self._transport.listen(backlog)

    def send(self, data: Any, flags: int = 0) -> int:
        return self._transport.send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._transport.sendall(data, flags)

    def sendto(self, data: Any, *args: Any) -> int:
        return self._transport.sendto(data, *args)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        return self._transport.sendfile(file, offset, count)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._transport.recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self._transport.recv_into(buffer, nbytes, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return self._transport.recvfrom(bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return self._transport.recvfrom_into(buffer, nbytes, flags)

    def shutdown(self, how: int) -> None:
        self._transport.shutdown(how)

    def detach(self) -> int:
        self._closed = True  # type: ignore[misc]  # socket.socket's slot
        return self._transport.detach()

    def _real_close(self) -> None:
        self._transport.close()


class NetsockSSLSocket(ssl.SSLSocket, _NetsockTransport):
    """``ssl.SSLSocket`` over a ``NetsockSocket``; made by ``SSLContext.wrap_socket`` once patched."""

    _sslobj: _TLSChannel | None
    _connected: bool

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)
        if transport is not None and transport.fileno() >= 0 and not getattr(self, "_handed_back", False):
            # The warning names this socket, as CPython's does, and the transport closes without a
            # second one — from the hub loop: the collector may run in the middle of stack code.
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            transport._core.stack.clock.call_soon(transport.close)

    def unwrap(self) -> Any:
        """TLS ends; the plain socket goes back to the caller, whose it is from then on. (CPython hands back
        this very object; here it is the transport, and this wrapper, left to the collector, must not
        close what its caller goes on using — it did, at whatever moment the cyclic GC ran.)"""
        sock = super().unwrap()
        self._handed_back = True
        return sock

    @classmethod
    def _create(cls, sock: Any, server_side: bool = False, do_handshake_on_connect: bool = True,
                suppress_ragged_eofs: bool = True, server_hostname: str | bytes | None = None,
                context: ssl.SSLContext | None = None, session: ssl.SSLSession | None = None) -> Any:
        """``SSLContext.wrap_socket``'s hook: TLS over ``sock`` if it is a netsock socket (which it
        detaches, as CPython does), CPython's SSLSocket otherwise."""
        if not isinstance(sock, NetsockSocket):
            original = _patcher.original(ssl.SSLContext, "sslsocket_class")
            return original._create(sock=sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                                    suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname,
                                    context=context, session=session)
        assert context is not None
        if sock.getsockopt(SOL_SOCKET, SO_TYPE) != SOCK_STREAM:
            raise NotImplementedError("only stream sockets are supported")
        if server_side:
            if server_hostname:
                raise ValueError("server_hostname can only be specified in client mode")
            if session is not None:
                raise ValueError("session can only be specified in client mode")
        if context.check_hostname and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        timeout = sock.gettimeout()
        transport = NetsockSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        transport.settimeout(timeout)
        self = cls.__new__(cls)
        self._io_refs = 0
        self._closed = False
        self._transport = transport
        self._sslobj = None
        try:
            self._context = context
            self._session = session
            self.server_side = server_side
            self.server_hostname = context._encode_hostname(server_hostname)  # type: ignore[attr-defined, assignment]
            self.do_handshake_on_connect = do_handshake_on_connect
            self.suppress_ragged_eofs = suppress_ragged_eofs
            self._connected = self._is_connected()
            if self._connected:
                self._sslobj = _TLSChannel(self, transport, context, server_side, self.server_hostname, session)
                if do_handshake_on_connect:
                    if timeout == 0.0:
                        raise ValueError("do_handshake_on_connect should not be specified for non-blocking sockets")
                    self.do_handshake()
        except BaseException:
            self.close()
            raise
        return self

    def _is_connected(self) -> bool:
        """Whether the socket is connected; for one that is not, CPython's check that no data came
        before it closed, which would otherwise pass for data that came over TLS."""
        try:
            self._transport.getpeername()
            return True
        except OSError as error:
            if error.errno != ENOTCONN:
                raise
            not_connected = error.errno
        try:
            early = self._transport.recv(1, MSG_DONTWAIT)
        except OSError as error:
            if error.errno not in (ENOTCONN, EINVAL):
                raise
            early = b""
        if early:
            reason = "Closed before TLS handshake with data in recv buffer."
            refused = ssl.SSLError(not_connected, reason)
            refused.reason = reason
            refused.library = None  # type: ignore[assignment]  # as _ssl.c sets it
            raise refused
        return False

    def _real_connect(self, addr: Any, connect_ex: bool) -> int | None:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._connected or self._sslobj is not None:
            raise ValueError("attempt to connect already-connected SSLSocket!")
        self._sslobj = _TLSChannel(self, self._transport, self.context, False, self.server_hostname, self._session)
        try:
            if connect_ex:
                rc = self._transport.connect_ex(addr)
            else:
                rc = None
                self._transport.connect(addr)
            if not rc:
                self._connected = True
                if self.do_handshake_on_connect:
                    self.do_handshake()
            return rc
        except (OSError, ValueError):
            self._sslobj = None
            raise

    def accept(self) -> tuple[NetsockSSLSocket, Any]:
        """The next connection, wrapped server-side (and its handshake done, by default)."""
        conn, address = self._transport.accept()
        wrapped = type(self)._create(conn, server_side=True, do_handshake_on_connect=self.do_handshake_on_connect,
                                     suppress_ragged_eofs=self.suppress_ragged_eofs, context=self.context)
        return wrapped, address


_STDLIB_CREATE = vars(ssl.SSLSocket)["_create"]
_tls_classes: dict[type, type] = {}


def _create(cls: type, sock: Any, *args: Any, **kwargs: Any) -> Any:
    """``ssl.SSLSocket._create`` once patched: a context's own ``sslsocket_class`` (a class derived
    from SSLSocket) wraps a netsock socket as an instance of itself on top of ``NetsockSSLSocket``."""
    if isinstance(sock, NetsockSocket) and not issubclass(cls, NetsockSSLSocket):
        combined = _tls_classes.get(cls)
        if combined is None:
            combined = _tls_classes[cls] = type(cls.__name__, (cls, NetsockSSLSocket),
                                                {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        return combined._create(sock, *args, **kwargs)
    return _STDLIB_CREATE.__func__(cls, sock, *args, **kwargs)


def patch() -> None:
    """Make ``SSLContext.wrap_socket`` give a ``NetsockSSLSocket`` for a netsock socket (once), also
    when a context has a ``sslsocket_class`` of its own."""
    _patcher.install([(ssl.SSLContext, "sslsocket_class", NetsockSSLSocket),
                      (ssl.SSLSocket, "_create", classmethod(_create))])


def unpatch() -> None:
    _patcher.undo()
