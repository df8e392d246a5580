"""Wire formats: parse, validate and build protocol headers.

Parsers return a NamedTuple of the fields, or a ``Malformed`` value saying why the bytes are not a
valid header; they never raise on bad input, so a hostile packet becomes a counted drop one layer
up. Builders write into a caller-provided writable buffer (the room ``PacketBuffer.prepend`` gives)
so that no intermediate bytes objects are made on the send path.
"""

import enum


class Malformed(enum.Enum):
    """Why a header failed validation."""

    TRUNCATED = "truncated"
    BAD_VERSION = "bad version"
    BAD_HEADER_LENGTH = "bad header length"
    BAD_TOTAL_LENGTH = "bad total length"
    BAD_CHECKSUM = "bad checksum"
    BAD_OPTIONS = "bad options"
    BAD_FIELD = "bad field"

    def __bool__(self) -> bool:  # so `if not hdr:` reads as "did not parse"
        return False
