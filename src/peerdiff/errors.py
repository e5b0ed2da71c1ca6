"""The errors peerdiff raises on purpose; the CLI prints these in one line (``-v``: traceback).

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Iterator


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


class BadRequestError(DataError):
    """A request that cannot be answered as posed: a method that needs a known user given an
    inline history, a field of the OpenAI API the service does not implement (the message says
    what to send instead).

    Args:
        param: the request field at fault, when there is one (OpenAI's error ``param``).
        code: a machine-readable reason (OpenAI's error ``code``: ``model_not_found``).
    """

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class UnknownModelError(BadRequestError):
    """A model name the service does not serve (the message lists those it does)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model", code="model_not_found")


class PromptTooLongError(BadRequestError):
    """A chat prompt longer than the service takes (the message gives both lengths)."""


class BackendError(PeerdiffError, RuntimeError):
    """An LLM backend cannot be loaded or reached, or answered with an error."""


class DependencyError(PeerdiffError, ImportError):
    """An optional package (or a packaged default model) is not installed; says what to run."""


class MissingStageError(PeerdiffError):
    """A stage needs the output of one that has not run (the message names the command)."""


def did_you_mean(value: object, choices: Iterable[object], prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for a mistyped name, else ``""``.

    Appended to the messages that reject a name and list the valid ones. The closest names by
    :func:`difflib.get_close_matches` (at most three, those nearly as close as the best).
    ``prefix`` is put before each suggestion (a section path, ``"train."``) but takes no part
    in matching.
    """
    options = {str(c): c for c in choices}
    close = difflib.get_close_matches(str(value), list(options), n=3, cutoff=0.6)
    if not close:
        return ""
    ratio = [difflib.SequenceMatcher(None, str(value), c).ratio() for c in close]
    close = [c for c, r in zip(close, ratio) if r >= ratio[0] - 0.05]
    shown = [repr(f"{prefix}{c}") if prefix else repr(options[c]) for c in close]
    return f" (did you mean {' or '.join(shown)}?)"


@contextlib.contextmanager
def loading(name: str, key: str) -> Iterator[None]:
    """Turn a model that cannot be loaded (no such folder, not in the offline Hugging Face
    cache) into one :class:`ConfigError` naming the setting, instead of the hub client's
    chained tracebacks."""
    try:
        yield
    except (OSError, ValueError) as e:
        if isinstance(e, PeerdiffError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if name.startswith(("/", "./", "../", "~")):
            raise ConfigError(f"{key} {name!r}: no model folder there ({first[:200]})") from None
        raise ConfigError(
            f"{key} {name!r} cannot be loaded: not a model folder, and not in the local Hugging "
            f"Face cache (peerdiff runs offline); give a local path or download it once "
            f"(`huggingface-cli download {name}`). ({first[:200]})"
        ) from None
