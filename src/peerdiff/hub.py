"""Adapters as model repositories: identities, a model card, loading and publishing.

A trained adapter's ``best/`` folder holds ``adapter.safetensors``, ``adapter_config.json``
(sizes, settings and the identity of the base LLM and encoder) and a generated ``README.md``
model card. :func:`load_adapter` opens such a folder, or a Hub repository when online, and
refuses an adapter whose base model or encoder differs from the ones it will run with.
:func:`push` uploads the folder; offline it says so. Nothing here enables remote code.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from peerdiff.config.sections import DEFAULT_LLM_ID, llm_identity
from peerdiff.errors import BackendError, ConfigError
from peerdiff.model.adapters import CONFIG_NAME, WEIGHTS_NAME, Adapter
from peerdiff.model.adapters import load_adapter as _load

CARD_NAME = "README.md"


def model_revision(path: str | None) -> str | None:
    """A revision for a loaded LLM: the GGUF digest of a converted default, the Hub commit of
    a cached snapshot, or a hash of a local folder's config and weight file sizes."""
    if not path:
        return None
    p = Path(path)
    m = re.search(r"-([0-9a-f]{10})$", p.name)
    if p.is_dir() and m and (p / "config.json").exists() and "models" in p.parts:
        return f"gguf-sha256:{m.group(1)}"
    if p.is_dir():
        h = hashlib.sha256(
            (p / "config.json").read_bytes() if (p / "config.json").exists() else b""
        )
        for f in sorted(p.glob("*.safetensors")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        return f"files-sha256:{h.hexdigest()[:16]}"
    try:  # a Hub id: the commit of the locally cached snapshot (no network)
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(str(path), local_files_only=True))
        return f"commit:{snap.name}"
    except Exception:  # not cached: no revision to record
        return None


def resolve(path_or_repo: str | Path) -> Path:
    """A local adapter folder, or a Hub repository downloaded into the local cache.

    Raises:
        BackendError: a repository id while offline or unreachable (says which).
    """
    p = Path(path_or_repo)
    if p.is_dir():
        if not (p / CONFIG_NAME).exists():
            raise ConfigError(f"{p} is not an adapter folder (no {CONFIG_NAME})")
        return p
    repo = str(path_or_repo)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ConfigError(f"adapter not found: {repo} is neither a folder nor a Hub repository id")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME]))
    except Exception as e:  # offline, unreachable, unknown repo
        raise BackendError(
            f"cannot fetch adapter {repo!r} from the Hugging Face Hub ({type(e).__name__}: "
            f"{e}); offline, download it elsewhere and pass its folder"
        ) from e


def load_adapter(
    path_or_repo: str | Path,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    encoder: str | None = None,
    device: str = "cpu",
) -> Adapter:
    """An adapter from a folder or a Hub repository, checked against what it will run with.

    Args:
        base_model, base_model_revision: the LLM it will run on (``None``: not checked).
        encoder: the sentence encoder that will embed its inputs (``None``: not checked).

    Raises:
        ConfigError: the adapter was trained on another base model, revision or encoder.
    """
    folder = resolve(path_or_repo)
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    checks = (  # the default LLM's aliases and its Hub id name the same model
        ("base model", llm_identity(base_model), llm_identity(cfg.get("base_model"))),
        ("base model revision", base_model_revision, cfg.get("base_model_revision")),
        ("encoder", encoder, cfg.get("encoder")),
    )
    for what, want, have in checks:
        if want is not None and have is not None and want != have:
            raise ConfigError(
                f"adapter {path_or_repo} was trained with {what} {have!r}, not {want!r}: "
                "load it on top of the model it was trained on"
            )
    return _load(folder, device)


def model_card(run_dir: Path, method: str) -> str:
    """The model card of ``train/<method>/best`` from what the run directory holds; it names
    the LLM under its results (the packaged default: a dequantised Q4_1 GGUF)."""
    from peerdiff.stage import read_json

    best = run_dir / "train" / method / "best"
    acfg = json.loads((best / CONFIG_NAME).read_text())
    man = read_json(run_dir / "train" / method / "manifest.json")
    stats_path = run_dir / "prepare" / "stats.json"
    stats = read_json(stats_path) if stats_path.exists() else {}
    state = man.get("state", {})
    lines = [
        "---",
        "library_name: peerdiff",
        f"base_model: {acfg.get('base_model')}",
        f"tags: [peerdiff, personalization, soft-prompt, {acfg['kind']}]",
        "---",
        "",
        f"# {method} adapter (peerdiff)",
        "",
        f"A `{acfg['kind']}` adapter: it turns a user's review features into "
        f"{_n_tokens(acfg)} soft tokens for a frozen LLM, which then writes the review this user "
        "would write (personalized review generation, DEP/DPL protocol).",
        "",
        "## Models",
        "",
        f"- base LLM: `{acfg.get('base_model')}` (revision `{acfg.get('base_model_revision')}`); "
        f"{_llm_note(acfg)}",
        f"- sentence encoder: `{acfg.get('encoder')}` (`{acfg.get('encoder_key')}`)",
        f"- sizes: encoder {acfg['encoder_dim']}, LLM hidden {acfg['llm_hidden']}, "
        f"{man.get('trainable_parameters', '?')} trainable parameters",
        "",
        "## Data",
        "",
        f"- users {stats.get('users', '?')}, items {stats.get('items', '?')}, reviews "
        f"{stats.get('reviews', '?')}; samples {stats.get('samples', '?')}",
        f"- trained on {man.get('train_samples')} samples of {man.get('users')} users",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(
            {
                "train": man.get("config", {}).get("train"),
                "settings": man.get("config", {}).get("settings"),
                "lr": man.get("lr"),
            },
            indent=1,
            default=str,
        ),
        "```",
        "",
        "| epoch | train loss | validation " + str(man.get("val_metric", "")) + " | selected |",
        "|---:|---:|---:|---|",
        *[
            f"| {e['epoch']} | {e['train_loss']:.4f} | {e['val_score']:.4f} | "
            f"{'yes' if e['epoch'] == state.get('best_epoch') else ''} |"
            for e in state.get("epochs", [])
        ],
        "",
    ]
    results = _results(run_dir, method)
    if results:
        llm = _llm_note(acfg)
        lines += ["## Results of this run", "", *results, "", f"{llm}.", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "import peerdiff",
        "",
        f'adapter = peerdiff.load_adapter("<this folder or repo id>", base_model="{acfg.get("base_model")}")',
        "```",
        "",
        "or serve it: `peerdiff serve --config <the run's config>` and ask `POST /v1/reviews` "
        f'with `"method": "{method}"`.',
        "",
    ]
    return "\n".join(lines)


def _llm_note(acfg: dict[str, Any]) -> str:
    """The results' LLM note for an adapter's base model: the packaged default (its Q4_1 GGUF,
    ``gguf-sha256`` revision) says that it is dequantised."""
    from peerdiff.tables import llm_note

    model = llm_identity(acfg.get("base_model"))
    if model == DEFAULT_LLM_ID and str(acfg.get("base_model_revision")).startswith("gguf-"):
        model = "default"
    return llm_note({"llm": {"model": model}})


def _n_tokens(acfg: dict[str, Any]) -> int:
    from peerdiff.model.adapters import AdapterConfig

    return AdapterConfig.from_dict(acfg).n_tokens


def _results(run_dir: Path, method: str) -> list[str]:
    from peerdiff.metrics import LABELS, format_score
    from peerdiff.stage import read_json

    out = []
    # this method's own folders only (``dep-*`` also matches dep-mean's); a subset run's
    # scores (``max_samples``) only where the method has no full evaluation
    mine = [
        s
        for s in (read_json(f) for f in sorted((run_dir / "evaluate").glob("*/summary.json")))
        if s.get("method") == method
    ]
    for s in [s for s in mine if not s.get("max_samples")] or mine:
        cells = ", ".join(
            f"{LABELS.get(k, k)} {format_score(k, v)}"
            for k, v in s["scores"].items()
            if v is not None
        )
        out.append(f"- {s['split']} (n={s['n']}): {cells}")
    for f in sorted((run_dir / "probe").glob(f"{method}-*/summary.json")):
        p = read_json(f)
        if p.get("n") and p.get("method") == method:
            lo, hi = p["delta_ci"]
            out.append(
                f"- user-swap probe, {p['split']} (n={p['n']}): delta {p['delta']:+.4f} nats/token "
                f"[{lo:+.4f}, {hi:+.4f}], own features best for {p['own_best_share']:.0%}"
            )
    return out


def write_model_card(run_dir: Path, method: str) -> Path | None:
    """(Re)write ``train/<method>/best/README.md``; ``None`` when there is no adapter."""
    from peerdiff.stage import atomic_path

    best = Path(run_dir) / "train" / method / "best"
    if not (best / CONFIG_NAME).exists() or not (best.parent / "manifest.json").exists():
        return None
    card, path = model_card(Path(run_dir), method), best / CARD_NAME
    if not path.exists() or path.read_text() != card:  # untouched when nothing changed
        with atomic_path(path) as tmp:
            tmp.write_text(card)
    return path


def push(run_dir: Path, method: str, repo: str, private: bool = False) -> str:
    """Upload ``train/<method>/best`` (weights, config, card) to Hub repository ``repo``.

    Raises:
        BackendError: offline or the Hub refused (the message says what to do).
    """
    import os

    best = Path(run_dir) / "train" / method / "best"
    if not (best / WEIGHTS_NAME).exists():
        raise ConfigError(f"no trained adapter in {best}: `peerdiff train --method {method}`")
    write_model_card(Path(run_dir), method)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise BackendError(
            f"offline (HF_HUB_OFFLINE=1): nothing pushed; upload {best} later, e.g. "
            f"`peerdiff push --method {method} --repo {repo}` with HF_HUB_OFFLINE=0 and a token"
        )
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(best), repo_id=repo)
    except Exception as e:  # no network, no token, refused
        raise BackendError(
            f"could not push {best} to {repo!r} ({type(e).__name__}: {e}); offline? The folder "
            "is complete: upload it when online"
        ) from e
    return str(getattr(info, "commit_url", repo))
