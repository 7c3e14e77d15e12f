"""The hf backend: batched chat generation with a tiny random model, and its explicit fallback."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingDataset, RatingScale
from recsim_personas.errors import BackendError
from recsim_personas.memory import DistillConfig, distill_users, make_backend

GENRES = ("Horror", "Romance", "Comedy", "Drama")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_dataset(n_users: int = 2, per_user: int = 8) -> RatingDataset:
    rng = np.random.default_rng(3)
    n_items = 20
    items = pd.DataFrame(
        {
            "title": [f"Picture {i}" for i in range(1, n_items + 1)],
            "year": pd.array([1970 + i for i in range(n_items)], dtype="Int64"),
            "genres": [(GENRES[i % 4],) for i in range(n_items)],
            "description": [None] * n_items,
            "director": [None] * n_items,
            "cast": [None] * n_items,
        },
        index=pd.Index(np.arange(1, n_items + 1), name="item_id"),
    )
    rows = [
        (u, int(i), float(rng.integers(1, 6)), 100 * u + k)
        for u in range(1, n_users + 1)
        for k, i in enumerate(rng.choice(n_items, per_user, replace=False) + 1)
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return RatingDataset("tiny", inter, items, pd.DataFrame(), RatingScale(1, 5, 1))


def test_hf_backend_distils_two_users_and_falls_back_on_garbage(tiny_lm):
    model, tokenizer = tiny_lm
    ds = make_dataset()
    config = DistillConfig(backend="hf", batch_size=4, max_new_tokens=16, max_retries=1,
                           generation_batch_size=2, seed=0)
    backend = make_backend("hf", config=config, model=model, tokenizer=tokenizer)
    result = distill_users(ds, None, ds.interactions, backend, config, progress=False)

    n_steps = 2 * 2 * 3  # users x batches x (update, enrich, reflect)
    assert len(result.profiles) == 2
    assert len(result.memories) == len(ds.interactions)
    assert result.usage["backend_generations"] == n_steps * 2  # first try + one retry each
    log = result.log
    rejected = log[log.reason == "invalid_output"]
    assert len(rejected) == n_steps * 2
    assert sorted(set(rejected.attempt)) == [0, 1]
    assert rejected.detail.str.contains("not a JSON object").all()
    fallbacks = log[log.reason == "fallback_template"]
    assert len(fallbacks) == n_steps
    assert set(zip(fallbacks.user_id, fallbacks.batch, fallbacks.step, strict=True)) == {
        (u, b, s) for u in (1, 2) for b in (0, 1) for s in ("update", "enrich", "reflect")
    }
    # The retry samples (seeded) instead of repeating the greedy answer.
    first = rejected[rejected.attempt == 0].detail.str.extract(r"answer starts (.*)$")[0]
    second = rejected[rejected.attempt == 1].detail.str.extract(r"answer starts (.*)$")[0]
    assert (first.to_numpy() != second.to_numpy()).any()
    # The fallback is exactly the template text, so the profiles equal a template run's.
    template = distill_users(ds, None, ds.interactions, config=DistillConfig(batch_size=4),
                             progress=False)
    pd.testing.assert_frame_equal(result.profiles, template.profiles)
    pd.testing.assert_frame_equal(result.memories, template.memories)


def test_hf_backend_without_fallback_names_user_and_batch(tiny_lm):
    model, tokenizer = tiny_lm
    ds = make_dataset(n_users=1, per_user=4)
    config = DistillConfig(backend="hf", batch_size=4, max_new_tokens=8, max_retries=0,
                           fallback="error")
    backend = make_backend("hf", config=config, model=model, tokenizer=tokenizer)
    with pytest.raises(BackendError, match=re.escape(
        "user 1, batch 1/1, step update: 1 answers rejected, last invalid_output"
    )):
        distill_users(ds, None, ds.interactions, backend, config, progress=False)


def test_hf_backend_needs_model_and_tokenizer_together(tiny_lm):
    model, _ = tiny_lm
    with pytest.raises(BackendError, match="pass both model= and tokenizer="):
        make_backend("hf", config=DistillConfig(backend="hf"), model=model)
