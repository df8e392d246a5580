"""Socket filters (SO_ATTACH_FILTER, classic BPF) as Linux's: which programs attach, what each keeps
of the datagrams a UDP socket receives over loopback, and the detach / lock / read-back options —
every case run on a kernel socket and on a NetsockSocket and compared. Then TCP and packet sockets."""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pytest

from netsock.adapter import NetsockSocket
from netsock.privnet import Network
from netsock.stack import bpf
from netsock.stack.bpf import Filter, Instruction, Packet

SO_ATTACH_FILTER, SO_DETACH_FILTER, SO_LOCK_FILTER = 26, 27, 44
FPROG = struct.Struct("HP")


def insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k & 0xFFFFFFFF)


def ret(k: int) -> tuple[int, int, int, int]:
    return insn(bpf.RET | bpf.K, k)


ACCEPT_IF = [ret(0xFFFF), ret(0)]           # after a test that jumps 0 to accept, 1 to drop


def attach(sock: Any, program: list[tuple[int, int, int, int]]) -> Any:
    """Attach ``program`` as a C caller would: a sock_fprog pointing at the instructions."""
    buffer = ctypes.create_string_buffer(b"".join(bpf.INSTRUCTION.pack(*i) for i in program) or b"\0")
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, FPROG.pack(len(program), ctypes.addressof(buffer)))
    return buffer


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except TimeoutError:
        return "fails", "timeout"
    except OSError as error:
        return "fails", errno.errorcode[error.errno]


# --- which programs attach -----------------------------------------------------------------------------------

CHECKS = {
    "accept all": [ret(0xFFFF)],
    "empty": [],
    "too long": [ret(0)] * 4097,
    "longest": [ret(1)] * 4096,
    "unknown opcode": [insn(0xFF), ret(0)],
    "jump out": [insn(bpf.JMP | bpf.JEQ | bpf.K, 1, jt=5), ret(0)],
    "ja out": [insn(bpf.JMP | bpf.JA, 1), ret(0)],
    "divide by constant 0": [insn(bpf.ALU | bpf.DIV | bpf.K, 0), ret(0)],
    "modulo by constant 0": [insn(bpf.ALU | bpf.MOD | bpf.K, 0), ret(0)],
    "shift by 32": [insn(bpf.ALU | bpf.LSH | bpf.K, 32), ret(0)],
    "shift by 31": [insn(bpf.ALU | bpf.RSH | bpf.K, 31), ret(0)],
    "scratch 16": [insn(bpf.ST, 16), ret(0)],
    "read before write": [insn(bpf.LD | bpf.MEM, 3), ret(0)],
    "read after write": [insn(bpf.ST, 3), insn(bpf.LD | bpf.MEM, 3), ret(0)],
    "written on one path only": [insn(bpf.JMP | bpf.JEQ | bpf.K, 0, jt=1), insn(bpf.ST, 2),
                                 insn(bpf.LDX | bpf.W | bpf.MEM, 2), ret(0)],
    "no return at the end": [insn(bpf.LD | bpf.W | bpf.LEN)],
    "return A": [insn(bpf.LD | bpf.W | bpf.LEN), insn(bpf.RET | bpf.A_SOURCE)],
    "known ancillary": [insn(bpf.LD | bpf.H | bpf.ABS, bpf.SKF_AD_OFF + bpf.AD_PROTOCOL), ret(0)],
    "unknown ancillary": [insn(bpf.LD | bpf.W | bpf.ABS, bpf.SKF_AD_OFF + 0x100), ret(0)],
    "network offset": [insn(bpf.LD | bpf.B | bpf.ABS, bpf.SKF_NET_OFF + 9), ret(0)],
}


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("name", CHECKS)
def test_which_programs_attach_as_on_the_kernel(name: str) -> None:
    def steps(sock: Any) -> Any:
        keep = attach(sock, CHECKS[name])
        del keep
        # SO_GET_FILTER: Linux takes the buffer's length for a count of instructions and writes them all,
        # so only a buffer of 8 bytes per instruction is safe to read into (none of these is longer).
        return sock.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 1024)

    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as kernel, \
            NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as ours:
        assert outcome(lambda: steps(ours)) == outcome(lambda: steps(kernel))


@pytest.mark.usefixtures("stack")
def test_a_null_or_short_program_description_is_refused_as_on_the_kernel() -> None:
    for raw in (FPROG.pack(1, 0), b"\0" * 8):
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as kernel, \
                NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as ours:
            assert outcome(lambda: ours.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, raw)) == \
                outcome(lambda: kernel.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, raw))


# --- what programs keep -------------------------------------------------------------------------------------

def jeq(value: int) -> tuple[int, int, int, int]:
    return insn(bpf.JMP | bpf.JEQ | bpf.K, value, jt=0, jf=1)


PROGRAMS = {
    "drop all": [ret(0)],
    # (A callable: the program for the sender's port, which each run takes from the system.)
    "source port": lambda port: [insn(bpf.LD | bpf.H | bpf.ABS, 0), jeq(port), *ACCEPT_IF],
    "other source port": lambda port: [insn(bpf.LD | bpf.H | bpf.ABS, 0), jeq(port + 1), *ACCEPT_IF],
    "length 13": [insn(bpf.LD | bpf.W | bpf.LEN), jeq(13), *ACCEPT_IF],
    "truncate to 11": [ret(11)],
    "truncate into the header": [ret(3)],
    "IP protocol via SKF_NET_OFF": [insn(bpf.LD | bpf.B | bpf.ABS, bpf.SKF_NET_OFF + 9), jeq(17), *ACCEPT_IF],
    "IP header length via MSH, then the payload": [
        insn(bpf.LDX | bpf.B | bpf.MSH, bpf.SKF_NET_OFF), insn(bpf.LD | bpf.B | bpf.IND, bpf.SKF_NET_OFF + 8),
        jeq(ord("h")), *ACCEPT_IF],
    "beyond the end": [insn(bpf.LD | bpf.W | bpf.ABS, 1000), ret(0xFFFF)],
    "divide by X = 0": [insn(bpf.LDX | bpf.W | bpf.IMM, 0), insn(bpf.ALU | bpf.DIV | bpf.X), ret(0xFFFF)],
    "arithmetic": [insn(bpf.LD | bpf.IMM, 7), insn(bpf.ALU | bpf.MUL | bpf.K, 6), insn(bpf.ALU | bpf.SUB | bpf.K, 2),
                   insn(bpf.ALU | bpf.LSH | bpf.K, 1), insn(bpf.ALU | bpf.XOR | bpf.K, 0x50), insn(bpf.ALU | bpf.NEG),
                   insn(bpf.ALU | bpf.AND | bpf.K, 0xFF), insn(bpf.ALU | bpf.OR | bpf.K, 0x100),
                   insn(bpf.ALU | bpf.MOD | bpf.K, 200), insn(bpf.ALU | bpf.RSH | bpf.K, 1),   # 28
                   insn(bpf.ALU | bpf.SUB | bpf.K, 18), insn(bpf.RET | bpf.A_SOURCE)],           # 2 bytes of payload
    "scratch and TAX": [insn(bpf.LD | bpf.W | bpf.LEN), insn(bpf.ST, 5), insn(bpf.LD | bpf.IMM, 3),
                        insn(bpf.MISC | bpf.TAX), insn(bpf.LD | bpf.MEM, 5), insn(bpf.ALU | bpf.SUB | bpf.X),
                        insn(bpf.RET | bpf.A_SOURCE)],                                           # 3 bytes less
    "TXA and ADD X": [insn(bpf.LDX | bpf.W | bpf.IMM, 4), insn(bpf.MISC | bpf.TXA), insn(bpf.ALU | bpf.ADD | bpf.X),
                      insn(bpf.ALU | bpf.ADD | bpf.K, 3), insn(bpf.RET | bpf.A_SOURCE)],         # 11: 3 of payload
    "jset and jgt": [insn(bpf.LD | bpf.B | bpf.ABS, 8), insn(bpf.JMP | bpf.JSET | bpf.K, 0x01, jt=0, jf=2),
                     insn(bpf.JMP | bpf.JGT | bpf.K, 0x60, jt=0, jf=1), *ACCEPT_IF],
    "EtherType, packet type, interface, hardware type": [
        insn(bpf.LD | bpf.H | bpf.ABS, bpf.SKF_AD_OFF + bpf.AD_PROTOCOL), jeq(0x0800), insn(bpf.JMP | bpf.JA, 7),
        insn(bpf.LD | bpf.B | bpf.ABS, bpf.SKF_AD_OFF + bpf.AD_PKTTYPE), jeq(0), insn(bpf.JMP | bpf.JA, 4),
        insn(bpf.LD | bpf.W | bpf.ABS, bpf.SKF_AD_OFF + bpf.AD_IFINDEX), jeq(1), insn(bpf.JMP | bpf.JA, 1),
        insn(bpf.LD | bpf.W | bpf.ABS, bpf.SKF_AD_OFF + bpf.AD_HATYPE), insn(bpf.RET | bpf.A_SOURCE), ret(0)],
}
PAYLOADS = (b"hello", b"goodbye, world", b"")


def received(make: Callable[..., Any], entry: Any) -> list[Any]:
    """What a UDP socket with program ``entry`` attached reads of each of PAYLOADS sent to it over loopback."""
    with closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as receiver, \
            closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as sender:
        receiver.bind(("127.0.0.1", 0))
        sender.bind(("127.0.0.1", 0))
        keep = attach(receiver, entry(sender.getsockname()[1]) if callable(entry) else entry)
        got = []
        for payload in PAYLOADS:
            sender.sendto(payload, receiver.getsockname())
        sender.sendto(b"end", receiver.getsockname())
        receiver.settimeout(0.5)
        detach = outcome(lambda: receiver.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0))
        sender.sendto(b"end", receiver.getsockname())       # after the detach: always arrives
        while (data := outcome(lambda: receiver.recv(100))) != b"end" and not isinstance(data, tuple):
            got.append(data)
        del keep
        return [got, detach]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("name", PROGRAMS)
def test_what_a_program_keeps_as_on_the_kernel(name: str) -> None:
    assert received(NetsockSocket, PROGRAMS[name]) == received(socket.socket, PROGRAMS[name])


@pytest.mark.usefixtures("stack")
def test_detach_read_back_and_lock_as_on_the_kernel() -> None:
    def steps(sock: Any) -> list:
        seen = [outcome(lambda: sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0))]    # none attached
        keep = attach(sock, PROGRAMS["source port"](9))
        seen.append(sock.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 64))      # the instructions
        seen.append(outcome(lambda: sock.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 2)))   # too small
        sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)
        seen.append(sock.getsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER))
        seen.append(outcome(lambda: attach(sock, [ret(0)])))
        seen.append(outcome(lambda: sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)))
        seen.append(outcome(lambda: sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 0)))
        seen.append(outcome(lambda: sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)))
        del keep
        return seen

    with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as kernel, \
            NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as ours:
        assert steps(ours) == steps(kernel)


# --- TCP and packet sockets ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_a_listener_s_filter_keeps_out_the_connections_it_drops() -> None:
    # The listener's program sees each SYN (the TCP header at 0) and its connections inherit it.
    for make in (socket.socket, NetsockSocket):
        with closing(make(socket.AF_INET, socket.SOCK_STREAM)) as listener, \
                closing(make(socket.AF_INET, socket.SOCK_STREAM)) as blocked:
            blocked.bind(("127.0.0.1", 0))
            drop_from = [insn(bpf.LD | bpf.H | bpf.ABS, 0), jeq(blocked.getsockname()[1]), ret(0), ret(0xFFFF)]
            listener.bind(("127.0.0.1", 0))
            keep = attach(listener, drop_from)
            listener.listen()
            blocked.settimeout(0.5)
            assert outcome(lambda: blocked.connect(listener.getsockname())) == ("fails", "timeout"), make
            with closing(make(socket.AF_INET, socket.SOCK_STREAM)) as client:
                client.settimeout(5)
                client.connect(listener.getsockname())
                accepted, _ = listener.accept()
                with closing(accepted):
                    assert accepted.getsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, 64)    # inherited
                    client.sendall(b"through")
                    assert accepted.recv(100) == b"through"
            del keep


@pytest.fixture
def lan() -> Iterator[tuple[Any, Any]]:
    with Network(seed=5) as net:
        segment = net.switch("lan", "192.0.2.0/24")
        yield net.host("a.test", segment), net.host("b.test", segment)


def test_a_packet_socket_reads_only_the_frames_its_program_keeps(lan: tuple[Any, Any]) -> None:
    a, b = lan
    # As tcpdump -dd "udp dst port 53" compiles it for Ethernet (IPv4 only, unfragmented).
    udp_dns = [insn(bpf.LD | bpf.H | bpf.ABS, 12), insn(bpf.JMP | bpf.JEQ | bpf.K, 0x0800, jt=0, jf=8),
               insn(bpf.LD | bpf.B | bpf.ABS, 23), insn(bpf.JMP | bpf.JEQ | bpf.K, 17, jt=0, jf=6),
               insn(bpf.LD | bpf.H | bpf.ABS, 20), insn(bpf.JMP | bpf.JSET | bpf.K, 0x1FFF, jt=4, jf=0),
               insn(bpf.LDX | bpf.B | bpf.MSH, 14), insn(bpf.LD | bpf.H | bpf.IND, 16),
               insn(bpf.JMP | bpf.JEQ | bpf.K, 53, jt=0, jf=1), ret(262144), ret(0)]
    with NetsockSocket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3), stack=b.stack) as sniffer, \
            NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=a.stack) as sender:
        keep = attach(sniffer, udp_dns)
        sniffer.settimeout(2)
        for port in (54, 53, 5353):
            sender.sendto(b"query %d" % port, (b.address, port))
        frame = sniffer.recv(2000)
        assert frame.endswith(b"query 53") and frame[12:14] == b"\x08\x00"
        sniffer.settimeout(0.3)         # nothing else passes: not the other ports, ARP or ICMP errors
        with pytest.raises(TimeoutError):
            sniffer.recv(2000)
        del keep


def test_the_interpreter_on_its_own() -> None:
    program = Filter([Instruction(*insn(bpf.LD | bpf.W | bpf.LEN)), Instruction(*insn(bpf.RET | bpf.A_SOURCE))])
    assert program.run(Packet(b"linkhdr" + b"payload", start=7, network=7)) == 7
    assert Filter.unpack(program.pack()).instructions == program.instructions
    with pytest.raises(ValueError, match="last instruction"):
        Filter([Instruction(*insn(bpf.LD | bpf.W | bpf.LEN))])
