"""Isolation settings: validation, defaults, and what the launcher is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, ContainerError, Isolation, kernel
from corral.slave.containerizer.isolation import capability_mask, launch_isolation
from corral.slave.containerizer.launcher import IsolationSpec, LaunchSpec, spec_from_json, spec_to_json
from corral.slave.containerizer.model import DEFAULT_CAPABILITIES, default_hostname


def _config(isolation: Isolation) -> ContainerConfig:
    return ContainerConfig(
        container_id="c1",
        argv=("/bin/true",),
        env={},
        sandbox=Path("/sandbox"),
        cpus_milli=100,
        mem_bytes=1 << 20,
        isolation=isolation,
    )


@pytest.mark.parametrize(
    ("isolation", "message"),
    [
        (Isolation(network="bridge"), "isolation.network: must be one of host, none, got 'bridge'"),
        (Isolation(hostname=""), "isolation.hostname: .* got ''"),
        (Isolation(hostname="a" * 64), "isolation.hostname: must be 1-63"),
        (Isolation(hostname="-web"), "isolation.hostname: .* got '-web'"),
        (Isolation(hostname="web..1"), "isolation.hostname: .* got 'web..1'"),
        (Isolation(hostname="we_b"), "isolation.hostname: .* got 'we_b'"),
        (Isolation(capabilities=frozenset({"CHOWN", "CAP_KILL"})), "isolation.capabilities: .*'CAP_KILL'"),
        (Isolation(capabilities=frozenset({"FLY"})), "isolation.capabilities: unknown capability 'FLY'"),
        (Isolation(user=(-1, 0)), r"isolation.user: must be \(uid, gid\)"),
        (Isolation(user=(0, 2**32 - 1)), r"isolation.user: .* got \(0, 4294967295\)"),
        (Isolation(tmp_size_bytes=-1), "isolation.tmp_size_bytes: must be >= 0"),
    ],
)
def test_bad_isolation_is_refused_naming_the_field(isolation: Isolation, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        _config(isolation).validate()


@pytest.mark.parametrize("hostname", ["web-1", "a", "a.b-c.d9", "x" * 63])
def test_good_hostnames_pass(hostname: str) -> None:
    _config(Isolation(hostname=hostname)).validate()


@pytest.mark.parametrize(
    ("container_id", "hostname"),
    [("Task_1.a", "Task-1-a"), ("_x_", "x"), ("...", "container"), ("a" * 200, "a" * 63)],
)
def test_default_hostname_is_a_valid_hostname(container_id: str, hostname: str) -> None:
    assert default_hostname(container_id) == hostname
    _config(Isolation(hostname=default_hostname(container_id))).validate()


def test_defaults_isolate_everything_but_the_network() -> None:
    spec = launch_isolation(Isolation(), "web_1")
    assert spec == IsolationSpec(
        pid_ns=True,
        # the cgroup namespace too: the task sees only its own cgroups
        clone_flags=kernel.CLONE_NEWNS | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC | kernel.CLONE_NEWCGROUP,
        hostname=b"web-1",
        network="host",
        tmp_bytes=64 << 20,
        uid=-1,
        gid=-1,
        cap_keep=capability_mask(DEFAULT_CAPABILITIES),
        no_new_privs=True,
        harden=True,
    )
    # Docker's 14: CHOWN(0) DAC_OVERRIDE(1) FOWNER(3) FSETID(4) KILL(5) SETGID(6)
    # SETUID(7) SETPCAP(8) NET_BIND_SERVICE(10) NET_RAW(13) SYS_CHROOT(18)
    # MKNOD(27) AUDIT_WRITE(29) SETFCAP(31).
    assert spec.cap_keep == 0xA80425FB


def test_none_isolates_nothing_and_network_none_adds_a_netns() -> None:
    assert launch_isolation(Isolation.none(), "c") == IsolationSpec()
    spec = launch_isolation(Isolation(network="none", user=(65534, 65534)), "c")
    assert spec.clone_flags & kernel.CLONE_NEWNET
    assert (spec.uid, spec.gid, spec.network) == (65534, 65534, "none")


def test_isolation_survives_the_fork_server_request() -> None:
    spec = LaunchSpec(
        exec_paths=(b"/bin/true",),
        argv=(b"true",),
        env={},
        cwd=b"/s",
        stdout=b"/s/stdout",
        stderr=b"/s/stderr",
        cgroup_procs=(),
        status_path=b"/w/exit_status.json",
        status_dir=b"/w",
        isolation=launch_isolation(
            Isolation(network="none", user=(1, 2), hostname="h", devices=("/dev/kvm",)),
            "c",
            seccomp=bytes(range(256)) * 2,
            cgroup_mounts=((b"memory", b"cgroup", b"memory"), (b"cpu", b"cgroup", b"cpu,cpuacct")),
        ),
    )
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec
    damaged = spec_to_json(spec)
    damaged["isolation"] = {**damaged["isolation"], "network": "bridge"}  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"isolation\.network"):
        spec_from_json(damaged)


def test_v2_drops_mknod_since_no_device_program_is_attached() -> None:
    spec = launch_isolation(Isolation(), "c", cgroup_version="v2")
    assert not spec.cap_keep & (1 << kernel.CAPABILITIES["MKNOD"])
    assert launch_isolation(Isolation(), "c").cap_keep & (1 << kernel.CAPABILITIES["MKNOD"])
