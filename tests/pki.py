"""A test CA, a document-signing certificate and a loopback RFC 3161 timestamp server.

The CA is made here with `cryptography`; the timestamp server answers real HTTP requests with
pyHanko's own test timestamper (DummyTimeStamper) behind a TSA certificate of the same CA.
Signatures are then checked with pyHanko's validator, trusting this CA and nothing else.
"""

from __future__ import annotations

import datetime
import http.server
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

with warnings.catch_warnings():  # cryptography's DSA deprecation, on importing pyHanko
    warnings.simplefilter("ignore")
    from pyhanko.keys import load_cert_from_pemder
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

from services.console.embedded import free_port


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pressroom tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _certificate(
    subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, eku: Any = None
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class TestPki:
    """Files the operator would mount: the CA, the signer's key and certificate, the TSA's."""

    folder: Path

    __test__ = False  # not a test class

    @classmethod
    def create(cls, folder: Path) -> TestPki:
        folder.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("Pressroom Test CA", ca_key, "Pressroom Test CA", ca_key, ca=True)
        signer_key = ec.generate_private_key(ec.SECP256R1())
        signer = _certificate(
            "Pressroom Reports", signer_key, "Pressroom Test CA", ca_key, ca=False
        )
        tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tsa = _certificate(
            "Pressroom Test TSA",
            tsa_key,
            "Pressroom Test CA",
            ca_key,
            ca=False,
            eku=[ExtendedKeyUsageOID.TIME_STAMPING],
        )
        (folder / "ca.pem").write_bytes(_pem(ca))
        (folder / "signer.pem").write_bytes(_pem(signer))
        (folder / "signer.key").write_bytes(_key_pem(signer_key))
        (folder / "tsa.pem").write_bytes(_pem(tsa))
        (folder / "tsa.key").write_bytes(_key_pem(tsa_key))
        return cls(folder)

    def signing_env(self) -> dict[str, str]:
        return {
            "PRESSROOM_SIGN_KEY": str(self.folder / "signer.key"),
            "PRESSROOM_SIGN_CERT": str(self.folder / "signer.pem"),
            "PRESSROOM_SIGN_CHAIN_FILE": str(self.folder / "ca.pem"),
        }

    async def validate(self, pdf: bytes, password: str | None = None) -> Any:
        """pyHanko's verdict on the PDF's one signature, trusting only the test CA."""
        reader = PdfFileReader(io.BytesIO(pdf))
        if password is not None:
            reader.decrypt(password)
        [signature] = reader.embedded_signatures
        roots = [load_cert_from_pemder(str(self.folder / "ca.pem"))]
        context = ValidationContext(trust_roots=roots, allow_fetching=False)
        return await async_validate_pdf_signature(
            signature, signer_validation_context=context, ts_validation_context=context
        )


class TimestampServer:
    """An RFC 3161 timestamp server on loopback (POST application/timestamp-query)."""

    def __init__(self, pki: TestPki) -> None:
        from asn1crypto import tsp
        from pyhanko.keys import load_private_key_from_pemder

        stamper = DummyTimeStamper(
            tsa_cert=load_cert_from_pemder(str(pki.folder / "tsa.pem")),
            tsa_key=load_private_key_from_pemder(str(pki.folder / "tsa.key"), passphrase=None),
        )
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                response = stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(response)))
                self.end_headers()
                self.wfile.write(response)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TimestampServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tsa"
