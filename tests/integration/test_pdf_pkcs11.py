"""Signing with a key that never leaves a PKCS#11 token: SoftHSM (`make test-deps`) holds the
test CA's document-signing key; `pressroom render --sign` signs through the token in its capped
render process, and pyHanko's validator accepts the signature."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, CertificateType, ObjectClass

from tests.helpers import REPO, pressroom
from tests.pki import TestPki

pytestmark = pytest.mark.integration

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


def token(folder: Path, pki: TestPki, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A SoftHSM token holding the signer's key and certificate; the environment naming it."""
    (folder / "tokens").mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    softhsm = ["softhsm2-util", "--pin", "5678"]
    for args in (
        ["--init-token", "--free", "--label", "reports", "--so-pin", "1234"],
        ["--import", str(pki.folder / "signer.key"), "--token", "reports"],
    ):
        extra = ["--label", "signer", "--id", "01"] if "--import" in args else []
        subprocess.run(
            [*softhsm, *args, *extra], env=env, check=True, capture_output=True, text=True
        )
    cert = x509.load_pem_x509_certificate((pki.folder / "signer.pem").read_bytes())
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))  # python-pkcs11 here adds the certificate
    library = pkcs11.lib(SOFTHSM)
    with library.get_token(token_label="reports").open(rw=True, user_pin="5678") as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                Attribute.SUBJECT: cert.subject.public_bytes(),
                Attribute.LABEL: "signer",
                Attribute.ID: b"\x01",
                Attribute.TOKEN: True,
            }
        )
    (folder / "pin").write_text("5678\n")
    return {
        **env,
        "PRESSROOM_SIGN_PKCS11_MODULE": SOFTHSM,
        "PRESSROOM_SIGN_PKCS11_TOKEN": "reports",
        "PRESSROOM_SIGN_PKCS11_KEY": "signer",
        "PRESSROOM_SIGN_PKCS11_PIN_FILE": str(folder / "pin"),
    }


async def test_pressroom_render_signs_with_a_key_on_a_pkcs11_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = TestPki.create(tmp_path / "pki")
    env = token(tmp_path / "hsm", pki, monkeypatch)
    out = tmp_path / "signed.pdf"
    data = REPO / "templates/samples/portfolio.json"
    result = pressroom(
        *("render", "-t", "weekly.html", "--data-file", str(data), "-o", str(out), "--sign"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    status = await pki.validate(out.read_bytes())
    assert status.bottom_line and status.trusted
    assert "Pressroom Reports" in status.signing_cert.subject.human_friendly

    wrong = {**env, "PRESSROOM_SIGN_PKCS11_TOKEN": "no-such-token"}
    refused = pressroom(
        *("render", "-t", "weekly.html", "--data-file", str(data), "-o", str(tmp_path / "x.pdf")),
        "--sign",
        env=wrong,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: the PKCS#11 token could not be opened (PKCS11Error)"
    ]
