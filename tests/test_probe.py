"""The probe's instruments: target NLL per sample, and the user-swap probe's calibration.

Calibration: a freshly initialised adapter carries no user (delta ~ 0); an adapter trained on
a task where each user's target depends on that user's features carries them (delta >> 0,
the interval excluding 0).
"""

import numpy as np
import pytest
import torch

from peerdiff.config import TrainConfig
from peerdiff.model.adapters import ConstantConfig, DEPConfig, adapter_class, build_adapter, soft_fn
from peerdiff.model.inject import Injector, add_placeholders, placeholder_names
from peerdiff.model.lm import Example, collate, target_losses, target_nll
from peerdiff.probe import pick_donors, summarize_swap, swap_probe
from peerdiff.train import Trainer

D, USERS, PER_USER = 12, 8, 4
WORDS = ["apple", "bravo", "cocoa", "delta", "eagle", "fjord", "gecko", "hotel"]


@pytest.fixture(scope="module")
def task():
    """Users with a feature vector each; a user's target is that user's word.

    The frozen LM is random but initialised at a larger scale than usual, so that its
    logits are not nearly uniform whatever the input (N(0, 0.02) embeddings cap any change
    of its NLL near 0.1 nats).
    """
    from helpers import char_tokenizer, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama(len(tok), init=0.3)
    cfg = DEPConfig(encoder_dim=D, llm_hidden=model.config.hidden_size, slots=2)
    names = placeholder_names(cfg.groups, cfg.slots)
    ids = add_placeholders(tok, names)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(USERS, D)).astype(np.float32)
    n = USERS * PER_USER
    user = np.repeat(np.arange(USERS), PER_USER)
    noise = lambda: rng.normal(scale=0.05, size=(n, 2, D)).astype(np.float32)  # noqa: E731
    feats = {
        "hist": centers[user][:, None, :] + noise(),
        "diff": centers[user][:, None, :] + noise(),
        "mask": np.ones((n, 2), bool),
    }
    prompt = tok("write: " + "".join(names) + " ->")["input_ids"]
    targets = [tok(" " + WORDS[u])["input_ids"] + [tok.eos_token_id] for u in user]
    return (
        model,
        tok,
        cfg,
        Injector(model.get_input_embeddings(), ids),
        prompt,
        targets,
        feats,
        user,
    )


def probe(task, adapter):
    model, tok, _cfg, inj, prompt, targets, feats, user = task
    filled = feats["mask"].sum(1)
    donors = pick_donors([f"u{u}" for u in user], filled, k=4, seed=0)
    own, other = swap_probe(
        model,
        tok.pad_token_id,
        adapter.eval(),
        inj,
        [prompt] * len(targets),
        targets,
        feats,
        donors,
    )
    return own, other, summarize_swap(own, other, n_boot=300)


def test_fresh_adapter_gives_delta_near_zero(task):
    torch.manual_seed(0)
    _, _, s = probe(task, build_adapter(task[2]))
    assert abs(s["delta"]) < 0.01
    assert s["delta_ci"][0] < 0.005  # no evidence of a user signal


def test_trained_adapter_carries_the_user(task, tmp_path):
    model, tok, cfg, inj, prompt, targets, feats, _user = task
    torch.manual_seed(0)
    adapter = build_adapter(cfg)
    adapter.fit_statistics(feats)
    tc = TrainConfig(epochs=6, batch_size=8, grad_accum=1, warmup_ratio=0.0, weight_decay=0.0)
    ex = [Example(prompt, t) for t in targets]
    Trainer(
        model,
        adapter,
        inj,
        pad_id=tok.pad_token_id,
        cfg=tc,
        lr=3e-2,
        out_dir=tmp_path,
        key="calibration",
        recon_weight=0.0,
    ).fit(ex, feats)
    _own, _other, s = probe(task, adapter)
    assert s["delta"] > 0.3 and s["delta_ci"][0] > 0.1
    assert s["own_best_share"] > 0.8 and s["own_rank_mean"] < 1.5


def test_donors_are_other_users_with_at_least_as_many_slots():
    users = ["a", "a", "b", "c", "d"]
    filled = np.array([3, 1, 2, 3, 1])
    d = pick_donors(users, filled, k=3, seed=0)
    assert sorted(d[0]) == [3]  # only c has >= 3 slots among other users
    assert all(users[j] != "a" for j in d[1]) and len(d[1]) == 3
    assert len({users[j] for j in d[1]}) == 3  # distinct users


def test_swap_features_keeps_own_mask_and_query():
    own = {"hist": np.ones((3, 2)), "diff": np.ones((3, 2)), "mask": np.array([1, 1, 0], bool)}
    donor = {"hist": np.full((3, 2), 7.0), "diff": np.full((3, 2), 8.0), "mask": np.ones(3, bool)}
    f = adapter_class("dep").swap(own, donor)
    assert (f["hist"][:2] == 7).all() and (f["hist"][2] == 0).all() and (f["diff"][:2] == 8).all()
    assert f["mask"].tolist() == [True, True, False]
    p = adapter_class("pplug").swap(
        {"query": np.zeros(2)}, {"hist": np.ones((4, 2)), "mask": np.ones(4, bool)}
    )
    assert (p["query"] == 0).all() and p["hist"].shape == (4, 2)
    with pytest.raises(ValueError, match="needs user features"):
        adapter_class("constant").swap(own, donor)


def test_target_nll_matches_one_sequence_at_a_time(task):
    model, tok, cfg, inj, prompt, targets, feats, _user = task
    torch.manual_seed(1)
    adapter = build_adapter(cfg).eval()
    soft = soft_fn(adapter, feats, "cpu")
    prompts = [prompt[: 3 + i % 4] + prompt[3 + i % 4 :] for i in range(len(targets))]
    sums, counts = target_nll(
        model, tok.pad_token_id, prompts, targets, soft=soft, injector=inj, batch_size=5
    )
    assert counts.tolist() == [len(t) for t in targets]
    for i in (0, 9, 31):
        b = collate([Example(prompts[i], targets[i])], tok.pad_token_id, "cpu")
        with torch.no_grad():
            losses, _ = target_losses(model, inj(b["input_ids"], soft([i])), b)
        assert sums[i] == pytest.approx(float(losses.sum()), rel=1e-4)
    # the probe's own-feature NLL is the same quantity per token
    own, _, _ = probe(task, adapter)
    np.testing.assert_allclose(own, sums / counts, rtol=1e-4)
    # token prompts: no soft tokens needed
    plain = [tok("hello there")["input_ids"]] * 2
    s2, c2 = target_nll(model, tok.pad_token_id, plain, targets[:2])
    assert np.isfinite(s2).all() and (c2 > 0).all()


def test_fresh_residual_dep_is_the_constant_prompt_and_probes_to_zero(task):
    """Residual DEP starts as its control: with the same seed, a fresh residual DEP puts
    exactly the constant's vectors at the same prompt positions (tokens layout: placeholders
    alternate [HIS_k][DIFF_k]; the constant's are [SOFT_0..15]), whatever the features, and
    the swap probe gives exactly 0."""
    from dataclasses import replace

    from peerdiff.model.inject import placeholder_names

    model, _tok, cfg, _inj, _prompt, _targets, feats, _user = task
    emb = model.get_input_embeddings()
    rcfg = replace(cfg, residual=True)
    ccfg = ConstantConfig(encoder_dim=D, llm_hidden=cfg.llm_hidden, n_constant=rcfg.n_tokens)
    torch.manual_seed(3)
    dep = build_adapter(rcfg, emb)
    dep.fit_statistics(feats)
    torch.manual_seed(3)
    const = build_adapter(ccfg, emb)
    # the tokens layout's prompt order: [HIS_0][DIFF_0][HIS_1][DIFF_1] ...
    names = placeholder_names(rcfg.groups, rcfg.slots)
    order = [names.index(f"[{g}_{k}]") for k in range(2) for g in ("HIS_TOKEN", "DIFF_TOKEN")]
    rows = list(range(6))
    d = soft_fn(dep.eval(), feats, "cpu")(rows)[:, order]
    c = soft_fn(const.eval(), {"mask": np.ones((6, 1), bool)}, "cpu")(rows)
    torch.testing.assert_close(d, c, rtol=0, atol=0)
    own, other, s = probe(task, dep)
    # identical soft tokens for every user: only the probe's batching rounds differently
    assert abs(s["delta"]) < 1e-6
    np.testing.assert_allclose(other, own[:, None].repeat(other.shape[1], 1), atol=1e-5)


def test_residual_dep_learns_the_user_from_the_constant(task, tmp_path):
    """Starting at the constant prompt, the residual branch still learns the users."""
    from dataclasses import replace

    model, tok, cfg, inj, prompt, targets, feats, _user = task
    torch.manual_seed(0)
    adapter = build_adapter(replace(cfg, residual=True), model.get_input_embeddings())
    adapter.fit_statistics(feats)
    tc = TrainConfig(epochs=6, batch_size=8, grad_accum=1, warmup_ratio=0.0, weight_decay=0.0)
    Trainer(
        model,
        adapter,
        inj,
        pad_id=tok.pad_token_id,
        cfg=tc,
        lr=3e-2,
        out_dir=tmp_path,
        key="residual",
        recon_weight=0.0,
    ).fit([Example(prompt, t) for t in targets], feats)
    _, _, s = probe(task, adapter)
    assert s["delta"] > 0.3 and s["delta_ci"][0] > 0.1
