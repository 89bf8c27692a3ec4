"""The retry vocabulary: every failure in Pressroom is either transient or permanent."""

from __future__ import annotations


class PressroomError(Exception):
    """Base of every error Pressroom raises on purpose; its message is meant for a human."""

    def __init__(self, reason: str) -> None:
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
