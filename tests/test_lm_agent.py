"""LMUserAgent on a tiny random llama over the real SmolLM2 tokenizer, with stand-in store/catalog.

Tolerances as in test_scoring (tests/tolerances.py): FP32_PATH_ATOL between code paths,
fp32_sum_atol for sums of float32 probabilities; the anchored exit on an empty session equals the
hazard to 1e-9 because the model term cancels (the anchor is the same empty-session prompt,
scored in the same batch).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from tolerances import FP32_PATH_ATOL, fp32_sum_atol

from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
from recsim_personas.agents.prompts import PromptMemory, build_exit_prompt, build_rating_prompt
from recsim_personas.agents.protocol import SessionEvent, UserAgent
from recsim_personas.agents.scoring import RatingScorer
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import AdapterError, ConfigError

STARS = RatingScale(1, 5, 1)


class FakeCatalog:
    def info(self, item_id: int):
        return SimpleNamespace(item_id=item_id, title=f"Movie {item_id}", year=1990 + item_id % 20,
                               genres=("Drama",), avg_rating=3.5, description=f"Plot {item_id}.", cast=None)


class FakeStore:
    """The MemoryStore surface the agent uses; records retrieval calls."""

    users = np.array([1, 2, 3])

    def __init__(self):
        self.calls = []

    def profile(self, user_id):
        return f"PERSONA: user {user_id}. " + "I enjoy quiet films. " * user_id

    def profile_row(self, user_id):
        return {"activity": f"Activity of user {user_id}."}

    def persona(self, user_id):
        return {1: 0, 2: 1, 3: 0}[int(user_id)]

    def retrieve_batch(self, user_ids, item_ids, k=1, delta=0.0, exclude_items=None):
        self.calls.append((list(user_ids), list(item_ids), k, delta, list(exclude_items)))
        return [[SimpleNamespace(item_id=100 + u, rating=4.0, text=f"I rated movie {100 + u} as 4 because.",
                                 similarity=0.5)][:k] for u in user_ids]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _peft(model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(3)
    peft_model = get_peft_model(model, cfg, adapter_name="persona_0__ms")
    peft_model.add_adapter("persona_1__ms", cfg)
    peft_model.eval()
    return peft_model


def test_rate_scores_the_prompts_it_builds(tiny_lm):
    model, tok = tiny_lm
    scorer = RatingScorer(model, tok, STARS)
    agent = LMUserAgent(scorer, FakeStore(), FakeCatalog())
    assert isinstance(agent, UserAgent)
    users, items = [1, 2, 1, 3], [10, 11, 12, 10]
    batch = agent.rate(users, items)
    assert batch.probs.shape == (4, 5) and batch.valid.all()
    np.testing.assert_allclose(batch.probs.sum(axis=1), 1.0, rtol=0, atol=fp32_sum_atol(batch.probs.shape[1]))
    manual = [build_rating_prompt("paper", FakeStore().profile(u), FakeCatalog().info(i), [], STARS, tokenizer=tok)
              for u, i in zip(users, items)]
    assert agent.prompts(users, items) == manual
    ref = RatingScorer(model, tok, STARS, prefix_cache=False).score(manual)
    np.testing.assert_allclose(batch.probs, ref.probs, atol=FP32_PATH_ATOL)
    assert scorer.cache_info()["entries"] == 3  # one prefix per user
    assert agent.sample(batch).shape == (4,)


def test_msml_retrieves_memories_excluding_the_rated_item(tiny_lm):
    model, tok = tiny_lm
    store = FakeStore()
    agent = LMUserAgent(RatingScorer(model, tok, STARS), store, FakeCatalog(), memory_mode="msml", k=2, delta=0.3)
    prompts = agent.prompts([1, 2], [10, 11])
    assert store.calls == [([1, 2], [10, 11], 2, 0.3, [10, 11])]
    assert "MY MEMORY: Plot 101.. I rated movie 101 as 4 because." not in prompts[0].suffix
    assert "MY MEMORY: Plot 101. I rated movie 101 as 4 because." in prompts[0].suffix
    expected = build_rating_prompt("paper", store.profile(1), FakeCatalog().info(10),
                                   [PromptMemory(FakeCatalog().info(101), "I rated movie 101 as 4 because.")],
                                   STARS, tokenizer=tok)
    assert prompts[0] == expected
    assert agent.rate([1, 2], [10, 11]).probs.shape == (2, 5)


def test_adapter_routing_and_unknown_adapter(tiny_lm):
    model, tok = tiny_lm
    peft_model = _peft(model)
    store = FakeStore()
    scorer = RatingScorer(peft_model, tok, STARS)
    agent = LMUserAgent(scorer, store, FakeCatalog(), adapter_for=adapter_naming(store, "persona", "ms"))
    users, items = [1, 2, 3, 2], [5, 6, 7, 8]
    got = agent.rate(users, items)
    names = ["persona_0__ms", "persona_1__ms", "persona_0__ms", "persona_1__ms"]
    ref = RatingScorer(peft_model, tok, STARS, prefix_cache=False).score(agent.prompts(users, items), names)
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)
    with pytest.raises(AdapterError, match=re.escape("unknown adapter 'persona_0__msml'")):
        LMUserAgent(scorer, store, FakeCatalog(), adapter_for=adapter_naming(store, "persona", "msml"))
    with pytest.raises(AdapterError, match=re.escape("Did you mean 'persona_1__ms'?")):
        LMUserAgent(scorer, store, FakeCatalog(), adapter_for=lambda u: "persona_1_ms")


def test_bad_options_have_did_you_mean(tiny_lm):
    model, tok = tiny_lm
    scorer = RatingScorer(model, tok, STARS)
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'generate'?")):
        LMUserAgent(scorer, FakeStore(), FakeCatalog(), mode="generat")
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'msml'?")):
        LMUserAgent(scorer, FakeStore(), FakeCatalog(), memory_mode="msm")
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'compact'?")):
        LMUserAgent(scorer, FakeStore(), FakeCatalog(), template="compat")


def test_generate_mode_reports_validity(tiny_lm):
    model, tok = tiny_lm
    agent = LMUserAgent(RatingScorer(model, tok, STARS), FakeStore(), FakeCatalog(), mode="generate", seed=4)
    batch = agent.rate([1, 2, 3], [1, 2, 3])
    assert len(agent.last_texts) == 3
    assert batch.valid.dtype == bool and batch.valid.shape == (3,)
    np.testing.assert_allclose(batch.probs.sum(axis=1), 1.0, rtol=0, atol=fp32_sum_atol(batch.probs.shape[1]))


def test_leave_probability_scores_the_exit_prompt(tiny_lm):
    model, tok = tiny_lm
    scorer = RatingScorer(model, tok, STARS)
    agent = LMUserAgent(scorer, FakeStore(), FakeCatalog(), exit_calibration="raw")
    sessions = [[SessionEvent(4, 5.0)], [], [SessionEvent(4, 1.0), SessionEvent(7, float("nan"))]]
    p = agent.leave_probability([1, 2, 3], sessions)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    prompt = build_exit_prompt(FakeStore().profile(3), "Activity of user 3.",
                               [("Movie 4 (1994)", 1.0), ("Movie 7 (1997)", float("nan"))], STARS, tokenizer=tok)
    assert agent.exit_prompts([3], sessions[2:]) == [prompt]
    probs, _ = RatingScorer(model, tok, STARS, prefix_cache=False).choice_probs([prompt], options=("A", "B"))
    assert p[2] == pytest.approx(probs[0, 1], abs=FP32_PATH_ATOL)


class LeveledStore(FakeStore):
    def profile_row(self, user_id):
        return {"activity": f"Activity of user {user_id}.", "activity_level": {1: 0, 2: 2, 3: None}[int(user_id)]}


def test_anchored_exit_is_the_hazard_shifted_by_the_models_change_of_mind(tiny_lm):
    model, tok = tiny_lm
    hazard = (0.3, 0.2, 0.05)
    calls = []

    class CountingScorer(RatingScorer):
        def choice_probs(self, prompts, adapter_names=None, options=("A", "B")):
            calls.append(len(prompts))
            return super().choice_probs(prompts, adapter_names, options)

    raw = LMUserAgent(RatingScorer(model, tok, STARS), LeveledStore(), FakeCatalog(), exit_calibration="raw")
    agent = LMUserAgent(CountingScorer(model, tok, STARS), LeveledStore(), FakeCatalog(), exit_hazard=hazard)
    users = [1, 2, 3]
    empty = [[], [], []]
    # Before anything is shown the user leaves at the activity level's hazard (user 3 has none: mid).
    np.testing.assert_allclose(agent.leave_probability(users, empty), [0.3, 0.05, 0.2], atol=1e-9)
    assert calls == [6]  # 3 prompts + 3 anchors, one scoring call
    sessions = [[SessionEvent(4, 5.0)], [SessionEvent(4, 1.0), SessionEvent(5, 1.0)], [SessionEvent(7, float("nan"))]]
    p = agent.leave_probability(users, sessions)
    assert calls == [6, 3]  # the anchors are cached per user
    p_raw, p_raw0 = raw.leave_probability(users, sessions), raw.leave_probability(users, empty)

    def logit(x):
        return np.log(x / (1 - x))

    want = 1 / (1 + np.exp(-(logit(np.array([0.3, 0.05, 0.2])) + logit(p_raw) - logit(p_raw0))))
    np.testing.assert_allclose(p, want, atol=FP32_PATH_ATOL)
    assert not np.allclose(p, p_raw, atol=1e-3)


def test_exit_settings_are_checked(tiny_lm):
    model, tok = tiny_lm
    scorer = RatingScorer(model, tok, STARS)
    with pytest.raises(ConfigError, match="exit_hazard"):
        LMUserAgent(scorer, FakeStore(), FakeCatalog(), exit_hazard=(0.2, 1.0, 0.1))
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'anchored'?")):
        LMUserAgent(scorer, FakeStore(), FakeCatalog(), exit_calibration="anchor")


@pytest.mark.integration
def test_agent_on_a_real_run_folder(tiny_lm, tmp_path):
    """The real MemoryStore and ItemCatalog of a template-distilled run on 6 ml-latest-small users."""
    from recsim_personas.data.item_catalog import ItemCatalog
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories

    model, tok = tiny_lm
    dataset = load_dataset("ml-latest-small")
    config = MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=3, n_init=2))
    split = SplitConfig(min_interactions=30, max_interactions=60, n_users=6, seed=0)
    run = build_memories(dataset, split, config, tmp_path / "run", progress=False)
    store = run.store()
    train = pd.read_parquet(tmp_path / "run" / "split" / "train.parquet")
    test = pd.read_parquet(tmp_path / "run" / "split" / "test.parquet")
    catalog = ItemCatalog(dataset, train)
    scale = dataset.scale
    agent = LMUserAgent(RatingScorer(model, tok, scale), store, catalog, memory_mode="msml")
    rows = test.groupby("user_id").head(2)
    batch = agent.rate(rows["user_id"].tolist(), rows["item_id"].tolist())
    assert batch.probs.shape == (len(rows), scale.n_levels)
    assert "MY MEMORY: I rated movie" in agent.prompts(rows["user_id"].tolist()[:1], rows["item_id"].tolist()[:1])[0].suffix
    p = agent.leave_probability(rows["user_id"].tolist()[:2], [[SessionEvent(int(rows["item_id"].iat[0]), 4.0)], []])
    assert p.shape == (2,)


def test_warm_cache_computes_each_prefix_once_and_answers_do_not_change(tiny_lm):
    model, tok = tiny_lm

    class Catalog(FakeCatalog):
        item_ids = np.array([10, 11])

    hazard = (0.3, 0.2, 0.05)
    scorer = RatingScorer(model, tok, STARS)
    agent = LMUserAgent(scorer, LeveledStore(), Catalog(), exit_hazard=hazard)
    assert agent.warm_cache([1, 2, 3], progress=False) == 6  # a rating and an exit prefix per user
    assert agent.warm_cache([1, 2, 3], progress=False) == 0  # all cached
    misses = scorer.cache_info()["misses"]
    sessions = [[SessionEvent(4, 5.0)], [], [SessionEvent(7, 1.0)]]
    rated = agent.rate([1, 2, 3], [10, 12, 13])
    leave = agent.leave_probability([1, 2, 3], sessions)
    np.testing.assert_allclose(agent.leave_probability([1, 2, 3], [[], [], []]), [0.3, 0.05, 0.2], atol=1e-9)
    assert scorer.cache_info()["misses"] == misses  # steps computed no prefix and no anchor
    cold = LMUserAgent(RatingScorer(model, tok, STARS), LeveledStore(), Catalog(), exit_hazard=hazard)
    np.testing.assert_allclose(cold.rate([1, 2, 3], [10, 12, 13]).probs, rated.probs, atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(cold.leave_probability([1, 2, 3], sessions), leave, atol=FP32_PATH_ATOL)
    only_rating = LMUserAgent(RatingScorer(model, tok, STARS), LeveledStore(), Catalog())
    assert only_rating.warm_cache([1, 2, 3], exits=False, progress=False) == 3
