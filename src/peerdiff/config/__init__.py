"""Typed configuration: dataclasses, YAML loading, ``key=value`` overrides, validation.

Every experiment is one YAML file whose keys mirror :class:`RunConfig`. Unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the key path
(``data.protocol.min_text_chars``) and, when it came from a file, the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from peerdiff.errors import ConfigError
from peerdiff.methods import names  # the registry (imports no method module)

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
    "from_dict",
    "load_config",
]


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
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
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
