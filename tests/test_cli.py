"""The CLI: one-line errors for input/config problems (exit 2 / 1), tracebacks with -v."""

import re

import pytest
from helpers import synthetic_overrides, write_jsonl

from peerdiff.cli import main
from peerdiff.errors import ConfigError, MissingStageError


def test_config_errors_exit_2_and_name_the_key(capsys):
    assert main(["prepare", "generate.batch_size=0"]) == 2
    assert "generate.batch_size must be > 0" in capsys.readouterr().err
    assert main(["prepare", "train.rho=0.1"]) == 2
    assert "train.rho (moved to dep.rho)" in capsys.readouterr().err
    assert main(["prepare", "methods=[gpt]"]) == 2
    assert "'gpt' is not one of" in capsys.readouterr().err
    assert main(["train", "--method", "gpt"]) == 2


def test_data_errors_exit_1_with_file_and_line(tmp_path, capsys):
    bad = {
        "user_id": "u",
        "parent_asin": "i",
        "rating": "bad",
        "timestamp": 1,
        "text": "x",
        "title": "t",
    }
    write_jsonl(tmp_path / "r.jsonl", [bad])
    args = [
        "prepare",
        f"data.root={tmp_path}",
        "data.reviews=r.jsonl",
        "data.items=null",
        f"run_dir={tmp_path}/run",
    ]
    assert main(args) == 1
    assert "r.jsonl:1: field 'rating' is not a number: 'bad'" in capsys.readouterr().err


def test_verbose_keeps_the_traceback(tmp_path):
    with pytest.raises(ConfigError):
        main(["-v", "prepare", "generate.batch_size=0"])


def test_generation_without_an_adapter_names_the_command(synthetic_root, tmp_path, capsys):
    args = ["generate", "--method", "constant", *synthetic_overrides(synthetic_root, tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "peerdiff train --method constant" in err
    with pytest.raises(MissingStageError):
        main(["-v", *args])


def test_probe_refuses_methods_without_user_features(synthetic_root, tmp_path, capsys):
    assert (
        main(["probe", "--method", "nonperso", *synthetic_overrides(synthetic_root, tmp_path)]) == 2
    )
    assert "no user features" in capsys.readouterr().err


def test_dry_run_reports_lengths_budgets_and_deviations(synthetic_root, tmp_path, capsys):
    import json

    args = [
        "run",
        "--dry-run",
        "--config",
        "configs/paper.yaml",
        *synthetic_overrides(synthetic_root, tmp_path),
        "methods=[rag,pag]",
        "llm.model=absent/model",
        "backends.local.model=absent/model",
        "pipeline.n_items=4",
    ]
    assert main(args) == 0
    out = json.loads((tmp_path / "dry-run-paper.json").read_text())
    assert out["tokenizer"].startswith("approximate")  # the model is not available offline
    assert set(out["methods"]) == {"rag", "pag"}
    assert out["methods"]["pag"]["summary"]["max_new_tokens"] == 1024
    assert out["methods"]["rag"]["generate"]["tokens_max"] > 0
    assert out["deviations"] == ["pipeline.n_items = 4 (published: 8)"]
    assert not (tmp_path / "generate").exists()  # nothing was generated


def test_bad_files_and_names_are_one_line_errors(tmp_path, capsys):
    """Issue 25, item 10: inputs that ended in a raw traceback."""
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    assert main(["prepare", "--config", str(binary)]) == 2
    assert "not a text file" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "r.jsonl").write_text("")
    args = ["prepare", f"data.root={tmp_path}", "data.reviews=data", f"run_dir={tmp_path}/r"]
    assert main(args) == 1
    assert "data.reviews:" in (err := capsys.readouterr().err) and "is a directory" in err
    assert "r.jsonl" in err


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    import peerdiff.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert main(["prepare"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err


def test_models_that_cannot_be_loaded_name_the_setting():
    from peerdiff.embed import Encoder
    from peerdiff.model.llm import load_llm

    with pytest.raises(
        ConfigError, match=re.escape("embed.model 'nonexistent-encoder' cannot be loaded")
    ):
        Encoder("nonexistent-encoder")
    with pytest.raises(
        ConfigError, match=re.escape("llm.model '/nonexistent/model': no model folder")
    ):
        load_llm("/nonexistent/model")


def test_version(capsys):
    import peerdiff

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"peerdiff {peerdiff.__version__}"


def test_config_command_lists_keys_values_defaults_and_help(capsys):
    assert main(["config", "--config", "quick", "--keys", "train", "train.lr=0.003"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs" in out and "train.lr" in out and "0.003" in out
    assert "target review, truncated" in out  # help text of train.max_target_tokens
    assert "dep.layout" not in out  # only the keys asked for
    assert main(["config", "--keys", "trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_typos_suggest_the_name_meant(capsys):
    assert main(["prepare", "--config", "qiuck"]) == 2
    assert "config file not found: qiuck (did you mean 'quick'?)" in capsys.readouterr().err
    assert main(["prepare", "generate.max_sample=3"]) == 2
    assert "(did you mean 'generate.max_samples'?)" in capsys.readouterr().err
    assert main(["train", "--method", "contant"]) == 2
    assert "unknown method 'contant' (did you mean 'constant'?)" in capsys.readouterr().err


def test_every_command_shows_examples_that_parse():
    import shlex

    from peerdiff.cli import COMMANDS, EXAMPLES, _parser
    from peerdiff.config import load_config

    assert set(EXAMPLES) == set(COMMANDS)
    parser = _parser()
    for name, lines in EXAMPLES.items():
        assert "examples:" in parser._subparsers._group_actions[0].choices[name].format_help()
        for line in lines:
            words = shlex.split(line)
            words = words[words.index("peerdiff") + 1 :]  # after any VAR=value prefix
            args = parser.parse_args(words)
            assert args.command == name
            load_config(args.config, args.overrides)  # keys and values are valid


def test_serve_takes_adapter_folders_per_method(monkeypatch, capsys):
    """``--adapter METHOD=FOLDER`` (repeatable) reaches the service as ``{method: folder}``;
    a malformed or repeated one is a one-line config error before anything loads."""
    import peerdiff.serve.app

    got = {}
    monkeypatch.setattr(peerdiff.serve.app, "serve", lambda cfg, *a: got.update(args=a))
    argv = ["serve", "--adapter", "dep=/tmp/dep adapter", "--adapter", "constant=me/const"]
    assert main(argv) == 0
    assert got["args"][-1] == {"dep": "/tmp/dep adapter", "constant": "me/const"}
    for bad, why in (
        (["--adapter", "dep"], "--adapter 'dep': expected METHOD=FOLDER"),
        (["--adapter", "=x"], "--adapter '=x': expected METHOD=FOLDER"),
        (["--adapter", "dep=a", "--adapter", "dep=b"], "--adapter dep=... given twice"),
    ):
        assert main(["serve", *bad]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1
