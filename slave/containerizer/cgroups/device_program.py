"""cgroup v2 device control: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program per container.

cgroup v2 has no ``devices.allow``; the kernel instead runs a BPF program
attached to the cgroup (``BPF_CGROUP_DEVICE``) on every open and mknod of a
device node by its processes, and refuses (EPERM) when it returns 0
(Documentation/admin-guide/cgroup-v2.rst, "Device controller"). As runc's
``libcontainer/cgroups/devices/devicefilter.go`` does, the program is made
from the same allow rules as v1's (devices.py: ``type major:minor access``
with ``*`` wildcards): one block per rule, first match allows, default deny.
It needs no cgroup2 controller, so it works on this hybrid host's bare
cgroup2 mount too (tested there: tests/integration/containerizer/
test_cgroups_v2_kernel.py). The attachment holds the program; it goes away
with the cgroup.

The program reads ``struct bpf_cgroup_dev_ctx``: ``access_type`` (low 16
bits the node type, ``BPF_DEVCG_DEV_BLOCK`` 1 / ``_CHAR`` 2; high 16 the
access, ``BPF_DEVCG_ACC_MKNOD`` 1 / ``_READ`` 2 / ``_WRITE`` 4), ``major``,
``minor``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from corral.slave.containerizer.errors import CgroupError

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_ATTR_SIZE = 144  # union bpf_attr is larger; the kernel wants the tail zeroed

_TYPES = {"c": 2, "b": 1}
_ACCESS = {"m": 1, "r": 2, "w": 4}

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc["syscall"]
_syscall.restype = ctypes.c_long


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


# eBPF opcodes used below
_LDXW = 0x61  # dst = *(u32 *)(src + off)
_MOV_IMM = 0xB7  # dst = imm (64-bit)
_MOV_REG = 0xBF  # dst = src
_AND_IMM = 0x57
_RSH_IMM = 0x77
_JNE_IMM = 0x55  # if dst != imm goto +off
_EXIT = 0x95


def _rule_block(rule: str) -> list[bytes]:
    """Instructions that return 1 when the device matches ``rule`` and fall through otherwise."""
    kind, numbers, access = rule.split()
    major, minor = numbers.split(":")
    checks: list[bytes] = []
    if kind != "a":
        checks.append(_insn(_JNE_IMM, 2, 0, 0, _TYPES[kind]))  # r2: type
    denied = 7 & ~sum(_ACCESS[a] for a in access)
    if denied:
        # The access asked (r3) must hold none of the bits this rule lacks.
        checks += [_insn(_MOV_REG, 1, 3), _insn(_AND_IMM, 1, 0, 0, denied), _insn(_JNE_IMM, 1, 0, 0, 0)]
    if major != "*":
        checks.append(_insn(_JNE_IMM, 4, 0, 0, int(major)))  # r4: major
    if minor != "*":
        checks.append(_insn(_JNE_IMM, 5, 0, 0, int(minor)))  # r5: minor
    tail = [_insn(_MOV_IMM, 0, 0, 0, 1), _insn(_EXIT)]
    block = checks + tail
    # Every conditional jump skips to the end of this block (past the tail).
    out = []
    for i, ins in enumerate(block):
        jump = ins[:2] + struct.pack("<h", len(block) - i - 1) + ins[4:]
        out.append(jump if ins[0] == _JNE_IMM else ins)
    return out


def program(rules: Sequence[str]) -> bytes:
    """The BPF program (``struct bpf_insn[]``) allowing exactly ``rules``."""
    head = [
        _insn(_LDXW, 2, 1, 0),  # r2 = access_type
        _insn(_MOV_REG, 3, 2),  # r3 = access_type
        _insn(_AND_IMM, 2, 0, 0, 0xFFFF),  # r2 = type
        _insn(_RSH_IMM, 3, 0, 0, 16),  # r3 = access
        _insn(_LDXW, 4, 1, 4),  # r4 = major
        _insn(_LDXW, 5, 1, 8),  # r5 = minor
    ]
    body = [ins for rule in rules for ins in _rule_block(rule)]
    deny = [_insn(_MOV_IMM, 0, 0, 0, 0), _insn(_EXIT)]
    return b"".join(head + body + deny)


def _bpf(cmd: int, attr: bytes) -> int:
    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise CgroupError(f"bpf: unknown syscall number on {os.uname().machine}")
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    result = int(_syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(_ATTR_SIZE)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def attach(cgroup: Path, rules: Sequence[str]) -> None:
    """Load the program for ``rules`` and attach it to ``cgroup``; raises CgroupError."""
    code = program(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(1 << 16)

    def load(log_level: int) -> int:
        attr = struct.pack(
            "<IIQQIIQ",
            _BPF_PROG_TYPE_CGROUP_DEVICE,
            len(code) // 8,
            ctypes.addressof(insns),
            ctypes.addressof(license_),
            log_level,
            len(log) if log_level else 0,
            ctypes.addressof(log) if log_level else 0,
        )
        return _bpf(_BPF_PROG_LOAD, attr)

    try:
        prog = load(0)
    except OSError as e:
        # Again with the verifier's log, only to say why (a log costs time).
        with contextlib.suppress(OSError):
            os.close(load(1))
        verifier = log.value.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise CgroupError(f"cannot load the device program: {e.strerror} {verifier[0]}".strip()) from None
    try:
        dir_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bpf(_BPF_PROG_ATTACH, struct.pack("<IIII", dir_fd, prog, _BPF_CGROUP_DEVICE, 0))
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise CgroupError(f"cannot attach the device program to {cgroup}: {e.strerror}") from None
    finally:
        os.close(prog)
