"""Adapters as model repositories: card, identity checks, push offline; the Python API."""

import copy
import json
import re

import pytest
import torch
from helpers import TINY_RUN, synthetic_overrides

from peerdiff.backends import Backends
from peerdiff.backends.hf import HFBackend
from peerdiff.config import load_config
from peerdiff.errors import BackendError, ConfigError, DataError, MissingStageError
from peerdiff.runner import run

# not train.lr: the card must say 0.003; the constant's adapter is shared too (test below)
SMALL = [*TINY_RUN, "methods=[constant,dep]", "dep.lr=0.003"]


@pytest.fixture(scope="module")
def trained(tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hub")
    cfg = tiny_config(synthetic_root, tiny_encoder_dir, run_dir)
    backends = tiny_backends(cfg, tiny_lm)
    run(cfg, backends=backends)
    return cfg, backends


def tiny_config(synthetic_root, tiny_encoder_dir, run_dir, *overrides):
    return load_config(
        None,
        [
            *synthetic_overrides(synthetic_root, run_dir),
            *SMALL,
            f"embed.model={tiny_encoder_dir}",
            f"cache_dir={run_dir / 'cache'}",
            *overrides,
        ],
    )


def tiny_backends(cfg, tiny_lm) -> Backends:
    model, tok, folder = tiny_lm  # own tokenizer copy: placeholders are added to it
    return Backends(cfg, local=HFBackend(model, copy.deepcopy(tok), batch_size=4, path=str(folder)))


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
    with pytest.raises(BackendError, match="adapter 'someone/dep-adapter' cannot be fetched"):
        peerdiff.load_adapter("someone/dep-adapter")
    # a mistyped local folder is not sent to the Hub
    (cfg.run_path / "downloads").mkdir(exist_ok=True)
    monkeypatch.chdir(cfg.run_path)
    for local in ("downloads/dep-adaptr", "./dep-adapter", str(cfg.run_path / "nope")):
        with pytest.raises(ConfigError, match="adapter not found: no folder /"):
            peerdiff.load_adapter(local)
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


@pytest.fixture(scope="module")
def shared(trained, tmp_path_factory):
    """The run's ``train/dep/best`` and ``train/constant/best``, copied out of the run as
    ``peerdiff push`` uploads them."""
    import shutil

    cfg, _ = trained
    out = tmp_path_factory.mktemp("shared")
    for m in ("dep", "constant"):
        shutil.copytree(cfg.run_path / "train" / m / "best", out / f"{m}-adapter")
    return out


def test_a_shared_adapter_folder_writes_the_runs_reviews_from_a_fresh_run(
    trained, shared, tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path, monkeypatch
):
    """A fresh run directory (no train stage, its own vector cache): the Reviewer computes
    the data stages, takes the copied folders for dep and the constant, and writes the same
    reviews as the run that trained them, greedy and sampled (seeded: the tiny model's
    greedy answer is an immediate end of turn, a sample is text that follows the soft
    tokens)."""
    import peerdiff
    from peerdiff.serve import Service

    cfg, backends = trained
    monkeypatch.setattr(
        "peerdiff.serve.service.Backends", lambda c: tiny_backends(c, tiny_lm)
    )  # the tiny model instead of cfg's
    folders = {"dep": shared / "dep-adapter", "constant": str(shared / "constant-adapter")}
    ask = {"item_title": "Kind of Blue", "rating": 5, "review_title": "Timeless"}
    for decoding in ([], ["generate.do_sample=true", "generate.temperature=1.0"]):
        fresh = tiny_config(synthetic_root, tiny_encoder_dir, tmp_path / "fresh", *decoding)
        same = tiny_config(synthetic_root, tiny_encoder_dir, cfg.run_path, *decoding)
        original = peerdiff.Reviewer.__new__(peerdiff.Reviewer)
        original.service = Service(same, backends)  # the run's own train/<method>/best
        with peerdiff.Reviewer(fresh, adapters=folders) as r, original:
            assert not (fresh.run_path / "train").exists()  # nothing trained there
            assert (fresh.run_path / "contrast" / "manifest.json").exists()  # features computed
            assert r.service.soft["dep"].source == str(folders["dep"])
            assert original.service.soft["dep"].source.startswith(str(cfg.run_path))
            assert "pplug" in r.service.unavailable  # neither trained nor given
            users = r.service.bench.users[:3]
            for user in users:
                for m in ("dep", "constant"):
                    mine = r.review(user_id=user, method=m, max_new_tokens=12, **ask)
                    assert mine == original.review(user_id=user, method=m, max_new_tokens=12, **ask)
                    assert mine or not decoding
                    # what the LLM gets: the same soft tokens from the same features
                    assert torch.equal(soft(r, m, user), soft(original, m, user))
            assert not torch.equal(soft(r, "dep", users[0]), soft(r, "dep", users[1]))
            hist = [{"item_title": "Blue Train", "rating": 4, "title": "Great", "text": "Loved."}]
            assert isinstance(r.review(history=hist, method="constant", **ask), str)
            with pytest.raises(MissingStageError, match=r"--adapter pplug=FOLDER"):
                r.review(user_id=user, method="pplug", **ask)


def soft(reviewer, method: str, user: str):
    """The soft tokens ``(1, n_tokens, hidden)`` a reviewer's ``method`` puts into the LLM
    for ``user``'s request (as :meth:`Service._soft` builds them)."""
    from peerdiff.model.adapters import to_tensors
    from peerdiff.serve.schemas import ReviewRequest

    service = reviewer.service
    req = ReviewRequest(user_id=user, item={"title": "Kind of Blue"}, rating=5, method=method)
    ext, sample = service.request_sample(req)
    e = service.soft[method]
    P = e.method.prompts([sample], service.context(method, ext))
    with torch.no_grad():
        return e.adapter(to_tensors(P.features, [0], "cpu"))[0]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_a_shared_adapter_that_does_not_fit_is_one_line_naming_the_setting(
    trained, shared, tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path
):
    from peerdiff.hub import method_adapter
    from peerdiff.serve import Service

    cfg, _ = trained
    dep, const = shared / "dep-adapter", shared / "constant-adapter"

    def refused(folder, method, *overrides, **kw) -> str:
        c = tiny_config(synthetic_root, tiny_encoder_dir, tmp_path / "run", *overrides)
        with pytest.raises(ConfigError) as e:
            method_adapter(folder, c, method, **kw)
        return one_line(e)

    # through the service: the base model checked before anything is served
    other = tiny_config(synthetic_root, tiny_encoder_dir, cfg.run_path, "llm.model=me/other")
    with pytest.raises(ConfigError) as e:
        Service(other, tiny_backends(other, tiny_lm), adapters={"dep": dep})
    assert one_line(e) == (
        f"adapter {dep} was trained with base model 'tiny', this config runs 'me/other': "
        "set llm.model=tiny"
    )
    assert refused(dep, "dep", "contrast.max_slots=4").endswith(
        "has 8 soft tokens per group (hist/diff), method 'dep' under this config 4 "
        "(hist/diff): set contrast.max_slots=8"
    )
    assert refused(const, "constant", "constant.tokens=4").endswith(
        "has 16 soft tokens per group (soft), method 'constant' under this config 4 (soft): "
        "set constant.tokens=16"
    )
    assert refused(const, "dep").endswith(
        "is a 'constant' adapter, method 'dep' runs 'dep' ones: give it to constant"
    )
    assert refused(dep, "dep-nodiff").endswith(
        "is an adapter of method 'dep' (use_difference=True), not of 'dep-nodiff': give it to 'dep'"
    )
    enc = {"name": "BAAI/bge-m3", "key": "bge-m3-0123", "dim": 1024}
    assert refused(dep, "dep", encoder=enc).endswith(
        f"this config runs 'BAAI/bge-m3': set embed.model={tiny_encoder_dir}"
    )
    same_name = {"name": str(tiny_encoder_dir), "key": "k", "dim": 1024}
    assert "reads 16-d review vectors" in refused(dep, "dep", encoder=same_name)
    assert "hidden size 64: set llm.model=tiny" in refused(dep, "dep", llm_hidden=64)
    assert "'nonperso' has no adapter" in refused(dep, "nonperso")
    # what fits loads (the constant reads no vectors: another encoder is no concern of it)
    ok = tiny_config(synthetic_root, tiny_encoder_dir, tmp_path / "run")
    assert method_adapter(const, ok, "constant", encoder=enc).cfg.n_constant == 16
    with pytest.raises(ConfigError, match="'nonperso' has no adapter"):
        Service(ok, tiny_backends(ok, tiny_lm), adapters={"nonperso": dep})


def test_the_card_says_how_to_write_reviews_with_the_folder(trained):
    card = (trained[0].run_path / "train" / "dep" / "best" / "README.md").read_text()
    assert 'peerdiff.Reviewer("<config>", adapters={"dep": folder})' in card
    assert "--adapter dep=<this folder or repo id>" in card
    assert "`llm.model=tiny embed.model=" in card
    const = (trained[0].run_path / "train" / "constant" / "best" / "README.md").read_text()
    assert "history=[" in const and "embed.model=" not in const  # no known user, no vectors


def test_a_card_lists_only_scores_of_the_adapter_it_describes(tmp_path):
    """A full evaluation by an adapter that a later subset run retrained over is not shown
    (it was: the full split came first)."""
    from peerdiff.hub import _results

    (tmp_path / "train" / "dep").mkdir(parents=True)
    (tmp_path / "train" / "dep" / "manifest.json").write_text(json.dumps({"key": "new"}))
    for split, key, n in (("test", "old", 87), ("test-n10", "new", 10)):
        d = tmp_path / "evaluate" / f"dep-{split}"
        d.mkdir(parents=True)
        summary = {"method": "dep", "split": split, "n": n, "scores": {"rouge1": 0.2}}
        summary.update(adapter_key=key, **({"max_samples": 10} if n == 10 else {}))
        (d / "summary.json").write_text(json.dumps(summary))
    assert [line.split(":")[0] for line in _results(tmp_path, "dep")] == ["- test-n10 (n=10)"]
