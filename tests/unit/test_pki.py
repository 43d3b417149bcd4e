"""corral.pki: a CA, certificates for principals, and loading them back with
errors that name the file and the problem."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from corral.errors import CertificateError
from corral.identity import Principal
from corral.pki import CertificateAuthority, describe, load_credentials


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "pki")


def test_round_trip_writes_the_layout_and_loads(ca: CertificateAuthority) -> None:
    issued = ca.issue("operator:alice")
    d = ca.directory
    assert issued.cert == d / "operator-alice.pem"
    assert issued.key == d / "operator-alice-key.pem"
    for key in (d / "ca-key.pem", issued.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    creds = load_credentials(d / "ca.pem", issued.cert, issued.key)
    assert creds.secure
    assert creds.root_certificates == (d / "ca.pem").read_bytes()
    assert creds.files == (str(d / "ca.pem"), str(issued.cert), str(issued.key))
    info = describe(issued.cert)
    assert info.subject == "CN=operator:alice"
    assert info.principal == "operator:alice"
    assert info.usages == ("clientAuth",)
    assert info.dns == ()
    assert info.ips == ()
    assert not info.is_ca
    assert not info.expired


def test_a_master_serves_under_its_names_and_loopback(ca: CertificateAuthority) -> None:
    issued = ca.issue(Principal("master", "m1"), dns=["m1.example"], ips=["10.0.0.5"], days=30)
    info = describe(issued.cert)
    assert info.principal == "master:m1"
    assert set(info.usages) == {"clientAuth", "serverAuth"}
    # master.corral: the name every gRPC client checks a master against
    assert info.dns == ("m1.example", "localhost", "master.corral")
    assert info.ips == ("10.0.0.5", "127.0.0.1", "::1")
    assert datetime.timedelta(days=29) < info.not_after - info.not_before <= datetime.timedelta(days=31)


def test_a_name_with_a_slash_gets_a_flat_file_name(ca: CertificateAuthority) -> None:
    issued = ca.issue("framework:team/ml")
    assert issued.cert.name == "framework-team%2Fml.pem"
    assert describe(issued.cert).principal == "framework:team/ml"
    # team_ml is another principal with files of its own: issuing it must
    # not replace team/ml's key (both were framework-team_ml once).
    other = ca.issue("framework:team_ml")
    assert other.key != issued.key
    assert describe(issued.cert).principal == "framework:team/ml"


def test_only_masters_carry_the_master_name(ca: CertificateAuthority) -> None:
    for principal in ("framework:b", "operator:o", "agent:n1"):
        assert "master.corral" not in describe(ca.issue(principal).cert).dns


def test_bad_principals_and_days_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        ca.issue("robot:r2")
    with pytest.raises(ValueError, match="expected KIND:NAME"):
        ca.issue("alice")
    with pytest.raises(ValueError, match="days: must be at least 1"):
        ca.issue("operator:alice", days=0)
    with pytest.raises(ValueError, match="not an IP address"):
        ca.issue("master:m", ips=["not-an-ip"])


def test_init_refuses_to_overwrite_a_ca(ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateError, match="a CA already exists here"):
        CertificateAuthority.init(ca.directory)
    again = CertificateAuthority.load(ca.directory)
    assert again.cert == ca.cert


# -- each error names the file and the problem --------------------------------


def _expect(path: Path, problem: str, *args: Path, **kwargs: object) -> None:
    with pytest.raises(CertificateError) as e:
        load_credentials(*args, **kwargs)  # type: ignore[arg-type]
    assert e.value.path == str(path)
    assert problem in e.value.problem, e.value.problem
    assert str(e.value).startswith(f"{path}: ")


def test_missing_files(ca: CertificateAuthority) -> None:
    issued = ca.issue("operator:alice")
    ca_file = ca.directory / "ca.pem"
    missing = ca.directory / "nope.pem"
    _expect(missing, "no such file", missing, issued.cert, issued.key)
    _expect(missing, "no such file", ca_file, missing, issued.key)
    _expect(missing, "no such file", ca_file, issued.cert, missing)


def test_a_directory_is_not_a_file(ca: CertificateAuthority) -> None:
    issued = ca.issue("operator:alice")
    _expect(ca.directory, "is a directory", ca.directory, issued.cert, issued.key)


def test_not_pem_and_swapped_files(ca: CertificateAuthority, tmp_path: Path) -> None:
    issued = ca.issue("operator:alice")
    ca_file = ca.directory / "ca.pem"
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    _expect(junk, "not a PEM certificate", ca_file, junk, issued.key)
    _expect(junk, "not a PEM private key", ca_file, issued.cert, junk)
    _expect(issued.key, "certificate and key swapped?", ca_file, issued.key, issued.cert)
    truncated = tmp_path / "truncated.pem"
    truncated.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    _expect(truncated, "not a valid PEM certificate", ca_file, truncated, issued.key)


def test_a_key_that_is_not_the_certificates(ca: CertificateAuthority) -> None:
    alice = ca.issue("operator:alice")
    bob = ca.issue("operator:bob")
    _expect(bob.key, f"does not match the certificate {alice.cert}", ca.cert_file, alice.cert, bob.key)


def test_an_encrypted_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    alice = ca.issue("operator:alice")
    locked = tmp_path / "locked-key.pem"
    key = serialization.load_pem_private_key(alice.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    _expect(locked, "the key is encrypted", ca.cert_file, alice.cert, locked)


def test_expired_and_not_yet_valid(ca: CertificateAuthority) -> None:
    alice = ca.issue("operator:alice", days=2)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    _expect(alice.cert, "expired on", ca.cert_file, alice.cert, alice.key, now=later)
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    _expect(ca.cert_file, "not valid before", ca.cert_file, alice.cert, alice.key, now=earlier)


def test_a_certificate_from_another_ca(ca: CertificateAuthority, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other")
    mallory = other.issue("operator:mallory")
    _expect(mallory.cert, f"not signed by the CA in {ca.cert_file}", ca.cert_file, mallory.cert, mallory.key)


def test_a_leaf_given_as_the_ca(ca: CertificateAuthority) -> None:
    alice = ca.issue("operator:alice")
    _expect(alice.cert, "not a CA certificate", alice.cert, alice.cert, alice.key)


def test_a_ca_key_that_does_not_belong(ca: CertificateAuthority) -> None:
    alice = ca.issue("operator:alice")
    (ca.directory / "ca-key.pem").write_bytes(alice.key.read_bytes())
    with pytest.raises(CertificateError, match=r"ca-key\.pem: this key does not belong to"):
        CertificateAuthority.load(ca.directory)


def test_a_bundle_of_two_cas_accepts_certificates_of_either(ca: CertificateAuthority, tmp_path: Path) -> None:
    new = CertificateAuthority.init(tmp_path / "new")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(new.cert_file.read_bytes() + ca.cert_file.read_bytes())
    for issuer in (ca, new):
        issued = issuer.issue("operator:alice")
        creds = load_credentials(bundle, issued.cert, issued.key)
        assert creds.root_certificates == bundle.read_bytes()
    leaf = ca.issue("operator:bob")
    _expect(leaf.cert, "not a CA certificate", leaf.cert, leaf.cert, leaf.key)
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(ca.cert_file.read_bytes() + leaf.cert.read_bytes())
    _expect(mixed, "'CN=operator:bob' has no basicConstraints CA:TRUE", mixed, leaf.cert, leaf.key)


def test_a_master_certificate_from_before_the_master_name_is_issued_anew(
    ca: CertificateAuthority,
) -> None:
    # `corral local` reuses its directory: a master certificate made before
    # masters carried master.corral would be refused by every client now.
    from corral.pki import issued_files

    old = ca.issue(Principal("master", "m1"), server=True)
    assert "master.corral" in describe(old.cert).dns
    stale = ca.issue(Principal("framework", "x"))  # no master name, written as master-m1
    old.cert.write_bytes(stale.cert.read_bytes())
    old.key.write_bytes(stale.key.read_bytes())
    cert, _ = issued_files(ca.directory, "master:m1", lambda: ca)
    assert "master.corral" in describe(cert).dns
    agent = ca.issue("agent:n1")
    before = agent.cert.read_bytes()
    again = issued_files(ca.directory, "agent:n1", lambda: ca)
    assert again == (agent.cert, agent.key)
    assert agent.cert.read_bytes() == before  # current: kept, not issued anew
