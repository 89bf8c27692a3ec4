"""Sealed passwords and the operator's PDF limits, without servers (the pipeline and the CLI are
covered in tests/integration/test_pdf_protect.py and test_pdf_limits.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf
import pytest
import weasyprint
from pydantic import ValidationError

from services.console.embedded import free_port
from services.renderer.core import with_template_defaults
from services.renderer.finish import finish, plan, with_placeholders
from services.renderer.job import Finish, Signing
from shared.errors import PermanentError, TransientError
from shared.events import PdfOptions, ReportRequested, request_fingerprint
from shared.sealing import SealError, generate_key, seal, unseal
from shared.secretenv import for_role
from shared.settings import ConfigError, Settings, load_settings
from tests.helpers import REPO
from tests.pki import TestPki


def test_a_sealed_password_opens_only_with_its_key_and_hides_its_length() -> None:
    private, public = generate_key()
    other, _ = generate_key()
    token = seal("Zoë's pässword", public)
    assert "pässword" not in token and unseal(token, private) == "Zoë's pässword"
    with pytest.raises(SealError, match="not sealed to this renderer's key"):
        unseal(token, other)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SealError):
        unseal(tampered, private)
    assert len(seal("a", public)) == len(seal("a" * 60, public))


def test_a_password_in_clear_is_refused_without_being_repeated() -> None:
    with pytest.raises(ValidationError) as caught:
        PdfOptions(password="hunter2-in-clear")
    [problem] = caught.value.errors()
    assert "never in clear" in problem["msg"] and "hunter2" not in problem["msg"]


def test_requests_without_pdf_options_keep_their_fingerprint() -> None:
    request = ReportRequested(template="weekly.html", request_id="r1")
    with_none = request.model_copy(update={"pdf": None})
    assert request_fingerprint(request) == request_fingerprint(with_none)
    watermarked = request.model_copy(update={"pdf": PdfOptions(watermark="DRAFT")})
    assert request_fingerprint(watermarked) != request_fingerprint(request)


def settings(**values: object) -> Settings:
    return Settings(templates_dir=REPO / "templates", **values)  # type: ignore[arg-type]


def test_the_operators_stamp_and_signature_cannot_be_turned_off(tmp_path: Path) -> None:
    cfg = settings(
        pdf_watermark="DRAFT",
        sign_always=True,
        sign_key=str(tmp_path / "k"),
        sign_cert=str(tmp_path / "c"),
    )
    spec = plan(
        cfg,
        PdfOptions(watermark="for {recipient}", sign=False),
        templates_dir=cfg.templates_dir,
        recipient="Ada",
    )
    assert spec is not None
    assert spec.watermarks == ("DRAFT", "for Ada") and spec.signing is not None
    assert plan(settings(), None, templates_dir=cfg.templates_dir, recipient=None) is None


@pytest.mark.parametrize(
    ("values", "options", "reason"),
    [
        ({"pdf_passwords": "forbid"}, {"permissions": {"print": False}}, "forbidden here"),
        ({}, {"password": "sealed1:" + "A" * 100}, "no key to unseal it"),
        ({"pdf_seal_key_file": "/k"}, {"password": "sealed1:" + "A" * 100}, "no owner password"),
        ({}, {"sign": True}, "no signing key is configured"),
        ({}, {"append": ["weekly.html"]}, "not one the operator allows"),
        ({"pdf_append_allow": "missing.pdf"}, {"append": ["missing.pdf"]}, "not a file"),
    ],
)
def test_what_the_operator_does_not_allow_is_refused_with_one_line(
    values: dict[str, str], options: dict[str, object], reason: str
) -> None:
    cfg = settings(**values)
    with pytest.raises(PermanentError) as caught:
        plan(
            cfg, PdfOptions.model_validate(options), templates_dir=cfg.templates_dir, recipient=None
        )
    assert reason in caught.value.reason and "\n" not in caught.value.reason


def test_placeholders_go_before_the_end_of_the_body() -> None:
    html = "<html><body><p>x</p></BODY></html>"
    placed = with_placeholders(html, 2)
    assert placed.count('class="pressroom-appended"') == 2
    assert placed.index("pressroom-appended") < placed.index("</BODY>")
    assert with_placeholders(html, 0) == html


def test_appended_pages_replace_the_placeholders_and_keep_their_own_size(
    tmp_path: Path,
) -> None:
    terms = tmp_path / "terms.pdf"
    weasyprint.HTML(string="<style>@page{size:A5}</style><p>Terms</p>").write_pdf(terms)
    html = with_placeholders("<html><body><p>Report</p></body></html>", 1)
    pdf = weasyprint.HTML(string=html).write_pdf()
    assert len(pikepdf.open(io.BytesIO(pdf)).pages) == 2  # the report's page, one reserved
    done = pikepdf.open(io.BytesIO(finish(pdf, Finish(append=(str(terms),)))))
    assert len(done.pages) == 2
    assert [round(float(v)) for v in done.pages[1].mediabox] == [0, 0, 420, 595]  # A5


@pytest.mark.parametrize(
    ("front", "reason"),
    [
        ("pdf:\n  password: sealed1:AAAA", "front matter may not set pdf.password"),
        ("pdf:\n  sign: maybe", "front matter pdf.sign: Input should be a valid boolean"),
    ],
)
def test_a_templates_pdf_defaults_that_cannot_be_are_refused(
    tmp_path: Path, front: str, reason: str
) -> None:
    (tmp_path / "report.html").write_text(f"{{#- ---\n{front}\n--- #}}\n<p>x</p>\n")
    with pytest.raises(PermanentError) as caught:
        with_template_defaults(tmp_path, "report", None)
    assert reason in caught.value.reason


def test_a_watermarked_report_finishes_to_the_same_bytes_every_time(tmp_path: Path) -> None:
    # The ledger's content hash means something: the same render and stamp, the same file.
    pdf = weasyprint.HTML(string="<p>Report</p>").write_pdf()
    spec = Finish(watermarks=("DRAFT",))
    first = finish(pdf, spec)
    assert first == finish(pdf, spec) and first != pdf


def test_only_the_renderer_is_given_the_pdf_keys() -> None:
    env = {
        "PRESSROOM_PDF_SEAL_KEY_FILE": "/s/seal.key",
        "PRESSROOM_PDF_OWNER_PASSWORD_FILE": "/s/owner",
        "PRESSROOM_PDF_OWNER_PASSWORD": "owner-pw",
        "PRESSROOM_SIGN_KEY": "/s/signer.key",
        "PRESSROOM_SIGN_CERT": "/s/signer.pem",
        "PRESSROOM_SIGN_KEY_FILE": "/s/signer.key",
        "PRESSROOM_PDF_WATERMARK": "DRAFT",
    }
    assert for_role(env, "renderer") == env
    for role in ("fetcher", "distributor", "scheduler"):
        assert for_role(env, role) == {"PRESSROOM_PDF_WATERMARK": "DRAFT"}


async def test_a_pdf_is_signed_where_an_event_loop_runs_too(tmp_path: Path) -> None:
    # pyHanko's synchronous API runs its own loop: the in-process renderer runs inside one.
    pki = TestPki.create(tmp_path)
    signing = Signing(
        key_file=str(pki.folder / "signer.key"),
        cert_file=str(pki.folder / "signer.pem"),
        chain_file=str(pki.folder / "ca.pem"),
    )
    signed = finish(weasyprint.HTML(string="<p>Report</p>").write_pdf(), Finish(signing=signing))
    status = await pki.validate(signed)
    assert status.bottom_line and status.trusted


def test_a_timestamp_server_that_does_not_answer_is_a_transient_error(tmp_path: Path) -> None:
    # The stage retries it (then dead-letters it), rather than deliver a PDF without B-T.
    pki = TestPki.create(tmp_path)
    signing = Signing(
        key_file=str(pki.folder / "signer.key"),
        cert_file=str(pki.folder / "signer.pem"),
        tsa_url=f"http://127.0.0.1:{free_port()}/tsa",  # nobody listens
    )
    with pytest.raises(TransientError, match="the timestamp server did not answer"):
        finish(weasyprint.HTML(string="<p>Report</p>").write_pdf(), Finish(signing=signing))


@pytest.mark.parametrize("given", ["value", "file"])
def test_the_owner_password_opens_the_pdf_given_as_design_names_it_or_as_a_file(
    tmp_path: Path, given: str
) -> None:
    # PRESSROOM_PDF_OWNER_PASSWORD (DESIGN.md) holds the password; its _FILE twin a file.
    (tmp_path / "owner").write_text("owner-Pw-77\n")
    values = (
        {"pdf_owner_password": "owner-Pw-77"}
        if given == "value"
        else {"pdf_owner_password_file": str(tmp_path / "owner")}
    )
    spec = plan(
        settings(**values),
        PdfOptions(permissions={"print": True, "copy": False}),
        templates_dir=REPO / "templates",
        recipient=None,
    )
    assert spec is not None and "owner-Pw-77" not in repr(spec)
    pdf = finish(weasyprint.HTML(string="<p>Report</p>").write_pdf(), spec)
    with pikepdf.open(io.BytesIO(pdf), password="owner-Pw-77") as document:
        assert document.is_encrypted and document.owner_password_matched


def test_signing_and_owner_password_settings_answer_to_design_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRESSROOM_SIGN_KEY", "/s/signer.key")
    monkeypatch.setenv("PRESSROOM_SIGN_CERT", "/s/signer.pem")
    monkeypatch.setenv("PRESSROOM_PDF_OWNER_PASSWORD", "owner-pw")
    loaded = load_settings()
    assert (loaded.sign_key, loaded.sign_cert) == ("/s/signer.key", "/s/signer.pem")
    assert loaded.pdf_owner_password == "owner-pw"
    # the older names still work, and must agree with the new ones when both are set
    monkeypatch.delenv("PRESSROOM_SIGN_CERT")
    monkeypatch.setenv("PRESSROOM_SIGN_CERT_FILE", "/s/signer.pem")
    assert load_settings().sign_cert == "/s/signer.pem"
    monkeypatch.setenv("PRESSROOM_SIGN_KEY_FILE", "/s/other.key")
    with pytest.raises(ConfigError, match="PRESSROOM_SIGN_KEY and PRESSROOM_SIGN_KEY_FILE"):
        load_settings()
    monkeypatch.delenv("PRESSROOM_SIGN_KEY_FILE")
    monkeypatch.setenv("PRESSROOM_PDF_OWNER_PASSWORD_FILE", "/s/owner")
    with pytest.raises(ConfigError, match="both set") as refused:
        load_settings()
    assert "owner-pw" not in str(refused.value)
