"""Difference vectors on a hand-built 4-user example, slot selection, and leakage."""

import numpy as np
import pytest

from peerdiff.contrast import compute_contrast, difference_vectors, peer_weights, select_slots


def four_users():
    # users 0..3, items 0..2; vectors in 2-d for hand computation
    #  r  user item  base  vector
    rows = [
        (0, 0, 0, True, [1.0, 0.0]),
        (1, 0, 1, True, [0.0, 1.0]),
        (2, 1, 0, True, [0.0, 1.0]),
        (3, 2, 0, True, [0.6, 0.8]),
        (4, 2, 2, True, [0.8, 0.6]),
        (5, 3, 1, True, [1.0, 0.0]),
        (6, 3, 0, False, [0.0, 1.0]),  # a held-out target of user 3: never a peer
        (7, 0, 2, False, [0.6, 0.8]),  # user 0's later review (e.g. a train target)
    ]
    user = np.array([r[1] for r in rows])
    item = np.array([r[2] for r in rows])
    base = np.array([r[3] for r in rows])
    vec = np.array([r[4] for r in rows], dtype=np.float32)
    return user, item, base, vec


def test_difference_vectors_match_hand_computation():
    user, item, base, vec = four_users()
    # user means over base reviews
    m0 = (vec[0] + vec[1]) / 2  # [0.5, 0.5]
    m1 = vec[2]  # [0, 1]
    m2 = (vec[3] + vec[4]) / 2  # [0.7, 0.7]
    m3 = vec[5]  # [1, 0]
    # review 0 (user 0, item 0): peers are reviews 2 (user 1) and 3 (user 2); 6 is a target
    d1, d2 = np.linalg.norm(m0 - m1), np.linalg.norm(m0 - m2)
    logits = np.array([d1, d2]) / (d1 + d2)
    w = np.exp(logits) / np.exp(logits).sum()
    expect0 = w[0] * (vec[0] - vec[2]) + w[1] * (vec[0] - vec[3])
    # review 7 (user 0, item 2, not base): one peer, review 4 of user 2 -> weight 1
    expect7 = vec[7] - vec[4]
    # review 1 (user 0, item 1): peer review 5 of user 3
    expect1 = vec[1] - vec[5]
    diff, n_peers = difference_vectors(vec, user, item, base, np.array([0, 7, 1]))
    np.testing.assert_allclose(diff[0], expect0, atol=1e-6)
    np.testing.assert_allclose(diff[1], expect7, atol=1e-6)
    np.testing.assert_allclose(diff[2], expect1, atol=1e-6)
    assert n_peers.tolist() == [2, 1, 1]
    assert np.linalg.norm(m0 - m3) > 0  # (sanity of the example)

    # other weightings on review 0
    for scheme, ww in [("uniform", [0.5, 0.5]), ("distance", [d1 / (d1 + d2), d2 / (d1 + d2)])]:
        diff, _ = difference_vectors(vec, user, item, base, np.array([0]), scheme=scheme)
        np.testing.assert_allclose(
            diff[0], ww[0] * (vec[0] - vec[2]) + ww[1] * (vec[0] - vec[3]), atol=1e-6
        )


def test_targets_are_never_peers():
    user, item, base, vec = four_users()
    vec_poisoned = vec.copy()
    vec_poisoned[6] = [1e6, 1e6]  # a target vector: must not influence anything
    a, _ = difference_vectors(vec, user, item, base, np.array([0, 1, 3]))
    b, _ = difference_vectors(vec_poisoned, user, item, base, np.array([0, 1, 3]))
    np.testing.assert_array_equal(a, b)


def test_reference_weighting_is_nearly_uniform():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.1, 2.0, 10)
    w = peer_weights(d, np.zeros(10, dtype=int), 1, "reference")
    assert w.sum() == pytest.approx(1) and w.max() / w.min() < np.e  # logits span < 1
    w2 = peer_weights(d, np.zeros(10, dtype=int), 1, "softmax", temperature=0.05)
    assert w2.max() > 0.5  # a low temperature concentrates on the most different peer
    with pytest.raises(ValueError, match="weighting"):
        peer_weights(d, np.zeros(10, dtype=int), 1, "nope")


@pytest.mark.parametrize("scheme", ["reference", "uniform", "distance", "softmax"])
def test_dense_weights_equal_segment_weights(scheme):
    from peerdiff.contrast import masked_weights

    rng = np.random.default_rng(2)
    d = rng.uniform(0, 2, (5, 7))
    mask = rng.random((5, 7)) < 0.6
    mask[0] = False  # a row without peers gets zeros
    dense = masked_weights(d, mask, scheme, 0.3)
    rows, cols = np.nonzero(mask)
    seg = peer_weights(d[rows, cols], rows, 5, scheme, 0.3)
    np.testing.assert_allclose(dense[rows, cols], seg, rtol=1e-12)
    assert (dense[~mask] == 0).all()


def test_select_slots_newest_first_with_peers():
    flat = np.array([0, 1, 2, 3, 4, 10, 11])
    offsets = np.array([0, 5, 7])
    has_peer = np.zeros(12, bool)
    has_peer[[0, 2, 3, 11]] = True
    slots = select_slots(flat, offsets, has_peer, k=2)
    assert slots.tolist() == [[3, 2], [11, -1]]


def test_compute_contrast_slots_text_and_vectors_agree():
    user, item, base, vec = four_users()
    # sample A: user 0 with profile [0, 1, 7]; sample B: user 3 with profile [5]
    flat = np.array([0, 1, 7, 5])
    offsets = np.array([0, 3, 4])
    c = compute_contrast(vec, user, item, base, flat, offsets, ["A", "B"], max_slots=8)
    slots, hist, diff, mask = c.for_sample("A")
    assert slots[:3].tolist() == [7, 1, 0] and mask.tolist()[:4] == [True, True, True, False]
    for k in range(3):  # slot k's history vector is slot k's review's own vector
        np.testing.assert_array_equal(hist[k], vec[slots[k]])
    np.testing.assert_allclose(diff[0], vec[7] - vec[4], atol=1e-6)
    slots, _, _, mask = c.for_sample("B")
    assert slots[0] == 5 and mask.sum() == 1


@pytest.mark.parametrize(("threads", "block_bytes"), [(1, 64 << 20), (3, 64)])
def test_item_blocks_match_a_per_pair_computation(threads, block_bytes):
    """The item-blocked computation equals a direct per-(review, peer) evaluation, on one
    thread or several (tiny blocks: one item per task)."""
    rng = np.random.default_rng(1)
    n = 300
    user = rng.integers(0, 40, n)
    item = rng.integers(0, 25, n)
    base = rng.random(n) < 0.8
    vec = rng.normal(size=(n, 6)).astype(np.float32)
    q = np.arange(0, n, 3)
    got, n_peers = difference_vectors(
        vec, user, item, base, q, threads=threads, block_bytes=block_bytes
    )
    means = {u: vec[base & (user == u)].mean(0) for u in np.unique(user[base])}
    for j, r in enumerate(q):
        peers = [p for p in np.flatnonzero(base & (item == item[r])) if user[p] != user[r]]
        assert n_peers[j] == len(peers)
        if not peers:
            assert np.isnan(got[j]).all()
            continue
        d = np.array([np.linalg.norm(means[user[r]] - means[user[p]]) for p in peers])
        w = np.exp(d / d.sum()) / np.exp(d / d.sum()).sum()
        np.testing.assert_allclose(
            got[j], sum(wi * (vec[r] - vec[p]) for wi, p in zip(w, peers)), atol=1e-5
        )
