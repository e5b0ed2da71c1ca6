"""``peerdiff <command>``: parses arguments and calls library functions; nothing else.

Every command takes ``--config FILE`` and trailing ``key.sub=value`` overrides, e.g.::

    peerdiff run --config configs/quick.yaml generate.max_samples=10

Errors caused by input, configuration or environment (:class:`peerdiff.errors.PeerdiffError`)
print one line and exit with 2 (configuration) or 1; ``-v`` adds the traceback. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from peerdiff.errors import ConfigError, PeerdiffError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peerdiff", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, help: str, methods: bool = False) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("--config", help="YAML config (defaults when omitted)")
        c.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        if methods:
            c.add_argument("--method", action="append", help="only these methods")
        return c

    cmd("prepare", "build the benchmark tables and print their statistics")
    cmd("embed", "embed every profile review with the frozen encoder (cached)")
    cmd("contrast", "DEP slots and difference vectors for every sample")
    cmd("train", "train the adapters of the configured soft-prompt methods", True)
    cmd("generate", "generate predictions (soft-prompt methods need `train` first)", True)
    cmd("evaluate", "score predictions and target likelihoods, print the table", True)
    pr = cmd("probe", "user-swap probe of soft-prompt methods with user features", True)
    pr.add_argument("--split", action="append", help="default: probe.splits")
    ex = cmd("export", "write the prepared benchmark in another toolkit's format")
    ex.add_argument("--format", choices=["lamp"], default="lamp")
    ex.add_argument("--out", required=True, help="folder to write")
    pu = cmd("push", "upload a trained adapter (weights, config, model card) to the Hub")
    pu.add_argument("--method", required=True)
    pu.add_argument("--repo", required=True, help="user/name on the Hugging Face Hub")
    pu.add_argument("--private", action="store_true")
    rp = cmd("report", "tables with bootstrap CIs and plots from a run's evaluated methods")
    rp.add_argument("--reference", help="method the others are compared with (default: dep)")
    sv = cmd("serve", "HTTP service: OpenAI-compatible chat + personalized reviews")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=int, default=16, help="requests generated together")
    sv.add_argument(
        "--api-key",
        default=os.environ.get("PEERDIFF_API_KEY"),
        help="require Authorization: Bearer <key> on every route but /health "
        "(default: $PEERDIFF_API_KEY)",
    )
    sv.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="longer chat prompts get 400 (default: the model's context window)",
    )
    r = cmd("run", "every stage the configured methods need, then the results table", True)
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="build prompts for a few samples without any model: lengths, budgets, deviations",
    )
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
    if args.command == "run" and args.dry_run:
        from peerdiff.runner import print_dry_run

        print_dry_run(cfg, args.method)
        return 0
    if args.command == "run":
        from peerdiff.runner import run

        run(cfg, args.method)
        return 0
    if args.command == "push":
        from peerdiff.hub import push

        print(push(cfg.run_path, args.method, args.repo, args.private))
        return 0
    if args.command == "report":
        from peerdiff.report import write_report

        out = write_report(cfg.run_path, args.reference, cfg.evaluate.bootstrap, cfg.seed)
        print((out / "report.md").read_text())
        print("written: " + ", ".join(str(p) for p in sorted(out.iterdir())))
        return 0

    from peerdiff import methods, stages
    from peerdiff.backends import Backends
    from peerdiff.runner import print_stats, results_table, write_results
    from peerdiff.stage import read_json

    names = getattr(args, "method", None) or cfg.methods
    for n in names:
        methods.get(n)  # unknown names: a ConfigError naming the known ones
    if args.command == "prepare":
        print_stats(read_json(stages.prepare(cfg).path("stats.json")))
        return 0
    prep = stages.prepare(cfg)
    if args.command == "embed":
        st = stages.embed(cfg, prep)
        print(f"vectors: {st.path('vectors.npy')}  {st.manifest().get('counts')}")
        return 0
    if args.command == "export":
        from peerdiff.data.lamp import export_lamp

        counts = export_lamp(stages.Data(prep).bench, args.out)
        print(f"{args.out}: LaMP-style questions/outputs, samples {counts}")
        return 0
    if args.command == "contrast":
        st = stages.contrast(cfg, prep, stages.embed(cfg, prep))
        print(f"{st.dir}: {st.manifest()['seconds']} s, {st.manifest()['stats']}")
        return 0
    if args.command == "serve":
        from peerdiff.serve import serve

        print(f"peerdiff serve: http://{args.host}:{args.port}/v1 (model {cfg.llm.model})")
        serve(cfg, args.host, args.port, args.max_batch, args.api_key, args.max_prompt_tokens)
        return 0
    data = stages.data(cfg, names, prep)
    backends = Backends(cfg)
    soft = [n for n in names if methods.get(n).soft]
    if args.command == "train":
        for n in soft:
            st = stages.train(cfg, n, data, backends)
            state, man = st.manifest()["state"], st.manifest()
            for e in state["epochs"]:
                print(
                    f"{n} epoch {e['epoch']}: train loss {e['train_loss']:.4f}, "
                    f"val {man['val_metric']} {e['val_score']:.4f}"
                )
            print(f"{n}: best epoch {state['best_epoch']} -> {st.path('best')}")
        return 0
    trained = {n: stages.trained(cfg, n, data) for n in soft}
    if args.command == "probe":
        from peerdiff.runner import has_user_features, probe_table

        summaries = []
        for n in names:
            if not has_user_features(n, cfg):
                raise ConfigError(
                    f"{n!r} has no user features to swap; probe dep, its ablations or pplug"
                )
            for split in args.split or cfg.probe.splits:
                st = stages.probe(cfg, n, split, data, backends, trained[n])
                summaries.append(read_json(st.path("summary.json")))
        from rich.console import Console

        Console(width=None if sys.stdout.isatty() else 150).print(probe_table(summaries))
        return 0
    rows = []
    for n in names:
        for split in cfg.generate.splits:
            gen = stages.generate(cfg, n, split, data, backends, trained.get(n))
            if args.command == "generate":
                print(gen.path("predictions.jsonl"))
                continue
            nll = (
                stages.likelihood(cfg, n, split, data, backends, trained.get(n))
                if cfg.evaluate.nll
                else None
            )
            ev = stages.evaluate(cfg, n, split, gen, nll, data, backends)
            rows.append(read_json(ev.path("summary.json")))
    if rows:
        from rich.console import Console

        write_results(cfg.run_path, rows, cfg.name)
        Console(stderr=True, width=None if sys.stderr.isatty() else 150).print(results_table(rows))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
