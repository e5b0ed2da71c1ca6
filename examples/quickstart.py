"""From the bundled review data to a personalized review, with peerdiff's Python API.

    python examples/quickstart.py                    # the smoke job: about a minute on 2 cores
    python examples/quickstart.py --config quick     # the main job (about 14 minutes)
    python examples/quickstart.py data.max_users=12  # any `key=value` override

Four steps: load a job's config, run its stages (prepare, embed, contrast, train DEP and
its control, generate, score; each skipped when its run directory already holds it), pick
a test user, and ask each method for the review this user would write of their held-out
item, next to the review they did write. Run it from the repository root (the data lives
in ``../shared/data``; elsewhere set ``PEERDIFF_DATA`` or ``data.root=...``).
"""

from __future__ import annotations

import argparse
import textwrap

import peerdiff
from peerdiff.metrics import format_score as fmt

METHODS = ("nonperso", "constant", "dep")  # no user information, a learned prompt, DEP


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="smoke", help="a shipped config's name or a YAML path")
    p.add_argument("--max-new-tokens", type=int, default=96, help="length of the reviews")
    p.add_argument("overrides", nargs="*", help="key=value settings, as on the command line")
    args = p.parse_args(argv)

    # 1. The job: the bundled Amazon Digital Music sample, SmolLM2-135M and MiniLM.
    cfg = peerdiff.load_config(args.config, args.overrides)

    # 2. Every stage; the results rows (what `peerdiff run` prints as its table).
    rows = peerdiff.run(cfg)
    print(f"\n{cfg.name}: {rows[0]['n']} test samples, run directory {cfg.run_path}")
    for r in rows:
        s = r["scores"]
        print(
            f"  {r['method']:9s} ROUGE-1 {fmt('rouge1', s['rouge1'])}  NLL {fmt('nll', s.get('nll'))}"
        )

    # 3. A test user: their held-out review is what the methods try to write.
    bench = peerdiff.stages.data(cfg).bench
    sample = bench.samples("test")[0]
    target = bench.review(sample.target)
    item = bench.item(target.item_id)
    print(f"\nuser {sample.user_id} ({len(sample.profile)} earlier reviews) on {item.title!r}")
    print(f"rating {target.rating:g}, title {target.title!r}")

    # 4. The review each method writes for them (DEP: the user's soft tokens).
    with peerdiff.Reviewer(cfg) as reviewer:
        for method in METHODS:
            text = reviewer.review(
                user_id=sample.user_id,
                item_title=item.title,
                item_description=item.description,
                rating=target.rating,
                review_title=target.title,
                method=method,
                max_new_tokens=args.max_new_tokens,
            )
            print(f"\n[{method}]\n{_wrap(text)}")
    print(f"\n[what the user wrote]\n{_wrap(target.text)}")


def _wrap(text: str, width: int = 88, limit: int = 600) -> str:
    text = " ".join(text.split())
    return textwrap.fill(text[:limit] + ("..." if len(text) > limit else ""), width)


if __name__ == "__main__":
    main()
