"""The CLI checks its TLS files once and remembers the verdict for the same
bytes, within their validity (corral/tls_files.py); anything else gets the
full check of corral.pki."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corral import tls_files
from corral.cli.discovery import checked_tls
from corral.errors import CertificateError
from corral.pki import CertificateAuthority, load_credentials, validity_window


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str, str]:
    ca = CertificateAuthority.init(tmp_path / "pki")
    issued = ca.issue("operator:alice")
    return str(ca.cert_file), str(issued.cert), str(issued.key)


def test_checked_once_then_read_without_cryptography(home: Path, files: tuple[str, str, str]) -> None:
    first = checked_tls(files)
    assert first == load_credentials(*files)
    assert (home / "tls-checked.json").exists()
    # A new command, as the CLI is one process per command: it must get the
    # same credentials without importing cryptography.
    probe = (
        "import json, sys\n"
        "from corral.cli.discovery import checked_tls\n"
        f"c = checked_tls({files!r})\n"
        "print(json.dumps([c.root_certificates.decode(), c.certificate_chain.decode(),"
        " c.private_key.decode(), list(c.files), 'cryptography' in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    ca, cert, key, paths, imported = json.loads(out)
    assert (ca.encode(), cert.encode(), key.encode()) == (
        first.root_certificates,
        first.certificate_chain,
        first.private_key,
    )
    assert tuple(paths) == files
    assert imported is False


def test_other_bytes_are_checked_again(home: Path, files: tuple[str, str, str], tmp_path: Path) -> None:
    checked_tls(files)
    store = home / "tls-checked.json"
    assert tls_files.remembered(files, store) is not None
    # Another certificate from the same CA in the same file: another digest.
    Path(files[1]).write_bytes(
        CertificateAuthority.load(tmp_path / "pki").issue("operator:bob").cert.read_bytes()
    )
    assert tls_files.remembered(files, store) is None
    # ... and a broken one is named by the full check, as before.
    Path(files[1]).write_text("not a certificate\n")
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        checked_tls(files)


def test_outside_the_validity_window_the_full_check_runs(home: Path, files: tuple[str, str, str]) -> None:
    checked_tls(files)
    store = home / "tls-checked.json"
    start, end = validity_window(files[0], files[1])
    assert tls_files.remembered(files, store, now=start.timestamp()) is not None
    assert tls_files.remembered(files, store, now=end.timestamp()) is not None
    assert tls_files.remembered(files, store, now=end.timestamp() + 1) is None
    assert tls_files.remembered(files, store, now=start.timestamp() - 1) is None


def test_a_corrupt_store_is_ignored_and_replaced(home: Path, files: tuple[str, str, str]) -> None:
    store = home / "tls-checked.json"
    home.mkdir(parents=True)
    store.write_text("{not json")
    assert tls_files.remembered(files, store) is None
    assert checked_tls(files) == load_credentials(*files)
    assert tls_files.remembered(files, store) is not None
    store.write_text(json.dumps({"version": 1, "records": {"x": {"not_before": "a"}}}))
    assert tls_files.remembered(files, store) is None


def test_a_ca_file_the_check_normalises_is_not_remembered(home: Path, files: tuple[str, str, str]) -> None:
    """Text around the PEM block: the check returns the bundle re-encoded, so
    the file's own bytes are not what it would return."""
    ca = Path(files[0])
    ca.write_bytes(b"# the cluster's CA\n" + ca.read_bytes())
    assert checked_tls(files) == load_credentials(*files)
    assert tls_files.remembered(files, home / "tls-checked.json") is None


def test_the_store_keeps_a_bounded_number_of_records(home: Path, tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "pki")
    store = home / "tls-checked.json"
    kept: list[tuple[str, str, str]] = []
    for i in range(tls_files.MAX_RECORDS + 3):
        issued = ca.issue(f"operator:user{i}")
        files = (str(ca.cert_file), str(issued.cert), str(issued.key))
        checked_tls(files)
        kept.append(files)
    assert len(json.loads(store.read_text())["records"]) == tls_files.MAX_RECORDS
    assert tls_files.remembered(kept[-1], store) is not None  # the newest stay
    assert tls_files.remembered(kept[0], store) is None
