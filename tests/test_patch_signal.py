"""netsock.patches.signal: a Python signal handler runs as if in CPython's main thread whichever greenlet
the signal interrupts; callers see their own handlers; unpatch() restores the program's handlers."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import gevent
import pytest

from netsock.patches import signal as nsignal


@pytest.fixture
def python_handlers() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as CPython sets it up — unless the process started with it
    ignored, as a shell without job control starts a background command; restored afterwards."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGUSR1)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.fixture
def patched(python_handlers: None) -> Iterator[None]:
    nsignal.patch()
    try:
        yield
    finally:
        nsignal.unpatch()


def busy_worker(log: list[str]) -> None:
    """Pure Python work long enough for a signal to arrive in the middle of it."""
    os.kill(os.getpid(), signal.SIGINT)
    total = 0
    for i in range(200_000):
        total += i
    log.append("worker finished")


@pytest.mark.usefixtures("patched")
def test_keyboard_interrupt_reaches_the_main_greenlet_not_the_running_worker() -> None:
    log: list[str] = []
    worker = gevent.spawn(busy_worker, log)
    with pytest.raises(KeyboardInterrupt):
        gevent.sleep(5)                         # the main thread's blocking call is what gets interrupted
    worker.join()
    assert log == ["worker finished"] and worker.successful()


@pytest.mark.usefixtures("patched")
def test_in_the_main_greenlet_the_handler_runs_at_once() -> None:
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1_000_000):              # interrupted here, without any switch to the hub
            pass


@pytest.mark.usefixtures("patched")
def test_a_handler_that_returns_runs_once_and_the_program_goes_on() -> None:
    calls: list[tuple[int, bool]] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append((signum, frame is not None)))
    worker = gevent.spawn(os.kill, os.getpid(), signal.SIGUSR1)
    worker.join()
    gevent.sleep(0.01)
    assert calls == [(signal.SIGUSR1, True)]    # with the main greenlet's frame, as CPython passes the main thread's


@pytest.mark.usefixtures("patched")
def test_callers_see_their_own_handlers() -> None:
    def handler(signum: int, frame: object) -> None:
        raise AssertionError("not delivered in this test")

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.getsignal(signal.SIGUSR1)
    assert signal.signal(signal.SIGUSR1, handler) is previous
    assert signal.getsignal(signal.SIGUSR1) is handler
    assert signal.signal(signal.SIGUSR1, signal.SIG_IGN) is handler
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN


@pytest.mark.usefixtures("python_handlers")
def test_unpatch_restores_the_functions_and_the_handlers() -> None:
    original_signal, original_getsignal = signal.signal, signal.getsignal
    nsignal.patch()
    try:
        assert signal.signal is not original_signal
        nsignal.patch()                         # idempotent
    finally:
        nsignal.unpatch()
    assert (signal.signal, signal.getsignal) == (original_signal, original_getsignal)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # the handler itself, unwrapped
