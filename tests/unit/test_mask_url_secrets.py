"""mask_url_secrets: what it masks, as the (quadratic) pattern it replaced did, with the
userinfo read to the last "@" of the host part (a password may hold "@", "?" or "#").

That a megabyte of any shape no longer holds a service: tests/integration/test_redteam.py."""

from __future__ import annotations

import random
import re

import pytest

from shared.events import mask_url_secrets

# The pattern it replaced (quadratic on `a.a.a.…`): the same matches, kept as the reference.
_REFERENCE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s\"'<>]+)")


def _reference(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        scheme, rest = match.group(1), match.group(2)
        # Userinfo runs to the last "@" before the first "/" (a password may hold "@?#").
        authority = rest.split("/", 1)[0]
        userinfo = ""
        if "@" in authority:
            userinfo, rest = "***@", rest[authority.rfind("@") + 1 :]
        rest, hash_sep, fragment = rest.partition("#")
        head, sep, query = rest.partition("?")
        head = userinfo + head
        if sep:
            query = "&".join(
                f"{p.partition('=')[0]}=***" if "=" in p else "***" for p in query.split("&") if p
            )
        return f"{scheme}{head}{sep}{query}{hash_sep}{'***' if fragment else ''}"

    return _REFERENCE.sub(one, text)


def test_masks_userinfo_query_values_and_fragments() -> None:
    text = "failed: https://u:pw@h.example/x?token=abc&x=1#frag then s3+http://b/?sig=z done"
    assert mask_url_secrets(text) == (
        "failed: https://***@h.example/x?token=***&x=***#*** then s3+http://b/?sig=*** done"
    )


def test_matches_the_former_pattern_on_tricky_text() -> None:
    pieces = [*"ab1+.-_:/ ?=&@#\"'<>é\n", "://", "http://", "https://u:p@h/x?t=1"]
    rng = random.Random(25)
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        assert mask_url_secrets(text) == _reference(text), text


def test_masks_path_parameters_and_path_segments_that_read_as_tokens() -> None:
    """Webhook services carry their secret in the path (Slack, Discord, Teams); some servers
    take `;token=` parameters. Ids of digits, words and dates stay readable."""
    discord = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs-Rc3kQ9_xB"
    text = (
        "webhook https://hooks.slack.com/services/T0AAA/B0BBB/xoxbR4nd0mS3cretV4lu3zz answered "
        f"500; https://discord.com/api/webhooks/123456789012345678/{discord}; "
        "https://h.example/in;token=abc;v=2/x and https://h.example/reports/2026/12/07/"
        "quarterly-report-of-all-teams.pdf https://api.github.com/repos/microsoft/"
        "TypeScript-DOM-lib-generator/pulls/req-20261207060000-42 "
        "http://u:p@ss?w#rd@h.example/x"
    )
    assert mask_url_secrets(text) == (
        "webhook https://hooks.slack.com/services/T0AAA/B0BBB/*** answered "
        "500; https://discord.com/api/webhooks/123456789012345678/***; "
        "https://h.example/in;token=***;v=***/x and https://h.example/reports/2026/12/07/"
        "quarterly-report-of-all-teams.pdf https://api.github.com/repos/microsoft/"
        "TypeScript-DOM-lib-generator/pulls/req-20261207060000-42 "
        "http://***@h.example/x"
    )


def test_the_rest_of_the_text_is_read_once_per_url_not_once_per_scheme_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Linear: a `://` with no scheme before it (`://://…`, `1://`, `x_://`) is passed over
    without reading on to the end of the text, which made 120 KB of them take 24 s."""
    import shared.urls

    calls: list[int] = []
    real = shared.urls._URL_REST

    class Counting:
        def match(self, text: str, pos: int) -> re.Match[str] | None:
            calls.append(pos)
            return real.match(text, pos)

    monkeypatch.setattr(shared.urls, "_URL_REST", Counting())
    for shape in ("://", "1://", "x_://", "é://"):
        calls.clear()
        assert mask_url_secrets(shape * 10_000) == shape * 10_000
        assert calls == [], shape
    calls.clear()
    text = " ".join(["https://u:p@h/x?t=1", "://" * 1000, "s3://b/k"] * 3)
    assert mask_url_secrets(text).count("***@h/x?t=***") == 3
    assert len(calls) == 6  # one read of each URL's rest, none for the 3,000 bare marks
