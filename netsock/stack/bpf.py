"""Classic BPF socket filters (Linux's SO_ATTACH_FILTER): the checker and the interpreter.

A filter is a program of ``struct sock_filter`` instructions run on each packet a socket is about
to receive; it returns how many bytes of it to keep (0: drop it). The checker refuses what Linux's
``bpf_check_classic`` refuses (EINVAL at attach time): no program or more than 4,096 instructions,
an unknown opcode, a jump out of the program, a division by a constant 0, a shift by 32 or more, a
scratch word outside the 16, one read before every path to it has written it, an unknown ancillary
load, and a last instruction that does not return. The interpreter follows Linux's semantics: a
load beyond the packet, or a division by X = 0, ends the program returning 0.

What offset 0 is depends on the socket, as on Linux: the UDP header for a UDP socket, the IP
header for an IPv4 raw socket, the frame (or, for SOCK_DGRAM, the network header) for a packet
socket. Offsets from SKF_NET_OFF and SKF_LL_OFF reach the network and link headers, and the
ancillary offsets from SKF_AD_OFF the packet's metadata (``Packet``).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .packet_buffer import PacketBuffer

MAX_INSTRUCTIONS = 4096         # BPF_MAXINSNS
MEMORY_WORDS = 16               # BPF_MEMWORDS
INSTRUCTION = struct.Struct("HBBI")     # struct sock_filter, native order

# Instruction classes, sizes, modes, operations and sources (<linux/bpf_common.h>).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
A_SOURCE = 0x10                 # BPF_RET | BPF_A
TAX, TXA = 0x00, 0x80

SKF_AD_OFF = 0xFFFFF000         # -0x1000 as the u32 ``k`` holds it
SKF_NET_OFF = 0xFFF00000        # -0x100000
SKF_LL_OFF = 0xFFE00000         # -0x200000
# Ancillary loads (SKF_AD_OFF + ...): the metadata each reads.
AD_PROTOCOL, AD_PKTTYPE, AD_IFINDEX, AD_NLATTR, AD_NLATTR_NEST, AD_MARK, AD_QUEUE, AD_HATYPE, AD_RXHASH, \
    AD_CPU, AD_ALU_XOR_X, AD_VLAN_TAG, AD_VLAN_TAG_PRESENT, AD_PAY_OFFSET, AD_RANDOM, AD_VLAN_TPID = range(0, 64, 4)

_ALU_OPS = (ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, MOD, XOR)
_VALID = frozenset(
    [ALU | op | src for op in _ALU_OPS for src in (K, X)] + [ALU | NEG]
    + [LD | size | mode for size in (W, H, B) for mode in (ABS, IND)] + [LD | W | LEN, LD | IMM, LD | MEM]
    + [LDX | W | IMM, LDX | W | LEN, LDX | W | MEM, LDX | B | MSH, ST, STX, MISC | TAX, MISC | TXA]
    + [RET | K, RET | A_SOURCE, JMP | JA] + [JMP | op | src for op in (JEQ, JGT, JGE, JSET) for src in (K, X)])
_MASK = 0xFFFFFFFF
_ANCILLARY = frozenset(range(AD_PROTOCOL, AD_VLAN_TPID + 4, 4))


class Instruction(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


class Packet(NamedTuple):
    """What a filter runs on: ``data`` from the link header on, offset 0 at ``start``, the network
    header at ``network``; and the metadata the ancillary loads read."""

    data: bytes
    start: int = 0
    network: int = 0
    protocol: int = 0           # EtherType
    pkt_type: int = 0
    ifindex: int = 0
    hatype: int = 0
    mark: int = 0
    rxhash: int = 0


class Filter:
    """A checked program (raises ValueError, Linux's EINVAL, for one Linux refuses)."""

    __slots__ = ("instructions",)

    def __init__(self, instructions: Sequence[Instruction]) -> None:
        check(instructions)
        self.instructions = tuple(instructions)

    @classmethod
    def unpack(cls, raw: bytes) -> Filter:
        """From ``struct sock_filter`` bytes, as a sock_fprog points to them."""
        return cls([Instruction(*fields) for fields in INSTRUCTION.iter_unpack(raw)])

    def pack(self) -> bytes:
        return b"".join(INSTRUCTION.pack(*insn) for insn in self.instructions)

    def run(self, packet: Packet) -> int:
        """Bytes of the packet (from offset 0) to keep: 0 drops it."""
        return min(_run(self.instructions, packet), len(packet.data) - packet.start)

    def keeps(self, pkt: PacketBuffer, head: bytes, body: bytes | memoryview, network: int,
              nics: Mapping[int, Any]) -> int:
        """``run`` on a received packet: offset 0 is the start of ``body``, which follows ``head`` (the
        headers before it, the network header at ``network``); the metadata from the packet and its
        NIC (one of ``nics``)."""
        return self.run(_received(pkt, head, body, network, nics))

    def choice(self, pkt: PacketBuffer, head: bytes, body: bytes | memoryview, network: int,
               nics: Mapping[int, Any]) -> int:
        """The program's own return value on a received packet, laid out as for ``keeps`` (SO_ATTACH_REUSEPORT_CBPF's
        program returns the index of the socket to take it)."""
        return _run(self.instructions, _received(pkt, head, body, network, nics))


def _received(pkt: PacketBuffer, head: bytes, body: bytes | memoryview, network: int,
              nics: Mapping[int, Any]) -> Packet:
    nic = nics.get(pkt.nic_id)
    return Packet(bytes(head) + bytes(body), len(head), network, pkt.network_protocol, pkt.pkt_type, pkt.nic_id,
                  nic.hardware_type if nic is not None else 0, pkt.mark, pkt.hash)


def check(program: Sequence[Instruction]) -> None:
    """Linux's bpf_check_classic and check_load_and_stores."""
    count = len(program)
    if not 0 < count <= MAX_INSTRUCTIONS:
        raise ValueError(f"a filter has 1 to {MAX_INSTRUCTIONS} instructions, not {count}")
    for pc, (code, jt, jf, k) in enumerate(program):
        if code not in _VALID:
            raise ValueError(f"instruction {pc}: unknown opcode {code:#x}")
        kind, op = code & 0x07, code & 0xF0
        if kind == ALU and code & X == K and (op in (DIV, MOD) and k == 0 or op in (LSH, RSH) and k >= 32):
            raise ValueError(f"instruction {pc}: division by zero or shift by {k}")
        if (code in (LD | MEM, LDX | W | MEM, ST, STX)) and k >= MEMORY_WORDS:
            raise ValueError(f"instruction {pc}: scratch word {k} out of range")
        if kind == LD and code & 0xE0 == ABS and k >= SKF_AD_OFF and k - SKF_AD_OFF not in _ANCILLARY:
            raise ValueError(f"instruction {pc}: unknown ancillary load {k:#x}")
        if kind == JMP:
            targets = (pc + 1 + k,) if op == JA else (pc + 1 + jt, pc + 1 + jf)
            if any(target >= count for target in targets):
                raise ValueError(f"instruction {pc}: a jump out of the program")
    if program[-1].code not in (RET | K, RET | A_SOURCE):
        raise ValueError("a filter's last instruction returns")
    _check_memory(program)


def _check_memory(program: Sequence[Instruction]) -> None:
    """Every scratch word read must have been written on every path there (check_load_and_stores)."""
    masks = [0xFFFF] * len(program)
    valid = 0
    for pc, (code, jt, jf, k) in enumerate(program):
        valid &= masks[pc]
        if code in (ST, STX):
            valid |= 1 << k
        elif code in (LD | MEM, LDX | W | MEM):
            if not valid & (1 << k):
                raise ValueError(f"instruction {pc}: scratch word {k} read before it is written")
        elif code == JMP | JA:
            masks[pc + 1 + k] &= valid
            valid = 0xFFFF
        elif code & 0x07 == JMP:
            masks[pc + 1 + jt] &= valid
            masks[pc + 1 + jf] &= valid
            valid = 0xFFFF


def _load(packet: Packet, offset: int, size: int) -> int | None:
    """``size`` bytes at ``offset`` (a u32: the negative ones reach the network and link headers)."""
    if offset >= SKF_LL_OFF:
        if offset >= SKF_NET_OFF:
            at = packet.network + offset - SKF_NET_OFF
        else:
            at = offset - SKF_LL_OFF
    else:
        at = packet.start + offset
    data = packet.data
    if at + size > len(data):
        return None
    return int.from_bytes(data[at:at + size], "big")


# The ancillary loads that read a field of the packet's metadata.
_METADATA = {AD_PROTOCOL: "protocol", AD_PKTTYPE: "pkt_type", AD_IFINDEX: "ifindex", AD_HATYPE: "hatype",
             AD_MARK: "mark", AD_RXHASH: "rxhash"}


def _ancillary(packet: Packet, which: int, a: int, x: int) -> int:
    field_name = _METADATA.get(which)
    if field_name is not None:
        return getattr(packet, field_name)
    if which == AD_RANDOM:
        return random.getrandbits(32)
    if which == AD_ALU_XOR_X:
        return a ^ x
    return 0    # queue, CPU, VLAN, netlink attributes, payload offset: none here


_SIZES = {W: 4, H: 2, B: 1}


def _run(program: tuple[Instruction, ...], packet: Packet) -> int:
    a = x = 0
    memory = [0] * MEMORY_WORDS
    length = len(packet.data) - packet.start
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        kind = code & 0x07
        if kind == LD or kind == LDX:
            mode = code & 0xE0
            if mode == IMM:
                value = k
            elif mode == LEN:
                value = length
            elif mode == MEM:
                value = memory[k]
            elif mode == MSH:
                byte = _load(packet, k, 1)
                if byte is None:
                    return 0
                value = (byte & 0x0F) << 2
            elif mode == ABS and k >= SKF_AD_OFF:
                value = _ancillary(packet, k - SKF_AD_OFF, a, x)
            else:
                loaded = _load(packet, k if mode == ABS else (x + k) & _MASK, _SIZES[code & 0x18])
                if loaded is None:
                    return 0
                value = loaded
            if kind == LD:
                a = value
            else:
                x = value
        elif kind == ST:
            memory[k] = a
        elif kind == STX:
            memory[k] = x
        elif kind == ALU:
            op = code & 0xF0
            if op == NEG:
                a = -a & _MASK
                continue
            operand = x if code & X else k
            if op == ADD:
                a = (a + operand) & _MASK
            elif op == SUB:
                a = (a - operand) & _MASK
            elif op == MUL:
                a = (a * operand) & _MASK
            elif op in (DIV, MOD):
                if not operand:
                    return 0
                a = a // operand if op == DIV else a % operand
            elif op == OR:
                a |= operand
            elif op == AND:
                a &= operand
            elif op == XOR:
                a ^= operand
            elif op == LSH:
                a = (a << operand) & _MASK if operand < 32 else 0
            else:
                a = a >> operand if operand < 32 else 0
        elif kind == JMP:
            op = code & 0xF0
            if op == JA:
                pc += k
                continue
            operand = x if code & X else k
            taken = (a == operand if op == JEQ else a > operand if op == JGT else a >= operand if op == JGE
                     else bool(a & operand))
            pc += jt if taken else jf
        elif kind == RET:
            return a if code & A_SOURCE else k
        else:   # MISC
            if code & 0xF8 == TXA:
                a = x
            else:
                x = a
