import pytest

from peerdiff.config import ConfigError, load_config


def test_defaults_and_overrides():
    cfg = load_config(
        None, ["generate.batch_size=3", "data.protocol.min_text_chars=50", "methods=[rag]"]
    )
    assert cfg.generate.batch_size == 3
    assert cfg.data.resolved_protocol().min_text_chars == 50
    assert cfg.data.resolved_protocol().min_user_reviews == 10  # rest from the small preset
    assert cfg.methods == ["rag"]
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3  # YAML 1.1 gives a string


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("generate.batchsize=3", "unknown key generate.batchsize"),
        ("generate.batch_size=three", "generate.batch_size must be an integer"),
        ("generate.batch_size=0", "generate.batch_size must be > 0"),
        ("generate.top_p=1.5", "top_p"),
        ("data.source=csv", "data.source: 'csv' is not one of"),
        ("data.preset=huge", "data.preset: 'huge' is not one of"),
        ("data.protocol.min_txt=3", "unknown key data.protocol.min_txt"),
        ("data.protocol.min_text_chars=-1", "min_text_chars must be >= 0"),
        ("methods=[gpt]", "methods: 'gpt' is not one of"),
        ("generate.splits=[dev]", "'dev' is not one of train, val, test"),
        ("data.on_bad_line=ignore", "data.on_bad_line"),
        # issue 25, item 11: negative or zero counts used to mean "all but N" or "all"
        ("generate.max_samples=-5", "generate.max_samples must be > 0 .or null., got -5"),
        ("generate.max_samples=0", "generate.max_samples must be > 0"),
        ("train.val_samples=-2", "train.val_samples must be > 0"),
        ("probe.max_samples=0", "probe.max_samples must be > 0"),
        ("dep.feature_dropout=1.0", "dep.feature_dropout must be in"),
        ("dep.dropout_unit=user", "dep.dropout_unit"),
        ("train.precision=fp8", "train.precision"),
        ("train.val_top_p=0", "train.val_top_p must be in"),
        # issue 25, item 10: values that ended in a raw traceback
        ("llm.device=quantum", "llm.device: 'quantum' is not a device"),
        ("embed.device=quantum", "embed.device: 'quantum' is not a device"),
        ("llm.threads=-4", "llm.threads must be > 0"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, [override])


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("generate:\n  max_new_tokens: lots\n")
    with pytest.raises(ConfigError, match=r"x.yaml: generate.max_new_tokens must be an integer"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    for p in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        cfg = load_config(p)
        first = p.read_text().splitlines()[0]
        assert first.startswith("# peerdiff "), f"{p.name}: first line must be its command"
        assert cfg.name


def test_soft_method_sections_and_presets():
    from peerdiff.config import PRESETS

    cfg = load_config(None, ["dep.layout=tokens", "dep.features=standardize", "pplug.history=8"])
    assert cfg.dep.layout == "tokens" and cfg.pplug.history == 8
    assert cfg.train.select_by == "nll" and cfg.generate.penalty_scope == "generated"
    assert PRESETS["medium"].min_user_reviews == 5
    for bad, msg in (
        ("dep.layout=grid", "dep.layout: 'grid' is not one of"),
        ("dep.features=whiten", "dep.features"),
        ("constant.tokens=0", "constant.tokens must be > 0"),
        ("probe.splits=[dev]", "probe.splits"),
        ("dep.pplug_history=3", "moved to pplug.history"),
    ):
        with pytest.raises(ConfigError, match=msg):
            load_config(None, [bad])
