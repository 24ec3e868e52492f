"""A throwaway certificate authority and an HTTPS registry for TLS tests.

The CA and the server certificate are made with `cryptography` (already a test
dependency for the token server), so no extra package is needed. The server
certificate names a host that does not resolve (`registry.test`); the client
reaches it with `--resolve registry.test=127.0.0.1`, which pins the address but
leaves TLS checking the name, exactly as with a real registry behind DNS.

    ca = TestCA.create()
    files = ca.issue_server(tmp / "tls", ["registry.test"])
    reg = start_tls_registry(tmp / "reg", files)
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .registry import AuthMode, Registry, TlsFiles, start_registry

SERVER_NAME = "registry.test"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "occystrap tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class TestCA:
    """A self-signed CA that issues server certificates for test host names."""

    __test__ = False  # not a pytest test class despite the name

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "occystrap test CA") -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
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
        return cls(key, cert)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write_ca(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert_pem)
        return path

    def issue_server(
        self,
        directory: Path,
        names: Sequence[str] = (SERVER_NAME,),
        valid_days: int = 7,
        not_before: datetime.datetime | None = None,
    ) -> TlsFiles:
        """Write server.pem (leaf + CA chain) and server.key for `names` (DNS names or IPs)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start = not_before or now - datetime.timedelta(hours=1)
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / "server.pem"
        key_path = directory / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem)
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return TlsFiles(cert_path, key_path)


def start_tls_registry(workdir: Path, tls: TlsFiles, auth: AuthMode = None) -> Registry:
    """The real registry serving HTTPS only, on a free 127.0.0.1 port.

    `Registry.host` stays `127.0.0.1:PORT` (the address); tests name it
    `registry.test:PORT` and pin the name with `--resolve`.
    """
    return start_registry(workdir, auth, tls=tls)


__all__ = ["SERVER_NAME", "TestCA", "start_tls_registry"]
