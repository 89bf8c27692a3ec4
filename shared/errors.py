"""The retry vocabulary: every failure in Pressroom is either transient or permanent."""

from __future__ import annotations

import errno
from typing import Literal

from nats import errors as nats_errors
from nats.js import errors as js_errors

from shared.urls import mask_url_secrets


class PressroomError(Exception):
    """Base of every error Pressroom raises on purpose; its message is meant for a human.

    Every URL in the reason is shown without its secrets (userinfo, query values, path
    parameters, fragment): a reason reaches logs, the ledger, dead letters, `report.failed`
    and the console, read by more people than the configuration it quotes."""

    def __init__(self, reason: str) -> None:
        reason = mask_url_secrets(reason)
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[type[PressroomError], tuple[str]]:
        # Errors cross process boundaries (render workers): keep them picklable.
        return (type(self), (self.reason,))


class TransientError(PressroomError):
    """Worth retrying: timeouts, 5xx, refused connections, a store or broker briefly down."""

    retry_after: float | None = None  # seconds the other side asked us to wait (Retry-After)


class PermanentError(PressroomError):
    """Retrying will not help: invalid payload, unknown template, template error, 4xx."""


class RequestCancelled(PressroomError):
    """`pressroom cancel` stopped the request: not a failure, nothing to retry or dead-letter."""


class InvalidPayload(PermanentError):
    """The message is not valid JSON or does not match its event schema."""


class TemplateError(PermanentError):
    """The template cannot be found, compiled or rendered."""


class ResourceBlocked(PermanentError):
    """A template tried to reach a file or URL it may not read."""


class RenderTimeout(PermanentError):
    """A render took longer than the configured limit and was stopped."""


class MissingGlyphs(PermanentError):
    """The report has characters no installed font can draw: the PDF would show empty boxes."""


Verdict = Literal["permanent", "transient"]

# The one classification of exceptions that are not ours, first match wins. Permanent: the
# input or the template is at fault, or a resource cap was hit — the same message would fail
# the same way again. Transient: the network, the broker or a store — worth another try.
CLASSIFICATION: tuple[tuple[tuple[type[BaseException], ...], Verdict, str], ...] = (
    ((PermanentError,), "permanent", "Pressroom said so"),
    ((TransientError,), "transient", "Pressroom said so"),
    ((MemoryError, RecursionError), "permanent", "a resource cap was hit"),
    ((ArithmeticError,), "permanent", "bad numbers in the input (overflow, division by zero)"),
    ((LookupError, ValueError, TypeError, AttributeError), "permanent", "bad input"),
    ((ConnectionError, TimeoutError), "transient", "network"),
    ((OSError,), "transient", "I/O (disk full, too many files …)"),
)


# OSErrors that describe the input (a path too long, through a file, a loop), not the machine.
PERMANENT_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EINVAL}
)


def classify(error: BaseException) -> Verdict:
    """Permanent or transient; unknown errors count as transient (retries are bounded)."""
    if isinstance(error, OSError) and error.errno in PERMANENT_ERRNOS:
        return "permanent"
    for kinds, verdict, _ in _classification():
        if isinstance(error, kinds):
            return verdict
    return "transient"


def _classification() -> tuple[tuple[tuple[type[BaseException], ...], Verdict, str], ...]:
    # nats-py's errors are known only here, where nats is imported lazily.

    return (
        *CLASSIFICATION[:2],
        ((nats_errors.MaxPayloadError,), "permanent", "the message can never fit"),
        ((js_errors.BadRequestError,), "permanent", "JetStream refused the request itself"),
        ((nats_errors.Error, js_errors.Error), "transient", "the broker or a bucket"),
        *CLASSIFICATION[2:],
    )
