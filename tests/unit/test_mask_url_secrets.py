"""mask_url_secrets: what it masks, exactly as the (quadratic) pattern it replaced did.

That a megabyte of any shape no longer holds a service: tests/integration/test_redteam.py."""

from __future__ import annotations

import random
import re

from shared.events import mask_url_secrets

# The pattern it replaced (quadratic on `a.a.a.…`): the same matches, kept as the reference.
_REFERENCE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s\"'<>]+)")


def _reference(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        scheme, rest = match.group(1), match.group(2)
        rest, hash_sep, fragment = rest.partition("#")
        head, sep, query = rest.partition("?")
        if "@" in head.split("/", 1)[0]:
            head = "***@" + head.split("@", 1)[1]
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
    text = (
        "webhook https://hooks.slack.com/services/T0AAA/B0BBB/xoxbR4nd0mS3cretV4lu3zz answered "
        "500; https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWx; "
        "https://h.example/in;token=abc;v=2/x and https://h.example/reports/2026/12/07/"
        "quarterly-report-of-all-teams.pdf"
    )
    assert mask_url_secrets(text) == (
        "webhook https://hooks.slack.com/services/T0AAA/B0BBB/*** answered "
        "500; https://discord.com/api/webhooks/123456789012345678/***; "
        "https://h.example/in;token=***;v=***/x and https://h.example/reports/2026/12/07/"
        "quarterly-report-of-all-teams.pdf"
    )
