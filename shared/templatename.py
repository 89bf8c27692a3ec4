"""One name per template, whichever spelling a request or an operator used.

The canonical name is the file's path in the templates folder, suffix included, exactly as
`pressroom templates ls` lists it: `weekly` and `weekly.html` are both `weekly.html`. The ledger,
metrics labels, `ls --template` and the template commands all use it.
"""

from __future__ import annotations

TEMPLATE_SUFFIXES = (".html", ".htm")


def canonical_template(name: str) -> str:
    """`weekly` → `weekly.html`; `reports\\q1.html` → `reports/q1.html`; `./x.htm` → `x.htm`.

    A name without a template suffix gets `.html` (a template saved as `.htm` is named with
    its suffix by everyone who lists it)."""
    cleaned = name.strip().replace("\\", "/")
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    if not cleaned or cleaned.lower().endswith(TEMPLATE_SUFFIXES):
        return cleaned
    return cleaned + ".html"
