"""Builds the optional C extension and maps patches/ to netsock.patches; all other metadata is in
pyproject.toml.

A failed compile (no C compiler, no Python headers) must not fail the install: the package then
runs on its pure-Python fallbacks, so the build error becomes a warning.
"""

import warnings

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# No compiler: ExecError (Unix) or PlatformError (Windows); no headers or a compile/link error:
# CCompilerError.
_BUILD_ERRORS = (CCompilerError, ExecError, PlatformError)


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
    cmdclass={"build_ext": OptionalBuildExt},
)
