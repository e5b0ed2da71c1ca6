"""The trainable parts: adapters that turn user features into soft tokens for a frozen LLM.

- :class:`DEPAdapter`: history and difference vectors -> sparse autoencoder -> two alignment
  MLPs -> ``slots`` history tokens + ``slots`` difference tokens. Ablations switch off the
  history tokens, the difference tokens, or the SAE (MLPs straight from encoder vectors).
- :class:`PPlugAdapter`: one persona token: an input-aware attention over the user's history
  vectors, then an MLP (PPlug).
- :class:`ConstantPrompt`: the same number of learned soft tokens with no user information;
  a control that separates "learned review style" from "learned this user".

Each is registered under its ``kind`` with its own config class (:func:`register_adapter`,
as PEFT registers each method's model and config: :class:`DEPConfig`, :class:`PPlugConfig`,
:class:`ConstantConfig`, all :class:`AdapterConfig`) and says what it is (:class:`AdapterBase`: token groups, user features, how the
probe swaps them); nothing outside this module switches on ``kind``. All share one
interface: ``forward(features) -> (soft (batch, n_tokens, hidden), aux_losses)`` and
``adapter_params()`` (what trains). Sizes derive from the encoder and LLM dimensions.
Saved as ``adapter.safetensors`` + ``adapter_config.json`` (a few MB), loadable on top of the
named base LLM.

Initialisation (``init``): ``reference`` gives every ``Linear`` N(0, 0.02) weights and zero
biases, as the DEP code's modules get them (they are created as missing keys of a
transformers model); ``torch`` keeps PyTorch's default (uniform weights *and biases*), which
makes DEP's first soft tokens bias-dominated: little of their variation followed the input.

Input statistics (``features``): sentence vectors share a large common direction, so the
part that tells users apart is small. ``center`` subtracts the training mean from each
vector group, ``standardize`` also divides by its RMS per dimension, before the SAE encoder
(or the MLP without an SAE). This is a fixed affine reparametrisation of the first layer --
the model class is DEP's, and the SAE still reconstructs the raw vector -- that changes how
gradient descent sees the inputs. The statistics are buffers saved with the adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from peerdiff.model.sae import SparseAutoEncoder

Features = dict[str, torch.Tensor]
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"


@dataclass
class AdapterConfig:
    """What every adapter records: its kind, its sizes and what it was trained on. Each
    registered adapter has a subclass with its own settings (:class:`DEPConfig`,
    :class:`PPlugConfig`, :class:`ConstantConfig`); :meth:`for_kind` and :meth:`from_dict`
    pick it from ``kind``."""

    kind: str = "dep"
    encoder_dim: int = 384
    llm_hidden: int = 576
    base_model: str = field(default="default", metadata={"help": "the LLM these were trained on"})
    base_model_revision: str | None = field(
        default=None, metadata={"help": "commit or content hash of that LLM"}
    )
    encoder: str | None = field(
        default=None, metadata={"help": "the sentence encoder of the inputs"}
    )
    encoder_key: str | None = field(default=None, metadata={"help": "encoder, pooling, max length"})
    init: Literal["reference", "torch"] = "reference"

    def __post_init__(self) -> None:
        if type(self) is AdapterConfig:
            raise TypeError("AdapterConfig is the shared part; use AdapterConfig.for_kind(kind)")
        if type(self) is not config_class(self.kind):
            raise ValueError(f"{type(self).__name__} is not the config of kind {self.kind!r}")
        if self.init not in ("reference", "torch"):
            raise ValueError(f"adapter init {self.init!r} is not one of reference, torch")

    @property
    def groups(self) -> list[str]:
        """Placeholder groups in prompt order: ``hist``/``diff`` (DEP), ``persona``, ``soft``."""
        return adapter_class(self.kind).groups(self)

    @property
    def tokens_per_group(self) -> int:
        return adapter_class(self.kind).tokens_per_group(self)

    @property
    def n_tokens(self) -> int:
        return self.tokens_per_group * len(self.groups)

    @staticmethod
    def for_kind(kind: str, **settings) -> AdapterConfig:
        """The config of adapter ``kind`` (``TypeError`` for a setting that kind lacks)."""
        return config_class(kind)(kind=kind, **settings)

    @staticmethod
    def from_dict(d: dict) -> AdapterConfig:
        """From a saved ``adapter_config.json``: the class of its ``kind``; keys that class does
        not know (another kind's, or from another version) are left."""
        cls = config_class(d.get("kind", "dep"))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class DEPConfig(AdapterConfig):
    """DEP: history and difference vectors -> SAE -> alignment MLPs (:class:`DEPAdapter`)."""

    kind: str = "dep"
    slots: int = field(default=8, metadata={"help": "past reviews per sample"})
    use_history: bool = True
    use_difference: bool = True
    use_sae: bool = True
    sae_hidden: int | None = field(default=None, metadata={"help": "default encoder_dim // 2"})
    rho: float = 0.05
    features: Literal["raw", "center", "standardize"] = "raw"
    mean_features: bool = field(
        default=False, metadata={"help": "dep-mean: every filled slot gets the training mean"}
    )
    residual: bool = field(
        default=False,
        metadata={
            "help": "DEP tokens = learned base tokens (the constant control's) + the user "
            "branch, whose last layers start at zero"
        },
    )
    feature_dropout: float = field(
        default=0.0,
        metadata={"help": "training only: a filled slot's vectors -> the training mean, prob p"},
    )
    dropout_unit: Literal["slot", "sample"] = field(
        default="slot", metadata={"help": "feature_dropout per slot or per whole sample"}
    )
    branch_rank: int | None = field(
        default=None,
        metadata={"help": "alignment MLPs' hidden width (a rank-r output); default llm_hidden"},
    )
    pool_slots: bool = field(
        default=False,
        metadata={"help": "one branch output per group: the filled slots averaged before the MLP"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.branch_rank is not None and self.branch_rank < 1:
            raise ValueError(f"adapter branch_rank must be >= 1, got {self.branch_rank}")
        if not (self.use_history or self.use_difference):
            raise ValueError("a DEP adapter needs use_history or use_difference")
        if self.features not in ("raw", "center", "standardize"):
            raise ValueError(f"adapter features {self.features!r}: raw, center or standardize")
        if not 0.0 <= self.feature_dropout < 1.0:
            raise ValueError(
                f"adapter feature_dropout must be in [0, 1), got {self.feature_dropout}"
            )
        if self.dropout_unit not in ("slot", "sample"):
            raise ValueError(f"adapter dropout_unit {self.dropout_unit!r}: slot or sample")
        if self.sae_hidden is None:
            self.sae_hidden = max(1, self.encoder_dim // 2)


@dataclass
class PPlugConfig(AdapterConfig):
    """PPlug: one persona token from an input-aware attention over the history
    (:class:`PPlugAdapter`); its sizes come from the encoder and the LLM alone."""

    kind: str = "pplug"


@dataclass
class ConstantConfig(AdapterConfig):
    """The constant control: learned soft tokens with no user information."""

    kind: str = "constant"
    n_constant: int = field(default=16, metadata={"help": "tokens of the constant control"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_constant < 1:
            raise ValueError(f"adapter n_constant must be >= 1, got {self.n_constant}")


# ----------------------------------------------------------------------------- registry

ADAPTERS: dict[str, type[AdapterBase]] = {}


def register_adapter(kind: str, config: type[AdapterConfig]):
    """Class decorator: the adapter class of ``kind`` and its config class (as PEFT registers
    each method's model and config)."""

    def add(cls):
        cls.kind = kind
        cls.config_class = config
        ADAPTERS[kind] = cls
        return cls

    return add


def adapter_class(kind: str) -> type[AdapterBase]:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown adapter kind {kind!r}; known: {sorted(ADAPTERS)}") from None


def config_class(kind: str) -> type[AdapterConfig]:
    return adapter_class(kind).config_class


class AdapterBase(nn.Module):
    """What every registered adapter says about itself; the rest of the code asks this, never
    the ``kind`` string.

    ``forward(features) -> (soft (batch, n_tokens, hidden), aux_losses)``;
    ``adapter_params()``: what trains.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[AdapterConfig]]
    user_features: ClassVar[bool] = False  # reads per-user features (the swap probe applies)

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}")
        self.cfg = cfg

    @classmethod
    def groups(cls, cfg: AdapterConfig) -> list[str]:
        raise NotImplementedError

    @classmethod
    def tokens_per_group(cls, cfg: AdapterConfig) -> int:
        raise NotImplementedError

    @classmethod
    def draws_tokens(cls, cfg: AdapterConfig) -> bool:
        """Whether a fresh adapter starts from vocabulary rows (:func:`build_adapter`)."""
        return False

    @classmethod
    def create(cls, cfg: AdapterConfig, init: torch.Tensor | None) -> AdapterBase:
        return cls(cfg)

    @staticmethod
    def swap(own: dict[str, np.ndarray], donor: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One sample's features with the user information taken from ``donor``."""
        raise ValueError("the swap probe needs user features; this adapter has none")

    def adapter_params(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups, each named (``"name"``) so that a method can give a part of the
        adapter its own settings (:func:`apply_group_settings`)."""
        return [{**g, "name": "adapter"} for g in decay_groups(self, weight_decay)]


def apply_group_settings(groups: list[dict], settings: dict[str, dict], lr: float) -> list[dict]:
    """``groups`` (:meth:`AdapterBase.param_groups`) with ``lr`` and, for ``settings[name]``,
    that group's own ``lr`` / ``weight_decay`` (weight decay only where the group decays)."""
    out = []
    for g in groups:
        own = settings.get(g["name"], {})
        g = {**g, "lr": own.get("lr") or lr}
        if g["weight_decay"] and own.get("weight_decay") is not None:
            g["weight_decay"] = own["weight_decay"]
        out.append(g)
    return out


def to_tensors(
    features: dict[str, np.ndarray], idx: Sequence[int], device: torch.device | str
) -> Features:
    """Rows ``idx`` of numpy features as tensors on ``device`` (float32; masks stay bool)."""
    out = {}
    for k, v in features.items():
        t = torch.from_numpy(np.ascontiguousarray(v[list(idx)]))
        out[k] = t.to(device) if t.dtype == torch.bool else t.float().to(device)
    return out


def soft_fn(adapter: nn.Module, features: dict[str, np.ndarray], device: torch.device | str):
    """``rows -> (len(rows), n_tokens, hidden)``: the adapter's soft tokens for those rows of
    ``features``, without gradients."""

    def soft(rows: Sequence[int]) -> torch.Tensor:
        with torch.no_grad():
            return adapter(to_tensors(features, rows, device))[0]

    return soft


def align_mlp(inp: int, hidden: int, width: int | None = None) -> nn.Sequential:
    """DEP's alignment MLP: ``Linear(inp, H) + GELU + Linear(H, H)``; ``width`` r < H makes
    it ``Linear(inp, r) + GELU + Linear(r, H)``: outputs in an r-dimensional subspace."""
    w = width or hidden
    return nn.Sequential(nn.Linear(inp, w), nn.GELU(), nn.Linear(w, hidden))


def reference_init(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases for every ``Linear`` (transformers' init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups: weight decay on ``Linear`` weight matrices only (not on biases,
    learned tokens or other vectors)."""
    decay = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]


@register_adapter("dep", DEPConfig)
class DEPAdapter(AdapterBase):
    """Features: ``hist, diff: (batch, slots, dim)``, ``mask: (batch, slots)``.

    Buffers ``mean_<group>`` ``(dim,)`` and ``scale_<group>`` ``()`` hold the training
    statistics of each vector group (:meth:`fit_statistics`).

    ``residual``: the soft tokens are ``base + mask * branch(features)``: ``base``
    ``(n_tokens, hidden)`` is a learned prompt initialised as the constant control's
    (:func:`build_adapter`), and the last layer of each alignment MLP starts at zero, so a
    fresh adapter *is* the constant prompt and training moves away from it only as far as
    the features help. Empty slots get the base token alone.

    ``feature_dropout`` (training only): each filled slot's history and difference vectors
    (``dropout_unit="slot"``) or all of a sample's (``"sample"``) are replaced by the
    training means with probability p (shrinkage towards ``dep-mean``).

    Lower-capacity branches: ``branch_rank`` r narrows the MLPs' hidden layer to r units
    (every output lies in an r-dimensional subspace); ``pool_slots`` averages each group's
    filled slots (after the SAE encoder) into one vector, whose MLP output goes to every
    filled slot of the group: a per-user offset read from 8 reviews at once instead of 8
    separate ones. The SAE still reconstructs every slot. :meth:`param_groups` names the
    ``base`` tokens and the ``branch`` so that the branch can have its own learning rate and
    weight decay (``dep.branch_lr``, ``dep.branch_weight_decay``).
    """

    user_features = True
    cfg: DEPConfig

    def __init__(self, cfg: DEPConfig) -> None:
        super().__init__(cfg)
        d, h, H = cfg.encoder_dim, cfg.sae_hidden, cfg.llm_hidden
        self.sae = SparseAutoEncoder(d, h, cfg.rho) if cfg.use_sae else None
        inp = h if cfg.use_sae else d
        r = cfg.branch_rank
        self.align_mlp_his = align_mlp(inp, H, r) if cfg.use_history else None
        self.align_mlp_diff = align_mlp(inp, H, r) if cfg.use_difference else None
        for g in ("hist", "diff"):
            self.register_buffer(f"mean_{g}", torch.zeros(d))
            self.register_buffer(f"scale_{g}", torch.ones(()))
        if cfg.init == "reference":
            reference_init(self)
        self.base: nn.Parameter | None = None
        if cfg.residual:
            self.base = nn.Parameter(torch.randn(cfg.n_tokens, H) * 0.02)  # see build_adapter
            for mlp in (self.align_mlp_his, self.align_mlp_diff):
                if mlp is not None:
                    nn.init.zeros_(mlp[-1].weight)
                    nn.init.zeros_(mlp[-1].bias)

    @classmethod
    def groups(cls, cfg: DEPConfig) -> list[str]:
        return [g for g, on in (("hist", cfg.use_history), ("diff", cfg.use_difference)) if on]

    def param_groups(self, weight_decay: float) -> list[dict]:
        """``base`` (the residual design's learned tokens, no weight decay) and ``branch``
        (the SAE and the MLPs: weight decay on their matrices)."""
        branch = [m for m in (self.sae, self.align_mlp_his, self.align_mlp_diff) if m is not None]
        groups = [
            {**g, "name": "branch"} for g in decay_groups(nn.ModuleList(branch), weight_decay)
        ]
        if self.base is not None:
            groups.append({"params": [self.base], "weight_decay": 0.0, "name": "base"})
        return [g for g in groups if g["params"]]

    @classmethod
    def tokens_per_group(cls, cfg: DEPConfig) -> int:
        return cfg.slots

    @classmethod
    def draws_tokens(cls, cfg: DEPConfig) -> bool:
        return cfg.residual

    @classmethod
    def create(cls, cfg: DEPConfig, init: torch.Tensor | None) -> DEPAdapter:
        adapter = cls(cfg)
        if init is not None and adapter.base is not None:
            G, n = len(cfg.groups), cfg.n_tokens
            with torch.no_grad():  # prompt order (slot-major) -> output order (group-major)
                adapter.base.copy_(init.view(cfg.slots, G, -1).transpose(0, 1).reshape(n, -1))
        return adapter

    @staticmethod
    def swap(own: dict[str, np.ndarray], donor: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The donor's first slots (newest first), as many as the sample's own mask fills;
        the sample's own mask, so the prompt's placeholders are unchanged."""
        m = own["mask"]
        keep = m[:, None]  # (slots, 1)
        return {
            "hist": np.where(keep, donor["hist"], 0.0).astype(np.float32),
            "diff": np.where(keep, donor["diff"], 0.0).astype(np.float32),
            "mask": m.copy(),
        }

    @torch.no_grad()
    def fit_statistics(self, features: dict) -> None:
        """Set each group's mean and RMS per dimension from training ``features`` (numpy or
        torch, ``(n, slots, dim)`` plus ``mask``), over filled slots only."""
        mask = torch.as_tensor(features["mask"]).bool()
        for g in ("hist", "diff"):
            x = torch.as_tensor(features[g]).float()[mask]  # (filled, dim)
            if len(x) == 0:
                continue
            mean = x.mean(0)
            getattr(self, f"mean_{g}").copy_(mean)
            rms = (x - mean).pow(2).mean().sqrt().clamp(min=1e-6)
            getattr(self, f"scale_{g}").copy_(rms)

    def _inputs(self, f: Features, g: str, drop: torch.Tensor | None) -> torch.Tensor:
        """``(batch, slots, dim)`` raw vectors of group ``g``: the training mean in every filled
        slot for dep-mean, and in the slots ``drop`` marks."""
        x, mask = f[g], f["mask"].unsqueeze(-1)
        mean = getattr(self, f"mean_{g}").to(x.dtype)
        if self.cfg.mean_features:
            x = torch.where(mask, mean, torch.zeros_like(x))
        elif drop is not None:
            x = torch.where(mask & drop.unsqueeze(-1), mean, x)
        return x

    def _dropped(self, mask: torch.Tensor) -> torch.Tensor | None:
        """``(batch, slots)`` slots whose features this training step replaces by the mean."""
        p = self.cfg.feature_dropout
        if not (self.training and p > 0):
            return None
        b, k = mask.shape
        if self.cfg.dropout_unit == "sample":
            return (torch.rand(b, 1, device=mask.device) < p).expand(b, k)
        return torch.rand(b, k, device=mask.device) < p

    def _normalize(self, x: torch.Tensor, g: str, mask: torch.Tensor) -> torch.Tensor:
        if self.cfg.features == "raw":
            return x
        y = x - getattr(self, f"mean_{g}")
        if self.cfg.features == "standardize":
            y = y / getattr(self, f"scale_{g}")
        return torch.where(mask.unsqueeze(-1), y, torch.zeros_like(y))  # empty slots stay 0

    def forward(self, f: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        K = self.cfg.slots
        groups = self.cfg.groups
        drop = self._dropped(f["mask"])
        raw = [self._inputs(f, g, drop) for g in groups]
        x = torch.cat(raw, dim=1)  # (batch, groups * K, dim)
        xin = torch.cat([self._normalize(r, g, f["mask"]) for r, g in zip(raw, groups)], dim=1)
        mask = f["mask"].repeat(1, len(groups))
        aux: dict[str, torch.Tensor] = {}
        if self.sae is not None:  # encoder reads the normalised vectors, decoder rebuilds x
            z, recon = self.sae(xin)
            aux["recon"], aux["kl"] = self.sae.losses(x, z, recon, mask)
        else:
            z = xin
        out = []
        g = 0
        for mlp in (self.align_mlp_his, self.align_mlp_diff):
            if mlp is not None:
                zg = z[:, g * K : (g + 1) * K]
                if self.cfg.pool_slots:  # masked mean over filled slots -> one output, K copies
                    w = f["mask"].unsqueeze(-1).to(zg.dtype)
                    pooled = (zg * w).sum(1) / w.sum(1).clamp(min=1.0)
                    out.append(mlp(pooled).unsqueeze(1).expand(-1, K, -1))
                else:
                    out.append(mlp(zg))
                g += 1
        soft = torch.cat(out, dim=1)  # (batch, groups * K, hidden)
        if self.base is not None:
            soft = self.base.unsqueeze(0) + soft * mask.unsqueeze(-1).to(soft.dtype)
        return soft, aux


@register_adapter("pplug", PPlugConfig)
class PPlugAdapter(AdapterBase):
    """Features: ``hist: (batch, n, dim)``, ``mask: (batch, n)``, ``query: (batch, dim)``.

    ``w = softmax_i((W q) . e_i)`` over valid history items; ``persona = sum_i w_i e_i``;
    one soft token ``MLP(persona)``.
    """

    user_features = True

    def __init__(self, cfg: PPlugConfig) -> None:
        super().__init__(cfg)
        d = cfg.encoder_dim
        self.query_proj = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.query_proj.weight.copy_(torch.eye(d) * (d**0.5))  # start as scaled cosine
        self.projector = align_mlp(d, cfg.llm_hidden)
        if cfg.init == "reference":
            reference_init(self.projector)

    @classmethod
    def groups(cls, cfg: PPlugConfig) -> list[str]:
        return ["persona"]

    @classmethod
    def tokens_per_group(cls, cfg: PPlugConfig) -> int:
        return 1

    @staticmethod
    def swap(own: dict[str, np.ndarray], donor: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The donor's history vectors and mask, the sample's own query (the target item)."""
        return {"hist": donor["hist"], "mask": donor["mask"], "query": own["query"]}

    def forward(self, f: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q = self.query_proj(f["query"])  # (batch, dim)
        scores = torch.einsum("bd,bnd->bn", q, f["hist"])
        scores = scores.masked_fill(~f["mask"], float("-inf"))
        w = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without history -> zeros
        persona = torch.einsum("bn,bnd->bd", w, f["hist"])
        return self.projector(persona).unsqueeze(1), {}


@register_adapter("constant", ConstantConfig)
class ConstantPrompt(AdapterBase):
    """``n_constant`` learned soft tokens, the same for every user.

    Args:
        init: ``(n, hidden)`` starting values; random vocabulary embeddings by default
            (never zeros: zero soft tokens gave NaN gradients with SmolLM2).
    """

    cfg: ConstantConfig

    def __init__(self, cfg: ConstantConfig, init: torch.Tensor | None = None) -> None:
        super().__init__(cfg)
        if init is None:
            init = torch.randn(cfg.n_constant, cfg.llm_hidden) * 0.02
        self.tokens = nn.Parameter(init.detach().clone().float())

    @classmethod
    def groups(cls, cfg: ConstantConfig) -> list[str]:
        return ["soft"]

    @classmethod
    def tokens_per_group(cls, cfg: ConstantConfig) -> int:
        return cfg.n_constant

    @classmethod
    def draws_tokens(cls, cfg: ConstantConfig) -> bool:
        return True

    @classmethod
    def create(cls, cfg: ConstantConfig, init: torch.Tensor | None) -> ConstantPrompt:
        return cls(cfg, init)

    def adapter_params(self) -> list[nn.Parameter]:
        return [self.tokens]

    def forward(self, f: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = f["mask"].shape[0]
        return self.tokens.unsqueeze(0).expand(b, -1, -1), {}


Adapter = AdapterBase


def build_adapter(cfg: AdapterConfig, embedding: nn.Embedding | None = None) -> Adapter:
    """A fresh adapter; ``embedding`` (the LLM's) seeds the constant control's tokens and a
    residual DEP's base tokens.

    Both draw the vocabulary rows first, from the same RNG state: with the same seed and
    token count, a fresh residual DEP places exactly the constant's vectors at the same prompt
    positions (DEP's placeholders alternate ``[HIS_k][DIFF_k]`` in the prompt, its outputs
    are grouped, hence the reordering).
    """
    cls = adapter_class(cfg.kind)
    init = None
    if embedding is not None and cls.draws_tokens(cfg):
        idx = torch.randint(0, embedding.weight.shape[0], (cfg.n_tokens,))
        init = embedding.weight[idx].detach().clone().float()
    return cls.create(cfg, init)


def save_adapter(adapter: Adapter, directory: str | Path) -> None:
    """Write ``adapter.safetensors`` and ``adapter_config.json`` (atomically)."""
    from peerdiff.stage import atomic_path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter.state_dict().items()}
    with atomic_path(d / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    with atomic_path(d / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(asdict(adapter.cfg), indent=2))


def load_adapter(directory: str | Path, device: str | torch.device = "cpu") -> Adapter:
    """Load an adapter saved by :func:`save_adapter`, in inference mode (``.train()`` to
    train it further: feature dropout acts only in training)."""
    d = Path(directory)
    cfg = AdapterConfig.from_dict(json.loads((d / CONFIG_NAME).read_text()))
    adapter = build_adapter(cfg)
    adapter.load_state_dict(load_file(str(d / WEIGHTS_NAME)), strict=True)
    return adapter.to(device).eval()
