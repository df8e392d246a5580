"""TCP MD5 signatures (RFC 2385), as Linux's TCP_MD5SIG keeps them: BGP's protection of its sessions.

A socket holds keys by peer address (or prefix); a connection to a peer with a key signs every segment
it sends with the MD5 option and drops every segment that comes without a valid one, and one to a peer
without a key drops segments that carry the option (Linux's tcp_inbound_md5_hash).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, NamedTuple

from ...header import tcp

if TYPE_CHECKING:
    from ...tcpip.stats import TCPStats
    from .segment import Segment

KIND = 19
# NOP, NOP, kind, length, then the 16-byte digest: Linux writes it so, first among the options.
OPTION_HEAD = bytes((tcp.OPT_NOP, tcp.OPT_NOP, KIND, 18))
OPTION_SIZE = 20
PLACEHOLDER = OPTION_HEAD + bytes(16)
DIGEST_OFFSET = tcp.MIN_SIZE + len(OPTION_HEAD)   # where the digest sits in a header that carries it first
MAX_KEY_LENGTH = 80                     # TCP_MD5SIG_MAXKEYLEN


class MD5Key(NamedTuple):
    address: bytes      # 4 or 16 bytes: an IPv4 key on an IPv6 socket (a mapped address) is an IPv4 one
    prefix: int         # bits of ``address`` that must match (TCP_MD5SIG_EXT's prefix; all of them else)
    key: bytes


def best_key(keys: list[MD5Key], address: bytes) -> bytes | None:
    """The key for a peer: that of the longest matching prefix, as Linux's tcp_md5_do_lookup."""
    best: MD5Key | None = None
    value = int.from_bytes(address, "big")
    bits = len(address) * 8
    for entry in keys:
        if len(entry.address) == len(address) and (best is None or entry.prefix > best.prefix):
            shift = bits - entry.prefix
            if value >> shift == int.from_bytes(entry.address, "big") >> shift:
                best = entry
    return best.key if best is not None else None


def digest(src: bytes, dst: bytes, segment: bytes | bytearray | memoryview, payload: bytes | memoryview,
           key: bytes) -> bytes:
    """RFC 2385 §2.0: MD5 over the pseudo-header, the TCP header without options and with a zero checksum
    (``segment`` starts with it), the payload and the key."""
    length = (segment[12] >> 4) * 4 + len(payload)
    if len(src) == 4:
        pseudo = src + dst + bytes((0, tcp.PROTOCOL_NUMBER)) + length.to_bytes(2, "big")
    else:
        pseudo = src + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, tcp.PROTOCOL_NUMBER))
    md5 = hashlib.md5(pseudo, usedforsecurity=False)
    md5.update(bytes(segment[:16]) + b"\0\0" + bytes(segment[18:20]))
    md5.update(payload)
    md5.update(key)
    return md5.digest()


def find(options: bytes | memoryview) -> bytes | None:
    """The digest an options area carries, None if it has no (well-formed) MD5 option."""
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == tcp.OPT_EOL:
            return None
        if kind == tcp.OPT_NOP:
            i += 1
            continue
        if i + 1 >= n or options[i + 1] < 2:
            return None
        length = options[i + 1]
        if kind == KIND:
            return bytes(options[i + 2:i + 18]) if length == 18 and i + 18 <= n else None
        i += length
    return None


def accepts(key: bytes | None, seg: Segment, header: memoryview, stats: TCPStats) -> bool:
    """Linux's tcp_inbound_md5_hash: with a ``key`` for the sender, the segment (its TCP ``header`` as
    received) must carry its signature; without one, no signature at all. A drop is counted in ``stats``."""
    carried = find(header[tcp.MIN_SIZE:]) if len(header) > tcp.MIN_SIZE else None
    if key is None:
        if carried is None:
            return True
        stats.md5_unexpected.increment()
    elif carried is None:
        stats.md5_not_found.increment()
    elif signed_with(key, seg, header, carried):
        return True
    else:
        stats.md5_failure.increment()
    return False


def signed_with(key: bytes, seg: Segment, header: memoryview, carried: bytes) -> bool:
    """Whether ``carried``, the digest the segment's TCP ``header`` holds, is its signature with ``key``."""
    return hmac.compare_digest(digest(seg.src, seg.dst, header, seg.data, key), carried)


def sign(header: memoryview, src: bytes, dst: bytes, payload: bytes | memoryview, key: bytes) -> None:
    """Fill in the digest of a header whose options begin with ``PLACEHOLDER`` (before its checksum)."""
    header[DIGEST_OFFSET:DIGEST_OFFSET + 16] = digest(src, dst, header, payload, key)
