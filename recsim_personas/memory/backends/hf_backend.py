"""The ``hf`` backend: a local transformers chat model writes the distillation text, batched.

The model comes from :func:`recsim_personas.agents.llm.load_causal_lm` (``config.model``: ``None``
for the packaged SmolLM2-135M-Instruct, or a hub id / local path), or is passed in ready-made
(``model=``, ``tokenizer=``; tests pass a tiny random model). Prompts are the same as the
``openai`` backend's (:mod:`recsim_personas.memory.prompts`), rendered with the tokenizer's chat
template; requests are generated ``config.generation_batch_size`` at a time with left padding.

Decoding: greedy when ``config.temperature == 0`` on the first attempt; a retry (after an answer was
rejected) samples with temperature ``max(config.temperature, 0.7)`` from a generator seeded with
``config.seed + attempt``, since greedy decoding of the corrected prompt can repeat the same
mistake. Small models often fail the JSON format: the distiller then falls back to the template
text (``fallback="auto"``) and records every rejected answer in the log.

Measured on the project's 2-core CPU (shared, 1 torch thread): the packaged SmolLM2-135M-Instruct
does not follow these prompts. Greedy decoding echoes the prompt ("TASK: update my profile. MY
SOCIAL TRAITS: ..."), and even with the answer primed by ``{"taste": "I`` it loops on one phrase;
one user with two batches of 5 took 700 s for 12 generations (about 4 tokens/s under load), every
step ending in the template fallback. Use this backend with an instruct model of a billion
parameters or more (Qwen2.5-1.5B-Instruct, Phi-3-mini) on a GPU; offline here, ``template`` is the
practical default.
"""

from __future__ import annotations

from typing import Any

from recsim_personas.errors import BackendError
from recsim_personas.memory.backends.steps import StepRequest, StepResponse
from recsim_personas.memory.prompts import PROMPT_VERSION, build_messages

__all__ = ["HFBackend"]

_RETRY_TEMPERATURE = 0.7


class HFBackend:
    """Distillation text from a local causal LM (see the module docstring).

    Args:
        config: A :class:`~recsim_personas.memory.distill_config.DistillConfig` (``model``, ``device``,
            ``dtype``, ``generation_batch_size``, ``max_new_tokens``, ``temperature``, ``seed``).
        model: A loaded causal LM (skips loading); needs ``tokenizer`` too.
        tokenizer: The tokenizer of ``model``; it must have a chat template.

    Raises:
        BackendError: ``model`` without ``tokenizer``, or a tokenizer without a chat template.
        ModelError: the model cannot be loaded (from ``load_causal_lm``).
    """

    name = "hf"

    def __init__(self, config: Any = None, *, model: Any = None, tokenizer: Any = None) -> None:
        if config is None:
            from recsim_personas.memory.distill_config import DistillConfig

            config = DistillConfig(backend="hf")
        self.config = config
        if (model is None) != (tokenizer is None):
            raise BackendError("HFBackend: pass both model= and tokenizer=, or neither")
        if model is None:
            from recsim_personas.agents.llm import load_causal_lm

            model, tokenizer = load_causal_lm(config.model, device=config.device, dtype=config.dtype)
            self.model_name = config.model or "smollm2-135m-instruct"
        else:
            self.model_name = str(getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__)
        if getattr(tokenizer, "chat_template", None) is None:
            raise BackendError(
                f"tokenizer of {self.model_name!r} has no chat template; the hf backend needs an "
                "instruct/chat model (e.g. the default SmolLM2-135M-Instruct)"
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.model = model
        self.tokenizer = tokenizer
        self.parallelism = int(config.generation_batch_size)
        self.generations = 0
        self.generated_tokens = 0

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model_name,
            "dtype": str(getattr(self.model, "dtype", "")),
            "temperature": self.config.temperature,
            "seed": self.config.seed,
            "max_new_tokens": self.config.max_new_tokens,
            "prompt_version": PROMPT_VERSION,
        }

    def usage(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "generations": self.generations,
            "generated_tokens": self.generated_tokens,
        }

    def run(self, requests: list[StepRequest]) -> list[StepResponse]:
        out: list[StepResponse | None] = [None] * len(requests)
        # Requests with the same attempt number share decoding settings: generate them together.
        by_attempt: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            by_attempt.setdefault(req.attempt, []).append(i)
        size = max(1, self.parallelism)
        for attempt, indices in sorted(by_attempt.items()):
            for start in range(0, len(indices), size):
                chunk = indices[start:start + size]
                texts = self._generate([requests[i] for i in chunk], attempt)
                for i, text in zip(chunk, texts, strict=True):
                    out[i] = StepResponse(text=text)
        return [r if r is not None else StepResponse(error=BackendError("no answer")) for r in out]

    def _generate(self, requests: list[StepRequest], attempt: int) -> list[str]:
        import torch

        tok = self.tokenizer
        prompts = [
            tok.apply_chat_template(build_messages(r), tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(self.config.max_new_tokens),
            "pad_token_id": tok.pad_token_id,
        }
        temperature = float(self.config.temperature)
        if attempt > 0 or temperature > 0:
            kwargs.update(do_sample=True, temperature=max(temperature, _RETRY_TEMPERATURE), top_p=0.95)
            torch.manual_seed(int(self.config.seed) + attempt)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            output = self.model.generate(**enc, **kwargs)
        new = output[:, enc["input_ids"].shape[1]:]
        self.generations += len(requests)
        self.generated_tokens += int((new != tok.pad_token_id).sum())
        return [tok.decode(row, skip_special_tokens=True) for row in new]
