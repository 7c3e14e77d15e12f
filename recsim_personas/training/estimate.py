"""How long a Table-1 experiment will take here: per-token costs measured now, times the plan's tokens.

:func:`measure_rates` trains two steps on 8 real train rows of one user (one shared-prefix group)
and scores 8 real test rows with the base model, on this machine under its current load (about a
minute with SmolLM2-135M on 2 CPU cores). :func:`estimate_experiment` turns the measured seconds per
token into the plan's training and evaluation time (:meth:`ExperimentPlan.estimate_seconds`);
finished adapters and evaluations count zero, so a resumed run's estimate covers what is left.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["estimate_experiment", "measure_rates"]


def measure_rates(model: Any, tokenizer: Any, run_dir: str | Path, dataset: Any, config: Any) -> dict[str, float]:
    """Seconds per token of LoRA training and of scoring on this machine, now.

    The first training step (allocations, lazy initialisation) is not counted.
    """
    from recsim_personas.agents.lm_agent import LMUserAgent
    from recsim_personas.agents.scoring import RatingScorer
    from recsim_personas.data.splits import Split
    from recsim_personas.memory.pipeline import run_item_catalog
    from recsim_personas.memory.store import MemoryStore
    from recsim_personas.training.lora import train_adapter
    from recsim_personas.training.rows import build_training_rows

    run_dir = Path(run_dir)
    split = Split.load(run_dir / "split")
    catalog = run_item_catalog(run_dir, dataset, split)
    store = MemoryStore.from_run_dir(run_dir, catalog=catalog)
    user = int(split.train["user_id"].iloc[0])
    rows = build_training_rows(store, catalog, split.train[split.train["user_id"] == user].head(8),
                               memory_mode="ms", scale=dataset.scale, tokenizer=tokenizer, named_items="keep")
    tcfg = config.train_config().replace(max_steps=3, epochs=3.0, checkpoint_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_adapter(model, tokenizer, rows, tcfg, Path(tmp) / "a", name="measure", progress=False)
    per_step_tokens = res.train_tokens / max(1, res.steps)
    step_seconds = res.curve[-1]["seconds"] - res.curve[0]["seconds"]
    train_rate = step_seconds / (per_step_tokens * max(1, res.steps - 1))
    test = split.test[split.test["user_id"].isin(split.test["user_id"].unique()[:2])].groupby("user_id").head(4)
    scorer = RatingScorer(model, tokenizer, dataset.scale)
    agent = LMUserAgent(scorer, store, catalog, memory_mode="ms")
    prompts = agent.prompts(test["user_id"].tolist(), test["item_id"].tolist())
    scorer.score(prompts[:1])  # warm-up
    scorer.clear_cache()
    n_tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in {p.prefix for p in prompts})
    n_tokens += sum(len(tokenizer(p.suffix, add_special_tokens=False)["input_ids"]) for p in prompts)
    t0 = time.perf_counter()
    scorer.score(prompts)
    eval_rate = (time.perf_counter() - t0) / n_tokens
    return {"train_s_per_token": round(train_rate, 6), "eval_s_per_token": round(eval_rate, 6)}


def estimate_experiment(plan: Any, rates: dict[str, float]) -> dict[str, Any]:
    """``{"train", "eval", "total"}`` seconds and the lines to print, from a plan with token estimates."""
    est = plan.estimate_seconds(rates["train_s_per_token"], rates["eval_s_per_token"])
    todo_train = sum(a["train_tokens"] for a in plan.adapters if not a["done"])
    todo_eval = sum(e["eval_tokens"] for e in plan.evaluations if not e["done"])
    lines = [
        f"adapters to train: {sum(not a['done'] for a in plan.adapters)} of {len(plan.adapters)} "
        f"({sum(a['rows'] for a in plan.adapters if not a['done']):,} rows, {todo_train:,} tokens); "
        f"rows to evaluate: {sum(not e['done'] for e in plan.evaluations)} of {len(plan.evaluations)} "
        f"({sum(e['test_rows'] for e in plan.evaluations if not e['done']):,} ratings, {todo_eval:,} tokens)",
        f"estimated time: training {est['train'] / 3600:.1f} h + evaluation {est['eval'] / 3600:.1f} h = "
        f"{est['total'] / 3600:.1f} h at {1000 * rates['train_s_per_token']:.2f} ms per training token and "
        f"{1000 * rates['eval_s_per_token']:.2f} ms per scored token (measured now; model loads and row "
        "building not included). Interrupt at any time: a re-run resumes from the checkpoints.",
    ]
    return {**est, "rates": dict(rates), "lines": lines}
