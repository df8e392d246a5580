"""Builds the optional C extensions and maps patches/ to netsock.patches; all other metadata is in
pyproject.toml.

Two kinds of extension: ``native/`` (checksums, rings, batched fd I/O) through cffi, and the per-packet
modules below compiled by mypyc from their own typed Python, which stays beside them as the fallback. A
failed compile (no C compiler, no Python headers, no mypyc) must not fail the install: the package then
runs on its pure-Python fallbacks, so the build error becomes a warning. ``NETSOCK_PURE=1`` builds
without mypyc.
"""

import os
import runpy
import warnings

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# No compiler: ExecError (Unix) or PlatformError (Windows); no headers or a compile/link error:
# CCompilerError.
_BUILD_ERRORS = (CCompilerError, ExecError, PlatformError)


# The modules mypyc compiles, named in the package (which tests that they were).
COMPILED = [name.replace(".", "/") + ".py" for name in runpy.run_path("netsock/_compiled_modules.py")["COMPILED"]]


def compiled_extensions() -> list:
    """mypyc's extensions for COMPILED, or none (with a warning) where they cannot be made."""
    if os.environ.get("NETSOCK_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        warnings.warn("mypyc is not installed: netsock's per-packet modules stay pure Python")
        return []
    try:
        return mypycify([*COMPILED, "--ignore-missing-imports", "--follow-imports=silent"], opt_level="3",
                        group_name="netsock.compiled")
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        warnings.warn(f"mypyc could not compile netsock ({exc!r}); its per-packet modules stay pure Python")
        return []


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when an extension cannot be compiled."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self.failed: set[str] = set()

    def run(self) -> None:
        try:
            super().run()
        except PlatformError as exc:  # raised before any extension is tried when there is no toolchain
            warnings.warn(f"C extensions not built ({exc}); netsock falls back to pure Python")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as exc:
            self.failed.add(ext.name)
            warnings.warn(f"{ext.name} not built ({exc}); netsock falls back to pure Python")

    def copy_extensions_to_source(self) -> None:
        # In-place and editable builds copy each built extension into the tree: skip the failed ones.
        built = [ext for ext in self.extensions if ext.name not in self.failed]
        self.extensions, all_extensions = built, self.extensions
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = all_extensions


setup(
    # The stdlib patches live at the top of the tree (patches/) and install as netsock.patches.
    packages=find_packages(include=["netsock", "netsock.*"]) + ["netsock.patches"],
    package_dir={"netsock.patches": "patches"},
    cffi_modules=["netsock/_native_build.py:ffibuilder"],
    ext_modules=compiled_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
