"""The ``select`` module under netsock: ``select``, ``poll`` and ``epoll`` over any mix of netsock sockets
and kernel descriptors, waiting cooperatively.

A netsock socket's descriptor is an eventfd that only mirrors input readiness, so its readiness comes
from the socket itself (``fds.lookup(fd).readiness``) and its changes from the socket's waiter queue;
every other descriptor (pipes, files, AF_UNIX and gevent sockets) is the kernel's business. Each call
first checks everything without waiting; if nothing is ready, the greenlet parks on the sockets' waiter
queues and on one hub I/O watcher for a kernel epoll holding the kernel descriptors, so the OS thread
never blocks and the stack, which runs in the hub, carries on.

Readiness of a netsock socket is reported in Linux's poll bits, as Linux's tcp_poll/datagram_poll do
(input adds POLLRDNORM, output POLLWRNORM; POLLERR and POLLHUP are always reported). Arguments are
checked as CPython checks them, with its exceptions and messages: timeouts that are not a plain int or
float in the usual range are handed to CPython's own function on a descriptor that is always ready,
which either raises exactly what CPython raises or returns at once.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import os
import select as _stdlib
import time
from collections.abc import Callable, Iterable
from errno import EBADF, EEXIST, EINVAL
from typing import Any

import gevent
from gevent import monkey
from gevent.event import Event

from netsock.adapter import fds
from netsock.adapter.fds import Pollable
from netsock.waiter import EventMask, WaiterEntry, WaiterQueue

from ._patcher import Patcher

__all__ = ["epoll", "patch", "poll", "select", "unpatch"]

_patcher = Patcher()
# The kernel's, even if gevent's monkey patching replaced them.
_kernel_select, _kernel_poll, _KernelEpoll = monkey.get_original("select", ["select", "poll", "epoll"])

_POLLIN, _POLLPRI, _POLLOUT = _stdlib.POLLIN, _stdlib.POLLPRI, _stdlib.POLLOUT
_POLLERR, _POLLHUP, _POLLNVAL = _stdlib.POLLERR, _stdlib.POLLHUP, _stdlib.POLLNVAL
_POLLRDNORM, _POLLWRNORM = _stdlib.POLLRDNORM, _stdlib.POLLWRNORM
# What select() counts as readable, writable and exceptional (Linux's POLLIN_SET, POLLOUT_SET, POLLEX_SET).
_SELECT_READ = _POLLIN | _POLLRDNORM | _stdlib.POLLRDBAND | _POLLHUP | _POLLERR
_SELECT_WRITE = _POLLOUT | _POLLWRNORM | _stdlib.POLLWRBAND | _POLLERR
_SELECT_EXCEPT = _POLLPRI
_FD_SETSIZE = 1024                  # glibc's: select() refuses larger descriptors, as CPython does

_EPOLLIN, _EPOLLET, _EPOLLONESHOT = _stdlib.EPOLLIN, _stdlib.EPOLLET, _stdlib.EPOLLONESHOT
_EPOLLEXCLUSIVE = _stdlib.EPOLLEXCLUSIVE
_EPOLLWAKEUP = 1 << 29              # not exported by the select module
# The only events Linux accepts beside EPOLLEXCLUSIVE (fs/eventpoll.c: EPOLLEXCLUSIVE_OK_BITS).
_EXCLUSIVE_OK = (_EPOLLIN | _stdlib.EPOLLOUT | _stdlib.EPOLLERR | _stdlib.EPOLLHUP | _EPOLLWAKEUP | _EPOLLET
                 | _EPOLLEXCLUSIVE)
_EPOLL_DEFAULT = _EPOLLIN | _stdlib.EPOLLPRI | _stdlib.EPOLLOUT

_ALL = EventMask.ALL
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1


# --- arguments, as CPython converts them ------------------------------------------------------------

def _fileno(obj: Any) -> int:
    """The descriptor ``obj`` stands for: PyObject_AsFileDescriptor."""
    if isinstance(obj, int):
        fd = int(obj)
    else:
        try:
            method = obj.fileno
        except AttributeError:
            raise TypeError("argument must be an int, or have a fileno() method.") from None
        fd = method()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
        fd = int(fd)
    if not _INT_MIN <= fd <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


def _c_int(value: Any) -> int:
    value = operator.index(value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return value


@functools.cache
def _ready_fd() -> int:
    """A descriptor that is always readable: CPython's functions return at once on it."""
    return os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


def _nanoseconds(value: Any, unit: int) -> int:
    """``value`` (seconds or milliseconds, as ``unit`` says) in nanoseconds, rounded away from zero as
    CPython's _PyTime_ROUND_TIMEOUT does."""
    if isinstance(value, float):
        scaled = value * unit
        return math.ceil(scaled) if scaled >= 0 else math.floor(scaled)
    return operator.index(value) * unit


def _select_timeout(timeout: Any) -> float | None:
    """select()'s timeout in seconds (None: forever)."""
    if timeout is None:
        return None
    if not (type(timeout) in (int, float) and 0 <= timeout <= 1e9):
        _kernel_select([_ready_fd()], [], [], timeout)     # raises as CPython does, or returns at once
    return _nanoseconds(timeout, 10**9) / 1e9


def _poll_timeout(timeout: Any) -> float | None:
    """poll()'s timeout, given in milliseconds, in seconds (None: forever)."""
    if timeout is None:
        return None
    if not (type(timeout) in (int, float) and _INT_MIN < timeout < _INT_MAX):
        checker = _kernel_poll()
        checker.register(_ready_fd(), _POLLIN)
        checker.poll(timeout)
    ns = _nanoseconds(timeout, 10**6)
    if ns < 0:
        return None
    return -(-ns // 10**6) / 1e3        # whole milliseconds, rounded up


def _epoll_timeout(timeout: Any) -> float | None:
    """epoll.poll()'s timeout in seconds (None or negative: forever)."""
    if timeout is None:
        return None
    if not (type(timeout) in (int, float) and -2147483.0 < timeout < 2147483.0):
        with _KernelEpoll() as checker:
            checker.register(_ready_fd(), _EPOLLIN)
            checker.poll(timeout, 1)
    ms = -(-_nanoseconds(timeout, 10**9) // 10**6)      # rounded up to whole milliseconds, as CPython
    return None if ms < 0 else ms / 1e3


# --- readiness ------------------------------------------------------------------------------------

def _revents(state: Pollable, events: int) -> int:
    """What poll() reports for a netsock socket registered for ``events``."""
    ready = int(state.readiness(_ALL))
    if ready & _POLLIN:
        ready |= _POLLRDNORM
    if ready & _POLLOUT:
        ready |= _POLLWRNORM
    return ready & (events | _POLLERR | _POLLHUP)


def _scan(interest: Iterable[tuple[int, int]]) -> tuple[dict[int, int], list[Pollable], dict[int, int]]:
    """Check the netsock sockets among ``interest`` (descriptor, poll events) and set the kernel's
    descriptors apart: (ready sockets' revents, the sockets, the kernel descriptors' events)."""
    ready: dict[int, int] = {}
    states: list[Pollable] = []
    kernel: dict[int, int] = {}
    lookup = fds.lookup
    for fd, events in interest:
        state = lookup(fd)
        if state is None:
            kernel[fd] = events
        else:
            states.append(state)
            revents = _revents(state, events)
            if revents:
                ready[fd] = revents
    return ready, states, kernel


class _Park:
    """Where a select() or poll() with nothing ready waits: the sockets' waiter queues, and a private
    kernel epoll of the kernel descriptors (exact poll events, one hub watcher however many there are,
    unaffected by another greenlet closing one of them)."""

    __slots__ = ("_entries", "_epoll", "_event", "_kernel", "_watcher")

    def __init__(self, states: list[Pollable], kernel: dict[int, int]) -> None:
        event = self._event = Event()
        wake: Callable[[EventMask], None] = lambda _mask: event.set()  # noqa: E731
        queues = {id(state.waiter_queue): state.waiter_queue for state in states}
        self._entries: list[tuple[WaiterQueue, WaiterEntry]] = [
            (queue, queue.register(wake, _ALL)) for queue in queues.values()]
        self._epoll = self._watcher = None
        self._kernel = kernel
        if kernel:
            self._epoll = _KernelEpoll()
            for fd, events in kernel.items():
                # A regular file (EPERM) is always ready for input and output: never worth a wait.
                with contextlib.suppress(PermissionError):
                    self._epoll.register(fd, events)
            self._watcher = gevent.get_hub().loop.io(self._epoll.fileno(), 1)
            self._watcher.start(event.set)

    def wait(self, timeout: float | None) -> None:
        self._event.wait(timeout)
        self._event.clear()

    def narrow(self, kernel: dict[int, int]) -> None:
        """Stop watching the kernel descriptors no longer in ``kernel``: a condition that persists
        without counting (a hang-up of a descriptor select() waits on for output only) would wake the
        wait again and again."""
        if self._epoll is None:
            return
        for fd in self._kernel.keys() - kernel.keys():
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
        self._kernel = kernel

    def __enter__(self) -> _Park:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for queue, entry in self._entries:
            queue.unregister(entry)
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.close()
        if self._epoll is not None:
            self._epoll.close()


def _wait(check: Callable[[], tuple[Any, list[Pollable], dict[int, int]]], timeout: float | None) -> Any:
    """``check()`` until it finds something ready or ``timeout`` seconds (None: no limit) pass.

    ``check`` returns what it found, the netsock sockets and the kernel descriptors (with their poll
    events) to wait on if it found nothing."""
    found, states, kernel = check()
    if found or timeout == 0:
        return found
    deadline = None if timeout is None else time.monotonic() + timeout
    with _Park(states, kernel) as park:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return found
            park.wait(remaining)
            found, _, kernel = check()
            if found:
                return found
            park.narrow(kernel)


# --- select() -------------------------------------------------------------------------------------

class _KernelPoller:
    """A kernel poll object for some descriptors, made again when they change."""

    __slots__ = ("_interest", "_poll")

    def __init__(self) -> None:
        self._interest: dict[int, int] = {}
        self._poll: Any = None

    def poll(self, interest: dict[int, int]) -> list[tuple[int, int]]:
        """The kernel's revents for ``interest`` (descriptor, poll events), without waiting."""
        if not interest:
            return []
        if interest != self._interest:
            self._poll = _kernel_poll()
            for fd, events in interest.items():
                self._poll.register(fd, events)
            self._interest = interest
        return self._poll.poll(0)


def _select_list(objects: Any) -> list[tuple[Any, int]]:
    if type(objects) not in (list, tuple):
        try:
            iterator = iter(objects)
        except TypeError:
            raise TypeError("arguments 1-3 must be sequences") from None
        objects = list(iterator)
    pairs = []
    for obj in objects:
        fd = _fileno(obj)
        if fd >= _FD_SETSIZE:
            raise ValueError("filedescriptor out of range in select()")
        pairs.append((obj, fd))
    return pairs


def select(rlist: Any, wlist: Any, xlist: Any, timeout: Any = None, /) -> tuple[list[Any], list[Any], list[Any]]:
    """Wait until one or more file descriptors are ready for some kind of I/O.

    As ``select.select``, for netsock sockets and kernel descriptors alike, parking only this greenlet.
    """
    seconds = _select_timeout(timeout)
    readers, writers, exceptional = _select_list(rlist), _select_list(wlist), _select_list(xlist)
    interest: dict[int, int] = {}       # poll events to ask for
    counted: dict[int, int] = {}        # the revents that put the descriptor in a result list
    for pairs, events, bits in ((readers, _POLLIN, _SELECT_READ), (writers, _POLLOUT, _SELECT_WRITE),
                                (exceptional, _POLLPRI, _SELECT_EXCEPT)):
        for _, fd in pairs:
            interest[fd] = interest.get(fd, 0) | events
            counted[fd] = counted.get(fd, 0) | bits
    poller = _KernelPoller()

    def check() -> tuple[dict[int, int], list[Pollable], dict[int, int]]:
        ready, states, kernel = _scan(interest.items())
        for fd, revents in poller.poll(kernel):
            if revents & _POLLNVAL:
                raise OSError(EBADF, os.strerror(EBADF))
            ready[fd] = revents
        found = {fd: revents & counted[fd] for fd, revents in ready.items() if revents & counted[fd]}
        # A kernel descriptor with a condition select() does not count for it is not waited on.
        return found, states, {fd: events for fd, events in kernel.items() if fd not in ready}

    ready = _wait(check, seconds)
    return ([obj for obj, fd in readers if ready.get(fd, 0) & _SELECT_READ],
            [obj for obj, fd in writers if ready.get(fd, 0) & _SELECT_WRITE],
            [obj for obj, fd in exceptional if ready.get(fd, 0) & _SELECT_EXCEPT])


# --- poll() ---------------------------------------------------------------------------------------

class poll:  # noqa: N801 - the stdlib's name
    """A ``select.poll`` object for netsock sockets and kernel descriptors.

    A kernel poll object mirrors the registrations: CPython's own checks of the arguments, its
    exceptions for unknown descriptors, and one system call to poll the kernel's descriptors.
    """

    __slots__ = ("_kernel", "_registered", "_running")

    def __init__(self) -> None:
        self._kernel = _kernel_poll()
        self._registered: dict[int, int] = {}
        self._running = False

    def register(self, fd: Any, eventmask: int = _POLLIN | _POLLPRI | _POLLOUT, /) -> None:
        """Register a file descriptor with the polling object."""
        fd = _fileno(fd)
        self._kernel.register(fd, eventmask)
        self._registered[fd] = int(eventmask)

    def modify(self, fd: Any, eventmask: int, /) -> None:
        """Modify an already registered file descriptor."""
        fd = _fileno(fd)
        self._kernel.modify(fd, eventmask)
        self._registered[fd] = int(eventmask)

    def unregister(self, fd: Any, /) -> None:
        """Remove a file descriptor being tracked by the polling object."""
        fd = _fileno(fd)
        self._kernel.unregister(fd)
        del self._registered[fd]

    def poll(self, timeout: Any = None, /) -> list[tuple[int, int]]:
        """Poll the registered descriptors; ``timeout`` in milliseconds (None or negative: forever)."""
        seconds = _poll_timeout(timeout)
        if self._running:
            raise RuntimeError("concurrent poll() invocation")
        self._running = True
        try:
            return _wait(self._check, seconds)
        finally:
            self._running = False

    def _check(self) -> tuple[list[tuple[int, int]], list[Pollable], dict[int, int]]:
        registered = self._registered
        ready, states, kernel = _scan(registered.items())
        if kernel:
            # The mirror holds the sockets' eventfds too: their kernel readiness is not the sockets'.
            ready.update((fd, revents) for fd, revents in self._kernel.poll(0) if fd in kernel)
            if states:
                return [(fd, ready[fd]) for fd in registered if fd in ready], states, kernel
        return list(ready.items()), states, kernel


# --- epoll ----------------------------------------------------------------------------------------

class _Registration:
    __slots__ = ("armed", "entry", "events", "state")

    def __init__(self, state: Pollable, events: int, entry: WaiterEntry) -> None:
        self.state = state
        self.events = events
        self.entry = entry
        self.armed = True                   # EPOLLONESHOT disarms it until the next modify


def _signals(events: int) -> EventMask:
    """The socket signals that put an epoll registration for ``events`` on the ready list: all of them
    when level-triggered (a needless look costs little, a missed one would cost a hang), only those it
    asked for, errors and hang-ups when edge-triggered, as Linux's ep_poll_callback filters wake-ups."""
    if not events & _EPOLLET:
        return _ALL
    signals = EventMask.ERR | EventMask.HUP
    if events & (_EPOLLIN | _stdlib.EPOLLRDNORM | _stdlib.EPOLLRDBAND):
        signals |= EventMask.IN | EventMask.RDHUP
    if events & _stdlib.EPOLLPRI:
        signals |= EventMask.PRI
    if events & (_stdlib.EPOLLOUT | _stdlib.EPOLLWRNORM | _stdlib.EPOLLWRBAND):
        signals |= EventMask.OUT
    if events & _stdlib.EPOLLRDHUP:
        signals |= EventMask.RDHUP
    return signals


def _echo_events(events: int) -> int:
    """The kernel epoll's events for a socket's eventfd: an edge when the socket turns readable, so the
    epoll's own descriptor tells outside pollers about input on its netsock sockets too."""
    return _EPOLLIN | _EPOLLET if events & (_EPOLLIN | _stdlib.EPOLLRDNORM) else 0


class _NetsockInterest:
    """The netsock half of an epoll, kept as Linux keeps its interest list: every registration listens
    to its socket's waiter queue and puts itself on a ready list when the socket signals; poll() looks at
    that list only. Level-triggered entries that were ready stay on it (at the back, for fairness),
    edge-triggered ones come back with the socket's next signal, one-shot ones with the next modify."""

    __slots__ = ("pollers", "ready", "registrations")

    def __init__(self) -> None:
        self.registrations: dict[int, _Registration] = {}
        self.ready: dict[int, None] = {}            # an ordered set of descriptors to look at
        self.pollers: dict[Event, Any] = {}         # parked poll() calls: their wake-up and hub watcher

    def add(self, fd: int, state: Pollable, events: int) -> None:
        entry = state.waiter_queue.register(lambda _mask: self.signalled(fd), _signals(events))
        self.registrations[fd] = _Registration(state, events, entry)
        self.signalled(fd)          # as epoll_ctl(ADD) does: report it if it is ready now

    def live(self, fd: int) -> _Registration | None:
        """The registration of ``fd`` if its socket is still open (Linux forgets closed descriptors)."""
        registration = self.registrations.get(fd)
        if registration is not None and fds.lookup(fd) is not registration.state:
            self.forget(fd)
            return None
        return registration

    def forget(self, fd: int) -> None:
        registration = self.registrations.pop(fd)
        registration.state.waiter_queue.unregister(registration.entry)
        self.ready.pop(fd, None)

    def signalled(self, fd: int) -> None:
        self.ready[fd] = None
        for wake in self.pollers:
            wake.set()

    def collect(self, budget: int) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        ready = self.ready
        for fd in list(ready):
            if len(found) >= budget:
                break
            del ready[fd]
            registration = self.live(fd)
            if registration is None or not registration.armed:
                continue
            revents = _revents(registration.state, registration.events)
            if not revents:
                continue
            found.append((fd, revents))
            if registration.events & _EPOLLONESHOT:
                registration.armed = False
            elif not registration.events & _EPOLLET:
                ready[fd] = None
        return found

    def release(self) -> None:
        for fd in list(self.registrations):
            self.forget(fd)
        for wake, watcher in self.pollers.items():
            watcher.stop()
            watcher.close()
            wake.set()
        self.pollers.clear()


def _closed() -> ValueError:
    return ValueError("I/O operation on closed epoll object")


class epoll:  # noqa: N801 - the stdlib's name
    """A ``select.epoll`` object for netsock sockets and kernel descriptors.

    Kernel descriptors live in a real kernel epoll (its descriptor is ``fileno()``), with all of
    epoll's semantics, EPOLLET and EPOLLONESHOT included; netsock sockets are tracked beside it with the
    same semantics, and their eventfds sit in the kernel epoll for input edges. Its ``fromfd`` adopts a
    kernel epoll: the kernel descriptors registered there come along, netsock registrations do not.
    """

    __slots__ = ("_interest", "_kernel", "_kernel_first")

    def __init__(self, sizehint: int = -1, flags: int = 0) -> None:
        self._start(_KernelEpoll(sizehint, flags))

    @classmethod
    def fromfd(cls, fd: int, /) -> epoll:
        """Create an epoll object from a given control fd."""
        self = cls.__new__(cls)
        self._start(_KernelEpoll.fromfd(fd))
        return self

    def _start(self, kernel: Any) -> None:
        self._kernel = kernel
        self._interest = _NetsockInterest()
        self._kernel_first = False

    def __del__(self) -> None:
        interest = getattr(self, "_interest", None)
        if interest is not None:
            interest.release()      # the sockets' waiter queues would keep calling it otherwise

    @property
    def closed(self) -> bool:
        """True if the epoll handler is closed."""
        return self._kernel.closed

    def close(self) -> None:
        """Close the epoll control file descriptor; greenlets polling it get ValueError."""
        self._interest.release()
        self._kernel.close()

    def fileno(self) -> int:
        """Return the epoll control file descriptor."""
        return self._kernel.fileno()

    def __enter__(self) -> epoll:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._kernel.closed:
            raise _closed()

    def register(self, fd: Any, eventmask: int = _EPOLL_DEFAULT) -> None:
        """Registers a new fd or raises an OSError if the fd is already registered."""
        fd = _fileno(fd)
        events = operator.index(eventmask) & 0xFFFFFFFF
        self._check_open()
        interest = self._interest
        interest.live(fd)           # a closed socket's registration goes, as the kernel's would
        state = fds.lookup(fd)
        if state is None:
            self._kernel.register(fd, events)
            return
        if events & _EPOLLEXCLUSIVE and events & ~_EXCLUSIVE_OK:
            raise OSError(EINVAL, os.strerror(EINVAL))
        if fd in interest.registrations:
            raise FileExistsError(EEXIST, os.strerror(EEXIST))
        self._kernel.register(fd, _echo_events(events))
        interest.add(fd, state, events)

    def modify(self, fd: Any, eventmask: int) -> None:
        """Modify event mask for a registered file descriptor."""
        fd = _fileno(fd)
        events = operator.index(eventmask) & 0xFFFFFFFF
        self._check_open()
        registration = self._interest.live(fd)
        if registration is None:
            self._kernel.modify(fd, events)
            return
        if (events | registration.events) & _EPOLLEXCLUSIVE:
            raise OSError(EINVAL, os.strerror(EINVAL))
        if _echo_events(events) != _echo_events(registration.events):
            self._kernel.modify(fd, _echo_events(events))
        registration.events = events
        registration.entry.mask = _signals(events)
        registration.armed = True
        self._interest.signalled(fd)

    def unregister(self, fd: Any) -> None:
        """Remove a registered file descriptor from the epoll object."""
        fd = _fileno(fd)
        self._check_open()
        registration = self._interest.live(fd)
        self._kernel.unregister(fd)
        if registration is not None:
            self._interest.forget(fd)

    def poll(self, timeout: Any = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """Wait for events on the epoll file descriptor; ``timeout`` in seconds (None or negative:
        forever). Returns a list of (fd, events) 2-tuples."""
        maxevents = _c_int(maxevents)
        self._check_open()
        seconds = _epoll_timeout(timeout)
        if maxevents == -1:
            maxevents = _FD_SETSIZE - 1
        elif maxevents < 1:
            raise ValueError(f"maxevents must be greater than 0, got {maxevents}")
        found = self._collect(maxevents)
        if found or seconds == 0:
            return found
        deadline = None if seconds is None else time.monotonic() + seconds
        wake = Event()
        watcher = gevent.get_hub().loop.io(self._kernel.fileno(), 1)
        watcher.start(wake.set)
        pollers = self._interest.pollers
        pollers[wake] = watcher
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                wake.wait(remaining)
                wake.clear()
                self._check_open()
                found = self._collect(maxevents)
                if found:
                    return found
        finally:
            if pollers.pop(wake, None) is not None:
                watcher.stop()
                watcher.close()

    def _collect(self, budget: int) -> list[tuple[int, int]]:
        """Up to ``budget`` events, without waiting; the kernel's and the sockets' take turns going
        first so that neither starves the other when there are more than ``budget``."""
        self._kernel_first = kernel_first = not self._kernel_first
        found = self._kernel_events(budget) if kernel_first else []
        found += self._interest.collect(budget - len(found))
        if not kernel_first and len(found) < budget:
            found += self._kernel_events(budget - len(found))
        return found

    def _kernel_events(self, budget: int) -> list[tuple[int, int]]:
        sockets = self._interest.registrations
        return [(fd, events) for fd, events in self._kernel.poll(0, budget) if fd not in sockets]


_REPLACEMENTS = [(_stdlib, function.__name__, function) for function in (select, poll, epoll)]


def patch() -> None:
    """Install the replacements in the ``select`` module (once); its constants stay."""
    _patcher.install(_REPLACEMENTS)


def unpatch() -> None:
    _patcher.undo()
