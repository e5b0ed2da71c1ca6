"""peerdiff: difference-aware LLM personalization (DEP, DPL, DRP and baselines).

The Python entry points (imported on first use, so ``import peerdiff`` stays light)::

    cfg = peerdiff.load_config("configs/quick.yaml", ["generate.max_samples=10"])
    rows = peerdiff.run(cfg)                     # every stage; the results rows
    prep = peerdiff.stages.prepare(cfg)          # or one stage at a time
    adapter = peerdiff.load_adapter("runs/quick/train/dep/best", base_model="default")
    with peerdiff.Reviewer(cfg) as r:
        r.review(user_id="A1...", item_title="Kind of Blue", rating=5, method="dep")
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:  # the one version string: pyproject.toml's, through the installed metadata
    __version__ = importlib.metadata.version("peerdiff")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    __version__ = "0+unknown"

_LAZY = {
    "load_config": ("peerdiff.config", "load_config"),
    "RunConfig": ("peerdiff.config", "RunConfig"),
    "run": ("peerdiff.runner", "run"),
    "load_adapter": ("peerdiff.hub", "load_adapter"),
    "Reviewer": ("peerdiff.api", "Reviewer"),
    "stages": ("peerdiff.stages", None),
    "methods": ("peerdiff.methods", None),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'peerdiff' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)
