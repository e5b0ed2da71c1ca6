"""``peerdiff <stage>``: parses arguments and calls library functions; nothing else.

Every command takes ``--config FILE`` and trailing ``key.sub=value`` overrides, e.g.::

    peerdiff run --config configs/quick.yaml generate.max_samples=10
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from peerdiff.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peerdiff", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("--config", help="YAML config (defaults when omitted)")
        c.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        return c

    cmd("prepare", "build the benchmark tables and print their statistics")
    cmd("embed", "embed every profile review with the frozen encoder (cached)")
    cmd("contrast", "DEP slots and difference vectors for every sample")
    t = cmd("train", "train the adapters of the configured soft-prompt methods")
    t.add_argument("--method", action="append", help="only these methods")
    g = cmd("generate", "generate predictions for the configured methods")
    g.add_argument("--method", action="append", help="only these methods")
    e = cmd("evaluate", "score predictions (generating what is missing)")
    e.add_argument("--method", action="append", help="only these methods")
    rp = cmd("report", "tables with bootstrap CIs and plots from a run's evaluated methods")
    rp.add_argument("--reference", help="method the others are compared with (default: dep)")
    sv = cmd("serve", "HTTP service: OpenAI-compatible chat + personalized reviews")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-batch", type=int, default=16, help="requests generated together")
    r = cmd("run", "prepare -> embed -> generate -> evaluate, then print the results table")
    r.add_argument("--method", action="append", help="only these methods")
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
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"peerdiff: config error: {e}", file=sys.stderr)
        return 2

    from peerdiff.data.readers import DataError
    from peerdiff.pipeline import Session, print_stats
    from peerdiff.stage import read_json

    s = Session(cfg)
    try:
        if args.command == "prepare":
            print_stats(read_json(s.prepare().path("stats.json")))
        elif args.command == "embed":
            s.prepare()
            st = s.embed()
            print(f"vectors: {st.path('vectors.npy')}  {st.manifest().get('counts')}")
        elif args.command == "contrast":
            st = s.contrast()
            print(f"{st.dir}: {st.manifest()['seconds']} s, {st.manifest()['stats']}")
        elif args.command == "train":
            from peerdiff.config import SOFT_METHODS

            for m in args.method or [x for x in cfg.methods if x in SOFT_METHODS]:
                st = s.train(m)
                state = st.manifest()["state"]
                for e in state["epochs"]:
                    print(
                        f"{m} epoch {e['epoch']}: train loss {e['train_loss']:.4f}, "
                        f"val {st.manifest()['val_metric']} {e['val_score']:.4f}"
                    )
                print(f"{m}: best epoch {state['best_epoch']} -> {st.path('best')}")
        elif args.command == "generate":
            s.prepare()
            for m in args.method or cfg.methods:
                for split in cfg.generate.splits:
                    print(s.generate(m, split).path("predictions.jsonl"))
        elif args.command == "evaluate":
            s.prepare()
            s.results(args.method)
        elif args.command == "run":
            s.run(args.method)
        elif args.command == "report":
            from peerdiff.report import write_report

            out = write_report(s.run_dir, args.reference, cfg.evaluate.bootstrap, cfg.seed)
            print((out / "report.md").read_text())
            print("written: " + ", ".join(str(p) for p in sorted(out.iterdir())))
        elif args.command == "serve":
            from peerdiff.serve import serve

            s.prepare()
            print(f"peerdiff serve: http://{args.host}:{args.port}/v1 (model {cfg.llm.model})")
            serve(s, args.host, args.port, args.max_batch)
    except (DataError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"peerdiff: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
