"""``peerdiff <command>``: parses arguments and calls library functions; nothing else.

Every command takes ``--config FILE`` and trailing ``key.sub=value`` overrides, e.g.::

    peerdiff run --config configs/quick.yaml generate.max_samples=10

``--config`` also takes the name of a config shipped with peerdiff (``--config quick``), so
the commands work after ``pip install`` from any directory; ``peerdiff config`` lists every
key with its value, default and help text.

Errors caused by input, configuration or environment (:class:`peerdiff.errors.PeerdiffError`)
print one line and exit with 2 (configuration) or 1; ``-v`` adds the traceback. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from peerdiff.errors import ConfigError, PeerdiffError

# ----------------------------------------------------------------------------- commands
# Each command is a small function over library calls: (config, arguments) -> exit code.


def _config(cfg, args) -> int:
    from rich.console import Console

    from peerdiff.config import describe
    from peerdiff.tables import config_table

    title = f"config {args.config or '(defaults)'}: values, defaults where they differ, help"
    Console(width=None if sys.stdout.isatty() else 150).print(
        config_table(describe(cfg, args.keys or ""), title)
    )
    return 0


def _run(cfg, args) -> int:
    if args.dry_run:
        from peerdiff.dryrun import print_dry_run

        print_dry_run(cfg, args.method)
        return 0
    from peerdiff.runner import run

    run(cfg, args.method)
    return 0


def _push(cfg, args) -> int:
    from peerdiff.hub import push

    print(push(cfg.run_path, args.method, args.repo, args.private))
    return 0


def _report(cfg, args) -> int:
    from peerdiff.report import write_report

    out = write_report(
        cfg.run_path, args.reference, cfg.evaluate.bootstrap, cfg.seed, config=cfg.to_dict()
    )
    print((out / "report.md").read_text())
    print("written: " + ", ".join(str(p) for p in sorted(out.iterdir())))
    return 0


def _prepare(cfg, args) -> int:
    from peerdiff import stages
    from peerdiff.stage import read_json
    from peerdiff.tables import print_stats

    print_stats(read_json(stages.prepare(cfg).path("stats.json")))
    return 0


def _embed(cfg, args) -> int:
    from peerdiff import stages

    st = stages.embed(cfg, stages.prepare(cfg))
    print(f"vectors: {st.path('vectors.npy')}  {st.manifest().get('counts')}")
    return 0


def _contrast(cfg, args) -> int:
    from peerdiff import stages

    prep = stages.prepare(cfg)
    st = stages.contrast(cfg, prep, stages.embed(cfg, prep))
    print(f"{st.dir}: {st.manifest()['seconds']} s, {st.manifest()['stats']}")
    return 0


def _export(cfg, args) -> int:
    from peerdiff import stages
    from peerdiff.data.lamp import export_lamp

    counts = export_lamp(stages.Data(stages.prepare(cfg)).bench, args.out)
    print(f"{args.out}: LaMP-style questions/outputs, samples {counts}")
    return 0


def _adapters(pairs: list[str] | None) -> dict[str, str]:
    """``--adapter METHOD=FOLDER`` (repeatable) as ``{method: folder or repo id}``."""
    out: dict[str, str] = {}
    for p in pairs or []:
        name, sep, where = p.partition("=")
        if not (sep and name and where):
            raise ConfigError(f"--adapter {p!r}: expected METHOD=FOLDER (or METHOD=user/repo)")
        if name in out:
            raise ConfigError(f"--adapter {name}=... given twice")
        out[name] = where
    return out


def _serve(cfg, args) -> int:
    from peerdiff.serve import serve

    adapters = _adapters(args.adapter)
    print(f"peerdiff serve: http://{args.host}:{args.port}/v1 (model {cfg.llm.model})")
    key = args.api_key if args.api_key is not None else os.environ.get("PEERDIFF_API_KEY")
    serve(cfg, args.host, args.port, args.max_batch, key, args.max_prompt_tokens, adapters)
    return 0


def _methods(cfg, args) -> tuple[list[str], object, object]:
    """The chosen methods (unknown names: a ConfigError naming the known ones), the data
    stages they need and the backends."""
    from peerdiff import methods, stages
    from peerdiff.backends import Backends

    names = args.method or cfg.methods
    for n in names:
        methods.get(n)
    return names, stages.data(cfg, names), Backends(cfg)


def _train(cfg, args) -> int:
    from peerdiff import methods, stages

    names, data, backends = _methods(cfg, args)
    stages.check_loggers_for(cfg, names, data)
    for n in [n for n in names if methods.get(n).soft]:
        st = stages.train(cfg, n, data, backends)
        man = st.manifest()
        for e in man["state"]["epochs"]:
            print(
                f"{n} epoch {e['epoch']}: train loss {e['train_loss']:.4f}, "
                f"val {man['val_metric']} {e['val_score']:.4f}"
            )
        print(f"{n}: best epoch {man['state']['best_epoch']} -> {st.path('best')}")
    return 0


def _trained(cfg, names, data) -> dict:
    from peerdiff import methods, stages

    return {n: stages.trained(cfg, n, data) for n in names if methods.get(n).soft}


def _probe(cfg, args) -> int:
    from rich.console import Console

    from peerdiff import methods, stages
    from peerdiff.stage import read_json
    from peerdiff.tables import probe_table

    names, data, backends = _methods(cfg, args)
    for n in names:
        if not methods.get(n).user_features:
            raise ConfigError(
                f"{n!r} has no user features to swap; probe dep, its ablations or pplug"
            )
    trained = _trained(cfg, names, data)
    summaries = [
        read_json(stages.probe(cfg, n, split, data, backends, trained[n]).path("summary.json"))
        for n in names
        for split in args.split or cfg.probe.splits
    ]
    Console(width=None if sys.stdout.isatty() else 150).print(probe_table(summaries))
    return 0


def _generate(cfg, args) -> int:
    from peerdiff import stages

    names, data, backends = _methods(cfg, args)
    trained = _trained(cfg, names, data)
    for n in names:
        for split in cfg.generate.splits:
            gen = stages.generate(cfg, n, split, data, backends, trained.get(n))
            print(gen.path("predictions.jsonl"))
    return 0


def _evaluate(cfg, args) -> int:
    from rich.console import Console

    from peerdiff.runner import evaluate_split
    from peerdiff.stages.common import run_name
    from peerdiff.tables import llm_note, results_table, write_results

    names, data, backends = _methods(cfg, args)
    trained = _trained(cfg, names, data)
    rows = [
        evaluate_split(cfg, n, split, data, backends, trained.get(n))
        for n in names
        for split in cfg.generate.splits
    ]
    if rows:
        note = llm_note(cfg.to_dict())
        write_results(cfg.run_path, rows, run_name(cfg, data.bench), note)
        Console(stderr=True, width=None if sys.stderr.isatty() else 150).print(
            results_table(rows, note=note)
        )
    return 0


# name -> (help, handler, takes --method, extra arguments as (flags, add_argument keywords))
COMMANDS: dict[str, tuple[str, Callable, bool, list[tuple[tuple[str, ...], dict]]]] = {
    "prepare": ("build the benchmark tables and print their statistics", _prepare, False, []),
    "embed": ("embed every profile review with the frozen encoder (cached)", _embed, False, []),
    "contrast": ("DEP slots and difference vectors for every sample", _contrast, False, []),
    "train": ("train the adapters of the configured soft-prompt methods", _train, True, []),
    "generate": (
        "generate predictions (soft-prompt methods need `train` first)",
        _generate,
        True,
        [],
    ),
    "evaluate": ("score predictions and target likelihoods, print the table", _evaluate, True, []),
    "probe": (
        "user-swap probe of soft-prompt methods with user features",
        _probe,
        True,
        [(("--split",), {"action": "append", "help": "default: probe.splits"})],
    ),
    "export": (
        "write the prepared benchmark in another toolkit's format",
        _export,
        False,
        [
            (("--format",), {"choices": ["lamp"], "default": "lamp"}),
            (("--out",), {"required": True, "help": "folder to write"}),
        ],
    ),
    "push": (
        "upload a trained adapter (weights, config, model card) to the Hub",
        _push,
        False,
        [
            (("--method",), {"required": True}),
            (("--repo",), {"required": True, "help": "user/name on the Hugging Face Hub"}),
            (("--private",), {"action": "store_true"}),
        ],
    ),
    "report": (
        "tables with bootstrap CIs and plots from a run's evaluated methods",
        _report,
        False,
        [
            (
                ("--reference",),
                {"help": "method the others are compared with (default: dep)"},
            )
        ],
    ),
    "serve": (
        "HTTP service: OpenAI-compatible chat + personalized reviews",
        _serve,
        False,
        [
            (("--host",), {"default": "127.0.0.1"}),
            (("--port",), {"type": int, "default": 8000}),
            (("--max-batch",), {"type": int, "default": 16, "help": "requests generated together"}),
            (
                ("--adapter",),
                {
                    "action": "append",
                    "metavar": "METHOD=FOLDER",
                    "help": "serve METHOD with this adapter folder or Hub repository id (a "
                    "pushed train/METHOD/best) instead of the run's own; repeatable",
                },
            ),
            (
                ("--api-key",),
                {
                    "default": None,
                    "help": "require Authorization: Bearer <key> on every route but /health "
                    "(default: $PEERDIFF_API_KEY)",
                },
            ),
            (
                ("--max-prompt-tokens",),
                {
                    "type": int,
                    "default": None,
                    "help": "longer chat prompts get 400 (default: the model's context window)",
                },
            ),
        ],
    ),
    "config": (
        "every config key with its value under this config, its default and its help",
        _config,
        False,
        [
            (
                ("--keys",),
                {"metavar": "PREFIX", "help": "only keys starting with PREFIX (train, dep.lr)"},
            )
        ],
    ),
    "run": (
        "every stage the configured methods need, then the results table",
        _run,
        True,
        [
            (
                ("--dry-run",),
                {
                    "action": "store_true",
                    "help": "prompts for a few samples without the LLM: lengths, budgets, "
                    "deviations (it writes the data stages -- prepare, embed with the "
                    "sentence encoder, contrast -- into the run directory, as a run would)",
                },
            )
        ],
    ),
}


# name -> command lines shown under `peerdiff <name> --help` (tests run each through the parser
# and the config loader)
EXAMPLES: dict[str, list[str]] = {
    "prepare": [
        "peerdiff prepare --config configs/quick.yaml",
        "peerdiff prepare --config quick data.preset=medium run_dir=runs/medium",
    ],
    "embed": [
        "peerdiff embed --config configs/quick.yaml",
        "peerdiff embed --config quick embed.model=BAAI/bge-m3",
    ],
    "contrast": [
        "peerdiff contrast --config configs/quick.yaml",
        "peerdiff contrast --config quick contrast.weighting=uniform",
    ],
    "train": [
        "peerdiff train --config configs/quick.yaml --method dep",
        "peerdiff train --config quick --method constant train.epochs=1",
    ],
    "generate": [
        "peerdiff generate --config configs/quick.yaml --method nonperso",
        "peerdiff generate --config quick --method dep generate.max_samples=10",
    ],
    "evaluate": [
        "peerdiff evaluate --config configs/quick.yaml",
        "peerdiff evaluate --config quick --method nonperso --method dep",
    ],
    "probe": [
        "peerdiff probe --config configs/quick.yaml --method dep",
        "peerdiff probe --config quick --method dep --split train probe.donors=4",
    ],
    "export": ["peerdiff export --config configs/quick.yaml --out lamp/"],
    "push": ["peerdiff push --config configs/quick.yaml --method dep --repo me/peerdiff-dep"],
    "report": [
        "peerdiff report --config configs/quick.yaml",
        "peerdiff report --config quick --reference nonperso",
    ],
    "serve": [
        "peerdiff serve --config configs/quick.yaml --port 8000",
        "PEERDIFF_API_KEY=secret peerdiff serve --config quick --host 0.0.0.0",
        "peerdiff serve --config quick run_dir=/tmp/mine --adapter dep=downloads/dep-adapter",
    ],
    "config": [
        "peerdiff config --config configs/quick.yaml --keys train",
        "peerdiff config --config quick dep.layout=text --keys dep",
    ],
    "run": [
        "peerdiff run --config configs/quick.yaml",
        "peerdiff run --config quick generate.max_samples=10 --dry-run",
    ],
}


def _parser() -> argparse.ArgumentParser:
    from peerdiff import __version__

    p = argparse.ArgumentParser(prog="peerdiff", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"peerdiff {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (help_, _, methods, extra) in COMMANDS.items():
        examples = EXAMPLES.get(name, [])
        c = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        c.add_argument(
            "--config",
            metavar="FILE",
            help="YAML config, or the name of one shipped with peerdiff (quick, paper, ...: "
            "`peerdiff config --config NAME` shows it); defaults when omitted",
        )
        c.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        if methods:
            c.add_argument("--method", action="append", help="only these methods")
        for flags, kw in extra:
            c.add_argument(*flags, **kw)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # defaults are packaged; never call the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return _dispatch(args)
    except PeerdiffError as e:
        if args.verbose:
            raise
        kind = "config error" if isinstance(e, ConfigError) else "error"
        print(f"peerdiff: {kind}: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(
            "\npeerdiff: interrupted; finished stages, epochs and generation chunks are kept: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from peerdiff.config import load_config

    cfg = load_config(args.config, args.overrides)
    return COMMANDS[args.command][1](cfg, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
