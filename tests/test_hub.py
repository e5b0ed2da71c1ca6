"""Adapters as model repositories: card, identity checks, push offline; the Python API."""

import copy
import json
import re

import pytest
from helpers import TINY_RUN, synthetic_overrides

from peerdiff.backends import Backends
from peerdiff.backends.hf import HFBackend
from peerdiff.config import load_config
from peerdiff.errors import BackendError, ConfigError, DataError
from peerdiff.runner import run

SMALL = [*TINY_RUN, "methods=[dep]", "dep.lr=0.003"]  # not train.lr: the card must say 0.003


@pytest.fixture(scope="module")
def trained(tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path_factory):
    model, tok, folder = tiny_lm
    run_dir = tmp_path_factory.mktemp("hub")
    cfg = load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, run_dir),
            *SMALL,
            f"embed.model={tiny_encoder_dir}",
            f"cache_dir={run_dir / 'cache'}",
        ],
    )
    local = HFBackend(model, copy.deepcopy(tok), batch_size=4, path=str(folder))
    backends = Backends(cfg, local=local)
    run(cfg, backends=backends)
    return cfg, backends


def test_best_folder_is_a_self_describing_repository(trained):
    cfg, _ = trained
    best = cfg.run_path / "train" / "dep" / "best"
    assert sorted(p.name for p in best.iterdir()) == [
        "README.md",
        "adapter.safetensors",
        "adapter_config.json",
    ]
    acfg = json.loads((best / "adapter_config.json").read_text())
    assert acfg["base_model"] == "tiny" and acfg["base_model_revision"].startswith("files-sha256:")
    assert acfg["encoder"].endswith("tiny_encoder0") and acfg["encoder_key"]
    card = (best / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peerdiff\nbase_model: tiny\n")
    for needle in ("## Models", "## Data", "## Training", "## Results of this run", "## Use"):
        assert needle in card
    assert "user-swap probe, test (n=4)" in card and "NLL" in card
    assert "peerdiff.load_adapter(" in card
    assert "BLEU (0-100) " in card and "LLM: tiny." in card  # the scale; which LLM
    # TINY_RUN's first 4 test samples: a subset run, whose table has a name of its own
    assert "\nLLM: tiny\n" in (cfg.run_path / f"results-{cfg.name}-n4.md").read_text()
    assert "- test-n4 (n=4): " in card  # the run's only scores
    man = json.loads((best.parent / "manifest.json").read_text())
    assert man["config"]["train"]["lr"] == man["lr"] == 0.003  # dep.lr, not train.lr


def test_card_results_are_the_methods_own_and_prefer_the_full_split(tmp_path):
    """``evaluate/dep-*`` also holds dep-mean's folders, and a subset run's scores sit
    beside the full run's: the card lists dep's own, the full split's where there is one."""
    from peerdiff.hub import _results
    from peerdiff.stage import write_json

    def summary(folder, method, split, n, **extra):
        scores = {"rouge1": n / 100}
        write_json(
            tmp_path / "evaluate" / folder / "summary.json",
            {"method": method, "split": split, "n": n, "scores": scores, **extra},
        )

    summary("dep-test-n4", "dep", "test-n4", 4, max_samples=4)
    assert _results(tmp_path, "dep") == ["- test-n4 (n=4): ROUGE-1 0.0400"]
    summary("dep-test", "dep", "test", 87)
    summary("dep-mean-test", "dep-mean", "test", 86)
    assert _results(tmp_path, "dep") == ["- test (n=87): ROUGE-1 0.8700"]
    assert _results(tmp_path, "dep-mean") == ["- test (n=86): ROUGE-1 0.8600"]


def test_load_adapter_refuses_another_base_model(trained):
    import peerdiff

    cfg, _ = trained
    best = cfg.run_path / "train" / "dep" / "best"
    acfg = json.loads((best / "adapter_config.json").read_text())
    ok = peerdiff.load_adapter(
        best, base_model="tiny", base_model_revision=acfg["base_model_revision"]
    )
    assert ok.cfg.kind == "dep"
    with pytest.raises(
        ConfigError, match=re.escape("trained with base model 'tiny', not 'Qwen/Qwen2.5-7B")
    ):
        peerdiff.load_adapter(best, base_model="Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(ConfigError, match="base model revision"):
        peerdiff.load_adapter(best, base_model_revision="commit:0123")
    with pytest.raises(ConfigError, match="encoder"):
        peerdiff.load_adapter(best, encoder="BAAI/bge-m3")


def test_hub_ids_offline_and_push_offline_say_so(trained, monkeypatch):
    import peerdiff
    from peerdiff.hub import push

    cfg, _ = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="cannot fetch adapter 'someone/dep-adapter'"):
        peerdiff.load_adapter("someone/dep-adapter")
    with pytest.raises(BackendError, match=r"offline .HF_HUB_OFFLINE=1.: nothing pushed"):
        push(cfg.run_path, "dep", "someone/dep-adapter")
    with pytest.raises(ConfigError, match="no trained adapter"):
        push(cfg.run_path, "pplug", "someone/x")


def test_reviewer_writes_a_review_in_a_few_lines(trained):
    import peerdiff
    from peerdiff.serve import Service

    cfg, backends = trained
    r = peerdiff.Reviewer.__new__(peerdiff.Reviewer)  # the tiny model instead of cfg's
    r.service = Service(cfg, backends)
    with r:
        user = r.service.bench.users[0]
        text = r.review(
            user_id=user, item_title="Kind of Blue", rating=5, method="dep", max_new_tokens=4
        )
        assert isinstance(text, str)
        with pytest.raises(DataError, match="unknown user"):
            r.review(user_id="nobody", item_title="x", rating=5, method="nonperso")
        with pytest.raises(ConfigError, match="invalid review request"):
            r.review(user_id=user, item_title="x", rating=9, method="nonperso")


@pytest.mark.parametrize("recorded", ["default", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_the_default_llm_is_one_model_under_each_of_its_names(tmp_path, recorded):
    """Adapters record the default LLM by its Hub id (older ones said ``default``); either is
    accepted under any of the default's names, another model is refused, and the card says
    the weights are the dequantised Q4_1 file."""
    import peerdiff
    from peerdiff.config.sections import DEFAULT_LLM_ID, llm_identity
    from peerdiff.hub import _llm_note
    from peerdiff.model.adapters import ConstantConfig, build_adapter, save_adapter

    assert llm_identity("default") == llm_identity("SmolLM2-135M-Instruct") == DEFAULT_LLM_ID
    assert llm_identity("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    cfg = ConstantConfig(llm_hidden=8, n_constant=2, base_model=recorded)
    cfg.base_model_revision = "gguf-sha256:0123456789"
    save_adapter(build_adapter(cfg), tmp_path)
    for name in ("default", "SmolLM2-135M-Instruct", DEFAULT_LLM_ID):
        assert peerdiff.load_adapter(tmp_path, base_model=name).cfg.n_constant == 2
    with pytest.raises(ConfigError, match="trained with base model"):
        peerdiff.load_adapter(tmp_path, base_model="Qwen/Qwen2.5-7B-Instruct")
    note = _llm_note(json.loads((tmp_path / "adapter_config.json").read_text()))
    assert "Q4_1 GGUF" in note and "dequantised" in note
    hf = {"base_model": DEFAULT_LLM_ID, "base_model_revision": "commit:abc"}
    assert "Q4_1" not in _llm_note(hf)  # the Hub checkpoint itself


def test_adapters_record_the_default_llm_by_its_hub_id():
    from peerdiff import methods
    from peerdiff.config import load_config

    cfg = load_config(None, ["llm.model=default"])
    assert methods.build("dep", cfg).adapter_config().base_model == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
