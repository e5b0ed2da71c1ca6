"""What the stage functions share: decoding settings, sample lists, and :class:`MethodSplit`
(a method on a split: its samples, prompts, targets, soft tokens and keys)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

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
# probe-v2: prompts fitted to the token budget with the LLM's tokenizer, as the likelihood
# stage fits them (v1 counted no tokens, so the text layout kept reviews the method drops)
PROBE_FORMAT = "probe-v2"


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


def split_name(cfg: RunConfig, bench: Benchmark, split: str) -> str:
    """The name a split's predictions, target NLLs and scores go under: ``test``, or
    ``test-n10`` when ``generate.max_samples=10`` keeps only part of the split.

    A subset run so writes beside a full run's ``generate/<method>-test`` (never over it),
    and a full run's folders and keys stay what they were (``max_samples`` at or above the
    split's size is the full split).
    """
    n = cfg.generate.max_samples
    return f"{split}-n{n}" if n and n < len(bench.samples(split)) else split


def run_name(cfg: RunConfig, bench: Benchmark) -> str:
    """The name of a run's results, timings and config files: ``cfg.name``, or
    ``<name>-n10`` when ``generate.max_samples=10`` cuts a generated split (a subset run
    never rewrites the full run's ``results-<name>.md``)."""
    cut = any(split_name(cfg, bench, s) != s for s in cfg.generate.splits)
    return f"{cfg.name}-n{cfg.generate.max_samples}" if cut else cfg.name


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
    return ids[:n] if len(ids) >= n else [*ids, tokenizer.eos_token_id]


def register_placeholders(method, backends: Backends) -> list[int]:
    """A soft-prompt method's placeholders as single tokens in the local tokenizer (and the
    engine's); their ids. Idempotent. Prompts built or encoded before this would count and
    tokenize each placeholder as text."""
    from peerdiff.model.inject import add_placeholders

    names = method.placeholders()
    ids = add_placeholders(backends.local.tokenizer, names)
    if backends.engine is not backends.local:  # vLLM tokenizes the prompts: same ids there
        got = add_placeholders(backends.engine.tokenizer, names)
        if got != ids:
            from peerdiff.errors import BackendError

            raise BackendError(
                f"the engine's tokenizer gives the placeholders {names[:2]}... the ids "
                f"{got[:2]}..., the local tokenizer {ids[:2]}...: soft prompts cannot be "
                "injected on this engine (llm.engine=hf works)"
            )
    return ids


def injector(method, backends: Backends):
    """Placeholders registered in the tokenizers; the injector over the local model."""
    from peerdiff.model.inject import Injector

    ids = register_placeholders(method, backends)
    return Injector(backends.local.model.get_input_embeddings(), ids)


def require_adapter(name: str, adapter: Stage | None) -> Stage:
    if adapter is None or not (adapter.path("best") / "adapter.safetensors").exists():
        raise MissingStageError(
            f"method {name!r} has no trained adapter; train it first: "
            f"`peerdiff train --method {name}` (or `peerdiff run`)"
        )
    return adapter


class NLLPlan(NamedTuple):
    """Where a method's target NLL goes (``nll/<method>-<tag>``), its key and its scorer."""

    stage: Stage
    key: str
    scorer: Any


@dataclass
class MethodSplit:
    """One method on one split, built once: the samples, prompts (multi-call methods make
    their cached calls here), encoded prompts, targets, soft tokens and stage keys that the
    generate, likelihood, probe and train stages read.

    ``items`` defaults to the split's samples (the first ``generate.max_samples``; their
    stages go under ``<method>-<tag>``, :func:`split_name`); the probe and training pass
    their own. ``adapter`` is the method's train stage (soft-prompt methods); it is required
    only where the adapter is read.
    """

    cfg: RunConfig
    name: str
    split: str
    data: Data
    backends: Backends
    adapter: Stage | None = None
    items: list[Sample] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.spec = methods.get(self.name)
        self.method = self.spec.build(self.cfg)
        self.tag = self.split  # the folder name's split part (test, test-n10)
        if self.items is None:
            self.items = samples(self.cfg, self.data.bench, self.split)
            self.tag = split_name(self.cfg, self.data.bench, self.split)
        self._prompts: dict[int, Prompts] = {}

    @property
    def soft(self) -> bool:
        return self.spec.soft

    @property
    def generator(self) -> Any:
        """The backend that writes this method's predictions."""
        return self.backends.engine if self.soft else self.backends.role("generator")

    def generator_identity(self) -> Any:
        b = self.backends
        return b.identity("local") if self.soft else b.role_identity("generator")

    def key(self) -> str:
        """Identity of the method's prompts (and soft tokens) for these samples."""
        calls = None
        if len(self.spec.roles) > 1:  # intermediate calls: their backends and decoding
            calls = {r: self.backends.role_identity(r) for r in self.spec.roles if r != "generator"}
            calls["params"] = asdict(gen_params(self.cfg))
        return fingerprint(
            self.name,
            self.spec.settings(self.cfg),
            self.data.keys(self.spec.needs),
            self.adapter.key() if self.adapter else None,
            calls,
            [s.sample_id for s in self.items],
        )

    def context(self, backend: Any):
        """The method's context, token counts by ``backend``'s tokenizer. A soft-prompt
        method's placeholders become single tokens first (counted as text otherwise)."""
        if self.soft:
            register_placeholders(self.method, self.backends)
        return self.data.context(self.cfg, self.spec.needs, token_counter(backend))

    def prompts(self, backend: Any) -> Prompts:
        """The prompts, token counts by ``backend``'s tokenizer (built once per backend)."""
        from peerdiff.generate import Caller

        if id(backend) in self._prompts:
            return self._prompts[id(backend)]
        ctx = self.context(backend)
        call = None
        if len(self.spec.roles) > 1:
            run = self.cfg.run_path / "calls" / f"{self.name}-{self.tag}"
            call = Caller(run, self.backends, gen_params(self.cfg))
        P = self.method.prompts(self.items, ctx, call)
        if call is not None:
            P.stats["calls"] = call.stats  # per step: calls, failed, recovered, missing
        self._prompts[id(backend)] = P
        return P

    def encoded(self, backend: Any) -> list[list[int]]:
        """The prompts as ``backend``'s token ids (placeholders kept for soft prompts)."""
        return [backend.encode(c, self.soft) for c in self.prompts(backend).conversations]

    def targets(self, tokenizer: Any, n: int) -> list[list[int]]:
        """Each sample's target review as tokens, cut at ``n``."""
        texts = self.data.bench.texts
        return [target_ids(tokenizer, texts[s.target], n) for s in self.items]

    def injector(self):
        return injector(self.method, self.backends)

    def load_adapter(self, device: Any):
        """The trained adapter (evaluation mode) on ``device``."""
        from peerdiff.model.adapters import load_adapter

        return load_adapter(require_adapter(self.name, self.adapter).path("best"), device).eval()

    def nll_plan(self) -> NLLPlan | None:
        """The target-NLL stage, or ``None`` when the generator runs on a server (no
        likelihoods there)."""
        b = self.backends
        if not (self.soft or b.scores_locally("generator")):
            return None
        if self.soft:
            require_adapter(self.name, self.adapter)
        who = b.identity("local") if self.soft else b.role_identity("generator")
        n = self.cfg.evaluate.nll_target_tokens
        key = fingerprint(NLL_FORMAT, self.key(), who, n)
        scorer = b.local if self.soft else b.scoring("generator")
        return NLLPlan(Stage(self.cfg.run_path / "nll", f"{self.name}-{self.tag}"), key, scorer)
