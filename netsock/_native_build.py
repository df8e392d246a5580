"""cffi builder (API mode) for ``netsock._native``: the C hot paths, for now only the checksum.

setup.py names it in ``cffi_modules``; the build is optional, and every caller falls back to pure
Python when the module is absent.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("uint16_t ns_checksum(const uint8_t *buf, size_t len, uint32_t initial);")
ffibuilder.set_source(
    "netsock._native",
    '#include "checksum.h"',
    # Relative to the project root, where setuptools runs the build; relative paths also keep
    # the sources listed in an sdist.
    sources=["native/checksum.c"],
    include_dirs=["native"],
)
