"""The launch request the agent sends to the fork server."""

from __future__ import annotations

import json

import pytest

from corral.slave.containerizer.launcher import LaunchSpec, spec_from_json, spec_to_json
from corral.slave.containerizer.rootfs import MountSpec, RootfsSpec


def _spec() -> LaunchSpec:
    return LaunchSpec(
        exec_paths=(b"/usr/bin/prog", b"./prog"),
        argv=(b"prog", b"\xff\xfe not utf-8", b""),
        env={b"PATH": b"/bin", b"K\xe9": b"v\x00\x80"},
        cwd=b"/tmp/sandbox",
        stdout=b"/tmp/sandbox/stdout",
        stderr=b"/tmp/sandbox/stderr",
        cgroup_procs=(b"/sys/fs/cgroup/cpu/x/cgroup.procs",),
        status_path=b"/w/exit_status.json",
        status_dir=b"/w",
        rootfs=RootfsSpec(
            root=b"/w/overlay/root",
            lowerdirs=(b"/store/layers/sha256/aa", b"/store/layers/sha256/bb"),
            upperdir=b"/w/overlay/upper",
            workdir=b"/w/overlay/work",
            read_only=True,
            sandbox=b"/tmp/sandbox",
        ),
        mounts=(
            MountSpec("bind", b"/data", b"/srv/\xff", read_only=True),
            MountSpec("tmpfs", b"/scratch", size_bytes=1 << 20),
        ),
        sandbox=b"/tmp/sandbox",
    )


def test_spec_survives_a_json_round_trip_byte_for_byte() -> None:
    spec = _spec()
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(argv="prog"),
        lambda d: d.update(env=[["only-key"]]),
        lambda d: d.update(cwd=None),
        lambda d: d.pop("status_path"),
        lambda d: d.update(argv=["\u0100"]),  # not latin-1: cannot come from bytes
        lambda d: d.update(mounts=[{"kind": "nfs", "target": "/x"}]),
        lambda d: d.update(mounts=[{"kind": "tmpfs", "target": "/x", "size_bytes": -1}]),
        lambda d: d["rootfs"].update(lowerdirs=[]),
        lambda d: d["rootfs"].update(read_only="yes"),
    ],
)
def test_malformed_specs_raise_value_error(damage: object) -> None:
    data = spec_to_json(_spec())
    damage(data)  # type: ignore[operator]
    with pytest.raises(ValueError):  # noqa: PT011  (UnicodeError is a ValueError)
        spec_from_json(data)
