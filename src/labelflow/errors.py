"""labelflow's two kinds of error, importable from anywhere without pulling anything in.

- :class:`LabelflowError` reaches a *person*: the CLI prints its message and hint and exits 1.
- :class:`ClassifiedError` is a failure of one piece of *work* (a record, a chip, a database
  write), classified the way librdkafka classifies its own errors so callers branch on data,
  not on exception types: a stable ``code`` (``geometry.self_intersection``,
  ``imagery.timeout``) for quarantine reasons, metrics and dashboards, a human ``message``,
  and ``transient`` — whether trying again later can succeed. Catalog, imagery, masks and
  sources raise subclasses of it; the stage runner retries the transient ones through the
  retry topics and dead-letters the rest, with no translation layer in between.
"""

from __future__ import annotations

from typing import ClassVar, Literal


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


class ClassifiedError(Exception):
    """A failure of one piece of work: stable ``code``, human ``message``, ``transient``.

    Subclasses fix ``transient`` for a whole family (``ImageryTimeout``) or pass it per
    instance (a catalog error decides from the database's answer).
    """

    transient: ClassVar[bool] = False
    code: str = "error"

    def __init__(self, code: str, message: str, *, transient: bool | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        if transient is not None:
            self.transient = transient  # type: ignore[misc]

    @property
    def kind(self) -> Literal["transient", "permanent"]:
        """``transient`` or ``permanent``: the word written into retry and DLQ headers."""
        return "transient" if self.transient else "permanent"


class TransientError(ClassifiedError):
    """Retry later: the work is fine, something it needs is not available right now."""

    transient = True


class PermanentError(ClassifiedError):
    """Never retry: the work cannot be done as it is; quarantine or dead-letter it."""

    transient = False
