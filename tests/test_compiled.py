"""The per-packet modules mypyc compiles (netsock._compiled_modules): compiled where the build could, and CI
(NETSOCK_REQUIRE_NATIVE=1) fails if a build silently fell back to Python — the suite then tests the code users
run. Every other test runs on whichever the build made."""

from __future__ import annotations

import importlib
import importlib.machinery
import os

import pytest

from netsock._compiled_modules import COMPILED


def is_compiled(name: str) -> bool:
    return isinstance(importlib.import_module(name).__spec__.loader, importlib.machinery.ExtensionFileLoader)


@pytest.mark.skipif(os.environ.get("NETSOCK_REQUIRE_NATIVE") != "1", reason="only where the build must compile")
def test_every_per_packet_module_is_compiled() -> None:
    assert [name for name in COMPILED if not is_compiled(name)] == []


def test_the_modules_are_all_or_none_compiled() -> None:
    """mypyc builds them as one group (one shared library): a mix would mean a stale or partial build."""
    assert len({is_compiled(name) for name in COMPILED}) == 1
