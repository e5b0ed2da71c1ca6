"""Local transformers backend: batched generation with left padding, CPU or GPU.

Prompts are sorted by length so each batch holds similar lengths (less padding), generated
in batches, and returned in the caller's order. :meth:`HFBackend.generate_soft` places soft
vectors at placeholder tokens (DEP, PPlug); :meth:`HFBackend.generate_scored` also returns
each target's NLL from the same prompt prefill.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from peerdiff.backends.base import (
    Completion,
    GenParams,
    Message,
    encode_prompt,
    per_row,
    render_prompt,
    sampling_key,
)
from peerdiff.backends.hf_decode import reserved_cache, skinny_head
from peerdiff.model.inject import Injector
from peerdiff.model.llm import load_llm
from peerdiff.model.lm import cache_kw, decoder_of, length_groups, pad_batch, shared_prefix


@dataclass
class Decoded:
    """:meth:`HFBackend.decode`'s rows: generated token ids (EOS excluded) and, when targets
    were scored in the prefill, each row's summed target NLL."""

    tokens: list[list[int]]
    nll_sums: list[float] | None = None


@dataclass
class Generation:
    """A batch of prompts' outputs, in input order: texts, why each ended (``stop`` or
    ``length``: the budget ran out first) and, when targets were scored, their NLL sums."""

    texts: list[str]
    finish: list[str]
    nll_sums: list[float] | None = None


def _with_skinny_head(method):
    """Run a backend method with :func:`~peerdiff.backends.hf_decode.skinny_head` on its model."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with skinny_head(self.model):
            return method(self, *args, **kwargs)

    return wrapper


class HFBackend:
    """Chat generation with a local (frozen) causal LM.

    Args:
        model: a causal LM (``transformers``), in eval mode.
        tokenizer: its tokenizer; padding side is forced to ``left``.
        batch_size: prompts per forward batch.
    """

    def __init__(
        self, model, tokenizer, batch_size: int = 8, name: str = "hf", path: str | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.path = path  # the resolved model folder or id (for revisions in model cards)
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.name = name

    @classmethod
    def load(
        cls,
        model: str = "default",
        cache_dir: str | Path = ".cache",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        threads: int | None = None,
    ) -> HFBackend:
        from peerdiff.model.llm import resolve_llm

        path = resolve_llm(model, cache_dir)
        m, tok = load_llm(path, cache_dir, device, dtype, threads)
        return cls(m, tok, batch_size, name=f"hf:{model}", path=path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, conversation: list[Message], placeholders: bool = False) -> str:
        """:func:`~peerdiff.backends.base.render_prompt` with this model's tokenizer."""
        return render_prompt(self.tokenizer, conversation, placeholders)

    def encode(self, conversation: list[Message], placeholders: bool = False) -> list[int]:
        """Token ids of :meth:`render` (``placeholders``: a soft-prompt method's prompt)."""
        return encode_prompt(self.tokenizer, conversation, placeholders)

    def chat(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[str]:
        return self.generate_ids([self.encode(c) for c in conversations], params, desc)

    def complete(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[Completion]:
        """Replies with their finish reason (``length`` when the budget ran out first)."""
        g = self._generate([self.encode(c) for c in conversations], params, desc)
        return [Completion(t, finish_reason=f) for t, f in zip(g.texts, g.finish)]

    def generate_ids(
        self,
        prompts: Sequence[list[int]],
        params: GenParams | Sequence[GenParams],
        desc: str = "generate",
    ) -> list[str]:
        """Generate from token-id prompts; returns decoded continuations in input order.

        ``params`` may give each prompt its own settings (the service batches requests
        this way): rows then share one :func:`~peerdiff.backends.base.sampling_key` and
        each keeps its own token budget and repetition penalty.
        """
        return self._generate(prompts, params, desc).texts

    batch_key = staticmethod(sampling_key)

    def generate_scored(
        self,
        prompts: Sequence[list[int]],
        targets: Sequence[list[int]],
        params: GenParams,
        desc: str = "generate",
        soft_fn: Callable[[list[int]], torch.Tensor] | None = None,
        injector: Injector | None = None,
    ) -> tuple[list[str], list[float]]:
        """Generate and, from the same prefill of each prompt, the summed NLL of its target.

        The prompt is prefilled once for both: the targets are teacher-forced on top of the
        prompt's KV cache (no repetition penalty: the model's own probabilities), then the
        cache is cut back to the prompt and decoding starts. Outputs equal
        :meth:`generate_ids` / :meth:`generate_soft`; the sums equal
        :func:`peerdiff.probe.target_nll` up to float rounding (different batching).

        Returns:
            ``(texts, nll_sums)`` in input order (``sum / len(target)`` is nats per token).
        """
        if (soft_fn is None) != (injector is None):
            raise ValueError("soft_fn and injector go together")
        g = self._generate(prompts, params, desc, soft_fn, injector, targets=targets)
        return g.texts, g.nll_sums

    def generate_soft(
        self,
        prompts: Sequence[list[int]],
        soft_fn: Callable[[list[int]], torch.Tensor],
        injector: Injector,
        params: GenParams,
        desc: str = "generate",
    ) -> list[str]:
        """Generate from prompts whose placeholder tokens get soft vectors.

        Args:
            soft_fn: prompt indices -> ``(len(indices), n_tokens, hidden)`` soft tokens.
            injector: maps placeholder ids to soft-token positions (``model.inject``).
        """
        return self._generate(prompts, params, desc, soft_fn, injector).texts

    def _generate(
        self,
        prompts: Sequence[list[int]],
        params: GenParams | Sequence[GenParams],
        desc: str,
        soft_fn: Callable[[list[int]], torch.Tensor] | None = None,
        injector: Injector | None = None,
        targets: Sequence[list[int]] | None = None,
    ) -> Generation:
        rows = per_row(params, len(prompts))
        if len({sampling_key(p) for p in rows}) > 1:
            raise ValueError("prompts generated together must share their sampling settings")
        params = rows[0] if rows else params
        placeholders = injector.table >= 0 if injector is not None else None
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out = Generation([""] * len(prompts), ["stop"] * len(prompts))
        if targets is not None:
            out.nll_sums = [0.0] * len(prompts)
        pad = self.tokenizer.pad_token_id
        bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=len(prompts) <= 1)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            batch = [prompts[i] for i in idx]
            shared = shared_prefix(batch, placeholders)
            ids, mask = pad_batch(batch, pad, shared)
            ids, mask = ids.to(self.device), mask.to(self.device)
            gen = torch.Generator(device="cpu").manual_seed(params.seed + b)
            emb = injector(ids, soft_fn(idx).to(self.device)) if soft_fn is not None else None
            tg = None if targets is None else [targets[i] for i in idx]
            d = self.decode(ids, mask, [rows[i] for i in idx], emb, gen, shared, tg)
            for row, toks in enumerate(d.tokens):
                i = idx[row]
                out.texts[i] = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
                # EOS is never kept: a full-length output ran out of budget
                out.finish[i] = "length" if len(toks) >= rows[i].max_new_tokens else "stop"
                if d.nll_sums is not None:
                    out.nll_sums[i] = d.nll_sums[row]
            bar.update(len(idx))
        bar.close()
        return out

    @torch.inference_mode()
    @_with_skinny_head
    def decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        params: GenParams | Sequence[GenParams],
        inputs_embeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        shared: int = 0,
        targets: Sequence[list[int]] | None = None,
    ) -> Decoded:
        """Batched decoding with a KV cache; finished rows leave the batch.

        Args:
            ids, mask: ``(batch, seq)`` padded prompts from :func:`pad_batch` (placeholder ids
                allowed when ``inputs_embeds`` is given).
            params: one setting for every row, or one per row (sharing the sampling
                settings; each row stops at its own ``max_new_tokens`` and applies its own
                repetition penalty and scope).
            inputs_embeds: ``(batch, seq, hidden)`` prompt embeddings (soft prompts).
            shared: leading columns identical in every row (no soft token among them): they
                are computed once and their KV cache is repeated over the batch.
            targets: token ids per row to score after the prompt (see
                :meth:`generate_scored`); then the summed NLL of each row's target is
                returned too.

        Returns:
            The generated token ids of each row (EOS excluded) and, with ``targets``, the
            summed NLL of each row's target.

        The repetition penalty (CTRL / transformers semantics: positive logits divided,
        negative multiplied) covers the row's generated tokens, and with
        ``penalty_scope == "prompt"`` its real prompt tokens too (transformers'
        behaviour; it suppresses exactly the words a personal prompt offers). Padding and
        placeholders are not tokens, so a row's output does not depend on the other rows of
        its batch.
        """
        model = self.model
        ckw = cache_kw(model)
        eos = self.tokenizer.eos_token_id
        vocab = model.get_input_embeddings().weight.shape[0]
        B = ids.shape[0]
        rows = per_row(params, B)
        params = rows[0]  # the sampling settings every row shares
        budget = torch.tensor([p.max_new_tokens for p in rows], device=ids.device)
        max_new = int(budget.max())
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, logits = self._prefill(ids, mask, pos, inputs_embeds, shared, max_new)
        sums = None
        if targets is not None:
            sums = self._score(logits, targets, cache, mask, pos[:, -1] + 1)
        factor = torch.tensor([[p.repetition_penalty] for p in rows], device=ids.device)
        penalty = bool((factor != 1.0).any())  # a factor of 1.0 leaves its row's logits exact
        seen = None
        if penalty:
            seen = torch.zeros(B, vocab, dtype=torch.bool, device=ids.device)
            scoped = torch.tensor([p.penalty_scope == "prompt" for p in rows], device=ids.device)
            r, c = ((mask == 1) & (ids < vocab) & scoped[:, None]).nonzero(as_tuple=True)
            seen[r, ids[r, c]] = True
        alive = torch.arange(B, device=ids.device)
        nxt_pos = pos[:, -1] + 1
        outs: list[list[int]] = [[] for _ in range(B)]
        for step in range(max_new):
            if penalty:
                f = factor[alive]
                logits = torch.where(
                    seen[alive], torch.where(logits > 0, logits / f, logits * f), logits
                )
            tok = self._pick(logits, params, generator)
            for r, t in zip(alive.tolist(), tok.tolist()):
                if t != eos and step < rows[r].max_new_tokens:
                    outs[r].append(t)
            keep = (tok != eos) & (budget[alive] > step + 1)  # ended, or out of budget
            if not keep.any():
                break
            if penalty:
                seen[alive, tok] = True
            if not keep.all():
                k = keep.nonzero().squeeze(1)
                cache.batch_select_indices(k)
                alive, tok, mask, nxt_pos = alive[k], tok[k], mask[k], nxt_pos[k]
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
            logits = (
                model(
                    input_ids=tok[:, None],
                    attention_mask=mask,
                    position_ids=nxt_pos[:, None],
                    use_cache=True,
                    **{ckw: cache},
                )
                .logits[:, -1]
                .float()
            )
            nxt_pos = nxt_pos + 1
        return Decoded(outs, sums)

    def _prefill(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        inputs_embeds: torch.Tensor | None,
        shared: int,
        room: int,
    ):
        """The prompts' KV cache (``room`` spare positions) and last-position logits.

        The shared prefix runs once on one row. The rest runs in groups of rows of similar
        length, each only as wide as its longest row: padding costs as much as a token in
        a prefill, and one long prompt among short ones (a RAG review among chats) would
        pad every row to its length. The groups' caches are then laid side by side, each
        row's part right-aligned, the gap masked as padding already is (positions count
        real tokens only, so nothing a row attends to moves).
        """
        model, ckw = self.model, cache_kw(self.model)
        B, total = ids.shape

        def run(cols: slice, rows, cache, keep_mask: torch.Tensor):
            x = inputs_embeds if inputs_embeds is not None else ids
            key = "inputs_embeds" if inputs_embeds is not None else "input_ids"
            out = model(
                **{key: x[rows, cols]},
                attention_mask=keep_mask,
                position_ids=pos[rows, cols],
                use_cache=True,
                logits_to_keep=1,
                **{ckw: cache},
            )
            return out.logits[:, -1].float()

        if not (0 < shared < total and B > 1):
            shared = 0
        groups = length_groups(mask[:, shared:].sum(1).tolist())
        cache = reserved_cache(room)
        if shared:  # the common prefix once
            run(slice(0, shared), slice(0, 1), cache, mask[:1, :shared])
        if len(groups) == 1:
            if shared:
                cache.batch_repeat_interleave(B)
            return cache, run(slice(shared, None), slice(None), cache, mask)
        logits = torch.empty(B, model.get_output_embeddings().out_features, device=ids.device)
        parts = []
        for g in groups:
            idx = torch.tensor(g, device=ids.device)
            start = total - int(mask[idx, shared:].sum(1).max())  # the group's width
            gc = reserved_cache(0)
            if shared:
                for i, layer in enumerate(cache.layers):
                    gc.update(
                        *(x.expand(len(g), -1, -1, -1) for x in (layer.keys, layer.values)), i
                    )
            keep = torch.cat([mask[idx, :shared], mask[idx, start:]], dim=1)
            logits[idx] = run(slice(start, None), idx, gc, keep)
            parts.append((idx, start, gc))
        merged = reserved_cache(room)
        for i in range(len(parts[0][2].layers)):
            k0 = parts[0][2].layers[i].keys
            kv = [k0.new_zeros(B, k0.shape[1], total, k0.shape[3]) for _ in range(2)]
            for idx, start, gc in parts:
                layer = gc.layers[i]
                for full, x in zip(kv, (layer.keys, layer.values)):
                    full[idx, :, :shared] = x[:, :, :shared]
                    full[idx, :, start:] = x[:, :, shared:]
            merged.update(kv[0], kv[1], i)
        return merged, logits

    def _score(
        self,
        last: torch.Tensor,
        targets: Sequence[list[int]],
        cache,
        mask: torch.Tensor,
        start: torch.Tensor,
        chunk: int = 1024,
    ) -> list[float]:
        """Summed NLL of each row's target after its prompt, the cache left at the prompt.

        ``last``: the logits at each prompt's last position (they score the first target
        token); the rest of each target is fed right-padded on top of the cache, the LM head
        applied only at real positions (``chunk`` at a time), then the cache cut back.
        """
        import torch.nn.functional as F

        B, dev = len(targets), mask.device
        n = [len(t) for t in targets]
        sums = torch.zeros(B, dtype=torch.float64)
        first = [r for r in range(B) if n[r]]
        if first:
            tok = torch.tensor([targets[r][0] for r in first], device=dev)
            lp = F.cross_entropy(last[first], tok, reduction="none")
            sums[first] += lp.double().cpu()
        width = max(n, default=0) - 1
        if width <= 0:
            return sums.tolist()
        fed = torch.full((B, width), self.tokenizer.pad_token_id, dtype=torch.long)
        fmask = torch.zeros((B, width), dtype=mask.dtype)
        labels = torch.full((B, width), -100, dtype=torch.long)
        for r, t in enumerate(targets):
            k = len(t) - 1
            if k > 0:
                fed[r, :k] = torch.tensor(t[:-1])
                fmask[r, :k] = 1
                labels[r, :k] = torch.tensor(t[1:])
        fed, fmask, labels = fed.to(dev), fmask.to(dev), labels.to(dev)
        body = decoder_of(self.model)
        h = body(
            input_ids=fed,
            attention_mask=torch.cat([mask, fmask], dim=1),
            position_ids=start[:, None] + torch.arange(width, device=dev),
            use_cache=True,
            **{cache_kw(body): cache},
        ).last_hidden_state
        sel = labels != -100
        rows = sel.nonzero()[:, 0]
        hs, ys = h[sel], labels[sel]
        head = self.model.get_output_embeddings()
        for a in range(0, len(ys), chunk):
            lp = F.cross_entropy(
                head(hs[a : a + chunk]).float(), ys[a : a + chunk], reduction="none"
            )
            sums.index_add_(0, rows[a : a + chunk].cpu(), lp.double().cpu())
        cache.crop(-width)  # back to the prompt: decoding overwrites the target's room
        return sums.tolist()

    @staticmethod
    def _pick(
        logits: torch.Tensor, params: GenParams, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Greedy argmax, or temperature + top-p (nucleus) sampling."""
        if not params.do_sample:
            return logits.argmax(-1)
        probs = torch.softmax(logits / params.temperature, dim=-1)
        sp, si = probs.sort(dim=-1, descending=True)
        cut = sp.cumsum(-1) - sp > params.top_p  # keep the smallest set reaching top_p
        sp = sp.masked_fill(cut, 0.0)
        choice = torch.multinomial(
            sp.cpu() / sp.sum(-1, keepdim=True).cpu(), 1, generator=generator
        )
        return si.gather(-1, choice.to(si.device)).squeeze(-1)
