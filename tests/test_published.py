"""The papers' published numbers: the data file, the report section beside a run that targets
them, and the config aimed at the main tables (its dry run, offline)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from peerdiff import published
from peerdiff.config import load_config


def _row(paper, llm_label, category, method):
    (row,) = [
        p
        for p in published.load()
        if (p.paper, p.llm_label, p.category, p.method) == (paper, llm_label, category, method)
    ]
    return row


def test_the_issue_figures_and_every_row_name_their_source():
    books, cds = _row("DEP", "7B", "Books", "dep"), _row("DEP", "7B", "CDs_and_Vinyl", "dep")
    assert books.scores == {"rouge1": 0.3745, "meteor": 0.3156, "bleu": 13.53, "bertscore": 0.5557}
    assert (cds.scores["rouge1"], cds.scores["meteor"], round(cds.scores["bleu"], 2)) == (
        0.3165,
        0.2364,
        6.52,
    )
    assert (
        books.llm == "Qwen/Qwen2.5-7B-Instruct" and books.cite == "DEP Table 1 (arXiv 2507.20849)"
    )
    dpl = _row("DPL", "Qwen2.5-7B-Instruct", "Books", "dpl")
    assert dpl.scores["bleu"] == 5.9379 and dpl.std["bleu"] == 0.3108
    for p in published.load():
        assert p.arxiv in {"2507.20849", "2503.02450", "2511.15389"} and p.source and p.protocol
        assert set(p.std) in (set(), set(p.scores))
        assert all(0 < v < 1 for k, v in p.scores.items() if k != "bleu"), p


def _config(**over):
    cfg = {
        "data": {"source": "dpl", "category": "Books"},
        "llm": {"model": "Qwen/Qwen2.5-7B-Instruct"},
        "methods": ["nonperso", "dep"],
        "evaluate": {"bertscore_model": "default", "bertscore_layers": None},
        "embed": {"model": "default"},
    }
    return {**cfg, **over}


def _report(*methods):
    scores = {"rouge1": 0.25, "meteor": 0.2, "bleu": 3.5, "bertscore": 0.8, "nll": 2.0}
    return {
        "splits": {
            "test": {
                "rows": [
                    {"method": m, "n": 40, "scores": {k: {"value": v} for k, v in scores.items()}}
                    for m in methods
                ]
            }
        },
        "deviations": ["train.epochs = 2 (published: 5)"],
    }


def test_a_fake_run_beside_the_published_rows():
    s = published.beside(_report("nonperso", "dep"), _config())
    got = [(r["method"], r["source"], r["scores"].get("bleu")) for r in s["rows"]]
    assert got == [
        ("nonperso", "this run", 3.5),
        ("nonperso", "DEP Table 1 (arXiv 2507.20849)", 1.9766),
        ("nonperso", "DPL Table 1 (arXiv 2503.02450)", 1.2616),
        ("dep", "this run", 3.5),
        ("dep", "DEP Table 1 (arXiv 2507.20849)", 13.53),
    ]
    assert s["metrics"] == [
        "rouge1",
        "rougeL",
        "meteor",
        "bleu",
        "bertscore",
        "judge_72b",
        "judge_gpt",
    ]
    diffs = "\n".join(s["differences"])
    assert "BERTScore with default" in diffs and "not comparable" in diffs
    assert "DEP's encoder is default (published: BAAI/bge-m3)" in diffs
    assert "this run: train.epochs = 2 (published: 5)" in diffs
    assert "S-72B column = the run's judge (none)" in diffs
    md = published.to_markdown(s)
    assert "| dep | this run | 40 | 0.2500 | - | 0.2000 | 3.5000 | 0.8000 | - | - |" in md
    assert "| nonperso | DPL Table 1 (arXiv 2503.02450) |  | 0.2711 ± 0.0058 |" in md
    # the led-base BERTScore and bge-m3 remove those two differences
    aimed = _config(
        evaluate={"bertscore_model": "allenai/led-base-16384", "bertscore_layers": 6},
        embed={"model": "/models/bge-m3"},
    )
    diffs = "\n".join(published.beside(_report("dep"), aimed)["differences"])
    assert "BERTScore with" not in diffs and "DEP's encoder" not in diffs


def test_only_runs_that_target_a_published_setting_get_the_section():
    assert published.beside(_report("dep"), None) is None
    assert published.beside(_report("dep"), _config(data={"source": "amazon23"})) is None
    other_llm = _config(llm={"model": "default"})
    assert published.beside(_report("dep"), other_llm) is None
    assert published.beside({"splits": {}}, _config()) is None
    assert published.to_markdown(None) == ""
    # DRP's table names the extractor: a run whose extractor is that model gets its column
    drp = _config(
        data={"source": "dpl", "category": "CDs_and_Vinyl"},
        methods=["drp"],
        backends={"r1": {"type": "openai", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}},
        roles={"extractor": "r1"},
    )
    (row,) = published.beside(_report("drp"), drp)["rows"][1:]
    assert row["scores"]["bleu"] == 2.8617 and "extractor deepseek-ai/" in row["source"]


def test_the_report_adds_the_section_for_a_run_aimed_at_the_papers(tmp_path):
    from peerdiff.report import write_report

    d = tmp_path / "evaluate" / "dep-test"
    d.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "sample_id": [f"test:u{i}" for i in range(4)],
                "bleu_stats": [[3, 2, 1, 0, 3, 2, 1, 0, 3, 6]] * 4,
                **{m: np.full(4, 0.3) for m in ("rouge1", "rougeL", "meteor", "bertscore")},
                "bleu": np.full(4, 9.0),
            }
        ),
        d / "scores.parquet",
    )
    (d / "summary.json").write_text(json.dumps({"method": "dep", "split": "test", "notes": []}))
    cfg = load_config("configs/paper-main.yaml", ["methods=[dep]"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    md = (write_report(tmp_path, n_boot=10) / "report.md").read_text()
    assert "## Published numbers" in md and "| dep | DEP Table 1 (arXiv 2507.20849) |" in md
    assert "not comparable" not in md  # the config uses the papers' BERTScore model
    assert json.loads((tmp_path / "report" / "report.json").read_text())["published"]["rows"]


def test_the_paper_main_config_dry_runs_offline(tmp_path, capsys):
    from peerdiff.cli import main
    from peerdiff.paper import deviations, on_disk

    cfg = load_config("configs/paper-main.yaml")
    assert (cfg.data.source.value, cfg.data.category, cfg.llm.model) == (
        "dpl",
        "Books",
        "Qwen/Qwen2.5-7B-Instruct",
    )
    assert {"dep", "dpl", "drp"} <= set(cfg.methods) and deviations(cfg) == []
    assert cfg.evaluate.bertscore_model == published.BERTSCORE_MODEL
    args = ["run", "--dry-run", "--config", "paper-main", f"run_dir={tmp_path}"]
    assert main([*args, f"data.root={tmp_path}"]) == 0  # no DPL-main there
    out = json.loads((tmp_path / "dry-run-paper-main.json").read_text())
    assert "DPL-main" in out["missing"]["data"] and "data.root" in out["missing"]["data"]
    for key, model in (("llm", cfg.llm.model), ("encoder", "BAAI/bge-m3")):
        assert (key in out["missing"]) == (not on_disk(model))
    assert out["skipped"] == dict.fromkeys(cfg.methods, "no data") and out["methods"] == {}
    assert out["tokenizer"].startswith("approximate") or on_disk(cfg.llm.model)
    printed = capsys.readouterr().err
    assert "missing (data): reviews file not found" in printed
    assert "deviations from the published profile: none" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dry-run-paper-main.json"]


def test_a_subset_run_is_compared_and_says_it_is_a_subset():
    full = _report("dep")
    subset = {**full, "splits": {"test-n10": full["splits"]["test"]}}
    s = published.beside(subset, _config())
    assert s["rows"][0]["source"] == "this run"
    assert "this run: the first 10 test samples (published: the whole split)" in s["differences"]
    assert not any("the first" in d for d in published.beside(full, _config())["differences"])
