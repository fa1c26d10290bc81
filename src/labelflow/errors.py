"""Errors that reach a person: each says what went wrong and what to do next."""

from __future__ import annotations


class LabelflowError(Exception):
    """A failure the user can act on. The CLI prints ``message`` and ``hint`` and exits 1."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class SetupError(LabelflowError):
    """A missing or unusable prerequisite (Java, Maven, a free port, a fetch)."""


class BrokerError(LabelflowError):
    """The local Kafka broker failed to start, stop or answer."""
