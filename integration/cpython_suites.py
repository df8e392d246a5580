"""Run one of CPython's own networking test suites (test_socket, test_selectors, test_ssl, as installed
with the interpreter) under ``netsock.patch_all()``, or on the kernel for a baseline.

    python integration/cpython_suites.py test_socket [--kernel] [--report FILE] [--only ID ...]

Prints a JSON summary on stdout: passed and skipped counts, and the failed and erroring test ids with
the last line of their tracebacks. ``--report FILE`` also writes every test's outcome.

The suite runs in a worker process (this file with ``--worker``) whose first act is ``import netsock;
netsock.patch_all()``, on netsock's loopback stack alone. Tests whose ids (or class ids) the expected
failures file (cpython_expected_failures.toml) lists with a reason starting "hangs:" or "slow:" are
not run, with ``--kernel`` too (``--run-excluded`` runs them). A stuck test is interrupted:
``TestTimeout`` is raised in it after ``--timeout`` seconds, and again every few seconds, so that a
tearDown waiting for the stuck half is interrupted too. A test that
blocks the whole process instead (a kernel call that never returns) makes the watchdog end the
worker; this process records the test as hung and starts a new worker with the tests still to run.

No test resources (``-u`` of regrtest) are enabled: "network" means the internet to CPython's tests,
which a loopback-only stack never reaches; ``--use`` enables some.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["--worker"] and "--kernel" not in sys.argv:
    # Before anything imports socket, select, ssl or threading.
    import netsock

    netsock.patch_all()

import argparse
import faulthandler
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
import tomllib
import traceback
import unittest
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import gevent

SUITES = ("test_socket", "test_selectors", "test_ssl")
EXPECTED_FAILURES = Path(__file__).resolve().with_name("cpython_expected_failures.toml")
# Reasons that keep a listed test from being run: it never ends, or takes too long to fail.
NOT_RUN_PREFIXES = ("hangs:", "slow:")

SOFT_TIMEOUT = 30.0      # seconds a test may run before TestTimeout is raised in it
GRACE = 5.0              # then raised again this often, while the test (its cleanup) is still stuck
HARD_TIMEOUT = 60.0      # seconds without progress before the worker process is ended
MAX_WORKERS = 20         # worker processes per suite run (each hang costs one)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]


def load_expected(python: str, path: Path = EXPECTED_FAILURES) -> dict[str, dict[str, str]]:
    """The expected failures for Python version ``python`` ("3.11.7"), by suite: {suite: {test or
    class id: reason}}. An entry is its reason, or a table of the reason and the Python versions
    ("3.11") it is for, when the others behave differently."""
    minor = ".".join(python.split(".")[:2])
    with open(path, "rb") as file:
        tables = tomllib.load(file)
    unknown = set(tables) - set(SUITES)
    if unknown:
        raise ValueError(f"{path}: tables {sorted(unknown)} are not suites ({', '.join(SUITES)})")
    expected: dict[str, dict[str, str]] = {suite: {} for suite in SUITES}
    for suite, entries in tables.items():
        for test_id, value in entries.items():
            if isinstance(value, str):
                expected[suite][test_id] = value
            elif isinstance(value, dict) and set(value) == {"reason", "python"}:
                if minor in value["python"]:
                    expected[suite][test_id] = value["reason"]
            else:
                raise ValueError(f"{path}: {test_id}: expected a reason, or {{reason = ..., python = [...]}}")
    return expected


def covers(entry: str, test_id: str) -> bool:
    """Whether an expected-failures entry (a test id, or a class or module id) names the test."""
    return test_id == entry or test_id.startswith(entry + ".")


def runs(reason: str) -> bool:
    """Whether a test listed with this reason is run."""
    return not reason.startswith(NOT_RUN_PREFIXES)


# -- worker: runs the tests in this process ----------------------------------------------------------


class TestTimeout(BaseException):
    """Raised in a test that overran its time. A BaseException, so that the test's own ``except
    Exception`` retry loops do not swallow it; unittest records it as the test's error."""


class _KernelInterrupter:
    """Raises TestTimeout in the main thread: a helper thread sends it SIGUSR2 (unused by the suites;
    SIGALRM is theirs), which also breaks a blocking system call."""

    def __init__(self) -> None:
        self._main = threading.get_ident()      # made in the main thread
        self._stop: threading.Event | None = None
        signal.signal(signal.SIGUSR2, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise TestTimeout("test overran its time")

    def arm(self, first: float, repeat: float) -> None:
        self._stop = stop = threading.Event()

        def interrupt() -> None:
            delay = first
            while not stop.wait(delay):
                signal.pthread_kill(self._main, signal.SIGUSR2)
                delay = repeat

        threading.Thread(target=interrupt, name="test-timeout", daemon=True).start()

    def disarm(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None


class _GeventInterrupter:
    """Raises TestTimeout in the test's greenlet from a hub timer, as gevent.Timeout does; a greenlet
    blocked in the OS, not in the hub, is left to the watchdog."""

    def __init__(self) -> None:
        self._timer: Any = None

    def arm(self, first: float, repeat: float) -> None:
        target = gevent.getcurrent()
        self._timer = gevent.get_hub().loop.timer(first, repeat)
        self._timer.start(self._throw, target)

    @staticmethod
    def _throw(target: Any) -> None:
        if not target.dead:
            target.throw(TestTimeout("test overran its time"))

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None


class RecordingResult(unittest.TestResult):
    """Writes each test's start and outcome to ``events`` as JSON lines, as they happen, so that the
    supervising process knows which test a dead worker was running; times each test out."""

    def __init__(self, events: TextIO, interrupter: _KernelInterrupter | _GeventInterrupter,
                 soft_timeout: float, hard_timeout: float) -> None:
        super().__init__()
        self._events = events
        self._interrupter = interrupter
        self._soft_timeout = soft_timeout
        self._hard_timeout = hard_timeout
        self._current: unittest.TestCase | None = None     # the test between startTest and stopTest
        self._outcome: tuple[str, str] | None = None
        self._started = 0.0
        self._watchdog()

    def _emit(self, **event: Any) -> None:
        self._events.write(json.dumps(event) + "\n")
        self._events.flush()

    def _watchdog(self) -> None:
        # Re-armed at every event: also bounds class and module fixtures, which run between tests.
        faulthandler.dump_traceback_later(self._hard_timeout, exit=True)

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._watchdog()
        self._emit(start=test.id())
        self._current, self._outcome, self._started = test, None, time.monotonic()
        self._interrupter.arm(self._soft_timeout, GRACE)

    def stopTest(self, test: unittest.TestCase) -> None:
        self._interrupter.disarm()
        super().stopTest(test)
        if test is self._current:
            outcome, detail = self._outcome or ("passed", "")
            self._emit(id=test.id(), outcome=outcome, detail=detail,
                       seconds=round(time.monotonic() - self._started, 3))
            self._current = None
        self._watchdog()

    def _record(self, test: Any, outcome: str, detail: str) -> None:
        if test is self._current:
            # The first failure of a test (or of its subtests) says most; later ones often follow from it.
            if self._outcome is None or self._outcome[0] == "passed":
                self._outcome = (outcome, detail)
        else:
            # Not started: a class or module fixture's error (unittest's _ErrorHolder), or a test skipped
            # by a decorator (from Python 3.12, unittest does not start those).
            test_id = test.id() if isinstance(test, unittest.TestCase) else fixture_id(test.id())
            self._emit(id=test_id, outcome=outcome, detail=detail, seconds=0.0)

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed", "")

    def addFailure(self, test: Any, err: ExcInfo) -> None:
        super().addFailure(test, err)
        self._record(test, "failed", summarize(err))

    def addError(self, test: Any, err: ExcInfo) -> None:
        super().addError(test, err)
        self._record(test, "error", summarize(err))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "passed", "")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "failed", "unexpected success of a test marked expectedFailure")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None and err[0] is not None:
            failed = issubclass(err[0], test.failureException)
            parameters = subtest.id()[len(test.id()):].strip()
            self._record(test, "failed" if failed else "error", f"subtest {parameters}: {summarize(err)}")


def summarize(err: ExcInfo, limit: int = 300) -> str:
    """The exception line of a traceback, and where in the test module it was raised."""
    kind, value, tb = err
    message = "".join(traceback.format_exception_only(kind, value)).strip().replace("\n", " | ")
    frames = [frame for frame in traceback.extract_tb(tb) if "/test/" in frame.filename.replace(os.sep, "/")]
    where = f" [{Path(frames[-1].filename).name}:{frames[-1].lineno}]" if frames else ""
    if len(message) > limit:
        message = message[:limit] + "..."
    return message + where


def fixture_id(description: str) -> str:
    """unittest names a fixture error "setUpClass (module.Class)": make it "module.Class.setUpClass"."""
    fixture, _, owner = description.partition(" (")
    return f"{owner.rstrip(')')}.{fixture}" if owner else description


def flatten(suite: unittest.TestSuite | unittest.TestCase) -> Iterator[unittest.TestCase]:
    if isinstance(suite, unittest.TestSuite):
        for test in suite:
            yield from flatten(test)
    else:
        yield suite


def run_worker(suite_name: str, *, kernel: bool, events_path: Path, only: Iterable[str], exclude: Iterable[str],
               done: Iterable[str], resources: list[str], soft_timeout: float, hard_timeout: float) -> None:
    """Run the suite's tests that ``only`` covers (all without it), but not those ``exclude`` covers
    (reported as excluded) nor those ``done`` names, in this process; report to ``events_path``."""
    from test import support

    support.verbose = 0
    support.use_resources = resources
    only, exclude, done = list(only), list(exclude), set(done)
    selected = [test for test in flatten(unittest.defaultTestLoader.loadTestsFromName(f"test.{suite_name}"))
                if not only or any(covers(entry, test.id()) for entry in only)]
    interrupter = _KernelInterrupter() if kernel else _GeventInterrupter()
    with open(events_path, "a", encoding="utf-8") as events:
        tests = []
        for test in selected:
            if any(covers(entry, test.id()) for entry in exclude):
                events.write(json.dumps({"excluded": test.id()}) + "\n")
            elif test.id() not in done:
                tests.append(test)
        result = RecordingResult(events, interrupter, soft_timeout, hard_timeout)
        # One flat suite: unittest still runs setUpModule/setUpClass once per module and class.
        unittest.TestSuite(tests).run(result)
        faulthandler.cancel_dump_traceback_later()
        events.write(json.dumps({"done": True}) + "\n")


# -- supervisor: runs workers until the suite is done ------------------------------------------------


def run_suite(suite_name: str, *, kernel: bool = False, only: Iterable[str] = (), run_excluded: bool = False,
              resources: Iterable[str] = (), soft_timeout: float = SOFT_TIMEOUT,
              hard_timeout: float = HARD_TIMEOUT, python: str = sys.executable) -> dict[str, Any]:
    """Run a suite in worker processes (``python``, this one's interpreter by default); return every
    test's outcome and the listed tests not run (see ``summary``)."""
    version = _python_version(python)
    expected = load_expected(version)[suite_name]
    not_run = [] if run_excluded else [entry for entry, reason in expected.items() if not runs(reason)]
    outcomes: dict[str, dict[str, Any]] = {}
    excluded: set[str] = set()
    workers = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"cpython-{suite_name}-") as scratch:
        while True:
            workers += 1
            events_path = Path(scratch, f"events-{workers}.jsonl")
            plan_path = Path(scratch, f"plan-{workers}.json")
            plan_path.write_text(json.dumps({"exclude": not_run, "done": sorted(outcomes)}))
            argv = [python, str(Path(__file__).resolve()), "--worker", suite_name, "--events", str(events_path),
                    "--plan", str(plan_path), "--timeout", str(soft_timeout), "--hard-timeout", str(hard_timeout)]
            argv += ["--kernel"] if kernel else []
            argv += [arg for resource in resources for arg in ("--use", resource)]
            argv += [arg for test_id in only for arg in ("--only", test_id)]
            # The tests' own output goes to stderr: stdout is for the summary.
            returncode = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                                        env=_worker_environ()).returncode
            known = len(outcomes)
            running, finished = _read_events(events_path, outcomes, excluded)
            if finished:
                break
            if running is not None:
                cause = (f"hung: no progress for {hard_timeout:g}s, the watchdog ended the process"
                         if returncode == 1 else f"the worker process died (exit status {returncode})")
                outcomes[running] = _outcome("error", cause, hard_timeout)
            elif len(outcomes) == known:    # died before its first test, or in a fixture, again
                outcomes[f"test.{suite_name}"] = _outcome("error", f"a worker exited {returncode} outside any test")
                break
            if workers == MAX_WORKERS:
                outcomes[f"test.{suite_name}"] = _outcome("error", f"gave up after {workers} workers died")
                break
    return {"suite": suite_name, "mode": "kernel" if kernel else "netsock", "python": version,
            "seconds": round(time.monotonic() - started, 1), "workers": workers, "excluded": sorted(excluded),
            "outcomes": dict(sorted(outcomes.items()))}


def _python_version(python: str) -> str:
    if python == sys.executable:
        return platform.python_version()
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _outcome(outcome: str, detail: str, seconds: float = 0.0) -> dict[str, Any]:
    return {"outcome": outcome, "detail": detail, "seconds": seconds}


def _worker_environ() -> dict[str, str]:
    """This environment without NETSOCK_* settings: the worker's stack is the loopback alone."""
    return {name: value for name, value in os.environ.items() if not name.startswith("NETSOCK_")}


def _read_events(path: Path, outcomes: dict[str, dict[str, Any]], excluded: set[str]) -> tuple[str | None, bool]:
    """Add a worker's outcomes and excluded tests; return the test it was running when it stopped, and
    whether it finished."""
    running: str | None = None
    if not path.exists():
        return None, False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:        # the last line, cut short by the process's end
            continue
        if event.get("done"):
            return None, True
        if "start" in event:
            running = event["start"]
        elif "excluded" in event:
            excluded.add(event["excluded"])
        else:
            outcomes[event["id"]] = _outcome(event["outcome"], event["detail"], event["seconds"])
            if event["id"] == running:
                running = None
    return running, False


def summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Counts, and the failing tests with their reasons."""
    by_outcome: dict[str, dict[str, str]] = {"passed": {}, "failed": {}, "error": {}, "skipped": {}}
    for test_id, result in report["outcomes"].items():
        by_outcome[result["outcome"]][test_id] = result["detail"]
    return {key: report[key] for key in ("suite", "mode", "python", "seconds", "workers")} | {
        "passed": len(by_outcome["passed"]), "skipped": len(by_outcome["skipped"]),
        "failed": len(by_outcome["failed"]), "errors": len(by_outcome["error"]),
        "excluded": report["excluded"], "failures": by_outcome["failed"], "error_ids": by_outcome["error"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("--kernel", action="store_true", help="don't patch: the kernel's sockets, for a baseline")
    parser.add_argument("--report", type=Path, help="write every test's outcome to this JSON file")
    parser.add_argument("--only", action="append", default=[], metavar="ID",
                        help="run only the tests these ids (or class ids) cover")
    parser.add_argument("--run-excluded", action="store_true",
                        help="also run the tests listed as hanging or slow")
    parser.add_argument("--use", action="append", default=[], metavar="RESOURCE",
                        help="enable a test.support resource (as regrtest -u does)")
    parser.add_argument("--timeout", type=float, default=SOFT_TIMEOUT, help="seconds per test")
    parser.add_argument("--hard-timeout", type=float, default=HARD_TIMEOUT,
                        help="seconds without progress before a worker is ended")
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose suite runs (default: this one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        plan = json.loads(args.plan.read_text())
        run_worker(args.suite, kernel=args.kernel, events_path=args.events, only=args.only, exclude=plan["exclude"],
                   done=plan["done"], resources=args.use, soft_timeout=args.timeout, hard_timeout=args.hard_timeout)
        return 0
    report = run_suite(args.suite, kernel=args.kernel, only=args.only, run_excluded=args.run_excluded,
                       resources=args.use, soft_timeout=args.timeout, hard_timeout=args.hard_timeout,
                       python=args.python)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary(report), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
