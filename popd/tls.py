"""
TLS for popd: server certificates loaded from PEM files, behind a context that can be reloaded
while the server runs (on C{SIGHUP}), for C{STLS} and for implicit TLS alike (RFC 8314).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from OpenSSL.crypto import X509, PKey
from OpenSSL.SSL import Connection, Context
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.filepath import FilePath
from zope.interface import implementer

_log = Logger()

#: The TLS versions C{--tls-min-version} accepts, by name.
TLS_VERSIONS: dict[str, TLSVersion] = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


# The private keys of TLS server certificates.
_SERVER_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def loadCertificateOptions(
    certificatePath: str, keyPath: str, minimumVersion: TLSVersion = TLSVersion.TLSv1_2
) -> CertificateOptions:
    """
    Load a certificate (with its chain) and its private key from PEM files into TLS settings
    for a server.

    @param certificatePath: a PEM file whose first certificate is the server's; those after it
        form the chain sent to clients.  It may also hold the key.
    @param keyPath: a PEM file holding the unencrypted private key of that certificate.
    @param minimumVersion: the oldest TLS version accepted; TLS 1.2 by default, as RFC 8314
        and Dovecot's C{ssl_min_protocol} have it.
    @return: the TLS settings, usable for C{STLS}.
    @raise OSError: when a file cannot be read.
    @raise ValueError: when a file holds no certificate or no usable key, or when the key is
        not the certificate's.
    """
    try:
        certificates = x509.load_pem_x509_certificates(FilePath(certificatePath).getContent())
    except ValueError:
        raise ValueError(f"{certificatePath} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(FilePath(keyPath).getContent(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{keyPath} holds no unencrypted PEM private key") from None
    if not isinstance(key, _SERVER_KEY_TYPES):
        raise ValueError(f"{keyPath} holds a kind of key that TLS servers do not use")
    if _publicKeyBytes(key.public_key()) != _publicKeyBytes(certificates[0].public_key()):
        raise ValueError(
            f"the key in {keyPath} does not match the certificate in {certificatePath}"
        )
    return CertificateOptions(
        privateKey=PKey.from_cryptography_key(key),
        certificate=X509.from_cryptography(certificates[0]),
        extraCertChain=[X509.from_cryptography(each) for each in certificates[1:]],
        raiseMinimumTo=minimumVersion,
    )


def _publicKeyBytes(key: PublicKeyTypes) -> bytes:
    """
    Encode a public key canonically, to compare it with another.
    """
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableTLSContext:
    """
    A server certificate that can be read again from its files, so that a renewed certificate
    takes effect without a restart: connections made before L{reload} keep the old one.
    """

    def __init__(
        self,
        certificatePath: str,
        keyPath: str,
        minimumVersion: TLSVersion = TLSVersion.TLSv1_2,
    ) -> None:
        """
        Load the certificate now, so that a bad file is reported before the server listens.

        @raise OSError: when a file cannot be read.
        @raise ValueError: when a file holds no usable certificate or key.
        """
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.minimumVersion = minimumVersion
        self._options = loadCertificateOptions(certificatePath, keyPath, minimumVersion)

    def reload(self) -> bool:
        """
        Read the files again.  When they are unusable, keep serving the certificate loaded
        before, and log why.

        @return: whether the new certificate is now in use.
        """
        try:
            options = loadCertificateOptions(
                self.certificatePath, self.keyPath, self.minimumVersion
            )
        except (OSError, ValueError):
            _log.failure(
                "Keeping the current TLS certificate: {path} could not be loaded",
                path=self.certificatePath,
            )
            return False
        self._options = options
        _log.info("Reloaded the TLS certificate from {path}", path=self.certificatePath)
        return True

    @property
    def options(self) -> CertificateOptions:
        """
        The TLS settings now in use.
        """
        return self._options

    def getContext(self) -> Context:
        """
        The OpenSSL context of the certificate now in use (for APIs that take a context
        factory).
        """
        return self._options.getContext()

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> Connection:
        return Connection(self._options.getContext(), None)
