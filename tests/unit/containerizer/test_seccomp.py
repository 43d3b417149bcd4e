"""Seccomp profiles: what the agent allows, and that they compile (libseccomp)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.slave.containerizer import seccomp
from corral.slave.containerizer.errors import ContainerError


def test_the_default_profile_compiles_to_a_bpf_program() -> None:
    program = seccomp.compile_profile(seccomp.DEFAULT_PROFILE)
    assert program
    assert len(program) % 8 == 0  # struct sock_filter is 8 bytes


def test_unconfined_only_where_the_agent_allows_it() -> None:
    with pytest.raises(ContainerError, match=r"container\.seccomp_profile: 'unconfined' is refused"):
        seccomp.SeccompPolicy().resolve("unconfined")
    assert seccomp.SeccompPolicy(allow_unconfined=True).resolve("unconfined") == "unconfined"
    assert seccomp.SeccompPolicy(allow_unconfined=True).program("unconfined") == b""
    assert seccomp.SeccompPolicy().resolve("") == "default"


def test_a_profile_must_be_one_the_agent_names(tmp_path: Path) -> None:
    path = tmp_path / "strict.json"
    # moby's form; rules conditioned on capabilities are left out.
    path.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                    {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                    {"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"},
                ],
            }
        )
    )
    policy = seccomp.SeccompPolicy({"strict": path})
    with pytest.raises(ContainerError, match=r"'lax' is not allowed here \(allowed: default, strict\)"):
        policy.resolve("lax")
    first = policy.program(policy.resolve("strict"))
    assert first
    assert policy.program("strict") is first  # compiled once, cached
    path.write_text("{not json")
    with pytest.raises(ContainerError, match="seccomp profile 'strict'"):
        policy.program("strict")


def test_profile_flags() -> None:
    assert seccomp.parse_profile_flags(["a=/x.json"]) == {"a": Path("/x.json")}
    for bad in ("a", "=x", "default=/x", "unconfined=/x"):
        with pytest.raises(ValueError, match="--seccomp-profile"):
            seccomp.parse_profile_flags([bad])


def test_the_default_profile_fails_closed_on_a_name_libseccomp_does_not_know() -> None:
    import pytest

    from corral.slave.containerizer.errors import ContainerError

    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall_ever"], "action": "SCMP_ACT_ERRNO"}],
    }
    with pytest.raises(ContainerError, match="libseccomp does not know the syscall 'no_such_syscall_ever'"):
        seccomp.compile_profile(profile, strict=True)
    assert seccomp.compile_profile(profile)  # an operator's profile: skipped, with a warning


def test_every_program_starts_with_the_future_syscall_prefix() -> None:
    program = seccomp.compile_profile(seccomp.DEFAULT_PROFILE, strict=True)
    lib = seccomp._lib
    assert lib is not None
    prefix = seccomp._future_syscalls(lib.native_arch, lib.highest_known)
    assert program.startswith(prefix)
    assert len(prefix) == 6 * 8
