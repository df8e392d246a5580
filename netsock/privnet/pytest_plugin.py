"""pytest plugin (entry point ``pytest11``: ``netsock``): each test that asks for ``netsock_network``
runs in a private network of its own, and nothing it does reaches the machine's network.

The fixture hands the test a fresh ``netsock.Network`` and, for the test's duration only, puts
netsock's patches over ``socket``, ``select``, ``selectors`` and ``ssl`` (``netsock.patches``); they
are undone after it, so tests without the fixture keep the kernel's sockets in the same run. Code in
``with host:`` (or ``host.spawn``) runs on that host; the rest of the test body runs on a stack of its
own that has only a loopback, so reaching any address outside the private network (or a host of it,
from outside ``with host:``) fails at once with ENETUNREACH, saying why, and opens no kernel socket.

The ``netsock`` marker declares the network::

    @pytest.mark.netsock(seed=7, switches={"lan": "192.0.2.0/24"},
                         hosts={"server.test": "lan", "client.test": {"switches": "lan", "address": "192.0.2.50"}},
                         routers={"router.test": ["lan", "wan"]},
                         faults=[("client.test", "server.test", {"loss": 0.1, "latency": 0.030})],
                         iptables={"router.test": ["-t nat -A POSTROUTING -o wan -j MASQUERADE"]})

(switches, then routers, then hosts, in the order given; a host names a switch, a list of switches, or
a mapping with ``switches`` and ``address``; each fault is ``Network.faults(source, destination,
**faults)``; ``iptables`` and ``ip6tables`` give hosts' commands, run in order, as ``Host.iptables``
runs them). Without a seed the network's seed is derived from the test's node id, so a rerun makes
the same fault decisions. When such a test fails, its report gets a "netsock network" section: the
seed, the hosts, a pcap of every switch's frames (in the test's tmp_path, or ``--netsock-pcap-dir``),
the non-zero counters of the links and hosts, and the hosts' iptables rules with what each matched.

Threads. netsock's sockets live in the gevent hub of the thread that runs the test, and may only be
used from greenlets of that hub; unmodified servers (``socketserver``'s ThreadingMixIn, http.server's
ThreadingHTTPServer) start a thread per request. gevent's monkey patching for threads cannot be
undone, and applying it to the whole run is not harmless: in a test without the fixture, a server
thread doing blocking kernel socket I/O would become a greenlet that never runs while the test's
main thread waits in the kernel for it. So for the fixture's tests only, and undone after each, this
plugin makes ``threading`` green where it matters: a ``Thread`` started from the test's thread runs
in a greenlet (in a copy of the starter's context, so a thread started in ``with host:`` belongs to
the host) that ``join`` and ``is_alive`` follow; ``threading.Lock`` and ``RLock`` (and the locks a
``Condition`` waits on) made in that thread, and ``time.sleep`` called in it, are gevent's; so are the
``threading.Event``, ``threading.local`` and ``queue.SimpleQueue`` made during the test. Other OS
threads keep real threads, locks and sleeps. Green threads share the OS thread's ident and
``current_thread()``, and ``threading.enumerate()`` does not list them; locks made before the test stay
OS locks (fine unless held across a wait). Threads still running when the test ends are killed. If
the process already runs under gevent's patches (``netsock.patch_all()`` in a conftest, say), none of
this is needed and none is done; if netsock's own patches are already installed, the fixture leaves
them as it found them.

The plugin is loaded by every pytest run where netsock is installed: it imports netsock's stack, and
gevent, only when a test asks for the fixture.

pytest-socket restores the ``socket.socket`` it saved at import in every test's teardown hook, which
runs before fixtures are torn down: netsock's objects displaced that way (or by its ``socket_enabled``
fixture) are put back at the end of setup and again at the start of teardown, so the test and its
fixtures' teardowns never get the kernel's; the value that displaced them is what remains once the
fixture is done. Anything still holding a netsock object after the test's teardown (a helper that
saved it mid-test and put it back) is reset, with a warning.

With pytest-xdist each worker is a process of its own, with its own networks.
"""

from __future__ import annotations

import _thread
import contextvars
import hashlib
import importlib
import queue
import re
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .. import patches

if TYPE_CHECKING:
    import gevent

    from ..resolver import HostEntry
    from ..stack import Stack
    from .network import Network

__all__ = ["netsock_network"]

_MARKER = "netsock"
_MARKER_HELP = ("netsock(seed=None, switches={name: subnet}, routers={name: [switch, ...]}, "
                "hosts={name: switch | [switch, ...] | {'switches': ..., 'address': ...}}, "
                "faults=[(source, destination, {fault: value})], iptables={host: [command, ...]}, "
                "ip6tables={host: [command, ...]}): the private network of the netsock_network fixture")
_BODY_NOTE = ("the test body is outside the hosts of netsock's private network: reach them from `with host:` "
              "or host.spawn(); nothing outside the private network is reachable")
_FAILURE_SECTION = "netsock network"
_PCAP_NAME = "netsock-network.pcap"
_THREAD_KILL_TIMEOUT = 5.0


# --- the marker -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Placement:
    switches: tuple[str, ...]
    address: str | None = None


@dataclass(frozen=True)
class _Declaration:
    """What a ``netsock`` marker declares (all optional)."""

    seed: int | None = None
    switches: Mapping[str, str] = field(default_factory=dict)
    routers: Mapping[str, _Placement] = field(default_factory=dict)
    hosts: Mapping[str, _Placement] = field(default_factory=dict)
    faults: Sequence[tuple[str, str, Mapping[str, Any]]] = ()
    iptables: Mapping[int, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)     # by IP version

    @classmethod
    def from_marker(cls, marker: pytest.Mark | None) -> _Declaration:
        if marker is None:
            return cls()
        if marker.args:
            raise TypeError(f"@pytest.mark.{_MARKER} takes keyword arguments only: {_MARKER_HELP}")
        kwargs = dict(marker.kwargs)
        unknown = set(kwargs) - {"seed", "switches", "routers", "hosts", "faults", "iptables", "ip6tables"}
        if unknown:
            raise TypeError(f"@pytest.mark.{_MARKER}: unknown argument(s) {', '.join(sorted(unknown))}: {_MARKER_HELP}")
        seed = kwargs.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise TypeError(f"@pytest.mark.{_MARKER}: seed must be an int, not {seed!r}")
        faults = []
        for fault in kwargs.get("faults", ()):
            if not (isinstance(fault, (tuple, list)) and len(fault) == 3 and isinstance(fault[2], Mapping)):
                raise TypeError(f"@pytest.mark.{_MARKER}: a fault is (source, destination, {{fault: value}}), "
                                f"not {fault!r}")
            faults.append((fault[0], fault[1], dict(fault[2])))
        iptables = {}
        for version, key in ((4, "iptables"), (6, "ip6tables")):
            commands = kwargs.get(key, {})
            if not isinstance(commands, Mapping) or not all(
                    isinstance(lines, (list, tuple)) and all(isinstance(line, str) for line in lines)
                    for lines in commands.values()):
                raise TypeError(f"@pytest.mark.{_MARKER}: {key} is {{host: [command, ...]}}, not {commands!r}")
            iptables[version] = {host: tuple(lines) for host, lines in commands.items()}
        return cls(seed=seed, switches=dict(kwargs.get("switches", {})),
                   routers={name: _placement(name, where) for name, where in kwargs.get("routers", {}).items()},
                   hosts={name: _placement(name, where) for name, where in kwargs.get("hosts", {}).items()},
                   faults=tuple(faults), iptables=iptables)

    def build(self, network: Network) -> None:
        """Add the declared switches, routers, hosts and faults to ``network``."""
        for name, subnet in self.switches.items():
            network.switch(name, subnet)
        for name, placement in self.routers.items():
            network.router(name, *_switches(network, name, placement), address=placement.address)
        for name, placement in self.hosts.items():
            network.host(name, *_switches(network, name, placement), address=placement.address)
        for source, destination, faults in self.faults:
            network.faults(source, destination, **faults)
        for version, commands in self.iptables.items():
            for name, lines in commands.items():
                host = network.hosts.get(name)
                if host is None:
                    raise ValueError(f"@pytest.mark.{_MARKER}: iptables for {name!r}, which is no host of the network")
                for line in lines:
                    host.iptables(line) if version == 4 else host.ip6tables(line)


def _placement(name: str, where: Any) -> _Placement:
    if isinstance(where, str):
        return _Placement((where,))
    if isinstance(where, Mapping):
        switches = where.get("switches", ())
        unknown = set(where) - {"switches", "address"}
        if unknown:
            raise TypeError(f"@pytest.mark.{_MARKER}: {name}: unknown key(s) {', '.join(sorted(unknown))}")
        return _Placement((switches,) if isinstance(switches, str) else tuple(switches), where.get("address"))
    if isinstance(where, Sequence):
        return _Placement(tuple(where))
    raise TypeError(f"@pytest.mark.{_MARKER}: {name} names a switch, a list of switches or "
                    f"{{'switches': ..., 'address': ...}}, not {where!r}")


def _switches(network: Network, name: str, placement: _Placement) -> list[Any]:
    missing = [s for s in placement.switches if s not in network.switches]
    if missing:
        raise ValueError(f"@pytest.mark.{_MARKER}: {name} joins undeclared switch(es) {', '.join(missing)}")
    return [network.switches[s] for s in placement.switches]


def _seed_for(nodeid: str) -> int:
    """The seed of a test without one: the same for the same test id in every run and process."""
    return int.from_bytes(hashlib.sha256(nodeid.encode()).digest()[:4], "big")


# --- the test body's stack ----------------------------------------------------------------------------

class _NetworkNames:
    """The network's names, as its hosts know them, kept current as hosts join: from the test body,
    ``requests.get("http://server.test/")`` then fails with ENETUNREACH and says why, rather than
    with an unknown name. (A resolver's hosts table.)"""

    def __init__(self, network: Network) -> None:
        from ..resolver import HostsTable

        self._network = network
        self._table = HostsTable()

    def add(self, name: str, address: str) -> None:
        self._table.add(name, address)

    def lookup(self, name: str, families: frozenset[int]) -> HostEntry | None:
        self._refresh()
        return self._table.lookup(name, families)

    def reverse(self, address: bytes) -> HostEntry | None:
        self._refresh()
        return self._table.reverse(address)

    def _refresh(self) -> None:
        for host in self._network:
            for address in host.addresses.values():
                self._table.add(host.name, address)


def _body_stack(network: Network) -> Stack:
    """A stack with a loopback only, names from ``network`` and no DNS server."""
    from ..adapter.runtime import build_stack
    from ..resolver import Resolver

    stack = build_stack()
    stack.unreachable_note = _BODY_NOTE
    resolver = Resolver(stack, hosts_file=None)
    resolver.hosts = _NetworkNames(network)  # type: ignore[assignment]
    stack.extensions["resolver"] = resolver
    return stack


def _close_stack(stack: Stack) -> None:
    links = [nic.link for nic in stack.nics.values()]
    stack.close()
    for link in links:
        link.close()


# --- netsock's patches, owned by one test ------------------------------------------------------------

_Key = tuple[Any, str]
_MISSING = object()
_PATCHED_MODULES = {name: importlib.import_module(name) for name in patches.PATCHED_MODULES}
# What the patched modules held when pytest loaded this plugin: restoring one of these (as
# pytest-socket restores the socket class it saved at import) is undoing netsock.
_AT_LOAD = {(id(module), name): value for module in _PATCHED_MODULES.values() for name, value in vars(module).items()}
_WARNED: set[tuple[type[Warning], str]] = set()


class _OwnedPatches:
    """netsock's patches, installed for one test; see the module docstring for who may displace them."""

    def __init__(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patches.patch_all(gevent=False)
        for warning in caught:          # the early bindings, once per process rather than once per test
            if (warning.category, str(warning.message)) not in _WARNED:
                _WARNED.add((warning.category, str(warning.message)))
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        # The attributes the patch modules replaced: the values now (ours), and the values that mean
        # netsock was undone (what they held before, and at load).
        self._ours: dict[_Key, Any] = {}
        self._undoings: dict[_Key, list[Any]] = {}
        for target, name, original in patches.replacements():
            if (target, name) not in self._ours:
                self._ours[(target, name)] = getattr(target, name)
                loaded = _AT_LOAD.get((id(target), name), _MISSING)
                self._undoings[(target, name)] = [original] + ([loaded] if loaded is not _MISSING else [])
        self._displaced: dict[_Key, Any] = {}
        self._after: dict[_Key, Any] = {}

    def _undoes(self, key: _Key, value: Any) -> bool:
        return any(value is undoing for undoing in self._undoings[key])

    def reassert(self) -> None:
        """Put netsock's objects back where something restored what they replaced; remember what did."""
        for (target, name), ours in self._ours.items():
            current = getattr(target, name, _MISSING)
            if current is not ours and self._undoes((target, name), current):
                self._displaced[(target, name)] = current
                setattr(target, name, ours)

    def release(self) -> None:
        """Undo netsock's patches: each attribute gets back what it held before them, or the object
        that last displaced them by restoring what they replaced (pytest-socket's restore wins)."""
        current = {key: getattr(*key, _MISSING) for key in self._ours}
        patches.unpatch_all()
        for (target, name), value in current.items():
            if not self._undoes((target, name), value):
                value = self._displaced.get((target, name), _MISSING)
            if value is not _MISSING:
                setattr(target, name, value)
        self._after = {key: getattr(*key, _MISSING) for key in self._ours}

    def verify_released(self) -> None:
        """Reset, with a warning, anything that still holds a netsock object after the test."""
        for (target, name), ours in self._ours.items():
            if getattr(target, name, _MISSING) is ours:
                value = self._after[(target, name)]
                if value is _MISSING:
                    delattr(target, name)
                else:
                    setattr(target, name, value)
                owner = getattr(target, "__name__", repr(target))
                warnings.warn(f"{owner}.{name} held netsock's replacement after the test (something saved it during "
                              "the test and put it back); netsock reset it", pytest.PytestWarning, stacklevel=1)


# --- green threads, for one test -----------------------------------------------------------------------

class _GreenThreads:
    """``threading`` as gevent's for code running in the hub's thread (see the module docstring)."""

    def __init__(self) -> None:
        import gevent
        import gevent.event
        import gevent.local
        import gevent.lock
        import gevent.queue
        import gevent.thread

        from ..patches._patcher import Patcher

        self._hub_thread = _thread.get_ident()
        self._greenlets: dict[threading.Thread, gevent.Greenlet] = {}
        self._patcher = Patcher()
        thread = threading.Thread
        start, join, is_alive = thread.start, thread.join, thread.is_alive
        lock, rlock, allocate_lock, sleep = threading.Lock, threading.RLock, threading._allocate_lock, time.sleep
        green = self._in_hub_thread
        greenlets = self._greenlets

        def green_start(thread: threading.Thread) -> None:
            if not green():
                return start(thread)
            if not thread._initialized:  # type: ignore[attr-defined]
                raise RuntimeError("thread.__init__() not called")
            if thread._started.is_set():  # type: ignore[attr-defined]
                raise RuntimeError("threads can only be started once")
            greenlets[thread] = gevent.spawn(contextvars.copy_context().run, self._run, thread)
            thread._ident = _thread.get_ident()  # type: ignore[attr-defined]
            thread._started.set()  # type: ignore[attr-defined]

        def green_join(thread: threading.Thread, timeout: float | None = None) -> None:
            greenlet = greenlets.get(thread)
            if greenlet is None:
                return join(thread, timeout)
            if greenlet is gevent.getcurrent():
                raise RuntimeError("cannot join current thread")
            greenlet.join(None if timeout is None else max(timeout, 0))

        def green_is_alive(thread: threading.Thread) -> bool:
            greenlet = greenlets.get(thread)
            return is_alive(thread) if greenlet is None else not greenlet.dead

        def factory(gevent_made: Any, original: Any) -> Any:
            def make(*args: Any, **kwargs: Any) -> Any:
                return (gevent_made if green() else original)(*args, **kwargs)
            return make

        replace = self._patcher.replace
        replace(thread, "start", green_start)
        replace(thread, "join", green_join)
        replace(thread, "is_alive", green_is_alive)
        replace(threading, "Lock", factory(gevent.thread.allocate_lock, lock))
        replace(threading, "_allocate_lock", factory(gevent.thread.allocate_lock, allocate_lock))
        replace(threading, "RLock", factory(gevent.lock.RLock, rlock))
        replace(threading, "Event", gevent.event.Event)
        replace(threading, "local", gevent.local.local)
        replace(queue, "SimpleQueue", gevent.queue.SimpleQueue)
        replace(time, "sleep", factory(gevent.sleep, sleep))

    def _in_hub_thread(self) -> bool:
        return _thread.get_ident() == self._hub_thread

    @staticmethod
    def _run(thread: threading.Thread) -> None:
        from gevent import GreenletExit

        try:
            thread.run()
        except GreenletExit:
            pass                        # killed when the test ended
        except BaseException:
            thread._invoke_excepthook(thread)  # type: ignore[attr-defined]  # threading.excepthook, as a thread

    def close(self) -> None:
        """Kill the threads still running, then put ``threading`` back, the threads marked stopped as
        its own methods expect."""
        import gevent

        gevent.killall([g for g in self._greenlets.values() if not g.dead], timeout=_THREAD_KILL_TIMEOUT)
        self._patcher.undo()
        for thread in self._greenlets:
            _mark_stopped(thread)


def _mark_stopped(thread: threading.Thread) -> None:
    """Make a green thread read as finished to ``threading``'s own methods."""
    if hasattr(thread, "_is_stopped"):              # Python 3.11, 3.12
        thread._is_stopped = True
    else:                                           # 3.13: a handle that is done, made as _DummyThread's are
        handle = threading._make_thread_handle(_thread.get_ident())  # type: ignore[attr-defined]
        handle._set_done()
        thread._handle = handle  # type: ignore[attr-defined]


# --- the fixture and the failure report ---------------------------------------------------------------

@dataclass
class _TestNetwork:
    network: Network
    seed: int
    pcap: Path
    owned: _OwnedPatches | None
    reported: bool = False


_STATE = pytest.StashKey[_TestNetwork]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netsock", "netsock private networks")
    group.addoption("--netsock-pcap-dir", metavar="DIR", default=None,
                    help="write a failing netsock_network test's pcap here (default: the test's tmp_path)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.fixture
def netsock_network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Network]:
    """A fresh private network for this test, with netsock's patches on until it ends (module docstring)."""
    item = request.node
    declaration = _Declaration.from_marker(item.get_closest_marker(_MARKER))
    seed = declaration.seed if declaration.seed is not None else _seed_for(item.nodeid)
    pcap_dir = request.config.getoption("--netsock-pcap-dir")
    pcap_name = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.nodeid)}.pcap"
    pcap = Path(pcap_dir) / pcap_name if pcap_dir else tmp_path / _PCAP_NAME
    with ExitStack() as cleanup:          # undone in reverse: threads, network, body stack, patches
        from gevent import monkey

        from ..adapter.runtime import use_stack
        from .network import Network

        owned = None
        if not patches.patched():
            owned = _OwnedPatches()
            cleanup.callback(owned.release)
        network = Network(seed=seed)
        body = _body_stack(network)
        cleanup.callback(_close_stack, body)
        cleanup.callback(network.close)
        if not monkey.is_module_patched("threading"):
            cleanup.callback(_GreenThreads().close)
        item.stash[_STATE] = _TestNetwork(network, seed, pcap, owned)
        cleanup.enter_context(use_stack(body))
        declaration.build(network)
        yield network


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield
    state = item.stash.get(_STATE, None)
    if state is not None and state.owned is not None:
        # Fixtures set up after ours (pytest-socket's socket_enabled) may have restored the kernel's
        # objects; pytest-socket's teardown hook will, before fixtures are torn down. The finalizer,
        # added last, runs first at teardown.
        state.owned.reassert()
        item.addfinalizer(state.owned.reassert)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    finally:
        state = item.stash.get(_STATE, None)
        if state is not None and state.owned is not None:
            state.owned.verify_released()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    state = item.stash.get(_STATE, None)
    if report.failed and state is not None and not state.reported:
        state.reported = True
        report.sections.append((_FAILURE_SECTION, _describe(state)))
    return report


def _describe(state: _TestNetwork) -> str:
    """The failure section: seed, hosts, the pcap written now, the non-zero counters, and the hosts' iptables
    rules with their counters."""
    network = state.network
    state.pcap.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"seed: {state.seed} (the same again: @pytest.mark.{_MARKER}(seed={state.seed}))",
             f"pcap: {network.pcap(state.pcap)}"]
    for host in network:
        role = " (router)" if host.router else ""
        lines.append(f"host {host.name}{role}: " + ", ".join(f"{a} on {s.name}" for s, a in host.addresses.items()))
    counters = network.counters()
    for switch_name, switch in counters["switches"].items():
        for port, stats in switch["ports"].items():
            lines.append(f"switch {switch_name} port {port}: {_nonzero(stats)}")
        for direction, stats in switch["faults"].items():
            lines.append(f"switch {switch_name} faults {direction}: {_nonzero(stats)}")
    for host_name, stats in counters["hosts"].items():
        lines.append(f"host {host_name} counters: {_nonzero(stats)}")
    for host in network:     # the rules of the tables in use, with what each matched (iptables -L -v)
        for version, run in ((4, host.iptables), (6, host.ip6tables)):
            for table in ("filter", "nat", "mangle"):
                if _table(host, version, table).active:
                    lines.append(f"host {host.name} ip{'6' * (version == 6)}tables -t {table} (packets bytes rule):")
                    lines += ["  " + line for line in run(f"-t {table} -L -v").splitlines() if line]
    return "\n".join(lines)


def _table(host: Any, version: int, name: str) -> Any:
    suffix = {"filter": "", "nat": "_nat", "mangle": "_mangle"}[name]
    return getattr(host.stack.iptables, f"ipv{version}{suffix}")


def _nonzero(stats: Mapping[str, Any]) -> str:
    flat: list[str] = []

    def walk(tree: Mapping[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and value:
                flat.append(f"{prefix}{key}={value}")
    walk(stats, "")
    return " ".join(flat) or "(all zero)"

