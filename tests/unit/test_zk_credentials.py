"""The masters' ZooKeeper credentials file (corral/zk.py, "Access")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from kazoo.security import Permissions

from corral.zk import ZkCredentials, ZkCredentialsError, read_credentials, write_credentials


def _file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "zk-credentials"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_one_line_user_and_password_is_read(tmp_path: Path) -> None:
    creds = read_credentials(_file(tmp_path, "\ncorral-master:0123456789abcdef:with-colon\n"))
    assert creds == ZkCredentials("corral-master", "0123456789abcdef:with-colon")
    assert "0123456789abcdef" not in repr(creds)  # never logged by accident
    assert creds.auth_data == [("digest", "corral-master:0123456789abcdef:with-colon")]


@pytest.mark.parametrize(
    ("text", "mode", "problem"),
    [
        ("corral-master:0123456789abcdef", 0o640, "readable by others (mode 640); chmod 600"),
        ("corral-master:0123456789abcdef", 0o604, "readable by others"),
        ("corral-master:short", 0o600, "at least 16 characters"),
        ("no colon at all, long enough", 0o600, "expected one line USER:PASSWORD"),
        ("a:0123456789abcdef\nb:0123456789abcdef", 0o600, "expected one line"),
        ("bad user!:0123456789abcdef", 0o600, "expected one line"),
        ("", 0o600, "expected one line"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(tmp_path: Path, text: str, mode: int, problem: str) -> None:
    path = _file(tmp_path, text, mode)
    with pytest.raises(ZkCredentialsError, match="--zk-credentials") as e:
        read_credentials(path)
    assert problem in str(e.value)
    assert "0123456789abcdef" not in str(e.value)  # the password is not echoed


def test_a_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ZkCredentialsError, match=f"{tmp_path}/nope: No such file"):
        read_credentials(tmp_path / "nope")


def test_written_once_private_and_then_shared(tmp_path: Path) -> None:
    path = tmp_path / "zk-credentials"
    first = write_credentials(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first.password) >= 16
    assert write_credentials(path) == first  # every master of the cluster reads the same
    assert read_credentials(path) == first


def test_public_acl_lets_anyone_read_only() -> None:
    creds = ZkCredentials("corral-master", "0123456789abcdef")
    world = [a for a in creds.public_acl() if a.id.scheme == "world"]
    assert [a.perms for a in world] == [Permissions.READ]
    assert all(a.id.scheme == "digest" for a in creds.private_acl())
    assert [a.perms for a in creds.private_acl()] == [Permissions.ALL]
