"""The LLM backends of a run, each created once on first use.

- :attr:`Backends.local`: the in-process transformers model of the ``llm`` section (training,
  soft-token injection and target likelihood always use it);
- :attr:`Backends.engine`: what generates for the ``llm`` section (the local model, or vLLM
  with ``llm.engine: vllm``);
- :meth:`Backends.role`: the backend doing a role (``generator``, ``extractor``...) per
  ``roles`` and ``backends``.

:meth:`Backends.identity` is what stage keys record about a backend: the model and the dtype
``llm.dtype`` resolves to (``auto``: bfloat16 on a GPU, float32 on a CPU), never the engine,
device or thread count (they do not change what is computed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config imports the method registry, not the other way round
    from peerdiff.config import RunConfig


class Backends:
    """Args:
    cfg: the run's configuration.
    local: an already loaded local backend to use (tests pass a tiny model)."""

    def __init__(self, cfg: RunConfig, local=None) -> None:
        self.cfg = cfg
        self._local = local
        self._vllm = None
        self._named: dict[str, Any] = {}

    @property
    def local(self):
        """The in-process transformers model (:class:`peerdiff.backends.hf.HFBackend`)."""
        if self._local is None:
            from peerdiff.backends.hf import HFBackend

            c = self.cfg
            self._local = HFBackend.load(
                c.llm.model,
                c.cache_dir,
                c.llm.device,
                c.llm.dtype,
                c.generate.batch_size,
                c.llm.threads,
            )
        return self._local

    @property
    def engine(self):
        """The generation engine of the ``llm`` section (local model or vLLM)."""
        if self.cfg.llm.engine == "vllm":
            if self._vllm is None:
                from peerdiff.backends.vllm import VLLMBackend
                from peerdiff.model.llm import dtype_name, resolve_llm

                llm = self.cfg.llm
                dtype = dtype_name(llm.dtype, llm.device)
                cpu = llm.device == "cpu" or (llm.device == "auto" and not _has_cuda())
                self._vllm = VLLMBackend(
                    resolve_llm(llm.model, self.cfg.cache_dir),
                    dtype=dtype,
                    enforce_eager=cpu,
                    tokenizer=self.local.tokenizer,  # placeholders keep their ids
                )
            return self._vllm
        return self.local

    def release_engine(self) -> None:
        """Stop a vLLM engine (its process, threads and memory) when a stage is done with
        it; the next stage that generates starts a new one. Transformers work in the same
        process runs many times slower while the engine is alive."""
        if self._vllm is not None:
            self._vllm.close()
            self._vllm = None

    def is_local(self, name: str) -> bool:
        """True when backend ``name`` is the ``llm`` section's model."""
        b = self.cfg.backends[name]
        return b.type == "hf" and (b.model or self.cfg.llm.model) == self.cfg.llm.model

    def named(self, name: str):
        """The backend called ``name`` in ``cfg.backends``."""
        if self.is_local(name):
            return self.engine
        if name not in self._named:
            b = self.cfg.backends[name]
            if b.type == "hf":
                from peerdiff.backends.hf import HFBackend

                c = self.cfg
                self._named[name] = HFBackend.load(
                    b.model,
                    c.cache_dir,
                    c.llm.device,
                    c.llm.dtype,
                    c.generate.batch_size,
                    c.llm.threads,
                )
            else:
                from peerdiff.backends.openai import OpenAIBackend

                self._named[name] = OpenAIBackend(
                    b.model, b.base_url, b.api_key_env, b.concurrency, b.timeout, b.max_retries
                )
        return self._named[name]

    def role(self, role: str):
        """The backend doing ``role`` per ``cfg.roles``."""
        return self.named(getattr(self.cfg.roles, role))

    def scores_locally(self, role: str = "generator") -> bool:
        """Whether ``role`` runs on a transformers model here (so likelihoods exist)."""
        return self.cfg.backends[getattr(self.cfg.roles, role)].type == "hf"

    def scoring(self, role: str = "generator"):
        """The transformers model behind ``role`` (for target likelihood), or ``None`` when the
        role runs on a server."""
        name = getattr(self.cfg.roles, role)
        if self.is_local(name):
            return self.local
        return self.named(name) if self.cfg.backends[name].type == "hf" else None

    def identity(self, name: str) -> dict[str, Any]:
        """What a stage key records about backend ``name``."""
        from peerdiff.model.llm import dtype_name

        b = self.cfg.backends[name]
        dtype = dtype_name(self.cfg.llm.dtype, self.cfg.llm.device)
        if self.is_local(name):
            return {"model": self.cfg.llm.model, "dtype": dtype}
        if b.type == "hf":
            return {"model": b.model, "dtype": dtype}
        return {"openai": b.model, "base_url": b.base_url}

    def role_identity(self, role: str) -> dict[str, Any]:
        name = getattr(self.cfg.roles, role)
        b = self.cfg.backends[name]
        ident = self.identity(name)
        if b.reasoning or b.instructions != "system":  # what reaches the model changes
            ident = {**ident, "reasoning": b.reasoning, "instructions": b.instructions}
            if b.reasoning:
                ident["reasoning_tokens"] = b.reasoning_tokens
        return ident

    def role_config(self, role: str):
        """The :class:`BackendConfig` of the backend doing ``role``."""
        return self.cfg.backends[getattr(self.cfg.roles, role)]

    def budget(self, role: str, answer_tokens: int) -> int:
        """A role's token budget: its answer budget, plus the thinking budget of a reasoning
        backend."""
        b = self.role_config(role)
        return answer_tokens + (b.reasoning_tokens if b.reasoning else 0)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
