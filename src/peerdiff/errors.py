"""The errors peerdiff raises on purpose; the CLI prints these in one line (``-v``: traceback).

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PeerdiffError(Exception):
    """Base of every error caused by input, configuration or environment (not by a bug)."""


class ConfigError(PeerdiffError, ValueError):
    """A configuration value is missing, unknown or invalid (the message names the key)."""


class DataError(PeerdiffError, ValueError):
    """Input data is malformed or missing (the message names the file and line or field).

    Args:
        reason: a short category used to count skipped lines (``data.on_bad_line=skip``).
    """

    def __init__(self, message: str, reason: str = "bad line") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownUserError(DataError, KeyError):
    """A user id the prepared benchmark does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class BackendError(PeerdiffError, RuntimeError):
    """An LLM backend cannot be loaded or reached, or answered with an error."""


class DependencyError(PeerdiffError, ImportError):
    """An optional package (or a packaged default model) is not installed; says what to run."""


class MissingStageError(PeerdiffError):
    """A stage needs the output of one that has not run (the message names the command)."""
