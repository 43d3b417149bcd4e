"""Pure parts of the containerizer: config validation, limits, forensics, exec lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, ContainerError
from corral.slave.containerizer.cgroups.base import CgroupLimits, CgroupStats
from corral.slave.containerizer.forensics import describe, limitation, stderr_tail
from corral.slave.containerizer.launcher import exec_candidates


def _config(**overrides: object) -> ContainerConfig:
    fields: dict[str, object] = {
        "container_id": "task-1.a_b",
        "argv": ("/bin/true",),
        "env": {},
        "sandbox": Path("/tmp/x"),
        "cpus_milli": 100,
        "mem_bytes": 1 << 20,
    }
    fields.update(overrides)
    return ContainerConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"container_id": "a/b"}, "container_id"),
        ({"container_id": ".."}, "container_id"),
        ({"container_id": ""}, "container_id"),
        ({"argv": ()}, "argv"),
        ({"cpus_milli": 0}, "cpus_milli"),
        ({"mem_bytes": -5}, "mem_bytes"),
        ({"pids_max": 0}, "pids_max"),
        ({"env": {"A=B": "c"}}, "env"),
    ],
)
def test_bad_configs_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ContainerError, match=field):
        _config(**overrides).validate()


def test_good_config_validates() -> None:
    _config().validate()


@pytest.mark.parametrize(
    ("cpus_milli", "shares", "quota"), [(500, 512, 50_000), (1, 2, 1000), (2000, 2048, 200_000)]
)
def test_limits_from_cpus(cpus_milli: int, shares: int, quota: int) -> None:
    assert CgroupLimits.for_task(cpus_milli, 1, False, None).cpu_shares == shares
    assert CgroupLimits.for_task(cpus_milli, 1, True, None).cpu_quota_us == quota
    assert CgroupLimits.for_task(cpus_milli, 1, False, None).cpu_quota_us is None


def _stats(**overrides: int) -> CgroupStats:
    fields = {
        "cpu_time_ns": 0,
        "mem_bytes": 0,
        "mem_peak_bytes": 0,
        "mem_limit_bytes": 1 << 20,
        "oom_kills": 0,
        "pids": 0,
        "pids_limit": 10,
        "pids_max_events": 0,
    }
    fields.update(overrides)
    return CgroupStats(**fields)


def test_pids_limitation_whatever_the_exit_code() -> None:
    found = limitation(_stats(pids_max_events=281))
    assert found is not None
    assert found.kind == "pids"
    assert found.message == "pids limit 10 reached; 281 forks refused"
    one = limitation(_stats(pids_max_events=1))
    assert one is not None
    assert one.message == "pids limit 10 reached; 1 fork refused"


def test_no_limitation_without_events() -> None:
    assert limitation(_stats()) is None


def test_describe() -> None:
    assert describe(3, None, None) == "exited with code 3"
    assert describe(None, 9, None) == "killed by signal 9 (SIGKILL)"


def test_stderr_tail_keeps_the_last_lines_within_4k(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    tail = stderr_tail(path).splitlines()
    assert tail == [f"line {i}" for i in range(980, 1000)]
    path.write_text("x" * 10_000 + "\nlast\n")
    assert stderr_tail(path) == "last"
    assert stderr_tail(tmp_path / "missing") == ""


def test_exec_candidates_follow_path() -> None:
    assert exec_candidates("/bin/true", "/x") == (b"/bin/true",)
    assert exec_candidates("true", "/a::/b") == (b"/a/true", b"./true", b"/b/true")
