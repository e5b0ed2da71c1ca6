"""Batching with a shared prefix, and target losses: same values as one sequence at a time."""

import pytest
import torch

from peerdiff.backends.hf_decode import skinny_head
from peerdiff.model.lm import Example, collate, common_prefix, pad_batch, target_losses


def test_pad_batch_keeps_the_shared_prefix_left_and_pads_after_it():
    ids, mask = pad_batch([[5, 6, 7, 8], [5, 6, 9]], pad=0, shared=2)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 6, 0, 9]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]
    ids, mask = pad_batch([[5, 6, 7], [9]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix([[1], [2]]) == 0


def _per_row(model, batch, split=0):
    emb = model.get_input_embeddings()(batch["input_ids"])
    losses, rows = target_losses(model, emb, batch, split)
    out = torch.zeros(batch["input_ids"].shape[0]).index_add_(0, rows, losses)
    return out, torch.bincount(rows, minlength=batch["input_ids"].shape[0])


def test_shared_prefix_and_split_give_the_same_losses_as_single_rows(tiny_lm):
    model, tok, _ = tiny_lm
    prompts = ["system: be brief. item one", "system: be brief. item two two", "system: be x"]
    ex = [
        Example(tok(p)["input_ids"], tok(" yes" * (i + 1))["input_ids"] + [2])
        for i, p in enumerate(prompts)
    ]
    with torch.no_grad():
        alone = [_per_row(model, collate([e], tok.pad_token_id, "cpu"))[0].item() for e in ex]
        batch = collate(ex, tok.pad_token_id, "cpu")
        assert batch["shared"] == len("system: be ")
        shared, counts = _per_row(model, batch)
        split, _ = _per_row(model, batch, split=batch["shared"] + 3)
        plain, _ = _per_row(model, collate(ex, tok.pad_token_id, "cpu", shared=0))
    assert counts.tolist() == [len(e.target_ids) for e in ex]
    torch.testing.assert_close(shared, torch.tensor(alone), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(split, shared, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, shared, rtol=1e-4, atol=1e-4)


def test_the_shared_prefix_stops_before_the_first_soft_token(tiny_lm):
    """Identical prompts up to and past their placeholders: the soft tokens still differ per
    row, so they must not be computed once for the batch (nor without gradients)."""
    import copy

    from peerdiff.model.inject import Injector, add_placeholders

    model, tok, _ = tiny_lm
    tok = copy.deepcopy(tok)
    ids = add_placeholders(tok, ["[SOFT_TOKEN_0]"])
    inj = Injector(model.get_input_embeddings(), ids)
    prompt = tok("same prompt [SOFT_TOKEN_0] same tail")["input_ids"]
    ex = [Example(prompt, tok(" ok")["input_ids"])] * 3
    batch = collate(ex, tok.pad_token_id, "cpu", is_placeholder=inj.table >= 0)
    assert batch["shared"] == prompt.index(ids[0])
    soft = torch.randn(3, 1, model.config.hidden_size, requires_grad=True)
    losses, rows = target_losses(model, inj(batch["input_ids"], soft), batch)
    per_row = torch.zeros(3).index_add(0, rows, losses)
    assert len(set(per_row.tolist())) == 3  # each row saw its own soft token
    per_row.sum().backward()
    assert (soft.grad.abs().sum(-1) > 0).all()


def test_skinny_head_changes_only_how_the_head_multiplies(tiny_lm):
    model = tiny_lm[0]
    head = model.get_output_embeddings()
    ids = torch.randint(3, 40, (5, 7))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with skinny_head(model):
            assert "forward" in vars(head)
            rows = model(input_ids=ids, logits_to_keep=1).logits  # 5 rows: W @ h.T
            every = model(input_ids=ids).logits  # 35 rows
            one = model(input_ids=ids[:1], logits_to_keep=1).logits  # a single row: as before
        with pytest.raises(RuntimeError), skinny_head(model):
            raise RuntimeError("the head is restored on the way out")
    assert "forward" not in vars(head)
    torch.testing.assert_close(rows, plain[:, -1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(every, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one, plain[:1, -1:], rtol=1e-5, atol=1e-5)
