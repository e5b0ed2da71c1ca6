"""Turning plain mappings into typed config dataclasses, with errors that name the key."""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin

from peerdiff.errors import ConfigError, did_you_mean

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
            hint = (
                f" (moved to {moved})"
                if moved
                else f"{did_you_mean(key, known, where)}; known keys: {sorted(known)}"
            )
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
            choices = list(get_args(tp))
            raise ConfigError(
                f"{where}: {value!r} is not one of {choices}{did_you_mean(value, choices)}"
            )
        return value
    if is_dataclass(tp):
        return from_dict(tp, value, f"{where}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = [e.value for e in tp]
            raise ConfigError(
                f"{where}: {value!r} is not one of {choices}{did_you_mean(value, choices)}"
            ) from None
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
    """Each named field must be > 0; ``None`` passes (it means "no limit" or "default")."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and v <= 0:
            raise ConfigError(f"{section}.{name} must be > 0 (or null), got {v}")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, enum.Enum):
        return x.value
    return x
