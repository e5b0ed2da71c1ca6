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

    from peerdiff.config import packaged_configs

    shipped = packaged_configs()
    checkout = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert "quick" in shipped and sorted(shipped) == sorted(p.stem for p in checkout)
    for p in checkout:  # configs/ is the packaged folder
        assert p.resolve() == Path(str(shipped[p.stem])).resolve()
        cfg = load_config(p)
        first = p.read_text().splitlines()[0]
        assert first.startswith("# peerdiff "), f"{p.name}: first line must be its command"
        assert cfg.name


def test_smoke_runs_the_quick_jobs_stages_in_a_run_directory_of_its_own():
    """Issue 26, item 1: the short look at the pipeline is a job of its own, never a
    subset written into runs/quick."""
    quick, smoke = load_config("quick"), load_config("smoke")
    assert smoke.methods == quick.methods and smoke.generate.splits == quick.generate.splits
    assert smoke.probe.splits == quick.probe.splits and smoke.evaluate.nll
    assert smoke.run_path != quick.run_path and smoke.generate.max_samples is None
    assert smoke.data.max_users and smoke.train.epochs == 1


def test_shipped_configs_by_name_from_any_directory(tmp_path, monkeypatch):
    """After `pip install` there is no configs/ folder: names resolve to the packaged copy."""
    monkeypatch.chdir(tmp_path)
    for name in ("quick", "quick.yaml", "configs/quick.yaml"):
        assert load_config(name, ["generate.max_samples=3"]).name == "quick"
    (tmp_path / "quick.yaml").write_text("name: mine\n")  # a file on disk wins
    assert load_config("quick.yaml").name == "mine"
    with pytest.raises(ConfigError, match=r"not found: qiuck \(did you mean 'quick'\?\)"):
        load_config("qiuck")
    with pytest.raises(ConfigError, match=r"not found: elsewhere/quick\.yaml"):
        load_config("elsewhere/quick.yaml")  # only configs/<name> means the packaged one


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trian.lr=1", "unknown key trian (did you mean 'train'?); known keys:"),
        ("train.lrr=1", "unknown key train.lrr (did you mean 'train.lr'?)"),
        ("data.protocol.min_txt_chars=3", "(did you mean 'data.protocol.min_text_chars'"),
        ("llm.engine=vlm", "llm.engine: 'vlm' is not one of ['hf', 'vllm'] (did you mean 'vllm'?)"),
        ("data.source=amazon23x", "(did you mean 'amazon23'"),
        ("data.preset=smal", "(did you mean 'small'?)"),
        ("methods=[constnt]", "methods: 'constnt' is not one of"),
    ],
)
def test_typos_get_a_suggestion(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value)
    assert "did you mean" in str(e.value)


def test_a_typo_in_an_override_names_the_override_and_one_in_a_file_the_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config("quick", ["generate.max_samples=3", "trian.epochs=1", "seed=2"])
    assert str(e.value).startswith(
        "override 'trian.epochs=1': unknown key trian (did you mean 'train'?)"
    )
    assert "quick.yaml" not in str(e.value)
    with pytest.raises(
        ConfigError, match=r"^override 'train\.epochs=0': train\.epochs must be > 0"
    ):
        load_config(None, ["train.epochs=0"])
    p = tmp_path / "mine.yaml"
    p.write_text("trian:\n  epochs: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["seed=1"])
    assert str(e.value).startswith(f"{p}: unknown key trian (did you mean 'train'?)")
    # the file's bad value, fixed by an override, is no error; one an override sets is its own
    p.write_text("train:\n  epochs: 0\n")
    assert load_config(p, ["train.epochs=2"]).train.epochs == 2
    with pytest.raises(ConfigError, match=r"^override 'train\.lr=-1': train\.lr must be > 0"):
        load_config(p, ["train.epochs=2", "train.lr=-1"])
    # a later override's error is its own even where an earlier one alone was an error
    with pytest.raises(
        ConfigError,
        match=r"^override 'backends\.big\.type=openai': backends\.big\.model is required",
    ):
        load_config(None, ["roles.judge=big", "backends.big.type=openai"])


def test_unknown_method_suggests_the_closest():
    from peerdiff import methods

    with pytest.raises(
        ConfigError, match=r"unknown method 'contant' \(did you mean 'constant'\?\)"
    ):
        methods.get("contant")
    with pytest.raises(ConfigError) as e:
        methods.get("gpt")
    assert "did you mean" not in str(e.value)  # nothing close: no guess


def test_describe_lists_every_key_with_value_default_and_help():
    from dataclasses import fields

    from peerdiff.config import RunConfig, describe

    keys = {k.key: k for k in describe(load_config("quick", ["seed=3"]))}
    assert keys["dep.layout"].value == "tokens" and keys["dep.layout"].default == "text"
    assert keys["seed"].value == 3 and keys["seed"].default == 0
    assert keys["train.epochs"].value == 1 and keys["train.epochs"].default == 5
    assert "Q4_1 GGUF" in keys["llm.model"].help
    assert keys["data.source"].value == "amazon23"  # enums as their YAML value
    assert keys["data.protocol.min_user_reviews"].default == 10  # the preset's threshold
    assert "backends.local.concurrency" in keys
    top = {f.name for f in fields(RunConfig)}
    assert {k.split(".")[0] for k in keys} == top  # every section is walked
    assert not [k.key for k in keys.values() if not k.help.strip()]  # every key says what it does
    assert all(k.key.startswith("train.") for k in describe(None, "train"))
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        describe(None, "trian")


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
