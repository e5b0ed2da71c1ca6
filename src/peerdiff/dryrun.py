"""``peerdiff run --dry-run``: each method's prompts for a few samples, built without any
model: token lengths, budgets, and the deviations from a published profile."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from peerdiff.config import RunConfig
from peerdiff.stage import write_json
from peerdiff.tables import console


def print_dry_run(cfg: RunConfig, names: list[str] | None = None) -> dict[str, Any]:
    """``peerdiff run --dry-run``: prompt lengths and budgets per method and step, the
    deviations from the published profile, and what the run needs that is not on this
    machine; nothing is generated or downloaded."""
    from peerdiff.paper import dry_run

    out = dry_run(cfg, names)
    t = Table(title=f"{cfg.name}: dry run (tokens: {out['tokenizer']})")
    for col in (
        "method",
        "step",
        "role",
        "prompts",
        "min",
        "median",
        "max",
        "over budget",
        "new tokens",
    ):
        t.add_column(col, justify="left" if col in ("method", "step", "role") else "right")
    for name, steps in out["methods"].items():
        for step, v in steps.items():
            t.add_row(
                name,
                step,
                v["role"],
                str(v["prompts"]),
                str(v["tokens_min"]),
                f"{v['tokens_median']:.0f}",
                str(v["tokens_max"]),
                f"{v['over_budget']} (> {v.get('limit', cfg.prompt.max_prompt_tokens)})",
                str(v["max_new_tokens"]),
            )
    console.print(t if out["methods"] else f"{t.title}: no prompts built", markup=False)
    for what, why in out["missing"].items():
        console.print(f"missing ({what}): {why}", markup=False)
    if out["skipped"]:
        console.print(
            "prompts not built: " + ", ".join(f"{m} ({why})" for m, why in out["skipped"].items()),
            markup=False,
        )
    devs = out["deviations"]
    console.print("deviations from the published profile: " + ("; ".join(devs) if devs else "none"))
    write_json(cfg.run_path / f"dry-run-{cfg.name}.json", out)
    return out
