"""What a reader sees of a finished PDF's marks: the stamp across each page, and its text."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pikepdf


def watermarked_pages(pdf: bytes, tmp_path: Path) -> list[bool]:
    """Per page, whether a reader sees a red stamp across it: reddish pixels over at least 1%
    of the page, spread over a third of its width and height at least (not a red badge)."""
    from PIL import Image

    path = tmp_path / f"look-{time.monotonic_ns()}.pdf"
    path.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "30", "-png", str(path), str(path.with_suffix(""))], check=True
    )
    seen = []
    for png in sorted(tmp_path.glob(f"{path.stem}-*.png")):
        image = Image.open(png).convert("RGB")
        width, height = image.size
        pixels = image.load()
        red = [
            (x, y)
            for x in range(width)
            for y in range(height)
            if pixels[x, y][0] - pixels[x, y][1] > 25 and pixels[x, y][0] - pixels[x, y][2] > 25
        ]
        xs, ys = [x for x, _ in red], [y for _, y in red]
        seen.append(
            len(red) >= 0.01 * width * height
            and max(xs) - min(xs) > 0.35 * width
            and max(ys) - min(ys) > 0.35 * height
        )
    return seen


def stamp_texts(pdf: bytes) -> list[str]:
    """Per page, the text of the stamp drawn on it (diagonal text, which pdftotext skips on the
    page itself, read from the stamp laid flat on a page of its own)."""
    texts = []
    with pikepdf.open(io.BytesIO(pdf)) as document:
        for page in document.pages:
            drawn = [
                str(operands[0])
                for operands, operator in pikepdf.parse_content_stream(page)
                if str(operator) == "Do" and str(operands[0]).startswith("/PressroomStamp")
            ]
            assert len(drawn) == 1, drawn
            form = page.Resources.XObject[drawn[0]]
            flat = pikepdf.new()
            blank = flat.add_blank_page(page_size=(float(form.BBox[2]), float(form.BBox[3])))
            blank.add_overlay(flat.copy_foreign(form))
            out = io.BytesIO()
            flat.save(out)
            text = subprocess.run(
                ["pdftotext", "-", "-"], input=out.getvalue(), capture_output=True, check=True
            ).stdout.decode()
            texts.append(" ".join(text.split()))
    return texts


def decrypted(pdf: bytes, password: str) -> bytes:
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf), password=password) as document:
        document.save(out)
    return out.getvalue()
