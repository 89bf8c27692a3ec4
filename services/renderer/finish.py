"""Finishing a rendered PDF: append the operator's PDFs, stamp a watermark, encrypt, sign.

Two halves. `plan` runs in the renderer service (and the CLI): it applies the operator's
defaults and limits to a request's `pdf` options and refuses, with a one-line reason, what it
may not have (a password where passwords are forbidden, a signature without a key, a PDF the
operator did not allow). It reads no secret. `finish` runs in a capped render process, under
the render's timeout and memory cap, on the PDF WeasyPrint wrote, in this order:

1. append — the report was laid out with one blank placeholder page per appended page at its
   end (`with_placeholders`), so `counter(pages)` in its footers already counts them and its
   own page numbers stay right; the placeholders are replaced by the appended PDFs' pages,
   which keep their own content (no number is stamped on them);
2. watermark — the text is laid out by WeasyPrint with the renderer's fonts (any script) on a
   transparent page of the same size and laid over every page, appended ones included;
3. encrypt — AES-256 (PDF 2.0, R6): the operator's owner password, the reader's password
   unsealed here and nowhere else (shared/sealing.py), print/copy permissions;
4. sign — PAdES B-B with the operator's key (files or a PKCS#11 token), B-T when a timestamp
   server is configured; an incremental update, the last change the PDF ever gets, which
   adds the signature and leaves the document's Info and XMP as they were (in agreement,
   as PDF/A requires).
"""

from __future__ import annotations

import asyncio
import html as html_text
import io
import math
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from services.renderer import warm
from services.renderer.job import Finish, Signing
from shared.errors import PermanentError, TransientError
from shared.events import PdfOptions
from shared.sealing import SealError, unseal
from shared.settings import Settings

MAX_APPENDED_PAGES = 200
SIGNATURE_FIELD = "Signature"


def signing_from(settings: Settings) -> Signing | None:
    """The operator's signing configuration, or None when no key is configured."""
    signing = Signing(
        settings.sign_key,
        settings.sign_cert,
        settings.sign_chain_file,
        settings.sign_key_password_file,
        settings.sign_pkcs11_module,
        settings.sign_pkcs11_token,
        settings.sign_pkcs11_key,
        settings.sign_pkcs11_pin_file,
        settings.sign_tsa_url,
    )
    files = bool(signing.key_file and signing.cert_file)
    token = bool(signing.pkcs11_module and signing.pkcs11_key)
    return signing if files or token else None


def plan(
    settings: Settings,
    options: PdfOptions | None,
    *,
    templates_dir: Path,
    recipient: str | None,
    user_password_file: str = "",
) -> Finish | None:
    """The finishing a request gets under the operator's settings, or None for none at all."""
    asked = options or PdfOptions()
    marks = [m for m in (settings.pdf_watermark, asked.watermark) if m]
    watermarks = tuple(dict.fromkeys(_placeholders(m, recipient) for m in marks))
    password = asked.password is not None or bool(user_password_file)
    encrypt = password or asked.permissions is not None
    if encrypt and settings.pdf_passwords == "forbid":
        raise PermanentError(
            "pdf: passwords and permissions are forbidden here (PRESSROOM_PDF_PASSWORDS)"
        )
    if asked.password is not None and not settings.pdf_seal_key_file:
        raise PermanentError(
            "pdf.password: this renderer has no key to unseal it (PRESSROOM_PDF_SEAL_KEY_FILE)"
        )
    if encrypt and not (settings.pdf_owner_password or settings.pdf_owner_password_file):
        raise PermanentError(
            "pdf: no owner password is configured (PRESSROOM_PDF_OWNER_PASSWORD or _FILE)"
        )
    signing = None
    if asked.sign or settings.sign_always:
        signing = signing_from(settings)
        if signing is None:
            raise PermanentError(
                "pdf.sign: no signing key is configured "
                "(PRESSROOM_SIGN_KEY and PRESSROOM_SIGN_CERT, or PRESSROOM_SIGN_PKCS11_*)"
            )
    append = tuple(_allowed(settings, templates_dir, name) for name in asked.append)
    permissions = None
    if encrypt:
        allowed = asked.permissions
        permissions = (allowed.print, allowed.copy_text) if allowed else (True, False)
    if not (append or watermarks or encrypt or signing):
        return None
    return Finish(
        append=append,
        watermarks=watermarks,
        sealed_password=asked.password,
        seal_key_file=settings.pdf_seal_key_file if asked.password else "",
        user_password_file=user_password_file,
        owner_password=settings.pdf_owner_password if encrypt else "",
        owner_password_file=settings.pdf_owner_password_file if encrypt else "",
        permissions=permissions,
        signing=signing,
    )


def _placeholders(text: str, recipient: str | None) -> str:
    return text.replace("{recipient}", recipient or "unknown recipient")


def _allowed(settings: Settings, templates_dir: Path, name: str) -> str:
    if name not in settings.pdf_append_allow_list:
        raise PermanentError(
            f"pdf.append: '{name}' is not one the operator allows (PRESSROOM_PDF_APPEND_ALLOW)"
        )
    root = templates_dir.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise PermanentError(f"pdf.append: '{name}' is not a file in the templates folder")
    return str(path)


# ---- in a render process ----------------------------------------------------------------------
def appended_pages(spec: Finish) -> int:
    """How many pages the appended PDFs have (the placeholders the layout reserves)."""
    total = 0
    for path in spec.append:
        with _open_appended(path) as document:
            total += len(document.pages)
    return total


def _open_appended(path: str) -> Any:
    # Imported here: heavy (pikepdf, 0.2 s): loaded in render processes, not by every service.
    import pikepdf

    name = Path(path).name
    try:
        pdf = pikepdf.open(path)
    except (pikepdf.PdfError, OSError) as error:
        raise PermanentError(f"pdf.append: '{name}' is not a readable PDF ({error})") from None
    if pdf.is_encrypted:
        raise PermanentError(f"pdf.append: '{name}' is encrypted")
    if not 0 < len(pdf.pages) <= MAX_APPENDED_PAGES:
        raise PermanentError(f"pdf.append: '{name}' has {len(pdf.pages)} pages (1 to 200)")
    return pdf


_MARGINS = (
    "top-left-corner",
    "top-left",
    "top-center",
    "top-right",
    "top-right-corner",
    "bottom-left-corner",
    "bottom-left",
    "bottom-center",
    "bottom-right",
    "bottom-right-corner",
    "left-top",
    "left-middle",
    "left-bottom",
    "right-top",
    "right-middle",
    "right-bottom",
)
_PLACEHOLDER_CSS = (
    "@page pressroom-appended { margin: 0; background: none; "
    + " ".join(f"@{box} {{ content: none }}" for box in _MARGINS)
    + " } .pressroom-appended { page: pressroom-appended; break-before: page; "
    "display: block; height: 0; margin: 0; padding: 0; border: 0 }"
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def with_placeholders(html: str, pages: int) -> str:
    """The HTML with `pages` blank pages at its end (no margin boxes), which the appended
    PDFs' pages replace: the report's `counter(pages)` counts them."""
    if pages <= 0:
        return html
    block = f"<style>{_PLACEHOLDER_CSS}</style>" + '<div class="pressroom-appended"></div>' * pages
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + block
    at = ends[-1].start()
    return html[:at] + block + html[at:]


def finish(pdf: bytes, spec: Finish) -> bytes:
    """The finished PDF (see the module's docstring for the order)."""
    # Imported here: heavy (pikepdf, 0.2 s): loaded in render processes, not by every service.
    import pikepdf

    if spec.append or spec.watermarks or spec.encrypt:
        document = pikepdf.open(io.BytesIO(pdf))
        if spec.append:
            _append(document, spec)
        if spec.watermarks:
            _watermark(document, spec.watermarks)
        pdf = _save(document, spec)
    if spec.signing is not None:
        pdf = _sign(pdf, spec)
    return pdf


def _append(document: Any, spec: Finish) -> None:
    sources = [_open_appended(path) for path in spec.append]
    count = sum(len(source.pages) for source in sources)
    if len(document.pages) <= count:
        raise PermanentError("pdf.append: the report has no page of its own before the appended")
    del document.pages[len(document.pages) - count :]
    for source in sources:
        document.pages.extend(source.pages)


def _watermark(document: Any, texts: tuple[str, ...]) -> None:
    """The texts across every page's diagonal, centred, under nothing (drawn last)."""
    # Imported here: heavy (pikepdf, 0.2 s): loaded in render processes, not by every service.
    import pikepdf

    stamps: dict[tuple[float, float], tuple[Any, float, float]] = {}
    for page in document.pages:
        x0, y0, x1, y1 = (float(v) for v in page.mediabox)
        width, height = x1 - x0, y1 - y0
        key = (round(width, 2), round(height, 2))
        if key not in stamps:
            diagonal = math.hypot(width, height)
            longest = max(max(len(t) for t in texts), 4)
            size = min(diagonal * 0.7 / (0.66 * longest), height / 6)
            source = pikepdf.open(io.BytesIO(_stamp_pdf(texts, diagonal, size)))
            form = document.copy_foreign(source.pages[0].as_form_xobject())
            box = [float(v) for v in source.pages[0].mediabox]
            stamps[key] = (form, box[2] - box[0], box[3] - box[1])
        form, stamp_width, stamp_height = stamps[key]
        # One name per stamp: pages often share one resource dictionary.
        name = page.add_resource(
            form, pikepdf.Name.XObject, pikepdf.Name(f"/PressroomStamp{list(stamps).index(key)}")
        )
        angle = math.atan2(height, width)
        cos, sin = math.cos(angle), math.sin(angle)
        cx, cy = x0 + width / 2, y0 + height / 2
        ops = (
            f"q {cos:.6f} {sin:.6f} {-sin:.6f} {cos:.6f} {cx:.3f} {cy:.3f} cm "
            f"1 0 0 1 {-stamp_width / 2:.3f} {-stamp_height / 2:.3f} cm {name} Do Q"
        )
        # The page's own drawing in a saved graphics state, so the stamp starts from identity.
        page.contents_add(pikepdf.Stream(document, b"q\n"), prepend=True)
        page.contents_add(pikepdf.Stream(document, b"\nQ\n" + ops.encode()))


def _stamp_pdf(texts: tuple[str, ...], width: float, size: float) -> bytes:
    """The texts centred on one transparent strip `width` points long, laid out by WeasyPrint
    with the renderer's fonts (so any script draws)."""
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint import HTML

    line = size * 1.8  # room for the tallest fallback font's ascent and descent
    height = len(texts) * line + 2  # a rounding error must not push a line over
    lines = "".join(f"<div>{html_text.escape(t)}</div>" for t in texts)
    document = f"""<!doctype html><html><head><meta charset="utf-8"><style>
      @page {{ size: {width:.2f}pt {height:.2f}pt; margin: 0; background: transparent }}
      html, body {{ margin: 0; background: transparent }}
      div {{ text-align: center; white-space: nowrap; font-family: sans-serif;
        font-weight: bold; font-size: {size:.2f}pt; line-height: {line:.2f}pt;
        height: {line:.2f}pt; overflow: hidden;
        color: rgba(200, 30, 30, 0.28) }}
    </style></head><body>{lines}</body></html>"""
    stamp: bytes = HTML(string=document).write_pdf(font_config=warm.shared_font_config())
    return stamp


def _read_secret(path: str, what: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise PermanentError(f"cannot read the {what} file ({type(error).__name__})") from None
    if not value:
        raise PermanentError(f"the {what} file is empty")
    return value


def _owner_password(spec: Finish) -> str:
    if spec.owner_password:
        return spec.owner_password
    return _read_secret(spec.owner_password_file, "owner password")


def _user_password(spec: Finish) -> str:
    if spec.sealed_password is not None:
        key = Path(spec.seal_key_file)
        try:
            private = key.read_bytes()
        except OSError as error:
            raise PermanentError(
                f"cannot read the seal key file ({type(error).__name__})"
            ) from None
        try:
            return unseal(spec.sealed_password, private)
        except SealError as error:
            raise PermanentError(f"pdf.password: {error}") from None
    if spec.user_password_file:
        return _read_secret(spec.user_password_file, "user password")
    return ""


def _save(document: Any, spec: Finish) -> bytes:
    # Imported here: heavy (pikepdf, 0.2 s): loaded in render processes, not by every service.
    import pikepdf

    out = io.BytesIO()
    encryption: Any = False
    if spec.permissions is not None:
        printing, copying = spec.permissions
        owner = _owner_password(spec)
        allow = pikepdf.Permissions(
            accessibility=True,  # screen readers may always read it
            extract=copying,
            print_lowres=printing,
            print_highres=printing,
            modify_annotation=False,
            modify_assembly=False,
            modify_form=False,
            modify_other=False,
        )
        encryption = pikepdf.Encryption(
            owner=owner, user=_user_password(spec), R=6, aes=True, allow=allow
        )
    try:
        # Without encryption the same report finishes to the same bytes (qpdf derives the
        # /ID from the content); encryption salts are random by design.
        document.save(out, encryption=encryption, deterministic_id=not encryption)
    except pikepdf.PdfError:  # its message could quote what it was given
        raise PermanentError("the finished PDF could not be written") from None
    return out.getvalue()


def _file_signer(signing: Signing) -> Any:
    # Imported here: heavy (pyHanko, 0.6 s): loaded in render processes that sign, only.
    from pyhanko.sign import signers

    passphrase = None
    if signing.key_password_file:
        passphrase = _read_secret(signing.key_password_file, "signing key password").encode()
    chain = (signing.chain_file,) if signing.chain_file else None
    signer = signers.SimpleSigner.load(  # type: ignore[no-untyped-call]
        signing.key_file, signing.cert_file, ca_chain_files=chain, key_passphrase=passphrase
    )
    if signer is None:  # pyHanko logs why and returns None
        raise PermanentError("the signing key or certificate could not be loaded")
    return signer


def _token_session(signing: Signing) -> Any:
    try:  # imported here: heavy (pyHanko, python-pkcs11), for tokens only
        from pyhanko.config.pkcs11 import TokenCriteria
        from pyhanko.sign import pkcs11
    except ImportError:
        raise PermanentError("PKCS#11 signing needs python-pkcs11 installed") from None
    pin = _read_secret(signing.pkcs11_pin_file, "PKCS#11 PIN") if signing.pkcs11_pin_file else None
    try:
        return pkcs11.open_pkcs11_session(
            signing.pkcs11_module,
            token_criteria=TokenCriteria(label=signing.pkcs11_token or None),
            user_pin=pin,
        )
    except Exception as error:
        raise PermanentError(
            f"the PKCS#11 token could not be opened ({type(error).__name__})"
        ) from None


def _token_signer(session: Any, signing: Signing, raw: bool) -> Any:
    # Imported here: heavy (pyHanko and python-pkcs11): render processes that sign, only.
    from pyhanko.sign import pkcs11

    return pkcs11.PKCS11Signer(
        session, cert_label=signing.pkcs11_key, key_label=signing.pkcs11_key, use_raw_mechanism=raw
    )


def _sign(pdf: bytes, spec: Finish) -> bytes:
    """The signed PDF: an incremental update, the last change the file gets."""
    assert spec.signing is not None
    with warnings.catch_warnings():  # cryptography's DSA deprecation, on importing pyHanko
        warnings.simplefilter("ignore")
        # Imported here: heavy (pyHanko, 0.6 s): loaded in render processes that sign, only.
        import pyhanko.sign.signers  # noqa: F401
    signing = spec.signing
    if signing.key_file and signing.cert_file:
        return _signed(pdf, spec, _file_signer(signing))
    session = _token_session(signing)
    try:
        try:
            return _signed(pdf, spec, _token_signer(session, signing, raw=False))
        except _MechanismInvalid:
            # Tokens such as SoftHSM sign ECDSA only over a digest pyHanko computes.
            try:
                return _signed(pdf, spec, _token_signer(session, signing, raw=True))
            except _MechanismInvalid:
                raise PermanentError("the PKCS#11 token cannot sign with this key") from None
    finally:
        session.close()


_timestampers: dict[str, Any] = {}


class _MechanismInvalid(Exception):
    pass


def _signed(pdf: bytes, spec: Finish, signer: Any) -> bytes:
    assert spec.signing is not None
    # Imported here: heavy (pyHanko, 0.6 s): loaded in render processes that sign, only.
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko.sign.signers.pdf_byterange import BuildProps
    from pyhanko.sign.timestamps import HTTPTimeStamper
    from pyhanko.sign.timestamps.common_utils import TimestampRequestError

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    # pyHanko's increment would rewrite the document's metadata: the Info /Producer becomes
    # "WeasyPrint …; pyHanko …" but the XMP pdf:Producer "pyHanko …" alone, both /ModDate
    # and xmp:ModifyDate the clock (read twice), and the whole XMP packet re-serialised by its
    # own model (pyHanko#755: PDF/A extension schemas come out invalid). A PDF/A whose Info and
    # XMP disagree is no PDF/A (ISO 19005-2 6.6.2.3.1). The signature changes no metadata
    # instead: the document keeps the dates and producer it was rendered with, in agreement;
    # the signature names its own time (/M, signing-time) and software (/Prop_Build).
    # Overriding `_update_meta` is how pyHanko's maintainer turns the update off (pyHanko#223).
    writer._update_meta = _no_metadata_update  # type: ignore[method-assign]
    if spec.permissions is not None:  # an update to an encrypted file is encrypted alike
        owner = _owner_password(spec)
        writer.encrypt(owner)  # type: ignore[no-untyped-call]
    tsa = spec.signing.tsa_url
    timestamper = None
    if tsa:
        # Kept per process: it remembers the size of a timestamp token, which pyHanko would
        # otherwise ask the server for (a second round trip) on every signature.
        timestamper = _timestampers.get(tsa)
        if timestamper is None:
            if len(_timestampers) >= 8:
                _timestampers.clear()
            timestamper = _timestampers[tsa] = HTTPTimeStamper(tsa, timeout=20)
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=fields.SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        # The signing software, in the signature (the document's Producer stays the renderer's).
        app_build_props=BuildProps(name="Pressroom", revision=_signed_by()),
    )
    try:
        signed = _off_the_event_loop(
            lambda: signers.sign_pdf(writer, meta, signer=signer, timestamper=timestamper)
        )
    except TimestampRequestError as error:
        raise TransientError(f"the timestamp server did not answer ({error})") from None
    except PermanentError:
        raise
    except Exception as error:
        if type(error).__name__ == "MechanismInvalid":  # python-pkcs11's, not imported here
            raise _MechanismInvalid() from None
        raise PermanentError(f"the PDF could not be signed ({type(error).__name__})") from None
    data: bytes = signed.getvalue()
    return data


def _signed_by() -> str:
    return f"pressroom {package_version('pressroom')}, pyHanko {package_version('pyHanko')}"


def _no_metadata_update() -> None:
    """In place of pyHanko's writer's metadata update (see `_signed`)."""


def _off_the_event_loop(call: Callable[[], Any]) -> Any:
    """pyHanko's synchronous API runs an event loop of its own: in a render process there is
    none; where one runs (an in-process renderer), in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(call).result()
