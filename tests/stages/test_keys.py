"""Stage keys are exactly what each stage reads.

A small graph (synthetic reviews, tiny LM and encoder) runs once; then an irrelevant change
(threads, engine, device, batch sizes, report-only settings) recomputes nothing, and a
relevant change recomputes its stage and the stages downstream of it, nothing else.
"""

import copy

import pytest
from helpers import TINY_RUN as SMALL
from helpers import synthetic_overrides

from peerdiff.backends import Backends
from peerdiff.backends.hf import HFBackend
from peerdiff.config import load_config
from peerdiff.model.llm import dtype_name
from peerdiff.runner import run


@pytest.fixture(scope="module")
def graph(tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path_factory):
    model, tok, _ = tiny_lm
    tok = copy.deepcopy(tok)
    run_dir = tmp_path_factory.mktemp("keys")
    base = [
        *synthetic_overrides(synthetic_root, run_dir),
        *SMALL,
        f"embed.model={tiny_encoder_dir}",
        f"cache_dir={run_dir / 'cache'}",
    ]

    def go(*extra: str) -> dict[str, int]:
        cfg = load_config(None, [*base, *extra])
        run(cfg, backends=Backends(cfg, local=HFBackend(model, tok, batch_size=4)))
        return snapshot(run_dir)

    go.run_dir = run_dir
    first = go()
    return go, first


@pytest.fixture
def base(graph):
    """``(go, snapshot)`` of the graph back at its base settings right before the test, so
    that tests compare with their own starting point and run in any order."""
    go, _ = graph
    return go, go()


def snapshot(run_dir) -> dict[str, int]:
    """Stage files and their modification times (run-level tables excluded)."""
    return {
        str(p.relative_to(run_dir)): p.stat().st_mtime_ns
        for p in run_dir.rglob("*")
        if p.is_file()
        and p.parts[len(run_dir.parts)] not in ("cache",)
        and p.parent != run_dir  # results-*, timings-*, config.yaml
    }


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """Stage directories with a new or rewritten file (``generate/dep-test``, ``contrast``)."""
    dirs = set()
    for f, t in after.items():
        if before.get(f) != t:
            parts = f.split("/")
            dirs.add(
                "/".join(parts[:2])
                if parts[0] in ("train", "generate", "nll", "evaluate", "probe", "calls")
                else parts[0]
            )
    return dirs


def test_the_graph_ran(base):
    _, first = base
    for d in (
        "prepare",
        "embed",
        "contrast",
        "train/dep",
        "train/constant",
        "generate/dep-test-n4",
        "nll/nonperso-test-n4",
        "evaluate/constant-test-n4",
        "probe/dep-test",
    ):
        assert any(f.startswith(d + "/") for f in first), d


@pytest.mark.parametrize(
    "override",
    [
        "llm.threads=1",
        "llm.engine=vllm",  # never loaded: nothing needs recomputing
        "llm.device=cpu",
        f"llm.dtype={dtype_name('auto')}",  # what auto resolves to here: the same numbers
        "embed.device=cpu",
        "generate.batch_size=2",
        "evaluate.bootstrap=50",
        "name=renamed",
        # issue 25, item 12: a prompt setting no method of the run reads (Non-Perso, the
        # constant's token line and DEP clip past reviews by dep.max_review_chars)
        "prompt.max_review_chars=150",
    ],
)
def test_irrelevant_changes_recompute_nothing(base, override):
    go, first = base
    assert changed(first, go(override)) == set()


def test_keys_hold_the_effective_learning_rate(base):
    """Each method's own rate set to the rate it had (train.lr's default): no retraining;
    train.lr changed where no method reads it: no retraining either."""
    go, first = base
    assert changed(first, go("dep.lr=1e-5", "constant.lr=1e-5")) == set()
    assert changed(first, go("dep.lr=1e-5", "constant.lr=1e-5", "train.lr=0.5")) == set()


def test_a_decoding_change_regenerates_and_rescores_only(base):
    go, before = base
    after = go("generate.max_new_tokens=5")
    assert changed(before, after) == {
        f"{s}/{m}-test-n4"
        for s in ("generate", "evaluate")
        for m in ("nonperso", "constant", "dep")
    }


def test_a_contrast_change_reaches_dep_and_nothing_else(base):
    go, before = base
    after = go("contrast.weighting=uniform")
    assert changed(before, after) == {
        "contrast",
        "train/dep",
        "generate/dep-test-n4",
        "nll/dep-test-n4",
        "evaluate/dep-test-n4",
        "probe/dep-test",
    }


def test_an_adapter_setting_retrains_only_that_method(base):
    go, before = base
    after = go("constant.lr=0.05")
    assert changed(before, after) == {
        "train/constant",
        "generate/constant-test-n4",
        "nll/constant-test-n4",
        "evaluate/constant-test-n4",
    }


@pytest.mark.parametrize(
    "override",
    [
        "dep.pool_slots=true",
        "dep.branch_rank=4",
        "dep.branch_lr=0.05",
        "dep.branch_weight_decay=0.3",
    ],
)
def test_a_user_branch_setting_retrains_dep_only(base, override):
    """The lower-capacity branch options (issue 22) reach DEP's key; at their defaults they
    are left out of it, so adapters trained before they existed are not retrained."""
    go, before = base
    assert changed(before, go(override)) == {
        "train/dep",
        "generate/dep-test-n4",
        "nll/dep-test-n4",
        "evaluate/dep-test-n4",
        "probe/dep-test",
    }


def _hashes(run_dir, name):
    import json

    path = run_dir / "generate" / f"{name}-test-n4" / "predictions.jsonl"
    return [json.loads(line)["prompt_hash"] for line in path.read_text().splitlines()]


def test_a_retrained_adapter_never_keeps_old_predictions(base):
    """Issue 25, item 1: a change that retrains DEP regenerates every DEP prediction (each
    line's identity holds the adapter and the row's features, not only the prompt text),
    and the scores follow the new predictions."""
    go, first = base
    run_dir = go.run_dir
    before = _hashes(run_dir, "dep")
    after_snap = go("dep.lr=0.05")
    assert "train/dep" in changed(first, after_snap)
    after = _hashes(run_dir, "dep")
    assert len(after) == len(before) > 0 and not set(before) & set(after)
    assert _hashes(run_dir, "nonperso")  # untouched methods keep theirs
    go()
    assert _hashes(run_dir, "dep") == before  # back to the first adapter's identity


def test_evaluate_follows_the_predictions_content(base):
    """Scores are keyed by the predictions' bytes: predictions that changed under the same
    generation key (stale lines regenerated, a file replaced) are scored again."""
    import json

    go, before = base
    run_dir = go.run_dir
    path = run_dir / "generate" / "nonperso-test-n4" / "predictions.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[0]["text"] = "a different review"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    after = go()
    assert "evaluate/nonperso-test-n4" in changed(before, after)
    m = "generate/nonperso-test-n4/manifest.json"
    assert before[m] == after[m]  # generation itself was not redone


def test_a_metric_that_could_not_be_computed_is_computed_once_it_can(base, monkeypatch):
    """Issue 25, item 8: scores made without WordNet (METEOR n/a) are not final; with
    WordNet back, evaluate runs again and METEOR appears."""
    import json

    from peerdiff import metrics

    go, _ = base
    real = metrics.setup_wordnet
    if real(go.run_dir / "cache") is not None:
        pytest.skip("WordNet is not installed here")
    summary = go.run_dir / "evaluate" / "nonperso-test-n4" / "summary.json"
    monkeypatch.setattr(metrics, "setup_wordnet", lambda *a, **k: "WordNet not found; fix it")
    before = go()
    assert json.loads(summary.read_text())["scores"].get("meteor") is None
    monkeypatch.setattr(metrics, "setup_wordnet", real)
    after = go()
    assert "evaluate/nonperso-test-n4" in changed(before, after)
    assert json.loads(summary.read_text())["scores"]["meteor"] is not None
