"""End to end with the real default models (SmolLM2-135M, all-MiniLM-L6-v2) on real users."""

import json

import pytest
from conftest import write_jsonl

from peerdiff.cli import main


@pytest.mark.slow
def test_run_on_four_real_users(real_data, tmp_path, capsys):
    rc = main(
        [
            "run",
            "--config",
            "configs/quick.yaml",
            f"data.root={real_data}",
            f"run_dir={tmp_path}/run",
            "data.max_users=4",
            "generate.max_new_tokens=16",
            "generate.batch_size=4",
        ]
    )
    assert rc == 0
    rows = json.loads((tmp_path / "run" / "results-quick.json").read_text())
    assert [(r["method"], r["n"]) for r in rows] == [("nonperso", 4), ("rag", 4)]
    for r in rows:
        for m in ("rouge1", "rougeL", "meteor", "bleu", "bertscore"):
            assert r["scores"][m] is not None, m
        assert 0 < r["scores"]["bertscore"] <= 1
    err = capsys.readouterr().err
    assert "ROUGE-1" in err and "nonperso" in err
    preds = (tmp_path / "run" / "generate" / "rag-test" / "predictions.jsonl").read_text()
    assert all(json.loads(line)["text"] for line in preds.splitlines())
    # a second run reuses every stage
    assert (
        main(
            [
                "run",
                "--config",
                "configs/quick.yaml",
                f"data.root={real_data}",
                f"run_dir={tmp_path}/run",
                "data.max_users=4",
                "generate.max_new_tokens=16",
                "generate.batch_size=4",
            ]
        )
        == 0
    )


def test_cli_reports_config_and_data_errors(tmp_path, capsys):
    assert main(["prepare", "generate.batch_size=0"]) == 2
    assert "generate.batch_size must be > 0" in capsys.readouterr().err
    write_jsonl(
        tmp_path / "r.jsonl",
        [
            {
                "user_id": "u",
                "parent_asin": "i",
                "rating": "bad",
                "timestamp": 1,
                "text": "x",
                "title": "t",
            }
        ],
    )
    rc = main(
        [
            "prepare",
            f"data.root={tmp_path}",
            "data.reviews=r.jsonl",
            "data.items=null",
            f"run_dir={tmp_path}/run",
        ]
    )
    assert rc == 1
    assert "r.jsonl:1: field 'rating' is not a number: 'bad'" in capsys.readouterr().err
