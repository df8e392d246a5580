"""A test certificate authority, and certificates it issues for host names and IP addresses.

TLS tests should run with certificate verification on, as real clients do (requests, http.client
with a default context): that needs a CA the client trusts and a server certificate whose
SubjectAltName names the host the client connects to, "localhost", "127.0.0.1" or "::1" included.
This module makes both on the spot, offline, as PEM files in a directory of the caller's (usually
a temporary one), and returns their paths, which is what ``SSLContext.load_cert_chain``,
``load_verify_locations``, ``requests``' ``verify=`` and programs started in a test network take.

The certificates satisfy OpenSSL's strict X.509 checks (``VERIFY_X509_STRICT``, on by default in
Python 3.13's ``create_default_context``): the CA has critical basic constraints and key usage and
a subject key identifier, the leaves an authority key identifier. Keys are ECDSA P-256: generating
them takes microseconds, where RSA takes tens of milliseconds per key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "CertificateFiles", "create_certificates"]

_CLOCK_SKEW = datetime.timedelta(hours=1)     # valid from a little before now: peers' clocks differ
_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9.-]")


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files of one certificate: ``cert``, its unencrypted private ``key``, and ``ca``, the
    certificate of the authority that verifies it."""

    cert: Path
    key: Path
    ca: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_certificate(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _alt_name(name: str) -> x509.GeneralName:
    """A SubjectAltName entry: an IP address entry for an address, a DNS name entry otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=signs_certificates,
                         crl_sign=signs_certificates, encipher_only=False, decipher_only=False)


class CertificateAuthority:
    """A self-signed CA, written to ``directory`` as ``ca.pem`` (``cert``) and ``ca.key`` (``key``),
    that issues certificates into the same directory."""

    def __init__(self, directory: str | os.PathLike[str], name: str = "netsock test CA", *, days: int = 30) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self.directory / "ca.pem"
        self.key = self.directory / "ca.key"
        _write_certificate(self.cert, self._certificate)
        _write_key(self.key, self._key)

    def issue(self, *names: str, stem: str | None = None, days: int = 30) -> CertificateFiles:
        """A certificate for ``names`` (host names, wildcards such as "*.example.test", IPv4 or IPv6
        addresses), good for TLS servers and clients, written as ``<stem>.pem`` and ``<stem>.key``;
        ``stem`` defaults to the first name, with characters unfit for file names replaced."""
        if not names:
            raise ValueError("a certificate needs at least one host name or address")
        stem = stem or _UNSAFE_FILE_CHARACTERS.sub("_", names[0])
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        issuer_key_id = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([_alt_name(name) for name in names]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        files = CertificateFiles(cert=self.directory / f"{stem}.pem", key=self.directory / f"{stem}.key", ca=self.cert)
        _write_certificate(files.cert, certificate)
        _write_key(files.key, key)
        return files


def create_certificates(directory: str | os.PathLike[str], *names: str) -> CertificateFiles:
    """A new CA in ``directory`` and one certificate it issued for ``names``: the usual test setup
    (``load_cert_chain(files.cert, files.key)`` on the server, ``cafile=files.ca`` on the client)."""
    return CertificateAuthority(directory).issue(*names)
