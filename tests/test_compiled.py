"""The per-packet modules mypyc compiles (netsock._compiled_modules): compiled where the build could, and CI
(NETSOCK_REQUIRE_NATIVE=1) fails if a build silently fell back to Python — the suite then tests the code users
run. Every other test runs on whichever the build made."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
from pathlib import Path

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


def test_an_in_place_build_is_not_older_than_its_sources() -> None:
    """An editable install builds the modules beside their sources: one edited since imports the old code until
    ``python setup.py build_ext --inplace`` runs again (or NETSOCK_PURE=1 builds none). Installed copies are
    not checked: their files' times are the installer's."""
    import netsock
    tree = Path(netsock.__file__).resolve().parent
    if not (tree.parent / ".git").exists() or not is_compiled(COMPILED[0]):
        pytest.skip("not an in-place build in a checkout")
    library = importlib.util.find_spec("netsock.compiled__mypyc")      # the group's code, built as one
    assert library is not None and library.origin is not None
    built = Path(library.origin).stat().st_mtime
    stale = [name for name in COMPILED
             if (tree.parent / (name.replace(".", "/") + ".py")).stat().st_mtime > built]
    assert stale == [], "rebuild: python setup.py build_ext --inplace"
