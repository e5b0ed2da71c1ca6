"""Typed configuration: dataclasses, YAML loading, ``key=value`` overrides, validation.

Every experiment is one YAML file whose keys mirror :class:`RunConfig`. Unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the key path
(``data.protocol.min_text_chars``) and where it came from: the file, or the command-line
override that set it (``override 'trian.epochs=1'``).

The shipped job configs live in the package (``peerdiff/resources/configs/*.yaml``, in the
wheel); a checkout's ``configs/`` is a link to that folder, so ``configs/quick.yaml`` names
the same file from the repository root, and :func:`load_config` finds it from anywhere else
(see there).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import yaml

from peerdiff.config.data import (
    PRESETS,
    DataConfig,
    Protocol,
    Source,
    default_cache_dir,
    default_data_root,
)
from peerdiff.config.parse import _plain, from_dict
from peerdiff.config.sections import (
    BackendConfig,
    ConstantConfig,
    ContrastConfig,
    DEPConfig,
    EmbedConfig,
    EvalConfig,
    GenerateConfig,
    LLMConfig,
    PipelineConfig,
    PPlugConfig,
    ProbeConfig,
    PromptConfig,
    RagConfig,
    RolesConfig,
    TrainConfig,
)
from peerdiff.errors import ConfigError, did_you_mean
from peerdiff.methods import names  # the registry (imports no method module)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "PRESETS",
    "BackendConfig",
    "ConfigError",
    "ConstantConfig",
    "ContrastConfig",
    "DEPConfig",
    "DataConfig",
    "EmbedConfig",
    "EvalConfig",
    "GenerateConfig",
    "KeyInfo",
    "LLMConfig",
    "PPlugConfig",
    "PipelineConfig",
    "ProbeConfig",
    "PromptConfig",
    "Protocol",
    "RagConfig",
    "RolesConfig",
    "RunConfig",
    "Source",
    "TrainConfig",
    "default_cache_dir",
    "default_data_root",
    "describe",
    "from_dict",
    "load_config",
    "packaged_configs",
]


@dataclass
class RunConfig:
    name: str = field(
        default="run",
        metadata={
            "help": "run name: fills {name} in run_dir; names results-<name>.*, "
            "timings-<name>.json and the training loggers' runs"
        },
    )
    run_dir: str = field(
        default="runs/{name}",
        metadata={"help": "where the stages write their folders (prepare/, train/, ...)"},
    )
    cache_dir: str = field(
        default_factory=default_cache_dir,
        metadata={
            "help": "shared by runs: dequantised GGUF models, encoder vectors, WordNet for "
            "METEOR (default: $PEERDIFF_CACHE or ~/.cache/peerdiff)"
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "data.max_users draw, adapter init and training order, sampled "
            "decoding, bootstrap resamples, probe donors and subsets"
        },
    )
    data: DataConfig = field(default_factory=DataConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    methods: list[str] = field(
        default_factory=lambda: ["nonperso", "rag"],
        metadata={
            "help": "methods to run, in this order: nonperso, rag, pag, dpl, drp (prompts); "
            "dep and its ablations (dep-*), pplug, constant (soft prompts)"
        },
    )
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
        for m in self.methods:
            if m not in names():
                raise ConfigError(
                    f"methods: {m!r} is not one of {list(names())}{did_you_mean(m, names())}"
                )
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


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyInfo:
    """One config key: its dotted name, value under a config, default and help text."""

    key: str
    value: Any
    default: Any
    help: str


def describe(cfg: RunConfig | None = None, prefix: str = "") -> list[KeyInfo]:
    """Every config key (``train.lr``) with its value under ``cfg`` (default: the defaults),
    its default and the help text of its dataclass field (``metadata={"help": ...}``).

    ``backends.<name>.*`` is listed for each backend ``cfg`` defines; ``data.protocol.*``
    lists the thresholds after the preset and its overrides, the preset's value as default.

    Raises:
        ConfigError: no key starts with ``prefix`` (the message suggests close ones).
    """
    cfg = cfg or RunConfig()
    out: list[KeyInfo] = []
    _walk(cfg, RunConfig(), "", out)
    hits = [k for k in out if k.key.startswith(prefix)]
    if not hits:
        names = sorted({k.key.rsplit(".", 1)[0] for k in out} | {k.key for k in out})
        raise ConfigError(f"no config key starts with {prefix!r}{did_you_mean(prefix, names)}")
    return hits


def _walk(obj: Any, default: Any, where: str, out: list[KeyInfo]) -> None:
    for f in fields(obj):
        key, value = f"{where}{f.name}", getattr(obj, f.name)
        dflt = getattr(default, f.name, None)
        if is_dataclass(value):
            _walk(value, dflt, f"{key}.", out)
        elif key == "backends":
            for name, b in value.items():
                _walk(b, (dflt or {}).get(name, BackendConfig()), f"{key}.{name}.", out)
        elif key == "data.protocol":  # preset overrides: list the resolved thresholds
            resolved, preset = obj.resolved_protocol(), PRESETS[obj.preset]
            for pf in fields(Protocol):
                out.append(
                    KeyInfo(
                        f"{key}.{pf.name}",
                        getattr(resolved, pf.name),
                        getattr(preset, pf.name),
                        pf.metadata.get("help", ""),
                    )
                )
        else:
            out.append(KeyInfo(key, _plain(value), _plain(dflt), f.metadata.get("help", "")))


# ----------------------------------------------------------------------------- loading


def packaged_configs() -> dict[str, Traversable]:
    """The job configs shipped in the package, by name (``quick`` -> ``.../quick.yaml``)."""
    root = resources.files("peerdiff") / "resources" / "configs"
    if not root.is_dir():
        return {}
    return {
        f.name.removesuffix(".yaml"): f
        for f in sorted(root.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".yaml")
    }


def _packaged(path: str | Path) -> Traversable | None:
    """The packaged config that ``quick``, ``quick.yaml`` or ``configs/quick.yaml`` names."""
    p = PurePath(path)
    if p.is_absolute() or (len(p.parts) > 1 and p.parts[:-1] != ("configs",)):
        return None
    return packaged_configs().get(p.name.removesuffix(".yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from YAML (or defaults) and apply ``key=value`` overrides.

    Args:
        path: a YAML file; ``None``: the defaults. A path that is not a file on disk and reads
            ``<name>``, ``<name>.yaml`` or ``configs/<name>.yaml`` is the job config shipped
            in the package (:func:`packaged_configs`): from a checkout ``configs/quick.yaml``
            is the file itself (``configs/`` links to the packaged folder); after ``pip
            install`` ``quick`` or ``configs/quick.yaml`` works from any directory. A file of
            that name in the working directory always wins.
        overrides: ``key.sub=value`` items (values are YAML).

    Raises:
        ConfigError: unknown key, bad type or value; the message names the key and the file,
            or the override that set it.
    """
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        source: Path | Traversable = Path(path)
        shipped = None if Path(path).is_file() else _packaged(path)
        if shipped is not None:
            source = shipped
        where = str(source)
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            shipped_names = list(packaged_configs())
            raise ConfigError(
                f"config file not found: {path}"
                f"{did_you_mean(PurePath(path).stem, shipped_names)}; configs shipped with "
                f"peerdiff, by name: {', '.join(shipped_names)}"
            ) from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a YAML config file") from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{path}: not a text file (byte {e.start} is not UTF-8); a config is YAML"
            ) from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    overrides = list(overrides or [])
    merged = _with_overrides(raw, overrides)
    try:
        return from_dict(RunConfig, merged)
    except ConfigError as e:
        raise ConfigError(f"{_culprit(raw, overrides, str(e), where)}: {e}") from None


def _with_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with the ``key.sub=value`` items applied in order."""
    out = copy.deepcopy(raw)
    for item in overrides:
        _apply_override(out, item)
    return out


def _culprit(raw: dict[str, Any], overrides: list[str], message: str, where: str) -> str:
    """What a config error is reported against: ``where`` (the file) when the file's keys
    alone give ``message``; else the override after which the file's keys and the overrides
    so far first give it (``override 'trian.epochs=1'``). Only called on an error (the full
    list gives ``message``), so the replays cost nothing on a valid config."""
    for n in range(len(overrides)):
        try:
            from_dict(RunConfig, _with_overrides(raw, overrides[:n]))
        except ConfigError as e:
            if str(e) == message:
                return where if n == 0 else f"override {overrides[n - 1]!r}"
    return f"override {overrides[-1]!r}" if overrides else where


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
