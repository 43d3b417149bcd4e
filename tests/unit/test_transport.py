"""corral.transport: what counts as loopback, the TLS environment, the claim."""

from __future__ import annotations

import pytest

from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.scheduler import Scheduler
from corral.identity import Principal
from corral.transport import Credentials, env_tls_files, is_loopback


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:5050", True),
        ("127.3.2.1:1", True),
        ("localhost:5050", True),
        ("[::1]:5050", True),
        ("::1", True),
        ("0.0.0.0:5050", False),
        ("[::]:5050", False),
        ("10.0.0.1:5050", False),
        ("m1.example:5050", False),
    ],
)
def test_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_the_environment_gives_all_three_files_or_says_which_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CORRAL_TLS_CA", "CORRAL_TLS_CERT", "CORRAL_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert env_tls_files() is None
    monkeypatch.setenv("CORRAL_TLS_CA", "ca.pem")
    with pytest.raises(ValueError, match="CORRAL_TLS_CERT, CORRAL_TLS_KEY not set"):
        env_tls_files()
    monkeypatch.setenv("CORRAL_TLS_CERT", "c.pem")
    monkeypatch.setenv("CORRAL_TLS_KEY", "k.pem")
    assert env_tls_files() == ("ca.pem", "c.pem", "k.pem")


def test_a_claim_is_sent_on_plaintext_only() -> None:
    assert Credentials().metadata() == ()
    assert Credentials(claim="operator:alice").metadata() == (("corral-principal", "operator:alice"),)
    tls = Credentials(root_certificates=b"ca", private_key=b"k", certificate_chain=b"c", claim="operator:a")
    assert tls.metadata() == ()


@pytest.mark.parametrize("name", ["my framework", "corral-submit:demo", "_private", "ünïcode", "a" * 300])
def test_a_driver_claims_a_valid_principal_for_any_name(name: str) -> None:
    driver = SchedulerDriver(Scheduler(), name=name, master="127.0.0.1:5050")
    claimed = Principal.parse(driver.credentials.claim)
    assert claimed.kind == "framework"
    assert not claimed.authenticated
