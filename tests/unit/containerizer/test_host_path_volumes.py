"""Host-path volumes: only under the agent's --allowed-host-paths, by real path, no symlink swap."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerError
from corral.slave.containerizer.rootfs import MountSpec, open_sources
from corral.slave.containerizer.volumes import Volume


def test_host_paths_are_refused_unless_the_agent_allows_them(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match=r"volumes\[0\].host_path: /: this agent allows no host paths"):
        Volume("/h", "/").allowed("volumes[0]", ())
    tmpfs = Volume("/scratch")
    assert tmpfs.allowed("volumes[1]", ()) == tmpfs
    sandbox_relative = Volume("scratch", tmpfs_size_bytes=1 << 20)
    assert sandbox_relative.allowed("volumes[2]", ()) == sandbox_relative


def test_the_real_path_must_be_under_an_allowed_prefix(tmp_path: Path) -> None:
    allowed = tmp_path / "shared"
    (allowed / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (allowed / "escape").symlink_to(tmp_path / "secret")
    (tmp_path / "shared-not").mkdir()
    (allowed / "inside").symlink_to(allowed / "sub")
    ok = Volume("/d", str(allowed / "sub"), read_only=True).allowed("volumes[0]", (allowed,))
    assert ok.host_path == str(allowed / "sub")
    assert ok.read_only
    assert Volume("/d", str(allowed / "inside")).allowed("v", (allowed,)).host_path == str(allowed / "sub")
    for bad in (
        allowed / "escape",
        allowed / "sub" / ".." / ".." / "secret",
        tmp_path / "shared-not",
        Path("/"),
    ):
        with pytest.raises(ContainerError, match="is not under this agent's --allowed-host-paths"):
            Volume("/d", str(bad)).allowed("volumes[0]", (allowed,))
    with pytest.raises(ContainerError, match=r"volumes\[0\].host_path: .* cannot be used on this agent"):
        Volume("/d", str(allowed / "absent")).allowed("volumes[0]", (allowed,))


def test_the_launcher_refuses_a_source_that_is_no_longer_its_real_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "swapped").symlink_to(tmp_path / "real")
    with pytest.raises(OSError, match="is not its real path") as e:
        open_sources((MountSpec("bind", b"/d", os.fsencode(tmp_path / "swapped")),))
    assert e.value.errno == errno.ELOOP
    (fd,) = open_sources((MountSpec("bind", b"/d", os.fsencode(tmp_path / "real")),))
    os.close(fd)


def test_the_agent_flag_takes_absolute_paths_only(capsys: pytest.CaptureFixture[str]) -> None:
    # The parser itself: invoking `corral agent` in-process would reconfigure this process's logging.
    from corral.cli.common import _allowed_host_paths

    assert _allowed_host_paths("/srv/data, /scratch,") == (Path("/srv/data"), Path("/scratch"))
    assert _allowed_host_paths("") == ()
    with pytest.raises(SystemExit) as e:
        _allowed_host_paths("/srv/data,relative")
    assert e.value.code == 2
    assert "--allowed-host-paths: 'relative' is not an absolute path" in capsys.readouterr().err
