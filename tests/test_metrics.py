import numpy as np
import pytest

from peerdiff import metrics


def test_rouge_and_bleu_known_values():
    r1, rl = metrics.rouge(["the cat sat", "x y"], ["the cat sat", "a b"])
    assert r1.tolist() == [1.0, 0.0] and rl.tolist() == [1.0, 0.0]
    preds = ["the cat sat on the mat today", "a quick brown fox"]
    refs = ["the cat is on the mat today", "the quick brown fox jumps"]
    import sacrebleu

    stats = metrics.bleu_stats(preds, refs)
    assert metrics.corpus_bleu(stats) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert metrics.corpus_bleu(metrics.bleu_stats(refs, refs)) == pytest.approx(100.0)


def test_meteor_uses_wordnet_synonyms(tmp_path):
    problem = metrics.setup_wordnet(tmp_path)
    if problem:
        pytest.skip(problem)
    ref = ["the car was good"]
    exact = metrics.meteor(["the car was good"], ref)[0]
    syn = metrics.meteor(["the auto was good"], ref)[0]
    other = metrics.meteor(["the dog was good"], ref)[0]
    # 'auto' matches 'car' only through WordNet (nltk's synonym stage sees Porter stems,
    # so the pair must be stem-stable; 'movie' -> 'movi' would never match 'film')
    assert exact == syn > other > metrics.meteor(["zzz qqq"], ref)[0]


def test_meteor_unavailable_is_reported_not_replaced(tmp_path):
    s = metrics.score_texts(["a b"], ["a b"], tmp_path, use_bertscore=False)
    assert "meteor" in s.per_sample or s.notes  # normal machine: computed
    import peerdiff.metrics as m

    problem = m.setup_wordnet(tmp_path / "other", source=tmp_path / "no-wordnet")
    assert "wordnet-base" in problem


def test_score_texts_without_wordnet(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "setup_wordnet", lambda *a, **k: "WordNet not found; fix it")
    s = metrics.score_texts(["a b c"], ["a b d"], tmp_path, use_bertscore=False)
    assert s.corpus["meteor"] is None and "meteor" not in s.per_sample
    assert any("METEOR unavailable" in n for n in s.notes)


def test_bertscore_local(tiny_encoder_dir):
    f1 = metrics.bertscore(
        ["good song", "bad"], ["good song", "great album"], str(tiny_encoder_dir)
    )
    assert f1.shape == (2,) and f1[0] == pytest.approx(1.0, abs=1e-5) and f1[1] < 1


def test_bertscore_scores_an_empty_prediction_zero(tiny_encoder_dir):
    f1 = metrics.bertscore(["", "good song", "  "], ["a", "good song", ""], str(tiny_encoder_dir))
    assert f1[0] == 0 and f1[2] == 0 and f1[1] == pytest.approx(1.0, abs=1e-5)


def test_paired_bootstrap_interval_contains_difference():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 1, 200)
    b = a - 0.5 + rng.normal(0, 0.1, 200)
    d, lo, hi = metrics.bootstrap(lambda i: a[i].mean() - b[i].mean(), 200, n=500)
    assert lo < d < hi and lo > 0.4 and hi < 0.6
    # corpus BLEU as the statistic over rows of sufficient statistics
    st = metrics.bleu_stats(["the cat sat"] * 5, ["the cat sat"] * 5)
    d, lo, hi = metrics.bootstrap(
        lambda i: metrics.corpus_bleu(st[i]) - metrics.corpus_bleu(st[i]), 5, n=50
    )
    assert d == lo == hi == 0


@pytest.mark.parametrize(
    ("answer", "score"),
    [
        ("8", 8.0),
        (" 10\n", 10.0),
        ("Score: 6/10", 6.0),
        ("<think>maybe 3</think>7.5", 7.5),
        ("[Score]: 7", 7.0),
        ("no idea", float("nan")),
        ("100", float("nan")),
        # a chatty or reasoning judge cut off mid-thought is missing, not a number from its text
        ("Okay, the user rated it 5 stars and the AI", float("nan")),
        ("<think>The real review says 5 stars, the AI", float("nan")),
    ],
)
def test_parse_judge(answer, score):
    got = metrics.parse_judge(answer)
    assert (np.isnan(got) and np.isnan(score)) or got == score


def test_parse_judge_needs_a_finished_answer():
    from peerdiff.backends.base import Completion

    assert metrics.parse_judge(Completion("8", finish_reason="stop")) == 8.0
    assert np.isnan(metrics.parse_judge(Completion("8 because", finish_reason="length")))
    assert np.isnan(metrics.parse_judge(Completion("", reasoning="thinking...")))


def test_judge_prompt_holds_both_reviews_and_the_score_cue():
    conv = metrics.judge_conversation("gen text", "real text", "Album", "desc", 4.0, "Title")
    assert "[Score 10]" in conv[0]["content"] and "numerical score only" in conv[0]["content"]
    assert "[User's real review]: real text" in conv[1]["content"]
    assert "[AI-generated review]: gen text" in conv[1]["content"]
    assert conv[1]["content"].endswith("[Score]: ")
