"""`pressroom pdf`: the renderer's key for sealed PDF passwords, and sealing one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from services.console.cli._audit import audited
from services.console.cli._common import fail, out, settings
from services.console.cli._output import literal
from shared.sealing import SealError, generate_key, public_key_of, seal

pdf_app = typer.Typer(help="Sealed passwords for protected PDFs.", no_args_is_help=True)


@pdf_app.command("keys")
@audited("pdf keys")
def pdf_keys(
    folder: Path = typer.Argument(..., help="Where to write seal.key and seal.pub"),
) -> None:
    """A new key pair: seal.key for the renderer (PRESSROOM_PDF_SEAL_KEY_FILE), seal.pub for
    whoever seals passwords."""
    private, public = generate_key()
    folder.mkdir(parents=True, exist_ok=True)
    key, pub = folder / "seal.key", folder / "seal.pub"
    if key.exists():
        fail(f"{literal(key)} exists; not overwritten")
    descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    pub.write_bytes(public)
    out.print(f"wrote {literal(key)} (the renderer's, mode 600) and {literal(pub)}", soft_wrap=True)


@pdf_app.command("seal")
@audited("pdf seal")
def pdf_seal(
    public_key: Path | None = typer.Option(
        None, "--public-key", help="seal.pub (default: PRESSROOM_PDF_SEAL_KEY_FILE's)"
    ),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="Read the password here (default: stdin)"
    ),
) -> None:
    """Print the sealed form of a reader's password, for a request's `pdf.password`."""
    where = public_key or (
        Path(settings().pdf_seal_key_file) if settings().pdf_seal_key_file else None
    )
    if where is None:
        fail("--public-key is required (or set PRESSROOM_PDF_SEAL_KEY_FILE)")
    try:
        pem = where.read_bytes()
        text = password_file.read_text(encoding="utf-8") if password_file else sys.stdin.read()
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read: {literal(str(error))}")
    try:
        sealed = seal(text.rstrip("\r\n"), public_key_of(pem))
    except SealError as error:
        fail(str(error))
    out.print(sealed, soft_wrap=True, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(pdf_app, name="pdf")
