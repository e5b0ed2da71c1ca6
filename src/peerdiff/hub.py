"""Adapters as model repositories: identities, a model card, loading and publishing.

A trained adapter's ``best/`` folder holds ``adapter.safetensors``, ``adapter_config.json``
(sizes, settings and the identity of the base LLM and encoder) and a generated ``README.md``
model card. :func:`load_adapter` opens such a folder, or a Hub repository when online, and
refuses an adapter whose base model or encoder differs from the ones it will run with.
:func:`method_adapter` also checks it against a method of a run (kind, variant, placeholder
groups and tokens), which is how ``peerdiff.Reviewer(cfg, adapters={"dep": folder})`` and
``peerdiff serve --adapter dep=FOLDER`` generate with a folder from elsewhere.
:func:`push` uploads the folder; offline it says so. Nothing here enables remote code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerdiff import methods
from peerdiff.config.sections import DEFAULT_LLM_ID, llm_identity
from peerdiff.errors import BackendError, ConfigError
from peerdiff.model.adapters import CONFIG_NAME, WEIGHTS_NAME, Adapter, AdapterConfig
from peerdiff.model.adapters import load_adapter as _load

if TYPE_CHECKING:
    from peerdiff.config import RunConfig

log = logging.getLogger(__name__)

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
    looks_local = repo.startswith((".", "/", "~")) or (p.parent.is_dir() and p.parent != Path())
    if looks_local or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ConfigError(
            f"adapter not found: no folder {p.expanduser().resolve()}"
            + ("" if looks_local else f", and {repo!r} is not a Hub repository id")
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME]))
    except Exception as e:  # offline, unreachable, unknown repo
        raise BackendError(
            f"no folder {p.resolve()}, and adapter {repo!r} cannot be fetched from the Hugging "
            f"Face Hub ({type(e).__name__}: {e}); offline, download it elsewhere and pass its "
            "folder"
        ) from e


def load_adapter(
    path_or_repo: str | Path,
    base_model: str | None = None,
    base_model_revision: str | None = None,
    encoder: str | None = None,
    device: str = "cpu",
) -> Adapter:
    """An adapter from a folder or a Hub repository, checked against what it will run with.

    The module maps a batch of user features to soft tokens (``adapter(features)[0]``:
    ``(batch, n_tokens, hidden)``); the features, the prompt with its placeholders and the
    LLM come from a run. To write reviews with a folder, give it to a run's configuration
    instead: ``peerdiff.Reviewer(config, adapters={"dep": folder}).review(...)`` or
    ``peerdiff serve --config ... --adapter dep=FOLDER`` (:func:`method_adapter` checks it
    against the method; the user features are computed from the run's data and the request).

    Args:
        base_model, base_model_revision: the LLM it will run on (``None``: not checked).
        encoder: the sentence encoder that will embed its inputs (``None``: not checked).

    Raises:
        ConfigError: the adapter was trained on another base model, revision or encoder.
    """
    folder = resolve(path_or_repo)
    differs = _identity(
        json.loads((folder / CONFIG_NAME).read_text()), base_model, base_model_revision, encoder
    )
    if differs:
        what, have, want = differs
        raise ConfigError(
            f"adapter {path_or_repo} was trained with {what} {have!r}, not {want!r}: "
            "load it on top of the model it was trained on"
        )
    return _load(folder, device)


def _identity(
    saved: dict[str, Any],
    base_model: str | None,
    base_model_revision: str | None,
    encoder: str | None,
) -> tuple[str, str, str] | None:
    """The first of base model, revision and encoder in which ``saved`` (an
    ``adapter_config.json``) differs from the given ones: ``(what, saved, given)``; unknown
    on either side is not a difference. The default LLM's and encoder's aliases name one
    model each."""
    from peerdiff.embed import DEFAULT_ENCODER_ALIASES

    def enc(name: str | None) -> str | None:
        return "default" if name in DEFAULT_ENCODER_ALIASES else name

    checks = (
        ("base model", llm_identity(saved.get("base_model")), llm_identity(base_model)),
        ("base model revision", saved.get("base_model_revision"), base_model_revision),
        ("encoder", enc(saved.get("encoder")), enc(encoder)),
    )
    for what, have, want in checks:
        if want is not None and have is not None and want != have:
            return what, have, want
    return None


def method_adapter(
    path_or_repo: str | Path,
    cfg: RunConfig,
    method: str,
    *,
    llm_hidden: int | None = None,
    llm_revision: str | None = None,
    encoder: dict[str, Any] | None = None,
    device: Any = "cpu",
) -> Adapter:
    """The adapter of a folder or Hub repository (a pushed ``train/<method>/best``) for
    method ``method`` of the run ``cfg``, in place of the run's own trained adapter.

    Checked before the weights load: the base model is ``cfg.llm.model`` (and the LLM's
    hidden size ``llm_hidden``); for a method that reads review vectors, the encoder is the
    embed stage's (``encoder``: its manifest's ``{"name", "key", "dim"}``); the adapter's
    kind and variant (DEP's ablations and ``dep-mean``) are the method's; its placeholder
    groups and tokens per group are those of the method's prompts under ``cfg``. Another
    revision of the same base model (``llm_revision``) or encoder settings (its key) only
    warn.

    Raises:
        ConfigError: one line naming the setting that differs and the override that fits
            the adapter, or a method that has no adapter.
        BackendError: a repository id that cannot be fetched.
    """
    spec = methods.get(method)
    if not spec.soft:
        raise ConfigError(f"method {method!r} has no adapter; soft-prompt methods: {_soft_names()}")
    folder = resolve(path_or_repo)
    saved = json.loads((folder / CONFIG_NAME).read_text())
    where = f"adapter {path_or_repo}"
    vectors = bool(spec.needs & {"vectors", "contrast"})
    differs = _identity(
        saved, cfg.llm.model, None, encoder["name"] if vectors and encoder else None
    )
    if differs:
        what, have, want = differs
        fix = f"llm.model={_llm_setting(saved)}" if what == "base model" else f"embed.model={have}"
        raise ConfigError(
            f"{where} was trained with {what} {have!r}, this config runs {want!r}: set {fix}"
        )
    try:
        acfg = AdapterConfig.from_dict(saved)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    _check_method(acfg, methods.build(method, cfg), cfg, where)
    if llm_hidden is not None and acfg.llm_hidden != llm_hidden:
        raise ConfigError(
            f"{where} makes soft tokens of size {acfg.llm_hidden}, the LLM {cfg.llm.model!r} "
            f"has hidden size {llm_hidden}: set llm.model={_llm_setting(saved)}"
        )
    if vectors and encoder and acfg.encoder_dim != encoder["dim"]:
        raise ConfigError(
            f"{where} reads {acfg.encoder_dim}-d review vectors, the encoder "
            f"{encoder['name']!r} makes {encoder['dim']}-d ones: set embed.model={acfg.encoder}"
        )
    for what, have, want in (
        ("base model revision", acfg.base_model_revision, llm_revision),
        ("encoder settings", acfg.encoder_key if vectors else None, (encoder or {}).get("key")),
    ):
        if have and want and have != want:
            log.warning("%s was trained with %s %s, this run has %s", where, what, have, want)
    return _load(folder, device)


def _llm_setting(saved: dict[str, Any]) -> str:
    """The ``llm.model`` value that loads an adapter's base model: ``default`` for the
    packaged Q4_1 file (recorded by its Hub id and a ``gguf-sha256`` revision)."""
    model = llm_identity(saved.get("base_model"))
    gguf = str(saved.get("base_model_revision")).startswith("gguf-")
    return "default" if model == DEFAULT_LLM_ID and gguf else str(model)


def _soft_names() -> str:
    return ", ".join(n for n in methods.names() if methods.get(n).soft)


def _check_method(acfg: AdapterConfig, method: Any, cfg: RunConfig, where: str) -> None:
    """Refuse an adapter that ``method`` (a built soft-prompt method) cannot place: another
    kind, another variant of its kind (a flag of the method's spec, e.g. ``dep-nodiff``'s
    ``use_difference=False``), other placeholder groups or tokens per group."""
    name, want = method.name, method.adapter_config()
    soft = [methods.build(n, cfg) for n in methods.names() if methods.get(n).soft]
    if acfg.kind != want.kind:
        fits = ", ".join(m.name for m in soft if m.kind == acfg.kind)
        raise ConfigError(
            f"{where} is a {acfg.kind!r} adapter, method {name!r} runs {want.kind!r} ones: "
            f"give it to {fits or 'no method of this version'}"
        )
    same = [m for m in soft if m.kind == acfg.kind]
    flags = sorted({k for m in same for k in m.spec})

    def variant(c: AdapterConfig) -> dict[str, Any]:
        return {k: getattr(c, k) for k in flags}

    have, mine = variant(acfg), variant(want)
    if have != mine:
        fits = [m.name for m in same if variant(m.adapter_config()) == have]
        diff = ", ".join(f"{k}={have[k]}" for k in flags if have[k] != mine[k])
        owner = f"method {fits[0]!r}" if fits else "no method of this version"
        fix = f"give it to {fits[0]!r}" if fits else "use the version it was trained with"
        raise ConfigError(f"{where} is an adapter of {owner} ({diff}), not of {name!r}: {fix}")
    if acfg.groups != want.groups or acfg.tokens_per_group != want.tokens_per_group:
        fix = (
            f"set {method.tokens_setting}={acfg.tokens_per_group}"
            if method.tokens_setting and acfg.groups == want.groups
            else "use the settings it was trained with"
        )
        raise ConfigError(
            f"{where} has {acfg.tokens_per_group} soft tokens per group "
            f"({'/'.join(acfg.groups)}), method {name!r} under this config "
            f"{want.tokens_per_group} ({'/'.join(want.groups)}): {fix}"
        )


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
        *_use(acfg, method),
    ]
    return "\n".join(lines)


def _use(acfg: dict[str, Any], method: str) -> list[str]:
    """The card's ``Use`` section: reviews from this folder through a run's configuration
    (its data, the base model and encoder the adapter was trained with)."""
    who = (
        'history=[{"item_title": "...", "rating": 4, "title": "...", "text": "..."}]'
        if "known_user" not in methods.get(method).needs
        else 'user_id="<a user of the prepared data>"'
    )
    over = [f"llm.model={_llm_setting(acfg)}"]
    if acfg.get("encoder") and {"vectors", "contrast"} & methods.get(method).needs:
        over.append(f"embed.model={acfg['encoder']}")
    return [
        "## Use",
        "",
        f"Reviews from this folder (or repository), with a run configuration that has "
        f"`{' '.join(over)}`; the data stages the method needs are computed in its run "
        "directory, and the folder is checked against the method before it loads:",
        "",
        "```python",
        "import peerdiff",
        "",
        'folder = "<this folder or repo id>"',
        f'with peerdiff.Reviewer("<config>", adapters={{"{method}": folder}}) as r:',
        f"    print(r.review({who},",
        f'                   item_title="Kind of Blue", rating=5, method="{method}"))',
        "",
        f'adapter = peerdiff.load_adapter(folder, base_model="{acfg.get("base_model")}")  '
        "# the module alone: features -> soft tokens",
        "```",
        "",
        f"or serve it: `peerdiff serve --config <config> --adapter {method}=<this folder or "
        f'repo id>` and ask `POST /v1/reviews` with `"method": "{method}"`.',
        "",
    ]


def _llm_note(acfg: dict[str, Any]) -> str:
    """The results' LLM note for an adapter's base model: the packaged default (its Q4_1 GGUF,
    ``gguf-sha256`` revision) says that it is dequantised."""
    from peerdiff.tables import llm_note

    model = _llm_setting(acfg) if acfg.get("base_model") is not None else None
    return llm_note({"llm": {"model": model}})


def _n_tokens(acfg: dict[str, Any]) -> int:
    from peerdiff.model.adapters import AdapterConfig

    return AdapterConfig.from_dict(acfg).n_tokens


def _results(run_dir: Path, method: str) -> list[str]:
    from peerdiff.metrics import LABELS, format_score
    from peerdiff.stage import read_json

    out = []
    # this method's own folders only (``dep-*`` also matches dep-mean's), generated by the
    # adapter in train/<method> now (not by one a later run retrained over); a subset run's
    # scores (``max_samples``) only where the method has no full evaluation
    man = run_dir / "train" / method / "manifest.json"
    trained = read_json(man).get("key") if man.exists() else None
    mine = [
        s
        for s in (read_json(f) for f in sorted((run_dir / "evaluate").glob("*/summary.json")))
        if s.get("method") == method
        and (trained is None or s.get("adapter_key", trained) == trained)
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
