"""The `email` channel: SMTP (STARTTLS, auth), PDF attached or — when too big — a download link."""

from __future__ import annotations

import asyncio
import html
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from pathlib import PurePosixPath
from typing import Any

from services.distributor.parcel import Parcel
from shared.adapters import egress
from shared.downloadlinks import download_link
from shared.errors import PermanentError, TransientError
from shared.events import ChannelResult, Delivery
from shared.placeholders import fill
from shared.settings import Settings

ALLOW_SETTING = "PRESSROOM_EMAIL_ALLOW"
DEFAULT_SUBJECT = "{title}: {period}"
DEFAULT_BODY = """Hello,

your report "{title}" for {period} is {status_text}.
{links}
Requested by {requested_by_text} on {date} (request {request_id}).

-- 
Pressroom reports
"""
_ADDRESS = re.compile(
    r"^[^@\s<>(),;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$"
)
MAX_PARAM_CHARS = 200
MAX_RECIPIENTS = 50
MAX_ADDRESS_CHARS = 320  # a display name and RFC 5321's 254-character path
LINK_VALIDITY = timedelta(days=7)


def validate_addresses(value: Any) -> list[str]:
    """Recipients as a list; a malformed address is a permanent error, found before sending."""
    items = [value] if isinstance(value, str) else list(value or [])
    if not items:
        raise PermanentError("email delivery needs at least one recipient in `to`")
    if len(items) > MAX_RECIPIENTS:
        raise PermanentError(
            f"email delivery names {len(items)} recipients; at most {MAX_RECIPIENTS} "
            "(use a mailing list address)"
        )
    result = []
    for item in items:
        if len(str(item)) > MAX_ADDRESS_CHARS:
            # Before parsing: the email.utils parsers are not linear on hostile input.
            raise PermanentError(
                f"email address '{str(item)[:40]}…' is longer than {MAX_ADDRESS_CHARS} characters"
            )
        if "\r" in str(item) or "\n" in str(item):
            raise PermanentError(f"email address {str(item)!r} contains a line break")
        parsed = getaddresses([str(item)])
        name, address = parseaddr(str(item))
        if len(parsed) != 1 or not _ADDRESS.match(address):
            raise PermanentError(f"invalid email address '{item}'")
        result.append(formataddr((name, address)) if name else address)
    return result


def recipient_allowed(address: str, allow: list[str]) -> bool:
    """Entries: an address, a domain (`example.com`), or its subdomains (`.example.com`)."""
    _, bare = parseaddr(address)
    bare = bare.lower()
    domain = bare.rpartition("@")[2]
    for entry in (a.strip().lower() for a in allow):
        if "@" in entry:
            matched = bare == entry
        elif entry.startswith(("*.", ".")):
            matched = domain.endswith("." + entry.lstrip("*."))
        else:
            matched = domain == entry
        if matched:
            return True
    return False


def check_recipients(recipients: list[str], allow: list[str], setting: str = ALLOW_SETTING) -> None:
    refused = [r for r in recipients if not recipient_allowed(r, allow)]
    if refused:
        raise PermanentError(
            f"email to {', '.join(refused)} refused: not in {setting} "
            "(add the address or its domain to allow it)"
        )


def _one_line(value: Any) -> str:
    text = " ".join(str(value).split())
    return text[:MAX_PARAM_CHARS]


def text_fields(parcel: Parcel, *, attached: bool, links: list[dict[str, Any]]) -> dict[str, str]:
    """The fixed set of {placeholders} a request's subject and body may use."""
    request = parcel.event.request
    title = request.params.get("report_title")
    period = request.params.get("reporting_period")
    date = request.requested_at.strftime("%Y-%m-%d")
    names = ", ".join(parcel.filename(a) for a in parcel.event.artefacts)
    fields = {
        "request_id": parcel.request_id,
        "template": request.template,
        "title": _one_line(title)
        if isinstance(title, str) and title.strip()
        else PurePosixPath(request.template).stem.replace("_", " ").replace("-", " ").capitalize(),
        "period": _one_line(period) if isinstance(period, str) and period.strip() else date,
        "date": date,
        "requested_by": request.requested_by or "",
        "requested_by_text": _one_line(request.requested_by or "") or "someone",
        "formats": ", ".join(request.formats),
        "status": "attached" if attached else "ready to download",
        "status_text": f"attached ({names})" if attached else "ready to download",
        "links": "\n".join(
            f"Download ({link['format']}, {link['size']:,} bytes, valid 7 days): {link['url']}"
            for link in links
        ),
    }
    for key, value in request.params.items():
        if isinstance(value, str | int | float | bool):
            fields[f"param.{key}"] = _one_line(value)
    return fields


def as_html(text: str, links: list[dict[str, Any]], title: str) -> str:
    """The plain-text body as a small HTML page: paragraphs, download links clickable."""
    urls = {link["url"] for link in links}
    paragraphs = []
    for block in text.split("\n\n"):
        lines = []
        for line in block.strip("\n").splitlines():
            if line.rstrip() == "--":
                continue
            escaped = html.escape(line)
            for url in urls:
                escaped = escaped.replace(
                    html.escape(url), f'<a href="{html.escape(url)}">{html.escape(url)}</a>'
                )
            lines.append(escaped)
        if lines:
            paragraphs.append("<p>" + "<br>\n".join(lines) + "</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n"
        + "\n".join(paragraphs)
        + "\n</body></html>\n"
    )


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
        check_recipients(to + cc, *s.email_allow_for(parcel.event.request.tenant))
        subject_pattern = str(extra.get("subject") or DEFAULT_SUBJECT)
        if "\r" in subject_pattern or "\n" in subject_pattern:
            raise PermanentError("email subject must be one line (it contains a line break)")
        artefacts = parcel.event.artefacts
        total = sum(a.size for a in artefacts)
        attach = total <= s.email_attachment_limit
        links = []
        if not attach:
            for artefact in artefacts:
                # Minted now, for this message only: never stored in events, ledger or logs.
                url = (
                    download_link(s, artefact, LINK_VALIDITY)
                    if s.public_url
                    else await parcel.store.presign(artefact.key, LINK_VALIDITY)
                )
                if url is None:
                    raise PermanentError(
                        f"report is {total:,} bytes, over the {s.email_attachment_limit:,}-byte "
                        "attachment limit, and the artefact store has no download links "
                        "(set PRESSROOM_PUBLIC_URL for the console's, or configure S3)"
                    )
                links.append({"format": artefact.format, "size": artefact.size, "url": url})
        fields = text_fields(parcel, attached=attach, links=links)
        message = EmailMessage()
        message["From"] = s.smtp_from
        message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        message["Subject"] = fill(subject_pattern, fields, what="email subject")
        message["Date"] = format_datetime(datetime.now(UTC))
        # The same Message-ID on every attempt of this delivery (a 451 then a 250, or a copy
        # re-sent after an ambiguous crash): mail systems drop the duplicate.
        domain = parseaddr(s.smtp_from)[1].rpartition("@")[2] or "pressroom.localhost"
        message["Message-ID"] = f"<{parcel.delivery_id(delivery)}@{domain}>"
        text = fill(str(extra.get("body") or DEFAULT_BODY), fields, what="email body")
        message.set_content(text)
        message.add_alternative(as_html(text, links, fields["title"]), subtype="html")
        if attach:
            for artefact in artefacts:
                maintype, _, subtype = artefact.content_type.partition(";")[0].partition("/")
                message.add_attachment(
                    await parcel.content(artefact),
                    maintype=maintype,
                    subtype=subtype,
                    filename=parcel.filename(artefact),
                )
        # smtplib's timeout is per socket operation: the whole conversation gets a deadline,
        # and past it the socket is shut so the thread's blocked read ends too.
        hang_up = HangUp()
        try:
            async with egress.deadline(s.smtp_timeout, f"SMTP server {s.smtp_host}:{s.smtp_port}"):
                await asyncio.to_thread(self._send, message, to + cc, hang_up)
        except BaseException:
            hang_up()
            raise
        how = "attached" if attach else "linked"
        return ChannelResult(channel="email", ok=True, target=", ".join(to + cc), detail=how)

    def _send(self, message: EmailMessage, recipients: list[str], hang_up: HangUp) -> None:
        with smtp_session(self.settings, attach=hang_up.attach) as smtp:
            refused = smtp.send_message(message, to_addrs=recipients)
        if refused:
            raise refusal("SMTP refused some recipients", refused)


class HangUp:
    """Ends an SMTP session from outside the thread that runs it (at the call's deadline)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self._done = False

    def attach(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            self._smtp = smtp
        if self._done:
            self()

    def __call__(self) -> None:
        with self._lock:
            self._done = True
            sock = self._smtp.sock if self._smtp is not None else None
        if sock is not None:
            with suppress(OSError):  # shutdown, not close: it wakes a read blocked in a thread
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def smtp_session(
    s: Settings, *, attach: Callable[[smtplib.SMTP], None] | None = None
) -> Iterator[smtplib.SMTP]:
    """A connected (STARTTLS, logged-in) SMTP session; failures become Transient/Permanent.

    `attach` sees the session before it connects (to hang it up from another thread)."""
    if not s.smtp_host:
        raise PermanentError("email channel is not configured (set PRESSROOM_SMTP_HOST)")
    try:
        with smtplib.SMTP(timeout=s.smtp_timeout) as smtp:
            # What STARTTLS checks the certificate against; the constructor would set it, but
            # it would also connect before `attach` could see the session.
            smtp._host = s.smtp_host  # type: ignore[attr-defined]
            if attach is not None:
                attach(smtp)
            code, greeting = smtp.connect(s.smtp_host, s.smtp_port)
            if code != 220:
                raise smtplib.SMTPConnectError(code, greeting)
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password or "")
            yield smtp
    except smtplib.SMTPRecipientsRefused as error:
        raise refusal("SMTP refused every recipient", error.recipients) from None
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


def refusal(what: str, recipients: dict[str, Any]) -> PermanentError | TransientError:
    """Recipients refused at RCPT: transient when every code is 4xx (e.g. 451 greylisting:
    the server asks to try again later), permanent when any is 5xx."""
    codes = [code[0] if isinstance(code, tuple) else code for code in recipients.values()]
    if codes and all(isinstance(c, int) and 400 <= c < 500 for c in codes):
        return TransientError(f"{what} for now (try again later): {_codes(recipients)}")
    return PermanentError(f"{what}: {_codes(recipients)}")


def _codes(recipients: dict[str, Any]) -> str:
    return ", ".join(
        f"{addr} ({code[0] if isinstance(code, tuple) else code})"
        for addr, code in recipients.items()
    )
