"""Adapters on a tiny random Llama: what trains, what stays frozen, injection, save/load."""

import copy
import json

import numpy as np
import pytest
import torch

from peerdiff.config import TrainConfig
from peerdiff.model.adapters import (
    AdapterConfig,
    ConstantConfig,
    DEPConfig,
    adapter_class,
    apply_group_settings,
    build_adapter,
    decay_groups,
    load_adapter,
    save_adapter,
    to_tensors,
)
from peerdiff.model.inject import Injector, add_placeholders, placeholder_names
from peerdiff.model.lm import Example, collate, grad_free_prefix, lm_loss
from peerdiff.train import Trainer

D = 12  # encoder size in these tests


def setup_dep(tiny_lm, **kw):
    model, tok, _ = tiny_lm
    tok = copy.deepcopy(tok)  # placeholders must not leak into the shared fixture
    kind = kw.pop("kind", "dep")
    if kind == "dep":
        kw.setdefault("slots", 2)
    cfg = AdapterConfig.for_kind(kind, encoder_dim=D, llm_hidden=model.config.hidden_size, **kw)
    names = placeholder_names(cfg.groups, cfg.tokens_per_group)
    ids = add_placeholders(tok, names)
    torch.manual_seed(0)
    adapter = build_adapter(cfg, model.get_input_embeddings())
    return model, tok, cfg, names, ids, adapter


def features(n, slots=2, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, slots), bool)
    mask[0, 1] = False
    return {
        "hist": rng.normal(size=(n, slots, D)).astype(np.float32),
        "diff": rng.normal(size=(n, slots, D)).astype(np.float32),
        "mask": mask,
        "query": rng.normal(size=(n, D)).astype(np.float32),
    }


def examples(tok, names, n=3):
    out = []
    for i in range(n):
        prompt = "item " + "x" * (3 * i) + " " + "".join(names) + " rating 5"
        out.append(Example(tok(prompt)["input_ids"], tok(" nice" * (i + 1))["input_ids"] + [2]))
    return out


def test_injection_places_vectors_exactly_at_placeholders_padded(tiny_lm):
    model, tok, _cfg, names, ids, _adapter = setup_dep(tiny_lm)
    inj = Injector(model.get_input_embeddings(), ids)
    ex = examples(tok, names)
    batch = collate(ex, tok.pad_token_id, torch.device("cpu"))
    assert batch["shared"] > 0  # the common prefix stays aligned on the left
    assert (batch["attention_mask"] == 0).any()  # really padded (after the shared prefix)
    soft = torch.randn(3, len(ids), model.config.hidden_size)
    emb = inj(batch["input_ids"], soft)
    plain = model.get_input_embeddings()(
        torch.where(batch["input_ids"] >= model.config.vocab_size, 0, batch["input_ids"])
    )
    for b in range(3):
        for t in range(batch["input_ids"].shape[1]):
            tid = int(batch["input_ids"][b, t])
            if tid in ids:
                assert torch.equal(emb[b, t], soft[b, ids.index(tid)])
            else:
                assert torch.equal(emb[b, t], plain[b, t])


def test_one_step_changes_adapters_and_leaves_llm_bit_identical(tiny_lm, tmp_path):
    model, tok, _cfg, names, ids, adapter = setup_dep(tiny_lm)
    before_llm = {k: v.clone() for k, v in model.state_dict().items()}
    before_ad = {k: v.clone() for k, v in adapter.named_parameters()}
    ex = examples(tok, names)
    tc = TrainConfig(epochs=1, batch_size=3, grad_accum=1, warmup_ratio=0.0)
    tr = Trainer(
        model,
        adapter,
        Injector(model.get_input_embeddings(), ids),
        pad_id=tok.pad_token_id,
        cfg=tc,
        lr=1e-2,
        out_dir=tmp_path / "t",
        key="k",
    )
    state = tr.fit(ex, features(3))
    assert state["best_epoch"] == 1 and (tmp_path / "t" / "best" / "adapter.safetensors").exists()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before_llm[k]), f"frozen LLM parameter {k} changed"
    changed = [k for k, v in adapter.named_parameters() if not torch.equal(v, before_ad[k])]
    assert set(changed) == set(before_ad), (
        f"unchanged adapter params: {set(before_ad) - set(changed)}"
    )
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", ["dep", "pplug", "constant"])
def test_gradients_are_finite_and_reach_every_adapter_parameter(tiny_lm, kind):
    model, tok, cfg, names, ids, adapter = setup_dep(tiny_lm, kind=kind)
    inj = Injector(model.get_input_embeddings(), ids)
    ex = examples(tok, names)
    batch = collate(ex, tok.pad_token_id, torch.device("cpu"))
    soft, aux = adapter(to_tensors(features(3), [0, 1, 2], "cpu"))
    assert soft.shape == (3, cfg.n_tokens, model.config.hidden_size)
    loss = lm_loss(model, inj(batch["input_ids"], soft), batch)
    if aux:
        loss = loss + 100 * (aux["recon"] + 1e-3 * aux["kl"])
    loss.backward()
    for name, p in adapter.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_save_load_gives_identical_logits(tiny_lm, tmp_path):
    model, tok, _cfg, names, ids, adapter = setup_dep(tiny_lm)
    inj = Injector(model.get_input_embeddings(), ids)
    batch = collate(examples(tok, names), tok.pad_token_id, torch.device("cpu"))
    f = to_tensors(features(3), [0, 1, 2], "cpu")
    save_adapter(adapter, tmp_path / "a")
    loaded = load_adapter(tmp_path / "a")
    assert loaded.cfg == adapter.cfg
    with torch.no_grad():
        a = model(
            inputs_embeds=inj(batch["input_ids"], adapter(f)[0]),
            attention_mask=batch["attention_mask"],
        ).logits
        b = model(
            inputs_embeds=inj(batch["input_ids"], loaded(f)[0]),
            attention_mask=batch["attention_mask"],
        ).logits
    assert torch.equal(a, b)
    size = sum(p.stat().st_size for p in (tmp_path / "a").iterdir())
    assert size < 1_000_000  # adapters only, not the LLM


def test_ablations_and_sizes():
    full = build_adapter(DEPConfig(encoder_dim=384, llm_hidden=576))
    assert full.sae.encoder[0].out_features == 192  # h = d / 2
    assert full.cfg.n_tokens == 16
    assert build_adapter(DEPConfig(use_difference=False)).cfg.n_tokens == 8
    nosae = build_adapter(DEPConfig(encoder_dim=384, use_sae=False))
    assert nosae.sae is None and nosae.align_mlp_his[0].in_features == 384
    with pytest.raises(ValueError, match="use_history or use_difference"):
        DEPConfig(use_history=False, use_difference=False)


def test_sae_losses_ignore_padding_slots():
    from peerdiff.model.sae import SparseAutoEncoder

    torch.manual_seed(0)
    sae = SparseAutoEncoder(D, D // 2)
    x = torch.randn(2, 4, D)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    z, r = sae(x)
    a = sae.losses(x, z, r, mask)
    x2 = x.clone()
    x2[~mask] = 1e3  # garbage in padding slots must not matter
    z2, r2 = sae(x2)
    b = sae.losses(x2, z2, r2, mask)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_grad_free_prefix_gives_the_same_loss_and_gradients(tiny_lm):
    model, tok, _cfg, names, ids, adapter = setup_dep(tiny_lm)
    inj = Injector(model.get_input_embeddings(), ids)
    batch = collate(examples(tok, names), tok.pad_token_id, torch.device("cpu"))
    f = to_tensors(features(3), [0, 1, 2], "cpu")
    split = grad_free_prefix(batch["input_ids"], inj.table >= 0)
    assert 0 < split < batch["input_ids"].shape[1]
    results = []
    for sp in (0, split):
        adapter.zero_grad()
        loss = lm_loss(model, inj(batch["input_ids"], adapter(f)[0]), batch, sp)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in adapter.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    assert results[0][1].keys() == results[1][1].keys() and len(results[0][1]) >= 6
    for n in results[0][1]:
        torch.testing.assert_close(results[0][1][n], results[1][1][n], rtol=1e-4, atol=1e-6)


def test_reference_init_has_small_weights_and_zero_biases():
    torch.manual_seed(0)
    a = build_adapter(DEPConfig(encoder_dim=384, llm_hidden=576, init="reference"))
    for m in a.modules():
        if isinstance(m, torch.nn.Linear):
            assert abs(float(m.weight.detach().std()) - 0.02) < 0.002
            assert m.bias is None or torch.equal(m.bias, torch.zeros_like(m.bias))
    torch.manual_seed(0)
    t = build_adapter(DEPConfig(encoder_dim=384, llm_hidden=576, init="torch"))
    assert t.align_mlp_his[2].bias.abs().sum() > 0  # PyTorch's default: random biases


def test_no_weight_decay_on_biases_and_learned_tokens():
    a = build_adapter(DEPConfig(encoder_dim=D, llm_hidden=16, slots=2))
    decay, no_decay = decay_groups(a, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(
        p.ndim == 1 for p in no_decay["params"]
    )
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in a.parameters())
    c = build_adapter(ConstantConfig(llm_hidden=16, n_constant=4))
    assert decay_groups(c, 0.1)[0]["params"] == []  # the constant's tokens are not decayed


@pytest.mark.parametrize("mode", ["center", "standardize"])
def test_feature_statistics_normalise_filled_slots_only(mode):
    torch.manual_seed(0)
    a = build_adapter(DEPConfig(encoder_dim=D, llm_hidden=16, slots=2, features=mode))
    f = features(50)
    f["hist"] += 3.0  # a large common component
    a.fit_statistics(f)
    m = torch.as_tensor(f["mask"])
    x = a._normalize(torch.as_tensor(f["hist"]), "hist", m)
    assert x[m].mean(0).abs().max() < 1e-5  # centred over filled slots
    assert (x[~m] == 0).all()  # empty slots stay zero
    if mode == "standardize":
        assert abs(float(x[m].pow(2).mean()) - 1) < 1e-4
    # the statistics travel with the adapter
    b = build_adapter(a.cfg)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.mean_hist, a.mean_hist) and torch.equal(b.scale_diff, a.scale_diff)


def test_dep_mean_ignores_the_users_features():
    torch.manual_seed(0)
    a = build_adapter(DEPConfig(encoder_dim=D, llm_hidden=16, slots=2, mean_features=True))
    a.fit_statistics(features(20))
    f1, f2 = features(3, seed=1), features(3, seed=2)
    with torch.no_grad():
        s1 = a(to_tensors(f1, range(3), "cpu"))[0]
        s2 = a(to_tensors(f2, range(3), "cpu"))[0]
    assert torch.equal(s1, s2)
    full = build_adapter(DEPConfig(encoder_dim=D, llm_hidden=16, slots=2))
    with torch.no_grad():
        assert not torch.equal(
            full(to_tensors(f1, range(3), "cpu"))[0], full(to_tensors(f2, range(3), "cpu"))[0]
        )


@pytest.mark.parametrize("unit", ["slot", "sample"])
def test_feature_dropout_replaces_filled_slots_by_the_mean_in_training_only(unit):
    cfg = DEPConfig(encoder_dim=8, llm_hidden=16, slots=4, feature_dropout=0.5, dropout_unit=unit)
    torch.manual_seed(0)
    a = build_adapter(cfg)
    f = {
        "hist": torch.randn(64, 4, 8),
        "diff": torch.randn(64, 4, 8),
        "mask": torch.rand(64, 4) < 0.8,
    }
    a.fit_statistics(f)
    a.train()
    drop = a._dropped(f["mask"])
    x = a._inputs(f, "hist", drop)
    replaced = (x == a.mean_hist).all(-1)
    assert (replaced == (drop & f["mask"])).all()  # exactly the dropped filled slots
    assert 0.3 < drop.float().mean() < 0.7
    if unit == "sample":
        assert (drop == drop[:, :1]).all()
    a.eval()
    assert a._dropped(f["mask"]) is None
    torch.testing.assert_close(a(f)[0], a(f)[0])  # deterministic at inference


def test_residual_empty_slots_get_the_base_token_alone():
    cfg = DEPConfig(encoder_dim=8, llm_hidden=16, slots=2, residual=True)
    torch.manual_seed(0)
    a = build_adapter(cfg)
    for mlp in (a.align_mlp_his, a.align_mlp_diff):  # as if trained: a non-zero branch
        torch.nn.init.normal_(mlp[-1].weight)
    f = {"hist": torch.randn(1, 2, 8), "diff": torch.randn(1, 2, 8)}
    f["mask"] = torch.tensor([[True, False]])
    soft = a.eval()(f)[0][0]  # outputs: [his_0, his_1, diff_0, diff_1]
    torch.testing.assert_close(soft[[1, 3]], a.base[[1, 3]])
    assert not torch.allclose(soft[[0, 2]], a.base[[0, 2]])


@pytest.mark.parametrize("residual", [False, True])
def test_bfloat16_autocast_training_trains_every_parameter_and_repeats(tiny_lm, tmp_path, residual):
    """``train.precision=bfloat16``: parameters stay float32, every one changes, the LLM
    stays bit-identical, and the same run twice gives bit-identical adapters."""
    from safetensors.torch import load_file

    out = []
    for i in range(2):
        model, tok, _cfg, names, ids, adapter = setup_dep(tiny_lm, residual=residual)
        before_llm = {k: v.clone() for k, v in model.state_dict().items()}
        before_ad = {k: v.clone() for k, v in adapter.named_parameters()}
        tc = TrainConfig(
            epochs=2, batch_size=3, grad_accum=1, warmup_ratio=0.0, precision="bfloat16"
        )
        Trainer(
            model,
            adapter,
            Injector(model.get_input_embeddings(), ids),
            pad_id=tok.pad_token_id,
            cfg=tc,
            lr=1e-2,
            out_dir=tmp_path / f"t{i}",
            key="k",
        ).fit(examples(tok, names), features(3))
        assert all(p.dtype == torch.float32 for p in adapter.parameters())
        assert all(torch.equal(v, before_llm[k]) for k, v in model.state_dict().items())
        assert all(not torch.equal(v, before_ad[k]) for k, v in adapter.named_parameters())
        out.append(load_file(str(tmp_path / f"t{i}" / "best" / "adapter.safetensors")))
    assert out[0].keys() == out[1].keys()
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_each_adapter_kind_has_its_own_config_class():
    assert type(AdapterConfig.for_kind("dep", slots=3)) is DEPConfig
    assert type(AdapterConfig.for_kind("constant", n_constant=4)) is ConstantConfig
    with pytest.raises(TypeError):
        AdapterConfig.for_kind("constant", slots=3)  # a DEP setting on the constant
    with pytest.raises(TypeError):
        AdapterConfig()  # the shared part alone
    with pytest.raises(ValueError, match="unknown adapter kind"):
        AdapterConfig.for_kind("lora")
    with pytest.raises(ValueError, match="DEPConfig is not the config of kind 'constant'"):
        DEPConfig(kind="constant")
    # a config saved before the split (every kind's fields in one file) still loads
    old = {"kind": "constant", "llm_hidden": 16, "slots": 8, "residual": False, "n_constant": 4}
    c = AdapterConfig.from_dict(old)
    assert type(c) is ConstantConfig and c.n_constant == 4 and not hasattr(c, "slots")
    assert build_adapter(c).tokens.shape == (4, 16)
    with pytest.raises(TypeError, match="DEPConfig"):
        adapter_class("dep")(c)


def test_saved_config_holds_only_its_kinds_settings(tmp_path):
    save_adapter(build_adapter(ConstantConfig(llm_hidden=16, n_constant=4)), tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["n_constant"] == 4 and "slots" not in saved and "residual" not in saved
    assert load_adapter(tmp_path).cfg == ConstantConfig(llm_hidden=16, n_constant=4)


def test_a_lower_capacity_branch_starts_at_the_constant_and_pools_filled_slots():
    """``branch_rank`` narrows the MLPs; ``pool_slots`` gives every filled slot of a group the
    same branch output, read from the group's filled slots in any order; a fresh residual
    adapter is its base tokens exactly."""
    kw = {"encoder_dim": 8, "llm_hidden": 16, "slots": 3, "residual": True}
    torch.manual_seed(0)
    full = build_adapter(DEPConfig(**kw))
    torch.manual_seed(0)
    a = build_adapter(DEPConfig(**kw, branch_rank=4, pool_slots=True))
    assert a.align_mlp_his[0].out_features == 4 and a.align_mlp_his[2].in_features == 4
    assert sum(p.numel() for p in a.parameters()) < sum(p.numel() for p in full.parameters())
    f = {"hist": torch.randn(2, 3, 8), "diff": torch.randn(2, 3, 8)}
    f["mask"] = torch.tensor([[True, True, False], [True, True, True]])
    a.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(f)[0], a.base.expand(2, -1, -1), rtol=0, atol=0)
        for mlp in (a.align_mlp_his, a.align_mlp_diff):  # as if trained
            torch.nn.init.normal_(mlp[-1].weight)
        soft = a(f)[0] - a.base  # outputs: his_0..2, diff_0..2
        torch.testing.assert_close(soft[0, 0], soft[0, 1])  # filled slots share one output
        assert torch.equal(soft[0, 2], torch.zeros(16)) and torch.equal(soft[0, 5], torch.zeros(16))
        assert not torch.allclose(soft[0, 0], soft[0, 3])  # history and difference differ
        g = {k: v[:, [1, 0, 2]] for k, v in f.items()}  # the filled slots swapped
        torch.testing.assert_close(a(g)[0][0], a(f)[0][0])


def test_the_user_branch_gets_its_own_rate_and_weight_decay():
    a = build_adapter(DEPConfig(encoder_dim=8, llm_hidden=16, slots=2, residual=True))
    groups = apply_group_settings(
        a.param_groups(0.01), {"branch": {"lr": 1e-4, "weight_decay": 0.2}}, 1e-3
    )
    by = {(g["name"], g["weight_decay"]): g for g in groups}
    assert set(by) == {("branch", 0.2), ("branch", 0.0), ("base", 0.0)}
    assert by[("base", 0.0)]["lr"] == 1e-3 and by[("base", 0.0)]["params"] == [a.base]
    assert by[("branch", 0.2)]["lr"] == by[("branch", 0.0)]["lr"] == 1e-4
    assert all(p.ndim == 2 for p in by[("branch", 0.2)]["params"])  # matrices only
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in a.parameters())
    # unset: the method's rate and train.weight_decay, as before the option existed
    plain = apply_group_settings(a.param_groups(0.01), {}, 1e-3)
    assert {(g["lr"], g["weight_decay"]) for g in plain} == {(1e-3, 0.01), (1e-3, 0.0)}
