"""``peerdiff.Reviewer`` with fastapi, starlette and uvicorn unimportable: the library needs
no web framework, and its refusals are the library's errors (the app maps them to HTTP)."""

import sys

import pytest
from helpers import synthetic_overrides

from peerdiff.config import load_config
from peerdiff.errors import (
    BadRequestError,
    ConfigError,
    DataError,
    DependencyError,
    MissingStageError,
    UnknownUserError,
)

WEB = ("fastapi", "starlette", "uvicorn")


def _ours(name: str) -> bool:
    return name in ("peerdiff.api", "peerdiff.serve") or name.startswith("peerdiff.serve.")


@pytest.fixture
def without_fastapi(monkeypatch):
    """The web packages unimportable; ``peerdiff.api`` and ``peerdiff.serve`` imported afresh
    under that, and forgotten after (later tests get the modules they had before)."""
    import peerdiff

    for name in WEB:
        monkeypatch.setitem(sys.modules, name, None)  # `import fastapi` raises ImportError
    for name in [m for m in sys.modules if _ours(m)]:
        monkeypatch.delitem(sys.modules, name)
    for attr in ("api", "serve"):
        monkeypatch.delattr(peerdiff, attr, raising=False)
    yield
    for name in [m for m in sys.modules if _ours(m)]:
        del sys.modules[name]
    for attr in ("api", "serve"):
        if hasattr(peerdiff, attr):
            delattr(peerdiff, attr)


def test_reviewer_works_without_fastapi(without_fastapi, tiny_lm, synthetic_root, tmp_path):
    import peerdiff

    _, _, folder = tiny_lm
    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, tmp_path),
            f"llm.model={folder}",
            "methods=[nonperso]",
        ],
    )
    hist = [{"item_title": "Blue Train", "rating": 4, "title": "Great", "text": "Loved it."}]
    ask = {"item_title": "Kind of Blue", "rating": 5, "max_new_tokens": 4}
    with peerdiff.Reviewer(cfg) as r:
        user = r.service.bench.users[0]
        assert isinstance(r.review(user_id=user, method="nonperso", **ask), str)
        assert isinstance(r.review(history=hist, method="rag", **ask), str)
        with pytest.raises(UnknownUserError, match="unknown user 'nobody'"):
            r.review(user_id="nobody", method="nonperso", **ask)
        with pytest.raises(BadRequestError, match="needs a known user_id; with an inline") as e:
            r.review(history=hist, method="dep", **ask)
        assert isinstance(e.value, DataError)  # as before: invalid input is a DataError
        with pytest.raises(MissingStageError, match="peerdiff train --method dep"):
            r.review(user_id=user, method="dep", **ask)
        with pytest.raises(ConfigError, match="invalid review request"):
            r.review(user_id=user, method="nonperso", item_title="x", rating=9)
    assert "peerdiff.serve.app" not in sys.modules  # the HTTP layer was never imported
    with pytest.raises(DependencyError, match=r"pip install peerdiff\[serve\]"):
        from peerdiff.serve import create_app  # noqa: F401
