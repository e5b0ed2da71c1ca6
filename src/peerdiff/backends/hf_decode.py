"""Decode-time speed-ups of the transformers backend, kept beside it because they reach into
transformers' internals (``DynamicLayer``'s fields and methods, the LM head's forward).

:data:`TRANSFORMERS_TESTED` is the range they were checked against; ``tests/backends/
test_hf.py`` fails on a transformers outside it (check the parity tests there, then widen
the range) and compares their outputs with transformers' own cache and head.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

TRANSFORMERS_TESTED = ">=5.19,<6"


def reserved_cache(room: int):
    """A ``DynamicCache`` whose layers write new keys/values into reserved room.

    ``DynamicCache`` concatenates each layer's whole cache with every new token (a quarter of
    the CPU time of a 96-token batched decode). Here each layer keeps a buffer with ``room``
    spare positions and returns views of its filled part; a layer that runs out of room, or
    whose rows were repeated, grows by another ``room``. Values are the same as with
    ``DynamicCache``; only the copying changes.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class _ReservedLayer(DynamicLayer):
        def _view(self) -> None:  # keys/values: the filled part of the buffers
            self.keys = self._buf[0][..., : self._n, :]
            self.values = self._buf[1][..., : self._n, :]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._buf, self._n = None, 0
            n, t = self._n, key_states.shape[-2]
            buf = self._buf
            if buf is None or n + t > buf[0].shape[-2] or buf[0].shape[0] != key_states.shape[0]:
                b, h, _, d = key_states.shape
                buf = tuple(x.new_empty(b, h, n + t + room, d) for x in (key_states, value_states))
                if n:
                    buf[0][..., :n, :] = self.keys
                    buf[1][..., :n, :] = self.values
                self._buf = buf
            buf[0][..., n : n + t, :] = key_states
            buf[1][..., n : n + t, :] = value_states
            self._n = n + t
            self._view()
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.get_seq_length() > 0:  # keep the room
                self._n = max(0, self._n + tokens_to_remove)
                self._view()
            else:
                super().crop(tokens_to_remove)

        def batch_repeat_interleave(self, repeats: int) -> None:
            super().batch_repeat_interleave(repeats)
            self._buf = None  # the next update reserves room at the new batch size

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.get_seq_length() > 0:
                self._buf = tuple(x[indices] for x in self._buf)
                self._view()

    cache = DynamicCache()
    cache.layer_class_to_replicate = _ReservedLayer
    return cache


@contextmanager
def skinny_head(model):
    """Within the block, the LM head multiplies as ``W @ h.T`` when it sees 2 to 64 rows.

    Decoding applies the head to a few rows at a time: ``(rows, hidden) x (vocab,
    hidden).T``. On CPU, MKL runs that product faster with the weight as the left operand
    at a few to a few dozen rows (docs/benchmarks.md); one row stays a matrix-vector
    product, which is faster as it is, and with many more rows the two run alike (the
    target-scoring chunks keep theirs). The model's own forward still runs (soft-capping
    and the like apply unchanged); only this module's product changes, so logits agree to
    float rounding. Heads with a bias, or that are not a plain ``nn.Linear``, are left
    alone. Not re-entrant across threads: the model has one owner while it decodes.
    """
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        yield
        return
    plain = head.forward

    def forward(h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[:-1].numel()
        if not 2 <= rows <= 64 or h.device.type != "cpu":
            return plain(h)
        flat = h.reshape(rows, h.shape[-1])
        return (head.weight @ flat.T).T.contiguous().reshape(*h.shape[:-1], head.out_features)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward
