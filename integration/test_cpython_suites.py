"""CPython's own test_socket, test_selectors and test_ssl under ``netsock.patch_all()``, on netsock's
loopback: every failure must be one that cpython_expected_failures.toml lists with its reason, and
every listed failure must still fail, so that the list only shrinks as netsock gets fixed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from integration.cpython_suites import SUITES, covers, load_expected, runs, summary

RUNNER = Path(__file__).resolve().with_name("cpython_suites.py")
SUITE_TIMEOUT = 600         # seconds; the three suites take about 90 s together (2 cores)


@pytest.mark.parametrize("suite", SUITES)
def test_cpython_suite_fails_only_as_listed(suite: str, tmp_path: Path) -> None:
    assert importlib.util.find_spec(f"test.{suite}") is not None, (
        f"this Python has no test.{suite}: install its test suite (Debian: libpython3.11-testsuite)")
    report_path = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(RUNNER), suite, "--report", str(report_path)],
                         check=False, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    assert run.returncode == 0 and report_path.exists(), f"the runner failed:\n{run.stderr[-10000:]}"
    report = json.loads(report_path.read_text())
    counts = summary(report)
    print(f"{suite} under netsock (Python {counts['python']}, {counts['seconds']}s): {counts['passed']} passed, "
          f"{counts['failed']} failed, {counts['errors']} errors, {counts['skipped']} skipped, "
          f"{len(counts['excluded'])} listed as hanging or slow, not run")

    expected = load_expected(report["python"])[suite]
    outcomes = report["outcomes"]
    failing = {test_id: result["detail"] for test_id, result in outcomes.items()
               if result["outcome"] in ("failed", "error")}
    passed = [test_id for test_id, result in outcomes.items() if result["outcome"] == "passed"]

    problems = [f"{test_id} {detail}: fails, but cpython_expected_failures.toml does not list it"
                for test_id, detail in sorted(failing.items()) if not any(covers(entry, test_id) for entry in expected)]
    for entry, reason in expected.items():
        if not runs(reason):
            if not any(covers(entry, test_id) for test_id in report["excluded"]):
                problems.append(f"{entry}: listed as not to run, but names no test of this Python's {suite}")
        elif any(covers(entry, test_id) for test_id in passed):
            problems.append(f"{entry}: listed as failing, but passes: remove it from the list")
        elif not any(covers(entry, test_id) for test_id in failing):
            problems.append(f"{entry}: listed as failing, but did not fail (not in this Python's {suite}, or "
                            "skipped): remove it, or limit it to the Python versions it fails on")
    assert not problems, "\n".join(problems) + f"\n\nthe suite's output (end):\n{run.stderr[-5000:]}"
