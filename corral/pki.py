"""A certificate authority for corral's mutual TLS, and loading what it issues.

One CA per cluster signs every certificate; a certificate's subject common
name is its principal, ``KIND:NAME`` (``master:m1``, ``agent:node-1``,
``framework:batch``, ``operator:alice``; corral/identity.py reads it back on
the server side). A directory holds the lot::

    DIR/ca.pem  DIR/ca-key.pem                      the CA (the key never leaves DIR)
    DIR/<kind>-<name>.pem  DIR/<kind>-<name>-key.pem  one pair per principal

Keys are EC P-256 (BoringSSL in grpcio and OpenSSL in the stdlib both take
it; Ed25519 certificates are not accepted by every TLS stack a client may
bring). Key files are written 0600. Loading checks everything a TLS
handshake would otherwise reject with a one-word alert, and says which file
and what is wrong with it (:class:`CertificateError`).

This module imports ``cryptography``: the CLI imports it lazily so
``corral --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.errors import CertificateError
from corral.identity import Principal
from corral.tls_files import warn_if_key_readable
from corral.transport import MASTER_TLS_NAME, Credentials

log = structlog.get_logger(__name__)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
#: a CA outlives the certificates it signs; rotating it means re-issuing everything
CA_DAYS = 3650
DEFAULT_DAYS = 365
#: names every master (and framework API) answers to unless told otherwise
DEFAULT_DNS = ("localhost",)
DEFAULT_IPS = ("127.0.0.1", "::1")
#: kinds that also serve (gRPC for masters, the HTTP API for frameworks)
SERVING_KINDS = frozenset({"master", "framework"})
#: certificates start a little in the past so a peer's slightly slow clock accepts them
_BACKDATE = datetime.timedelta(minutes=5)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write atomically; a key is 0600 from its first byte, never chmod-ed after."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def file_stem(principal: Principal) -> str:
    """``operator:alice`` → ``operator-alice``. A ``/`` becomes ``%2F`` and a
    ``%`` ``%25``, so two principals never share files (``a/b`` and ``a_b``
    once did, and issuing one replaced the other's key)."""
    return f"{principal.kind}-{principal.name.replace('%', '%25').replace('/', '%2F')}"


@dataclass(frozen=True)
class Issued:
    """The files of one issued certificate."""

    principal: Principal
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    """A CA's certificate and key, read from (or made in) a directory."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: PrivateKey) -> None:
        self.directory = directory
        self.cert = cert
        self.key = key

    @property
    def cert_file(self) -> Path:
        return self.directory / CA_FILE

    @classmethod
    def init(cls, directory: Path, *, name: str = "corral", days: int = CA_DAYS) -> CertificateAuthority:
        """Make a new CA in ``directory``; refuses to overwrite one (every
        certificate it signed would stop working)."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (directory / CA_KEY_FILE).exists() or (directory / CA_FILE).exists():
            raise CertificateError(directory / CA_FILE, "a CA already exists here; not overwriting it")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        start = _now() - _BACKDATE
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(directory / CA_KEY_FILE, _key_pem(key), secret=True)
        _write(directory / CA_FILE, cert.public_bytes(serialization.Encoding.PEM), secret=False)
        log.info("pki.ca_created", directory=str(directory), subject=subject.rfc4514_string())
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA in ``directory`` (``ca.pem`` and ``ca-key.pem``)."""
        cert = read_certificate(directory / CA_FILE)
        key = read_private_key(directory / CA_KEY_FILE)
        if not _same_key(cert, key):
            raise CertificateError(
                directory / CA_KEY_FILE, f"this key does not belong to {directory / CA_FILE}"
            )
        return cls(directory, cert, key)

    def issue(
        self,
        principal: Principal | str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        days: int = DEFAULT_DAYS,
        out: Path | None = None,
        server: bool | None = None,
    ) -> Issued:
        """Sign a certificate for ``principal`` (CN ``KIND:NAME``) and write it
        with its key to ``out`` (default: the CA's directory).

        Every certificate may authenticate a client; masters and frameworks
        (``server`` defaults to that) may also serve, and get subject
        alternative names: ``dns`` and ``ips`` plus localhost and the loopback
        addresses, since a client checks the name it dialled against them.
        """
        p = principal if isinstance(principal, Principal) else Principal.parse(principal)
        if days < 1:
            raise ValueError(f"days: must be at least 1, got {days}")
        serving = p.kind in SERVING_KINDS if server is None else server
        key = ec.generate_private_key(ec.SECP256R1())
        start = _now() - _BACKDATE
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if serving else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(p))]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(min(start + datetime.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        dns_names = [*dns, *DEFAULT_DNS] if serving else list(dns)
        if p.kind == "master" and serving:
            # The one name gRPC clients check a master against (corral.transport).
            dns_names.append(MASTER_TLS_NAME)
        names = _alt_names(dns_names, [*ips, *DEFAULT_IPS] if serving else ips)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(
            self.key, None if isinstance(self.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        )
        target = out or self.directory
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        issued = Issued(p, target / f"{file_stem(p)}.pem", target / f"{file_stem(p)}-key.pem")
        _write(issued.key, _key_pem(key), secret=True)
        _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM), secret=False)
        log.info("pki.issued", principal=str(p), cert=str(issued.cert), days=days, serving=serving)
        return issued


def _alt_names(dns: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for d in dict.fromkeys(dns):
        names.append(x509.DNSName(d))
    for text in dict.fromkeys(ips):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise ValueError(f"--ip {text!r}: not an IP address") from None
    return names


# -- reading and checking -------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertificateError(path, "no such file") from None
    except IsADirectoryError:
        raise CertificateError(path, "is a directory, not a PEM file") from None
    except PermissionError:
        raise CertificateError(path, "cannot be read (permission denied)") from None
    except OSError as e:
        raise CertificateError(path, f"cannot be read: {e.strerror or e}") from None


def read_certificate(path: Path) -> x509.Certificate:
    """The first certificate in a PEM file."""
    data = _read(path)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        hint = " (it holds a private key: certificate and key swapped?)" if b"PRIVATE KEY" in data else ""
        raise CertificateError(path, f"not a PEM certificate (no BEGIN CERTIFICATE block){hint}")
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError as e:
        raise CertificateError(path, f"not a valid PEM certificate: {e}") from None


def read_private_key(path: Path) -> PrivateKey:
    """An unencrypted private key from a PEM file."""
    data = _read(path)
    if b"PRIVATE KEY-----" not in data:
        hint = " (it holds a certificate: certificate and key swapped?)" if b"CERTIFICATE" in data else ""
        raise CertificateError(path, f"not a PEM private key (no BEGIN PRIVATE KEY block){hint}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(path, "the key is encrypted; corral needs an unencrypted key file") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError(path, f"not a valid PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise CertificateError(path, f"a {type(key).__name__}: TLS here takes EC, RSA or Ed25519 keys")
    return key


def _same_key(cert: x509.Certificate, key: object) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(public().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt))


def _check_dates(path: Path, cert: x509.Certificate, now: datetime.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise CertificateError(path, f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if now < cert.not_valid_before_utc:
        raise CertificateError(path, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def read_ca_bundle(path: Path) -> list[x509.Certificate]:
    """Every certificate in a CA file: one CA, or several while a CA is being
    replaced (docs/operator.md, "Rotating certificates")."""
    read_certificate(path)  # the errors for a missing or non-PEM file
    try:
        bundle = x509.load_pem_x509_certificates(_read(path))
    except ValueError as e:
        raise CertificateError(path, f"not a valid PEM certificate: {e}") from None
    for cert in bundle:
        if not _is_ca(cert):
            raise CertificateError(
                path,
                f"not a CA certificate: {cert.subject.rfc4514_string()!r} has no basicConstraints CA:TRUE",
            )
    return bundle


def load_credentials(
    ca: Path | str, cert: Path | str, key: Path | str, *, now: datetime.datetime | None = None
) -> Credentials:
    """Read and check a CA certificate (or a bundle of them), a certificate it
    signed and that certificate's key; :class:`CertificateError` naming the
    file and the problem for anything a handshake would refuse. ``now``
    (default: the clock) is when they must be valid."""
    ca_path, cert_path, key_path = Path(ca), Path(cert), Path(key)
    now = now or _now()
    bundle = read_ca_bundle(ca_path)
    for ca_cert in bundle:
        _check_dates(ca_path, ca_cert, now)
    leaf = read_certificate(cert_path)
    private_key = read_private_key(key_path)
    warn_if_key_readable(key_path)
    if not _same_key(leaf, private_key):
        raise CertificateError(key_path, f"this key does not match the certificate {cert_path}")
    if not any(_signed_by(leaf, ca_cert) for ca_cert in bundle):
        names = ", ".join(repr(c.subject.rfc4514_string()) for c in bundle)
        raise CertificateError(
            cert_path,
            f"not signed by the CA in {ca_path} (issuer {leaf.issuer.rfc4514_string()!r}, CA {names})",
        )
    _check_dates(cert_path, leaf, now)
    return Credentials(
        root_certificates=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle),
        private_key=_read(key_path),
        certificate_chain=_read(cert_path),
        files=(str(ca_path), str(cert_path), str(key_path)),
    )


def validity_window(ca: Path | str, cert: Path | str) -> tuple[datetime.datetime, datetime.datetime]:
    """When every certificate of the CA file and ``cert`` is valid: from the
    latest start to the earliest end (corral.tls_files remembers it)."""
    certs = [*read_ca_bundle(Path(ca)), read_certificate(Path(cert))]
    return max(c.not_valid_before_utc for c in certs), min(c.not_valid_after_utc for c in certs)


# -- describing -----------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    """What ``corral certs show`` prints."""

    path: Path
    subject: str
    issuer: str
    principal: str
    is_ca: bool
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    usages: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int

    @property
    def expired(self) -> bool:
        return _now() > self.not_after


def describe(path: Path) -> CertificateInfo:
    cert = read_certificate(path)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    try:
        principal = str(Principal.parse(cn))
    except ValueError:
        principal = ""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(sans.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = tuple(u._name for u in eku)
    except x509.ExtensionNotFound:
        usages = ()
    is_ca = _is_ca(cert)
    return CertificateInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        principal=principal,
        is_ca=is_ca,
        dns=dns,
        ips=ips,
        usages=usages,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
    )


def issued_files(
    directory: Path, principal: str, ca: Callable[[], CertificateAuthority]
) -> tuple[Path, Path]:
    """(certificate, key) of ``principal`` in ``directory``, issued by ``ca()``
    if there are none yet, or if they are out of date: a master certificate
    made before masters carried :data:`MASTER_TLS_NAME`, or one that has
    expired (a ``corral local`` or test cluster reuses its directory)."""
    p = Principal.parse(principal)
    stem = file_stem(p)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    if cert.exists() and key.exists():
        info = describe(cert)
        if not info.expired and (p.kind != "master" or MASTER_TLS_NAME in info.dns):
            return cert, key
    issued = ca().issue(p)
    return issued.cert, issued.key


def certificate_principal(credentials: Credentials | None) -> Principal | None:
    """The principal a client's own certificate names (its CN), or None
    (plaintext, or a CN that is not ``KIND:NAME``)."""
    if credentials is None or credentials.certificate_chain is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(credentials.certificate_chain)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return Principal.parse(str(cns[0].value)) if cns else None
    except ValueError:
        return None
