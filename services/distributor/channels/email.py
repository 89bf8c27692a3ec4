"""The `email` channel: SMTP (STARTTLS, auth), PDF attached or — when too big — a download link."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr, getaddresses, make_msgid, parseaddr
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.distributor.channels import Parcel
from shared.errors import PermanentError, TransientError
from shared.events import ChannelResult, Delivery
from shared.settings import Settings

DEFAULT_SUBJECT = "Report {{ template }} ({{ request_id }})"
DEFAULT_BODY = """Hello,

the report {{ template }} is {{ 'attached' if attached else 'ready' }}.
{% for link in links %}
Download ({{ link.format }}, {{ link.size }} bytes, valid 7 days): {{ link.url }}
{% endfor %}
Request: {{ request_id }}
-- 
Pressroom
"""
_ADDRESS = re.compile(
    r"^[^@\s<>(),;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$"
)
_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def validate_addresses(value: Any) -> list[str]:
    """Recipients as a list; a malformed address is a permanent error, found before sending."""
    items = [value] if isinstance(value, str) else list(value or [])
    if not items:
        raise PermanentError("email delivery needs at least one recipient in `to`")
    result = []
    for item in items:
        parsed = getaddresses([str(item)])
        name, address = parseaddr(str(item))
        if len(parsed) != 1 or not _ADDRESS.match(address):
            raise PermanentError(f"invalid email address '{item}'")
        result.append(formataddr((name, address)) if name else address)
    return result


def _render(source: str, context: dict[str, Any], what: str) -> str:
    try:
        return _env.from_string(source).render(context)
    except Exception as error:
        raise PermanentError(f"email {what} template error: {error}") from None


class EmailChannel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult:
        s = self.settings
        if not s.smtp_host:
            raise PermanentError("email channel is not configured (set PRESSROOM_SMTP_HOST)")
        extra = delivery.model_extra or {}
        to = validate_addresses(extra.get("to"))
        cc = validate_addresses(extra["cc"]) if extra.get("cc") else []
        artefacts = parcel.event.artefacts
        total = sum(a.size for a in artefacts)
        attach = total <= s.email_attachment_limit
        links = []
        if not attach:
            for artefact in artefacts:
                url = await parcel.store.presign(artefact.key, timedelta(days=7))
                if url is None:
                    raise PermanentError(
                        f"report is {total:,} bytes, over the {s.email_attachment_limit:,}-byte "
                        "attachment limit, and the artefact store has no download links "
                        "(configure S3)"
                    )
                links.append({"format": artefact.format, "size": artefact.size, "url": url})
        context = {
            "request_id": parcel.request_id,
            "template": parcel.event.request.template,
            "attached": attach,
            "links": links,
            "params": parcel.event.request.params,
        }
        message = EmailMessage()
        message["From"] = s.smtp_from
        message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        message["Subject"] = _render(
            str(extra.get("subject") or DEFAULT_SUBJECT), context, "subject"
        )
        # A stable Message-ID lets mail systems drop a copy re-sent after an ambiguous crash.
        message["Message-ID"] = make_msgid(idstring=parcel.request_id, domain="pressroom")
        message.set_content(_render(str(extra.get("body") or DEFAULT_BODY), context, "body"))
        if attach:
            for artefact in artefacts:
                maintype, _, subtype = artefact.content_type.partition(";")[0].partition("/")
                message.add_attachment(
                    await parcel.content(artefact),
                    maintype=maintype,
                    subtype=subtype,
                    filename=parcel.filename(artefact),
                )
        await asyncio.to_thread(self._send, message, to + cc)
        how = "attached" if attach else "linked"
        return ChannelResult(channel="email", ok=True, target=", ".join(to + cc), detail=how)

    def _send(self, message: EmailMessage, recipients: list[str]) -> None:
        with smtp_session(self.settings) as smtp:
            refused = smtp.send_message(message, to_addrs=recipients)
        if refused:
            raise PermanentError(f"SMTP refused some recipients: {_codes(refused)}")


@contextmanager
def smtp_session(s: Settings) -> Iterator[smtplib.SMTP]:
    """A connected (STARTTLS, logged-in) SMTP session; failures become Transient/Permanent."""
    if not s.smtp_host:
        raise PermanentError("email channel is not configured (set PRESSROOM_SMTP_HOST)")
    try:
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
            yield smtp
    except smtplib.SMTPRecipientsRefused as error:
        raise PermanentError(f"SMTP refused every recipient: {_codes(error.recipients)}") from None
    except smtplib.SMTPAuthenticationError as error:
        raise PermanentError(f"SMTP authentication failed: {error.smtp_code}") from None
    except smtplib.SMTPResponseException as error:
        text = (
            error.smtp_error.decode(errors="replace")
            if isinstance(error.smtp_error, bytes)
            else str(error.smtp_error)
        )
        if 500 <= error.smtp_code < 600:
            raise PermanentError(f"SMTP server answered {error.smtp_code}: {text}") from None
        raise TransientError(f"SMTP server answered {error.smtp_code}: {text}") from None
    except (OSError, smtplib.SMTPException) as error:
        raise TransientError(
            f"cannot reach SMTP server {s.smtp_host}:{s.smtp_port}: {error}"
        ) from None


def _codes(recipients: dict[str, Any]) -> str:
    return ", ".join(
        f"{addr} ({code[0] if isinstance(code, tuple) else code})"
        for addr, code in recipients.items()
    )
