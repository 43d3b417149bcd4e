"""Sandbox reads never leave the sandbox, whatever the task put there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.slave.sandbox_files import SandboxFileError, read


@pytest.fixture
def box(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow").write_text("root:hash")
    sandbox = tmp_path / "sandbox"
    (sandbox / "logs").mkdir(parents=True)
    (sandbox / "stdout").write_text("hello world")
    (sandbox / "logs" / "app.log").write_text("line")
    (sandbox / "evil").symlink_to(secret)  # a directory symlink the task made
    (sandbox / "leak").symlink_to(secret / "shadow")
    os.mkfifo(sandbox / "fifo")
    return sandbox


def test_reads_regular_files_with_offset_and_size(box: Path) -> None:
    assert read(box, "stdout", 0, 100) == (b"hello world", 11)
    assert read(box, "stdout", 6, 3) == (b"wor", 11)
    assert read(box, "stdout", 50, 10) == (b"", 11)
    assert read(box, "logs/app.log", 0, 10) == (b"line", 4)
    assert read(box, "./logs//app.log", 0, 10) == (b"line", 4)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("evil/shadow", "symbolic links are not followed"),
        ("leak", "symbolic links are not followed"),
        ("../secret/shadow", "must be a relative path"),
        ("/etc/passwd", "must be a relative path"),
        ("std\0out", "must be a relative path"),
        ("", "must be a relative path"),
        ("fifo", "not a regular file"),
        ("logs", "not a regular file"),
        ("missing", "no such file"),
        ("stdout/x", "not a regular file inside the sandbox"),
    ],
)
def test_refuses_what_is_not_a_regular_file_inside(box: Path, name: str, why: str) -> None:
    with pytest.raises(SandboxFileError, match=why):
        read(box, name, 0, 10)


def test_a_directory_swapped_for_a_symlink_after_a_check_is_not_followed(box: Path, tmp_path: Path) -> None:
    # What a racing task would do between a check and an open: the walk holds
    # no path, so the swapped name is refused rather than followed.
    (box / "logs").rename(box / "old-logs")
    (box / "logs").symlink_to(tmp_path / "secret")
    with pytest.raises(SandboxFileError, match="symbolic links are not followed"):
        read(box, "logs/shadow", 0, 10)
