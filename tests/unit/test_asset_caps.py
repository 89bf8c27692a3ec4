"""What one asset may cost a render: data: URLs, SVG bombs and huge images are refused early."""

from __future__ import annotations

import base64
from io import BytesIO
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image
from pypdf import PdfReader

from services.renderer import assets
from services.renderer.job import RenderJob
from services.renderer.pdf import render_job
from shared.errors import ResourceBlocked

SVG = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


def use_bomb(levels: int, fan: int = 10) -> str:
    """Each group draws the one before it `fan` times: fan ** levels rectangles."""
    groups = "".join(
        f'<g id="l{i}">' + f'<use xlink:href="#l{i - 1}"/>' * fan + "</g>"
        for i in range(1, levels + 1)
    )
    return (
        f'<svg {SVG} width="100" height="100"><defs><g id="l0"><rect width="1" height="1"/></g>'
        f'{groups}</defs><use xlink:href="#l{levels}"/></svg>'
    )


def flat(rects: int) -> str:
    return f'<svg {SVG} width="10" height="10">' + '<rect width="1" height="1"/>' * rects + "</svg>"


def data_url(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def render(folder: Path, body: str) -> bytes:
    (folder / "t.html").write_text(f"<html><body><p>Report body</p>{body}</body></html>")
    out = render_job(RenderJob(str(folder), "t.html", {}, ("pdf",)))
    assert out.pdf is not None
    return out.pdf


def test_svg_elements_are_counted_with_every_reference_expanded() -> None:
    assert assets.svg_elements(flat(5).encode(), "x", 1000) == 6
    assert assets.svg_elements(use_bomb(3).encode(), "x", 1000) > 1000
    # A billion, counted in time linear in the document.
    assert assets.svg_elements(use_bomb(9).encode(), "x", 10**6) > assets.MAX_SVG_ELEMENTS
    by_url = (
        f'<svg {SVG}><defs><g id="p">{"<rect/>" * 50}</g></defs>'
        + ('<rect fill="url(#p)"/><rect style="clip-path: url( \'#p\' )"/>' * 10)
        + "</svg>"
    )
    assert assets.svg_elements(by_url.encode(), "x", 10**6) > 1000
    # WeasyPrint draws `<use href="same.svg#l9">` and `fill="url(x#p)"` from this document too,
    # and of two elements with one id, counting takes the larger.
    other = use_bomb(9).replace('xlink:href="#', 'xlink:href="bomb.svg#')
    assert assets.svg_elements(other.encode(), "x", 10**6) > assets.MAX_SVG_ELEMENTS
    assert (
        assets.svg_elements(by_url.replace("url(#p)", "url(x.svg#p)").encode(), "x", 10**6) > 1000
    )
    twice = f'<svg {SVG}><g id="p">{"<rect/>" * 500}</g><g id="p"/>' + '<use href="#p"/>' * 10
    assert assets.svg_elements((twice + "</svg>").encode(), "x", 10**6) > 5000
    nested = f'<svg {SVG}><defs><g id="a"><image xlink:href="{data_url(flat(500))}"/></g></defs>'
    nested += '<use xlink:href="#a"/>' * 10 + "</svg>"
    assert assets.svg_elements(nested.encode(), "x", 10**6) > 5000


def test_a_use_cycle_and_absurd_nesting_are_refused() -> None:
    cycle = f'<svg {SVG}><g id="a"><use xlink:href="#b"/></g><g id="b"><use href="#a"/></g></svg>'
    with pytest.raises(assets.AssetRefused, match="refers to itself"):
        assets.svg_elements(cycle.encode(), "'x.svg'", 1000)
    deep = f"<svg {SVG}>" + "<g>" * 300 + "</g>" * 300 + "</svg>"
    with pytest.raises(assets.AssetRefused, match="nests over 200 levels"):
        assets.svg_elements(deep.encode(), "'x.svg'", 1000)


def test_data_urls_are_decoded_within_the_asset_limit() -> None:
    body, media = assets.read_data_url("data:text/plain;charset=utf-8,a%20b", 100)
    assert (body, media) == (b"a b", "text/plain;charset=utf-8")
    assert assets.read_data_url(data_url("<svg/>"), 100) == (b"<svg/>", "image/svg+xml")
    with pytest.raises(assets.AssetRefused, match="over the 100-byte asset limit"):
        assets.read_data_url("data:;base64," + "A" * 1000, 100)
    with pytest.raises(assets.AssetRefused, match="decodes to 130 bytes"):
        assets.read_data_url("data:," + "a" * 130, 100)
    with pytest.raises(assets.AssetRefused, match="no comma"):
        assets.read_data_url("data:image/png;base64", 100)


def test_a_data_svg_bomb_fails_the_render_at_once_with_the_reason(tmp_path: Path) -> None:
    bomb = data_url(use_bomb(12))  # 10^12 rectangles in about 4 KB
    for body in (f'<img src="{bomb}">', f'<div style="background: url({bomb})">x</div>'):
        with pytest.raises(ResourceBlocked, match="SVG image data:image/svg\\+xml;base64,… "):
            render(tmp_path, body)
    (tmp_path / "bomb.svg").write_text(use_bomb(12))
    with pytest.raises(ResourceBlocked, match=r"SVG image 'bomb\.svg' would draw over 200,000"):
        render(tmp_path, '<img src="bomb.svg">')


def test_a_small_svg_and_a_percent_encoded_one_still_render(tmp_path: Path) -> None:
    text = f'<svg {SVG} width="200" height="30"><text y="20">DRAWN-TEXT</text></svg>'
    pdf = render(
        tmp_path, f'<img src="data:image/svg+xml,{quote(text)}"><img src="{data_url(flat(50))}">'
    )
    assert "DRAWN-TEXT" in PdfReader(BytesIO(pdf)).pages[0].extract_text()


def test_an_image_of_too_many_pixels_is_refused_by_its_header(tmp_path: Path) -> None:
    small = BytesIO()
    Image.new("1", (10_000, 6_000)).save(small, "PNG")  # 60 MP, a few kilobytes compressed
    url = "data:image/png;base64," + base64.b64encode(small.getvalue()).decode()
    with pytest.raises(ResourceBlocked, match="10,000 × 6,000 pixels, over the 50,000,000"):
        render(tmp_path, f'<img src="{url}">')


def test_what_counting_cannot_see_is_stopped_by_the_render_budget(tmp_path: Path) -> None:
    # Each image is small; the template draws it many times.
    image = data_url(flat(400))
    images = f'<img src="{image}">' * 5
    (tmp_path / "t.html").write_text(f"<html><body>{images}</body></html>")
    from weasyprint import HTML

    with pytest.raises(assets.AssetRefused, match="over 1,000 elements: stopped"):  # noqa: SIM117
        with assets.svg_budget(limit=1000):
            HTML(filename=str(tmp_path / "t.html")).write_pdf()
    with assets.svg_budget(limit=5000):  # within it, the same document renders
        HTML(filename=str(tmp_path / "t.html")).write_pdf()
