"""Helpers the stage functions share: decoding settings, sample lists, prompts and their keys."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from peerdiff import methods
from peerdiff.backends import Backends
from peerdiff.backends.base import GenParams
from peerdiff.config import RunConfig
from peerdiff.data.benchmark import Benchmark
from peerdiff.data.schema import Sample
from peerdiff.errors import MissingStageError
from peerdiff.methods.base import Prompts
from peerdiff.stage import Stage, fingerprint
from peerdiff.stages.data import Data

# Bump when a stage's computation changes, so old results recompute.
# v5 / soft-v5 / nll-v2: control-token strings in prompt text and targets are plain text
DECODE_FORMAT = "decode-v5"
SOFT_FORMAT = "soft-v5"
NLL_FORMAT = "nll-v2"
PROBE_FORMAT = "probe-v1"


def gen_params(cfg: RunConfig) -> GenParams:
    g = cfg.generate
    return GenParams(
        g.max_new_tokens,
        g.do_sample,
        g.temperature,
        g.top_p,
        g.repetition_penalty,
        cfg.seed,
        g.penalty_scope,
    )


def samples(cfg: RunConfig, bench: Benchmark, split: str) -> list[Sample]:
    """A split's samples (the first ``generate.max_samples`` when set)."""
    s = bench.samples(split)
    n = cfg.generate.max_samples
    return s[:n] if n else s


def train_samples(cfg: RunConfig, bench: Benchmark) -> list[Sample]:
    """Training samples; with ``train.samples_per_user = n``, each user's latest n."""
    out = bench.samples("train")
    n = cfg.train.samples_per_user
    if n is None:
        return out
    ts = bench.timestamps
    by_user: dict[str, list[Sample]] = {}
    for s in out:
        by_user.setdefault(s.user_id, []).append(s)
    keep = {
        x.sample_id for v in by_user.values() for x in sorted(v, key=lambda x: -ts[x.target])[:n]
    }
    return [s for s in out if s.sample_id in keep]


def token_counter(backend: Any):
    """Exact token counts with a backend's tokenizer, estimates without one."""
    from peerdiff.methods.prompts import approx_tokens

    tok = getattr(backend, "tokenizer", None)
    if tok is None:
        return approx_tokens
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def target_ids(tokenizer, text: str, n: int) -> list[int]:
    """A target review's tokens cut at ``n`` (EOS appended only if it fits). Special-token
    strings inside the review are text (a review with ``<|im_end|>`` must not teach or score
    an end of turn)."""
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids[:n] if len(ids) >= n else ids + [tokenizer.eos_token_id]


def register_placeholders(method, backends: Backends) -> list[int]:
    """A soft-prompt method's placeholders as single tokens in the local tokenizer (and the
    engine's); their ids. Idempotent. Prompts built or encoded before this would count and
    tokenize each placeholder as text."""
    from peerdiff.model.inject import add_placeholders

    names = method.placeholders()
    ids = add_placeholders(backends.local.tokenizer, names)
    if backends.engine is not backends.local:  # vLLM tokenizes the prompts: same ids there
        assert add_placeholders(backends.engine.tokenizer, names) == ids
    return ids


def injector(method, backends: Backends):
    """Placeholders registered in the tokenizers; the injector over the local model."""
    from peerdiff.model.inject import Injector

    ids = register_placeholders(method, backends)
    return Injector(backends.local.model.get_input_embeddings(), ids)


def prompt_key(
    cfg: RunConfig,
    name: str,
    split: str,
    items: list[Sample],
    data: Data,
    backends: Backends,
    adapter: Stage | None,
) -> str:
    """Identity of a method's prompts (and soft tokens) for these samples."""
    spec = methods.get(name)
    calls = None
    if len(spec.roles) > 1:  # intermediate calls: their backends and decoding
        calls = {r: backends.role_identity(r) for r in spec.roles if r != "generator"}
        calls["params"] = asdict(gen_params(cfg))
    return fingerprint(
        name,
        spec.settings(cfg),
        data.keys(spec.needs),
        adapter.key() if adapter else None,
        calls,
        [s.sample_id for s in items],
    )


def method_prompts(
    cfg: RunConfig,
    name: str,
    split: str,
    items: list[Sample],
    data: Data,
    backends: Backends,
    tokenizer_backend: Any,
) -> Prompts:
    """A method's prompts for ``items`` (multi-call methods make their cached calls here)."""
    from peerdiff.generate import Caller

    spec = methods.get(name)
    m = spec.build(cfg)
    if spec.soft:  # placeholders must be single tokens before anything is counted or encoded
        register_placeholders(m, backends)
    ctx = data.context(cfg, spec.needs, token_counter(tokenizer_backend))
    call = None
    if len(spec.roles) > 1:
        call = Caller(cfg.run_path / "calls" / f"{name}-{split}", backends, gen_params(cfg))
    P = m.prompts(items, ctx, call)
    if call is not None:
        P.stats["calls"] = call.stats  # per step: calls, failed, recovered, missing
    return P


def require_adapter(name: str, adapter: Stage | None) -> Stage:
    if adapter is None or not (adapter.path("best") / "adapter.safetensors").exists():
        raise MissingStageError(
            f"method {name!r} has no trained adapter; train it first: "
            f"`peerdiff train --method {name}` (or `peerdiff run`)"
        )
    return adapter
