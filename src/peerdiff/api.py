"""A personalized review for one user, in a few lines of Python::

    import peerdiff

    with peerdiff.Reviewer("configs/quick.yaml") as r:   # after `peerdiff run` (or train)
        print(r.review(user_id="A1...", item_title="Kind of Blue", rating=5,
                       review_title="Timeless", method="dep"))

With an adapter someone else trained (a pushed ``train/dep/best`` folder, or its Hub
repository id), no training is needed: the data stages are computed in the config's run
directory, and the folder is checked against the method first (base model, encoder, kind,
placeholder groups and tokens)::

    with peerdiff.Reviewer("configs/quick.yaml", adapters={"dep": "shared/dep-adapter"}) as r:
        print(r.review(user_id="A1...", item_title="Kind of Blue", rating=5, method="dep"))

The same code as ``peerdiff serve`` (methods, contexts and adapters built once; prompts from
the same functions as ``peerdiff run``), without HTTP: it needs no web framework installed,
and its refusals are the library's errors (:mod:`peerdiff.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peerdiff.config import RunConfig, load_config
from peerdiff.errors import ConfigError, DependencyError


class Reviewer:
    """Args:
    config: a :class:`RunConfig` or a YAML path; ``overrides`` as on the command line.
    adapters: method -> adapter folder or Hub repository id, instead of the run's trained
        adapter (``{"dep": "path/to/best"}``).

    Raises:
        ConfigError: an adapter that does not fit the method or the models under ``config``
            (the message names the setting to change)."""

    def __init__(
        self,
        config: RunConfig | str | Path,
        overrides: list[str] | None = None,
        adapters: Mapping[str, str | Path] | None = None,
    ) -> None:
        from peerdiff.serve.service import Service

        cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
        self.service = Service(cfg, adapters=adapters)

    def review(
        self,
        *,
        item_title: str,
        rating: float,
        review_title: str = "",
        item_description: str = "",
        user_id: str | None = None,
        history: list[dict[str, Any]] | None = None,
        method: str = "dep",
        max_new_tokens: int = 128,
    ) -> str:
        """The review ``user_id`` (a user of the prepared benchmark) or the author of
        ``history`` (``[{"item_title", "rating", "title", "text"}, ...]``) would write.

        Raises:
            DataError: unknown user (:class:`UnknownUserError`) or a request the method
                cannot answer (:class:`BadRequestError`); ConfigError: invalid input;
                MissingStageError: no trained adapter.
        """
        from peerdiff.methods.prompts import strip_prefix

        try:
            from pydantic import ValidationError

            from peerdiff.serve.schemas import ReviewRequest
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise DependencyError(
                "peerdiff.Reviewer validates requests with pydantic: `pip install pydantic`"
            ) from e

        try:
            req = ReviewRequest(
                user_id=user_id,
                history=history,
                item={"title": item_title, "description": item_description},
                rating=rating,
                review_title=review_title,
                method=method,
                max_new_tokens=max_new_tokens,
            )
        except ValidationError as e:
            raise ConfigError(f"invalid review request: {e}") from None
        return strip_prefix(self.service.review(req).result().text)

    def close(self) -> None:
        self.service.worker.close()

    def __enter__(self) -> Reviewer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
