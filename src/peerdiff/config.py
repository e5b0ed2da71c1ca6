"""Typed configuration: dataclasses, YAML loading, ``key=value`` overrides, validation.

Every experiment is one YAML file whose keys mirror :class:`RunConfig`. Unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the key path
(``data.protocol.min_text_chars``) and, when it came from a file, the file.
"""

from __future__ import annotations

import enum
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from peerdiff.errors import ConfigError

__all__ = ["ConfigError", "RunConfig", "load_config"]


class Source(str, enum.Enum):
    """Formats the data readers understand."""

    amazon23 = "amazon23"  # Amazon Reviews'23 JSONL (reviews + meta)
    amazon2014 = "amazon2014"  # McAuley 2014 field names (reviewerID, asin, reviewText, ...)
    amazon2018 = "amazon2018"  # McAuley 2018 field names (same review fields, list descriptions)
    generic = "generic"  # peerdiff's own JSONL schema (see README)
    dpl = "dpl"  # published DPL-main / DPL-meta (Hugging Face datasets, on disk or hub)


def default_data_root() -> str:
    return os.environ.get("PEERDIFF_DATA", "../shared/data")


def default_cache_dir() -> str:
    return os.environ.get("PEERDIFF_CACHE", str(Path.home() / ".cache" / "peerdiff"))


@dataclass
class Protocol:
    """Thresholds of the DPL benchmark protocol (defaults: the published ``paper`` values)."""

    min_text_chars: int = field(default=200, metadata={"help": "drop reviews with shorter text"})
    min_desc_chars: int = field(default=100, metadata={"help": "item description length, lower"})
    max_desc_chars: int = field(default=2000, metadata={"help": "item description length, upper"})
    require_description: bool = field(
        default=True, metadata={"help": "apply the description filter"}
    )
    require_rating_number: bool = field(default=True, metadata={"help": "items need rating_number"})
    require_categories: bool = field(default=True, metadata={"help": "items need categories"})
    min_item_users: int = field(default=8, metadata={"help": "k-core: reviewers per item"})
    min_user_reviews: int = field(default=18, metadata={"help": "k-core: reviews per user, lower"})
    max_user_reviews: int = field(default=500, metadata={"help": "k-core: reviews per user, upper"})
    n_train_targets: int = field(default=8, metadata={"help": "held-out train targets per user"})
    min_item_profile_users: int = field(default=5, metadata={"help": "profile items: reviewers"})
    min_user_profile_reviews: int = field(default=8, metadata={"help": "profile reviews per user"})
    normalize_whitespace: bool = field(default=True, metadata={"help": "collapse runs of spaces"})

    def __post_init__(self) -> None:
        for name in ("min_text_chars", "min_desc_chars", "min_item_users", "min_user_reviews"):
            if getattr(self, name) < 0:
                raise ConfigError(f"protocol.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_desc_chars < self.min_desc_chars:
            raise ConfigError(
                f"protocol.max_desc_chars ({self.max_desc_chars}) < min_desc_chars ({self.min_desc_chars})"
            )
        if self.max_user_reviews < self.min_user_reviews:
            raise ConfigError(
                f"protocol.max_user_reviews ({self.max_user_reviews}) < "
                f"min_user_reviews ({self.min_user_reviews})"
            )
        if self.n_train_targets < 0:
            raise ConfigError(f"protocol.n_train_targets must be >= 0, got {self.n_train_targets}")
        if self.min_user_profile_reviews < 1:
            raise ConfigError(
                "protocol.min_user_profile_reviews must be >= 1 "
                f"(a user needs a history), got {self.min_user_profile_reviews}"
            )

    @property
    def held_out(self) -> int:
        """Reviews held out per user: the train targets, one validation and one test target."""
        return self.n_train_targets + 2


PRESETS: dict[str, Protocol] = {
    # Thresholds of DPL's data-create.py (Amazon Reviews'23, Books / CDs / Movies).
    "paper": Protocol(),
    # Fits the bundled Digital Music sample (6,908 reviews): ~90 users with >= 10 reviews.
    "small": Protocol(
        min_text_chars=100,
        require_description=False,
        require_rating_number=False,
        require_categories=False,
        min_item_users=2,
        min_user_reviews=10,
        n_train_targets=4,
        min_item_profile_users=2,
        min_user_profile_reviews=3,
    ),
    # Users with >= 5 reviews after the text filter (~317 on the bundled sample): wider
    # tests for tighter intervals; 2 train targets per user.
    "medium": Protocol(
        min_text_chars=100,
        require_description=False,
        require_rating_number=False,
        require_categories=False,
        min_item_users=2,
        min_user_reviews=5,
        n_train_targets=2,
        min_item_profile_users=2,
        min_user_profile_reviews=1,
    ),
}


@dataclass
class DataConfig:
    source: Source = Source.amazon23
    root: str = field(
        default_factory=default_data_root, metadata={"help": "base of relative paths"}
    )
    reviews: str = "amazon-2023-schema-digital-music/Digital_Music.jsonl.gz"
    items: str | None = "amazon-2023-schema-digital-music/meta_Digital_Music.jsonl.gz"
    category: str | None = field(default=None, metadata={"help": "DPL-main config, e.g. Books"})
    preset: str = "small"
    protocol: dict[str, Any] = field(default_factory=dict, metadata={"help": "preset overrides"})
    on_bad_line: Literal["error", "skip"] = "error"
    max_users: int | None = field(default=None, metadata={"help": "keep this many users (seeded)"})

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"data.preset: {self.preset!r} is not one of {sorted(PRESETS)}")
        known = {f.name for f in fields(Protocol)}
        for key in self.protocol:
            if key not in known:
                raise ConfigError(f"unknown key data.protocol.{key}; known: {sorted(known)}")
        self.resolved_protocol()  # validates values early
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"data.max_users must be >= 1, got {self.max_users}")

    def resolved_protocol(self) -> Protocol:
        base = asdict(PRESETS[self.preset])
        for key, value in self.protocol.items():
            base[key] = _convert(
                typing.get_type_hints(Protocol)[key], value, f"data.protocol.{key}"
            )
        return Protocol(**base)

    def path(self, rel: str | None) -> Path | None:
        """Resolve a data path against ``root``; ``None`` stays ``None``."""
        if rel is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(rel)))
        return p if p.is_absolute() else Path(self.root) / p


@dataclass
class EmbedConfig:
    model: str = field(default="default", metadata={"help": "default = all-MiniLM-L6-v2 package"})
    batch_size: int = 64
    max_length: int = 256
    text: Literal["text", "title_text"] = "text"
    device: str = "auto"

    def __post_init__(self) -> None:
        _positive(self, "embed", "batch_size", "max_length")


@dataclass
class LLMConfig:
    model: str = field(default="default", metadata={"help": "default = SmolLM2-135M-Instruct"})
    engine: Literal["hf", "vllm"] = field(
        default="hf", metadata={"help": "generation engine; training always uses transformers"}
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    threads: int | None = None


@dataclass
class PromptConfig:
    max_desc_chars: int = field(default=300, metadata={"help": "item description, truncated"})
    max_review_chars: int = field(default=300, metadata={"help": "each past review's text"})
    max_prompt_tokens: int = field(default=1024, metadata={"help": "drop past reviews to fit"})

    def __post_init__(self) -> None:
        _positive(self, "prompt", "max_desc_chars", "max_review_chars", "max_prompt_tokens")


@dataclass
class GenerateConfig:
    max_new_tokens: int = 128
    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    penalty_scope: Literal["generated", "prompt"] = field(
        default="generated",
        metadata={"help": "tokens the repetition penalty covers: generated only, or + prompt"},
    )
    splits: list[str] = field(default_factory=lambda: ["test"])
    max_samples: int | None = field(default=None, metadata={"help": "first N samples per split"})

    def __post_init__(self) -> None:
        _positive(self, "generate", "max_new_tokens", "batch_size")
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

    def __post_init__(self) -> None:
        _positive(self, "rag", "k")


@dataclass
class EvalConfig:
    bertscore: bool = True
    bertscore_model: str = field(default="default", metadata={"help": "default = local MiniLM"})
    bertscore_layers: int | None = None
    bootstrap: int = field(default=1000, metadata={"help": "paired bootstrap resamples"})
    nll: bool = field(default=True, metadata={"help": "target NLL under each method's prompt"})
    nll_target_tokens: int = field(default=128, metadata={"help": "target tokens scored"})
    nll_batch_size: int = 8

    def __post_init__(self) -> None:
        _positive(self, "evaluate", "bootstrap", "nll_target_tokens", "nll_batch_size")


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
    max_review_chars: int = field(default=300, metadata={"help": "text of a shown past review"})
    compact: bool = field(default=False, metadata={"help": "one short line per slot (CPU)"})
    sae_hidden: int | None = field(default=None, metadata={"help": "default encoder dim // 2"})
    rho: float = field(default=0.05, metadata={"help": "SAE target mean activation"})
    recon_weight: float = field(default=100.0, metadata={"help": "loss = lm + w (recon + k kl)"})
    kl_weight: float = 1e-3
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
    lr: float | None = field(default=None, metadata={"help": "default: train.lr"})

    def __post_init__(self) -> None:
        if self.text_reviews < 0:
            raise ConfigError(f"dep.text_reviews must be >= 0, got {self.text_reviews}")
        _positive(self, "dep", "max_review_chars")
        if not 0 < self.rho < 1:
            raise ConfigError(f"dep.rho must be in (0, 1), got {self.rho}")
        if self.lr is not None:
            _positive(self, "dep", "lr")


@dataclass
class PPlugConfig:
    """PPlug: one persona token from an input-aware attention over the user's history."""

    history: int = field(default=32, metadata={"help": "history vectors PPlug attends to"})
    init: Literal["reference", "torch"] = "reference"
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

    epochs: int = 5
    lr: float = 1e-5
    batch_size: int = 1
    grad_accum: int = 16
    weight_decay: float = field(default=0.025, metadata={"help": "on weight matrices only"})
    warmup_ratio: float = 0.01
    max_grad_norm: float = 1.0
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
    val_samples: int | None = field(default=64, metadata={"help": "val samples for selection"})
    val_max_new_tokens: int = field(default=64, metadata={"help": "select_by=meteor: greedy"})

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
        )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.samples_per_user is not None:
            _positive(self, "train", "samples_per_user")


@dataclass
class ProbeConfig:
    """``peerdiff probe``: the user-swap test of soft-prompt methods."""

    donors: int = field(default=8, metadata={"help": "other users whose features replace own"})
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    max_samples: int | None = field(
        default=None, metadata={"help": "a seeded random subset of N samples per split"}
    )

    def __post_init__(self) -> None:
        _positive(self, "probe", "donors")
        for s in self.splits:
            if s not in ("train", "val", "test"):
                raise ConfigError(f"probe.splits: {s!r} is not one of train, val, test")


@dataclass
class BackendConfig:
    """One LLM endpoint: the in-process transformers model or an OpenAI-compatible server."""

    type: Literal["hf", "openai"] = "hf"
    model: str | None = field(
        default=None, metadata={"help": "hf: default llm.model; openai: the server's model name"}
    )
    base_url: str | None = field(default=None, metadata={"help": "openai: e.g. http://host/v1"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "env var with the key"})
    concurrency: int = field(default=8, metadata={"help": "openai: requests in flight"})
    timeout: float = field(default=120.0, metadata={"help": "openai: seconds per request"})
    max_retries: int = field(default=3, metadata={"help": "openai: retries with backoff"})

    def validate(self, name: str) -> None:
        _positive(self, f"backends.{name}", "concurrency", "timeout")
        if self.max_retries < 0:
            raise ConfigError(f"backends.{name}.max_retries must be >= 0, got {self.max_retries}")
        if self.type == "openai" and not self.model:
            raise ConfigError(f"backends.{name}.model is required for an openai backend")


@dataclass
class RolesConfig:
    """Which backend does each job (names from ``backends``); how the extractor is scaled."""

    extractor: str = "local"
    validator: str = "local"
    summarizer: str = "local"
    generator: str = "local"
    judge: str | None = field(default=None, metadata={"help": "LLM-judge metric; off if null"})


@dataclass
class PipelineConfig:
    """DPL / DRP / PAG settings (names as in the papers)."""

    n_items: int = field(default=4, metadata={"help": "N past items compared with peers"})
    n_peers: int = field(default=4, metadata={"help": "K representative peers (KMeans K+1)"})
    min_peers: int = field(default=4, metadata={"help": "items need this many other reviewers"})
    past_reviews: int = field(default=4, metadata={"help": "BM25 past reviews shown"})
    extract_max_tokens: int = 256
    validate_max_tokens: int = 256
    summary_max_tokens: int = 160
    max_review_chars: int = field(default=400, metadata={"help": "each review in extraction"})

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
            "max_review_chars",
        )
        if self.min_peers < 1:
            raise ConfigError(f"pipeline.min_peers must be >= 1, got {self.min_peers}")


@dataclass
class RunConfig:
    name: str = "run"
    run_dir: str = "runs/{name}"
    cache_dir: str = field(default_factory=default_cache_dir)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    methods: list[str] = field(default_factory=lambda: ["nonperso", "rag"])
    rag: RagConfig = field(default_factory=RagConfig)
    contrast: ContrastConfig = field(default_factory=ContrastConfig)
    dep: DEPConfig = field(default_factory=DEPConfig)
    pplug: PPlugConfig = field(default_factory=PPlugConfig)
    constant: ConstantConfig = field(default_factory=ConstantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    backends: dict[str, BackendConfig] = field(default_factory=lambda: {"local": BackendConfig()})
    roles: RolesConfig = field(default_factory=RolesConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        from peerdiff.methods import names  # the registry (imports no method module)

        for m in self.methods:
            if m not in names():
                raise ConfigError(f"methods: {m!r} is not one of {list(names())}")
        if "local" not in self.backends:  # the in-process model (llm section) always exists
            self.backends = {"local": BackendConfig(), **self.backends}
        for name, b in self.backends.items():
            b.validate(name)
        for role, name in asdict(self.roles).items():
            if name is not None and name not in self.backends:
                raise ConfigError(
                    f"roles.{role}: backend {name!r} is not defined; backends: {sorted(self.backends)}"
                )

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir.format(name=self.name))

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from YAML (or defaults) and apply ``key=value`` overrides.

    Raises:
        ConfigError: unknown key, bad type or value; the message names the key and the file.
    """
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    for item in overrides or []:
        _apply_override(raw, item)
    try:
        return from_dict(RunConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""


T = typing.TypeVar("T")

# keys of earlier versions and where they live now
MOVED = {
    "train.rho": "dep.rho",
    "train.recon_weight": "dep.recon_weight",
    "train.kl_weight": "dep.kl_weight",
    "train.device": "llm.device (training runs where the LLM is)",
    "dep.pplug_history": "pplug.history",
}


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            moved = MOVED.get(f"{where}{key}")
            hint = f" (moved to {moved})" if moved else f"; known keys: {sorted(known)}"
            raise ConfigError(f"unknown key {where}{key}{hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - all keys are checked above
        raise ConfigError(f"{where}: {e}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in get_args(tp):
                return None
            raise ConfigError(f"{where} must not be empty")
        errors = []
        for a in args:
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if is_dataclass(tp):
        return from_dict(tp, value, f"{where}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not one of {[e.value for e in tp]}") from None
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (arg,) = get_args(tp)
        return [_convert(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        _, val_t = get_args(tp)
        return {k: _convert(val_t, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover


def _positive(obj: Any, section: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {getattr(obj, name)}")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, enum.Enum):
        return x.value
    return x
