"""examples/quickstart.py runs from data to personalized reviews (tiny models, synthetic
reviews: what it does with the real ones is in its docstring)."""

import importlib.util

from helpers import REPO, TINY_RUN, synthetic_overrides


def test_quickstart_goes_from_data_to_a_review_per_method(
    tiny_lm, synthetic_root, tiny_encoder_dir, tmp_path, capsys
):
    spec = importlib.util.spec_from_file_location("quickstart", REPO / "examples" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    _, _, lm_dir = tiny_lm
    quickstart.main(
        [
            "--config",
            "smoke",
            "--max-new-tokens",
            "4",
            *synthetic_overrides(synthetic_root, tmp_path / "run"),
            *TINY_RUN,
            f"llm.model={lm_dir}",
            f"embed.model={tiny_encoder_dir}",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    out = capsys.readouterr().out
    assert "smoke: 4 test samples" in out
    for method in quickstart.METHODS:
        assert f"\n  {method} " in out and f"\n[{method}]\n" in out
    assert "\n[what the user wrote]\nThis " in out  # the synthetic reviews' first word
    assert (tmp_path / "run" / "train" / "dep" / "best" / "adapter.safetensors").exists()
