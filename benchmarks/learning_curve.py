"""Benchmark: RMSE and per-user Spearman of one theta_single adapter against its number of train rows.

Commands (from the project root)::

    .venv/bin/python benchmarks/learning_curve.py --smoke                  # whole path in minutes
    .venv/bin/python benchmarks/learning_curve.py --points 1000            # one point (about an hour)
    nohup nice -n 19 .venv/bin/python benchmarks/learning_curve.py --points 1000,4000,all \\
        > runs/learning-curve.log 2>&1 &                                   # the curve (many hours)

Re-running the same command skips finished points and resumes an interrupted adapter from its last
checkpoint (Ctrl-C, SIGTERM, ``--max-minutes``); the numbers are those of an uninterrupted run.

Protocol (the paper's split, as ``benchmarks/fidelity.py``): ML-1M users 1-2999 from
``../shared/data/ml-1m-users-1-2999``, 200 users with 100-200 ratings (seed 0), each user's oldest
60% train, newest 40% test (``PAPER_SPLIT``); memories from ``MemoryPipelineConfig.paper()`` (offline
template distillation, item averages from every rating the dataset holds except the evaluated users'
test rows, ``item_stats="dataset"``) in ``runs/learning-curve``. For each point N: ONE theta_single
adapter, memory mode M_s, the ``cpu`` LoRA preset with its step cap lifted (``max_steps=None``: the
preset's one epoch over all N rows; with the cap of 200 steps every N above about 1,600 rows would
train on the same number of rows), dtype from the preset (``auto``).

Train rows: every leak-free M_s row of the 200 users
(:func:`~recsim_personas.training.rows.build_training_rows`: leave-one-out item averages, rows whose
item the profile names dropped), then per user a seeded random order and the first ``q_u`` rows, with
``q_u`` proportional to the user's row count (largest remainder, totals exactly N). Because the order
is fixed once, the rows of a smaller N are a subset of a larger N's (checked). ``cap_per_user`` /
``subsample_to_size`` would not give that: each call draws afresh, so their 1k rows are not inside
their 4k rows.

Test rows: ONE seeded sample of 2,000 of the 11,324 test rows, the same for every N and every
baseline, scored with ``LMUserAgent`` + ``RatingScorer`` + ``evaluate_agent`` in ``score`` mode
(headline: the expectation of the rating distribution) in fixed chunks of whole users, each chunk
cached, so an interrupted scoring resumes. Baselines (global mean, user+item bias, biased MF) are
fitted on the same ratings the agent's item averages come from (the run's rating pool) and scored on
the same 2,000 rows; ``paired_difference`` gives the paired bootstrap interval (over users) of agent
minus bias, and of agent minus biased MF.

Writes ``results/learning-curve.json`` (``config``, ``git``, ``versions``, ``hardware``,
``load_average``, ``metrics``: finished points, pending points with their estimated remaining time,
baselines, timings, tokens/s) and ``results/learning-curve.png`` (RMSE and per-user Spearman against
N with the baselines as reference lines), after every finished point.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-1m-users-1-2999"
DEFAULT_RUN = ROOT / "runs" / "learning-curve"
BASELINES = ("global-mean", "bias", "biased-mf")
BASELINE_LABEL = {"global-mean": "global mean", "bias": "user+item bias", "biased-mf": "biased MF"}
MEMORY_MODE = "ms"
TEMPLATE = "paper"
CHUNK_ROWS = 250
#: Seconds per scored rating for estimates until this machine has measured it (about 2 ratings/s:
#: the README's agent throughput table, warm M_s ratings on the idle 2-core machine).
ASSUMED_SCORE_S = 0.5
_FORMAT = 1

#: Settings per budget: users (None = all 200), test rows, the points when --points is not given,
#: and LoraTrainConfig overrides of the ``cpu`` preset.
BUDGETS: dict[str, dict[str, Any]] = {
    "full": {"users": None, "test_rows": 2000, "points": "1000,4000,all",
             "train_overrides": {"max_steps": None}},
    "smoke": {"users": 20, "test_rows": 50, "points": "20,40",
              "train_overrides": {"max_steps": 1}},
}


class OutOfTime(Exception):
    """``--max-minutes`` ran out; raised from the training callback after a step (checkpointed)."""


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def parse_points(text: str, n_all: int) -> list[tuple[str, int]]:
    """``"1000,4000,all"`` -> ``[("1000", 1000), ("4000", 4000), ("all", n_all)]`` (ascending)."""
    out: dict[int, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            out[n_all] = "all"
            continue
        try:
            n = int(part.replace("_", ""))
        except ValueError:
            raise SystemExit(f"--points: {part!r} is neither an integer nor 'all'") from None
        if not 1 <= n <= n_all:
            raise SystemExit(f"--points: {n} is outside 1..{n_all} (the leak-free train rows)")
        out.setdefault(n, part)
    return [(out[n], n) for n in sorted(out)]


def nested_quotas(counts: Any, sizes: list[int], seed: int) -> dict[int, Any]:
    """Rows per user for each total in ``sizes``: proportional to ``counts``, largest remainder.

    The tie-break jitter is drawn once, so the quotas of a smaller total never exceed a larger one's
    (checked; with 60-120 rows per user and totals 4x apart it cannot fail).
    """
    import numpy as np

    counts = np.asarray(counts, dtype=np.int64)
    jitter = np.random.default_rng([seed, 1]).random(len(counts))
    total = int(counts.sum())
    out = {}
    for n in sorted(sizes):
        exact = counts * (n / total)
        quota = np.floor(exact).astype(np.int64)
        short = n - int(quota.sum())
        if short:
            order = np.lexsort((jitter, -(exact - quota)))
            quota[order[:short]] += 1
        out[n] = quota
    ordered = [out[n] for n in sorted(sizes)]
    for small, big in itertools.pairwise(ordered):
        if (small > big).any():
            raise RuntimeError("per-user quotas are not nested; the 1k rows would not be inside the 4k rows")
    return out


def nested_rows(rows: Any, sizes: list[int], seed: int) -> dict[int, Any]:
    """``{N: the rows of point N}``: per user a seeded order, the first ``quota`` rows (input order kept)."""
    import numpy as np

    users = rows["user_id"].to_numpy()
    uniq = np.unique(users)
    rng = np.random.default_rng([seed, 0])
    order = {int(u): rng.permutation(np.flatnonzero(users == u)) for u in uniq}
    counts = [len(order[int(u)]) for u in uniq]
    quotas = nested_quotas(counts, sizes, seed)
    out = {}
    for n, quota in quotas.items():
        idx = np.sort(np.concatenate([order[int(u)][: int(q)] for u, q in zip(uniq, quota, strict=True)]))
        out[n] = rows.iloc[idx].reset_index(drop=True)
    return out


def approx_steps(rows: Any, batch_size: int, seed: int) -> int:
    """Optimizer steps of one epoch, approximately: a user's rows in groups of at most
    ``batch_size``, groups packed greedily in a seeded order (the trainer's own schedule differs
    only in its order). For estimates only; the real count is in the adapter's record."""
    import numpy as np

    sizes = []
    for c in rows.groupby("user_id").size().to_numpy():
        g = math.ceil(c / batch_size)
        sizes += [len(p) for p in np.array_split(np.arange(c), g)]
    steps, cur = 0, 0
    for i in np.random.default_rng(seed).permutation(len(sizes)):
        if cur and cur + sizes[i] > batch_size:
            steps, cur = steps + 1, 0
        cur += sizes[i]
    return steps + (1 if cur else 0)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


class LearningCurve:
    """The state of one invocation: run folder, model, rows, test sample, cached points."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.budget = "smoke" if args.smoke else "full"
        self.settings = BUDGETS[self.budget]
        self.run_dir: Path = args.run_dir
        self.work = self.run_dir / ("curve-smoke" if args.smoke else "curve")
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + 60 * args.max_minutes if args.max_minutes else None
        self.timings: dict[str, float] = {}
        self.progress = sys.stderr.isatty() and not args.quiet

    # -- set-up --------------------------------------------------------------------------------
    def prepare(self) -> None:
        import numpy as np
        import torch

        from recsim_personas.agents.llm import load_causal_lm
        from recsim_personas.artifacts import atomic_write_parquet, file_digest, stable_hash
        from recsim_personas.data.registry import load_dataset
        from recsim_personas.data.splits import PAPER_SPLIT, Split
        from recsim_personas.memory.pipeline import (
            MemoryPipelineConfig,
            build_memories,
            run_item_catalog,
        )
        from recsim_personas.memory.statistics import rating_pool
        from recsim_personas.memory.store import MemoryStore
        from recsim_personas.training.config import LoraTrainConfig
        from recsim_personas.training.experiment import persona_map, select_users
        from recsim_personas.training.rows import build_training_rows, rows_digest

        torch.set_num_threads(self.args.threads)
        t0 = time.perf_counter()
        self.dataset = load_dataset("ml-1m", self.args.data_dir)
        self.memory_config = MemoryPipelineConfig.paper()
        memory = build_memories(self.dataset, PAPER_SPLIT, self.memory_config, self.run_dir, progress=self.progress)
        self.timings["memory"] = round(time.perf_counter() - t0, 1)
        log("memory stages (" + str(self.run_dir) + "): " + ", ".join(
            f"{s} {t.seconds:.0f} s" if t.ran else f"{s} cached" for s, t in memory.timings.items()))
        self.split = Split.load(self.run_dir / "split")
        self.scale = self.split.scale or self.dataset.scale
        self.catalog = run_item_catalog(self.run_dir, self.dataset, self.split)
        self.store = MemoryStore.from_run_dir(self.run_dir, catalog=self.catalog)
        self.personas = persona_map(self.run_dir)
        self.users = select_users(self.personas, self.settings["users"], seed=self.args.seed)
        self.tcfg = LoraTrainConfig.preset("cpu", **self.settings["train_overrides"])
        self.model, self.tokenizer = load_causal_lm(None, device="cpu", dtype=self.tcfg.dtype)
        self.model_name = str(getattr(self.model.config, "_name_or_path", ""))
        self.max_tokens = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048) - 8
        log(f"model {self.model_name}, dtype {next(self.model.parameters()).dtype}, torch threads "
            f"{torch.get_num_threads()}; {len(self.users)} users")

        # Every leak-free M_s train row of the users, built once and cached.
        self.work.mkdir(parents=True, exist_ok=True)
        train = self.split.train[self.split.train["user_id"].isin(self.users)].reset_index(drop=True)
        rows_inputs = {"format": _FORMAT, "train": rows_digest(train.astype(str), ("user_id", "item_id", "rating")),
                       "memories": file_digest(self.run_dir / "memories.parquet"),
                       "profiles": file_digest(self.run_dir / "profiles.parquet"),
                       "item_stats": self.memory_config.item_stats, "mode": MEMORY_MODE, "template": TEMPLATE,
                       "model": self.model_name, "max_tokens": self.max_tokens}
        path = self.work / f"train-rows-{stable_hash(rows_inputs)[:12]}.parquet"
        t0 = time.perf_counter()
        if path.is_file():
            import pandas as pd

            self.all_rows = pd.read_parquet(path)
            dropped = None
        else:
            log(f"building leak-free {MEMORY_MODE} rows for {len(train):,} train interactions ...")
            self.all_rows = build_training_rows(
                self.store, self.catalog, train, memory_mode=MEMORY_MODE, template=TEMPLATE, scale=self.scale,
                tokenizer=self.tokenizer, max_tokens=self.max_tokens)
            dropped = int(self.all_rows.attrs.get("dropped_named", 0))
            atomic_write_parquet(path, self.all_rows)
            (path.with_suffix(".json")).write_text(json.dumps({"dropped_named": dropped}))
        if dropped is None and path.with_suffix(".json").is_file():
            dropped = json.loads(path.with_suffix(".json").read_text())["dropped_named"]
        self.timings["rows"] = round(time.perf_counter() - t0, 1)
        self.train_interactions = len(train)
        self.dropped_named = dropped
        log(f"{len(self.all_rows):,} leak-free train rows of {len(train):,} interactions "
            f"({dropped} dropped: the profile names the item)")

        # One seeded test sample, the same for every point and baseline.
        test = self.split.test[self.split.test["user_id"].isin(self.users)]
        n_test = min(self.settings["test_rows"], len(test))
        pick = np.sort(np.random.default_rng(self.args.seed).choice(len(test), size=n_test, replace=False))
        self.test = test.iloc[pick][["user_id", "item_id", "rating"]].sort_values(
            ["user_id", "item_id"], kind="stable").reset_index(drop=True)
        self.test_hash = rows_digest(self.test.astype(str), ("user_id", "item_id", "rating"))
        self.pool = rating_pool(self.dataset, self.split.train, self.split.test, self.memory_config.item_stats)
        # Chunks of whole users (fixed, so a resumed scoring is the uninterrupted one).
        bounds, start, users = [], 0, self.test["user_id"].to_numpy()
        while start < len(users):
            stop = min(len(users), start + CHUNK_ROWS)
            while stop < len(users) and users[stop] == users[stop - 1]:
                stop += 1
            bounds.append((start, stop))
            start = stop
        self.chunks = bounds
        log(f"test sample: {len(self.test):,} of {len(test):,} test rows ({self.test['user_id'].nunique()} users, "
            f"seed {self.args.seed}, {len(bounds)} chunks); rating pool for item averages and baselines: "
            f"{len(self.pool):,} ratings ({self.memory_config.item_stats})")

    # -- baselines -----------------------------------------------------------------------------
    def baselines(self) -> tuple[dict[str, Any], Any]:
        """Each baseline fitted on the pool, its metrics on the test sample; plus the predictions."""
        import numpy as np

        from recsim_personas.baselines.registry import make_baseline
        from recsim_personas.eval.fidelity import fidelity_metrics, point_distribution

        frame = self.test.copy()
        out = {}
        for name in BASELINES:
            kwargs: dict[str, Any] = {"scale": self.scale}
            if name == "biased-mf":
                kwargs["seed"] = self.args.seed
            t0 = time.perf_counter()
            model = make_baseline(name, **kwargs).fit(self.pool)
            fit_s = time.perf_counter() - t0
            frame[name] = np.asarray(model.predict(frame["user_id"].to_numpy(), frame["item_id"].to_numpy()),
                                     dtype=float)
            m = fidelity_metrics(frame, self.scale, predicted=name,
                                 distribution=point_distribution(frame[name].to_numpy(), self.scale))
            m.pop("histogram", None)
            out[name] = {"model": name, "fit_rows": len(self.pool), "fit_seconds": round(fit_s, 2), **m}
            log(f"baseline {name}: RMSE {m['rmse']:.4f}, Spearman {m['spearman']}")
        return out, frame

    # -- one point -----------------------------------------------------------------------------
    def point_rows(self, sizes: list[int]) -> dict[int, Any]:
        return nested_rows(self.all_rows, sizes, self.args.seed)

    def point_inputs(self, n: int, rows: Any) -> dict[str, Any]:
        from recsim_personas.training.rows import rows_digest

        return {"format": _FORMAT, "n": n, "rows": rows_digest(rows), "lora": self.tcfg.to_dict(),
                "model": self.model_name, "test": self.test_hash, "mode": MEMORY_MODE, "template": TEMPLATE,
                "eval_mode": "score", "chunk_rows": CHUNK_ROWS, "seed": self.args.seed,
                "dtype": str(next(self.model.parameters()).dtype)}

    def point_path(self, label: str) -> Path:
        return self.work / "points" / f"n{label}.json"

    def cached_point(self, label: str, inputs_hash: str) -> dict[str, Any] | None:
        path = self.point_path(label)
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return doc if doc.get("inputs_hash") == inputs_hash else None

    def save_progress(self, note: dict[str, Any]) -> None:
        """The running point's state for ``--report-only`` (another process) and the estimates."""
        from recsim_personas.artifacts import atomic_write_text

        _write_json(atomic_write_text, self.work / "progress.json", {**note, "pid": os.getpid(), "updated": time.time(),
                                                        "load_average": load_average()})

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def run_point(self, label: str, n: int, rows: Any, baseline_frame: Any,
                  progress_note: dict[str, Any]) -> dict[str, Any] | None:
        """Train, score and measure point N; ``None`` when --max-minutes stopped it (resumable)."""
        import pandas as pd

        from recsim_personas.agents.llm import load_adapters
        from recsim_personas.agents.lm_agent import LMUserAgent
        from recsim_personas.agents.scoring import RatingScorer
        from recsim_personas.artifacts import atomic_write_parquet, atomic_write_text, stable_hash
        from recsim_personas.eval.agent_eval import evaluate_agent, point_metrics
        from recsim_personas.eval.fidelity import fidelity_metrics, paired_difference
        from recsim_personas.training.lora import read_adapter_info, train_adapter

        inputs = self.point_inputs(n, rows)
        inputs_hash = stable_hash(inputs)
        cached = self.cached_point(label, inputs_hash)
        if cached is not None:
            log(f"point N={n:,}: cached (RMSE {cached['agent']['rmse']:.4f})")
            return cached
        name = f"single_n{label}__{MEMORY_MODE}"
        folder = self.work / "adapters" / name
        est_steps = approx_steps(rows, self.tcfg.batch_size, self.args.seed)
        if self.tcfg.max_steps is not None:
            est_steps = min(est_steps, self.tcfg.max_steps)
        progress_note.update({"label": label, "n": n, "phase": "train", "steps_done": 0,
                              "steps_estimate": est_steps})
        t_run = time.perf_counter()
        state = {"last": t_run}

        def on_step(step: int, loss: float) -> None:
            now = time.perf_counter()
            if "resumed_from" not in progress_note:
                progress_note["resumed_from"] = step - 1
            progress_note.update(steps_done=step, seconds_this_run=now - t_run)
            self.save_progress(progress_note)
            if step % 10 == 0 or step == 1:
                rate = (now - t_run) / max(1, step - (progress_note.get("resumed_from") or 0))
                left = max(0, est_steps - step) * rate
                log(f"  N={n:,} step {step}/~{est_steps} loss {loss:.3f} ({rate:.1f} s/step this run, "
                    f"~{left / 60:.0f} min of training left; load {load_average()})")
            state["last"] = now
            if self.out_of_time():
                raise OutOfTime

        if self.out_of_time():
            return None
        log(f"point N={n:,}: training {name} ({len(rows):,} rows of {rows['user_id'].nunique()} users, "
            f"~{est_steps} steps, lr {self.tcfg.learning_rate:g}, r {self.tcfg.r}, epochs {self.tcfg.epochs:g}, "
            f"max_steps {self.tcfg.max_steps})")
        try:
            result = train_adapter(self.model, self.tokenizer, rows, self.tcfg, folder, name=name,
                                   progress=self.progress, callback=on_step)
        except OutOfTime:
            log(f"point N={n:,}: --max-minutes reached during training; checkpoint kept in {folder}")
            return None
        if result.cached:
            log(f"point N={n:,}: adapter cached ({result.steps} steps, {result.wall_seconds:.0f} s)")
        else:
            log(f"point N={n:,}: trained {result.steps} steps in {result.wall_seconds:.0f} s "
                f"(resumed from {result.resumed_from_step}), loss {result.first_loss:.3f} -> {result.final_loss:.3f}")
        run_key = read_adapter_info(folder)["run_key"]

        # Scoring, in fixed chunks of whole users, each cached.
        progress_note.update(phase="score", chunks_done=0, chunks=len(self.chunks), steps_done=result.steps)
        self.save_progress(progress_note)
        chunk_dir = self.work / "points" / f"n{label}-chunks"
        score_inputs = stable_hash({"adapter": run_key, **inputs})
        parts, scoring_seconds, scored_now = [], 0.0, 0
        peft_model = None
        scorer = agent = None
        try:
            for i, (a, b) in enumerate(self.chunks):
                path = chunk_dir / f"chunk{i:03d}-{score_inputs[:12]}.parquet"
                if path.is_file():
                    parts.append(pd.read_parquet(path))
                    continue
                if self.out_of_time():
                    log(f"point N={n:,}: --max-minutes reached after {i} of {len(self.chunks)} scoring chunks")
                    return None
                if agent is None:
                    peft_model = load_adapters(self.model, {name: folder})
                    scorer = RatingScorer(peft_model, self.tokenizer, self.scale, max_batch=16, seed=self.args.seed)
                    agent = LMUserAgent(scorer, self.store, self.catalog, memory_mode=MEMORY_MODE,
                                        adapter_for=lambda _u: name, template=TEMPLATE, mode="score",
                                        seed=self.args.seed)
                scorer.clear_cache()
                t0 = time.perf_counter()
                ev = evaluate_agent(agent, self.test.iloc[a:b], personas=self.personas, name=f"{name} chunk {i}",
                                    batch_size=64, seed=self.args.seed + i, progress=self.progress)
                scoring_seconds += time.perf_counter() - t0
                scored_now += b - a
                atomic_write_parquet(path, ev.predictions)
                parts.append(ev.predictions)
                progress_note.update(chunks_done=i + 1, score_s_per_row=scoring_seconds / scored_now)
                self.save_progress(progress_note)
                log(f"  N={n:,} scored chunk {i + 1}/{len(self.chunks)} ({b - a} rows, "
                    f"{(b - a) / max(ev.seconds, 1e-9):.1f} ratings/s)")
        finally:
            if peft_model is not None:
                peft_model.unload()  # the plain base model again for the next point
        pred = pd.concat(parts, ignore_index=True)
        frame = pred.merge(baseline_frame[["user_id", "item_id", *BASELINES]], on=["user_id", "item_id"],
                           how="left", validate="one_to_one")
        metrics = fidelity_metrics(frame, self.scale)
        points = point_metrics(frame, self.scale)
        paired = {ref: paired_difference(frame, "expectation", ref, n_boot=2000, seed=self.args.seed)
                  for ref in ("bias", "biased-mf")}
        import numpy as np

        info = read_adapter_info(folder)
        doc = {
            "label": label, "n_requested": n, "inputs_hash": inputs_hash, "inputs": inputs,
            "adapter": {"name": name, "folder": str(folder), "run_key": run_key, "n_rows": result.n_rows,
                        "n_users": info.get("n_users"), "steps": result.steps,
                        "steps_per_epoch": info.get("steps_per_epoch"), "epochs": result.epochs,
                        "train_tokens": result.train_tokens, "train_seconds": result.wall_seconds,
                        "tokens_per_s": result.train_tokens / max(result.wall_seconds, 1e-9),
                        "rows_per_s": result.n_rows * result.epochs / max(result.wall_seconds, 1e-9),
                        "first_loss": result.first_loss, "final_loss": result.final_loss,
                        "resumed_from_step": info.get("resumed_from_step"), "dtype": info.get("base_dtype"),
                        "load_average_at_end": load_average()},
            "agent": {**metrics, "corr_with_bias": float(np.corrcoef(frame["expectation"], frame["bias"])[0, 1])},
            "point_metrics": points,
            "paired": paired,
            "scoring": {"rows": len(frame), "seconds_this_run": round(scoring_seconds, 1),
                        "rows_this_run": scored_now,
                        "ratings_per_s": scored_now / scoring_seconds if scoring_seconds else None},
            "seconds_this_run": round(time.perf_counter() - t_run, 1),
        }
        atomic_write_parquet(self.work / "points" / f"n{label}-predictions.parquet", frame)
        _write_json(atomic_write_text, self.point_path(label), doc)
        p = paired["bias"]
        log(f"point N={n:,}: RMSE {metrics['rmse']:.4f} (bias {baseline_frame.attrs['bias_rmse']:.4f}; "
            f"agent - bias {p['rmse_diff']:+.4f} [{p['rmse_diff_ci'][0]:+.4f}, {p['rmse_diff_ci'][1]:+.4f}]), "
            f"Spearman {metrics['spearman']:.3f}")
        return doc


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def estimate_pending(pending: list[tuple[str, int, Any]], finished: list[dict[str, Any]], note: dict[str, Any],
                     n_test: int, steps_for: dict[str, int]) -> list[dict[str, Any]]:
    """Remaining seconds per pending point from this machine's measured rates (an estimate)."""
    s_per_step = None
    if finished:
        a = finished[-1]["adapter"]
        s_per_step = a["train_seconds"] / max(1, a["steps"])
    elif note.get("steps_done"):
        done = note["steps_done"] - (note.get("resumed_from") or 0)
        if done > 0 and note.get("seconds_this_run"):
            s_per_step = note["seconds_this_run"] / done
    score_s = note.get("score_s_per_row")
    if score_s is None and finished and finished[-1]["scoring"].get("ratings_per_s"):
        score_s = 1.0 / finished[-1]["scoring"]["ratings_per_s"]
    out = []
    for label, n, _rows in pending:
        steps = steps_for[label]
        done = note.get("steps_done", 0) if note.get("label") == label else 0
        entry: dict[str, Any] = {"label": label, "n": n, "status": "pending", "steps_estimate": steps,
                                 "steps_done": done}
        if note.get("label") == label:
            entry["in_progress"] = {k: note.get(k) for k in ("phase", "steps_done", "chunks_done", "chunks",
                                                             "pid", "updated", "load_average") if k in note}
            if note.get("phase") == "score":
                entry["steps_done"] = steps
        if s_per_step is not None:
            train_left = 0.0 if entry["steps_done"] >= steps else (steps - entry["steps_done"]) * s_per_step
            score_left = n_test * (score_s if score_s is not None else ASSUMED_SCORE_S)
            scoring = (f"{score_s:.2f} s per scored rating (measured)" if score_s is not None else
                       f"{ASSUMED_SCORE_S:.2f} s per scored rating (assumed, not measured yet: the agent "
                       "throughput table's warm M_s rate on the idle machine)")
            entry["remaining_seconds_estimate"] = round(train_left + score_left)
            entry["estimate_basis"] = (f"{s_per_step:.1f} s per optimizer step (measured on this machine, "
                                       f"load {load_average()}) times the approximate steps left; {scoring}")
        out.append(entry)
    return out


def plot(points: list[dict[str, Any]], baselines: dict[str, Any], pending: list[dict[str, Any]],
         path: Path, n_test: int, n_users: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from recsim_personas.artifacts import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    styles = {"global-mean": ":", "bias": "--", "biased-mf": "-."}
    colors = {"global-mean": "0.5", "bias": "tab:red", "biased-mf": "tab:green"}
    xs = [p["adapter"]["n_rows"] for p in points]
    all_x = xs + [p["n"] for p in pending]
    lo, hi = (min(all_x), max(all_x)) if all_x else (100, 20000)
    for ax, key, label in ((axes[0], "rmse", "RMSE (expected rating, per rating)"),
                           (axes[1], "spearman", "Spearman (per user, mean)")):
        for name in BASELINES:
            value = baselines[name].get(key)
            if value is None:  # a constant predictor has no per-user ranking
                continue
            ax.axhline(value, ls=styles[name], color=colors[name], lw=1.4,
                       label=f"{BASELINE_LABEL[name]} {value:.3f}")
        ys = [p["agent"][key] for p in points]
        values = ys + [baselines[n][key] for n in BASELINES if baselines[n].get(key) is not None]
        if points:
            ax.plot(xs, ys, "o-", color="tab:blue", lw=2, ms=7, label="theta_single (M_s), SmolLM2-135M")
            for x, y, p in zip(xs, ys, points, strict=True):
                d = p["paired"]["bias"]
                diff, ci = (d["rmse_diff"], d["rmse_diff_ci"]) if key == "rmse" else (
                    d["spearman_diff"], d["spearman_diff_ci"])
                ax.annotate(f"{y:.3f}\nvs bias {diff:+.3f}\n[{ci[0]:+.3f}, {ci[1]:+.3f}]", (x, y),
                            textcoords="offset points", xytext=(0, -10), ha="center", va="top", fontsize=8,
                            color="tab:blue")
        for p in pending:
            ax.axvline(p["n"], color="0.6", lw=1, ls=(0, (2, 3)))
            state = "scoring" if (p.get("in_progress") or {}).get("phase") == "score" else (
                f"{p.get('steps_done', 0)}/~{p.get('steps_estimate', '?')} steps")
            ax.annotate(f"N={p['n']:,} pending\n({state})", (p["n"], 0.35), xycoords=("data", "axes fraction"),
                        fontsize=8, color="0.35", ha="center", va="center", rotation=90,
                        bbox={"fc": "white", "ec": "none", "alpha": 0.8})
        if not points:
            ax.text(0.5, 0.7, "no agent point finished yet (CPU time)", transform=ax.transAxes, ha="center",
                    fontsize=9, color="0.3", bbox={"fc": "white", "ec": "0.7"})
        # A floor on the range, so two close reference lines do not fill the panel.
        mid = (max(values) + min(values)) / 2
        span = max(max(values) - min(values), 0.25 if key == "rmse" else 0.3)
        low, high = mid - 0.5 * span - 0.45 * span, mid + 0.5 * span + 0.3 * span
        if key == "spearman":
            low, high = max(low, -1.0), min(high, 1.0)
        ax.set_ylim(low, high)
        ax.set_xscale("log")
        ax.set_xlim(lo / 2.2, hi * 1.8)
        ticks = sorted(set(all_x))
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:,}" for t in ticks]))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("train rows (one epoch, cpu LoRA preset)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper right" if key == "rmse" else "lower right")
    axes[0].set_title("RMSE against train rows (lower is better)", fontsize=10)
    axes[1].set_title("Per-user Spearman against train rows (higher is better)", fontsize=10)
    fig.suptitle(f"Learning curve on the same {n_test:,} test ratings of {n_users} users (ML-1M paper split). "
                 "Annotations: agent minus bias, 95% paired bootstrap over users", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _write_json(write_text: Any, path: Path, doc: dict[str, Any]) -> None:
    """A cache file (a finished point, the progress note) as indented JSON, written atomically."""
    write_text(path, json.dumps(doc, indent=1, default=str))


def write_report(lc: LearningCurve, finished: list[dict[str, Any]], pending: list[dict[str, Any]],
                 baselines: dict[str, Any], out: Path, png: Path, command: str) -> None:
    import torch

    from recsim_personas.benchmarking import write_results
    from recsim_personas.data.splits import PAPER_SPLIT

    points = [{k: p[k] for k in ("label", "n_requested", "adapter", "agent", "point_metrics", "paired", "scoring")}
              for p in finished]
    for p in points:
        p["agent"] = {k: v for k, v in p["agent"].items() if k != "histogram"}
        p["status"] = "finished"
    lines = [f"{'N rows':>8} {'RMSE':>7} {'MAE':>7} {'Spearman':>9} {'NDCG@10':>8} {'RMSE-bias [95%]':>26} "
             f"{'Spear-bias [95%]':>26} {'train s':>8} {'tok/s':>6}"]
    for p in finished:
        a, d = p["agent"], p["paired"]["bias"]
        lines.append(f"{p['adapter']['n_rows']:>8,} {a['rmse']:>7.4f} {a['mae']:>7.4f} {a['spearman']:>9.3f} "
                     f"{a['ndcg@10']:>8.3f} {d['rmse_diff']:>+8.4f} [{d['rmse_diff_ci'][0]:+.4f}, "
                     f"{d['rmse_diff_ci'][1]:+.4f}] {d['spearman_diff']:>+8.3f} [{d['spearman_diff_ci'][0]:+.3f}, "
                     f"{d['spearman_diff_ci'][1]:+.3f}] {p['adapter']['train_seconds']:>8.0f} "
                     f"{p['adapter']['tokens_per_s']:>6.0f}")
    for name in BASELINES:
        b = baselines[name]
        rho = "-" if b["spearman"] is None else f"{b['spearman']:.3f}"
        ndcg = "-" if b["ndcg@10"] is None else f"{b['ndcg@10']:.3f}"
        lines.append(f"{BASELINE_LABEL[name]:>8} {b['rmse']:>7.4f} {b['mae']:>7.4f} {rho:>9} {ndcg:>8}")
    for p in pending:
        est = p.get("remaining_seconds_estimate")
        lines.append(f"{p['n']:>8,} pending ({p['steps_done']}/~{p['steps_estimate']} steps"
                     + (f", about {est / 3600:.1f} h left)" if est is not None else ")"))
    table = "\n".join(lines)
    print("\n" + table + "\n", flush=True)
    config = {
            "budget": lc.budget, "data_dir": str(lc.args.data_dir), "run_dir": str(lc.run_dir),
            "split": PAPER_SPLIT.to_dict(),
            "memory": lc.memory_config.to_dict(), "memory_mode": MEMORY_MODE, "template": TEMPLATE,
            "lora_preset": "cpu", "lora": lc.tcfg.to_dict(), "eval_mode": "score",
            "headline": "expectation of the rating distribution", "users": len(lc.users),
            "train_interactions": lc.train_interactions, "leak_free_train_rows": len(lc.all_rows),
            "dropped_named_rows": lc.dropped_named, "test_rows": len(lc.test), "test_sample_seed": lc.args.seed,
            "test_digest": lc.test_hash, "rating_pool_rows": len(lc.pool), "chunk_rows": CHUNK_ROWS,
            "row_selection": "per user a seeded random order; first q_u rows, q_u proportional to the user's "
                             "rows (largest remainder); smaller N nested in larger N",
            "torch_threads": torch.get_num_threads(), "model": lc.model_name,
            "dtype": str(next(lc.model.parameters()).dtype).replace("torch.", ""),
        }
    metrics = {
            "points": points, "pending": pending,
            "baselines": [baselines[n] for n in BASELINES],
            "timings": {**lc.timings, "this_invocation": round(time.perf_counter() - lc.t_start, 1)},
            "averaging": "rmse/mae/auc per rating; spearman and ndcg@10 per user (mean over users); paired "
                         "intervals resample users (2,000 draws)",
        }
    write_results(out, benchmark="learning_curve", config=config,
                  metrics={**metrics, "partial": bool(pending), "table": table},
                  argv=command.split()[2:], script="benchmarks/learning_curve.py")
    plot(finished, baselines, pending, png, len(lc.test), int(lc.test["user_id"].nunique()))
    log(f"wrote {out} and {png}")


def main(argv: list[str] | None = None) -> int:
    from recsim_personas.benchmarking import bench_argparser

    parser = bench_argparser(__file__, __doc__, out="learning-curve.json")
    parser.add_argument("--points", default=None,
                        help="train-row counts, comma-separated, 'all' = every leak-free row "
                             "(default: 1000,4000,all; with --smoke 20,40)")
    parser.add_argument("--smoke", action="store_true",
                        help="20 users, tiny N, 50 test rows, one optimizer step: an end-to-end check")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop cleanly (checkpoint kept) after this many minutes; re-run to resume")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="ML-1M folder")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN, help="run folder (memories, adapters)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row order and the test sample")
    parser.add_argument("--report-only", action="store_true",
                        help="train and score nothing: write the JSON and PNG from the finished points and "
                             "the running job's progress (runs/learning-curve/curve/progress.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from recsim_personas.artifacts import stable_hash
    from recsim_personas.interrupts import Interrupted, terminate_as_interrupt

    terminate_as_interrupt()
    lc = LearningCurve(args)
    default_out = parser.get_default("out")
    out = (lc.run_dir / "curve-smoke" / "learning-curve-smoke.json" if args.smoke and args.out == default_out
           else Path(args.out))
    png = out.with_suffix(".png")
    command = ".venv/bin/python benchmarks/learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        lc.prepare()
    except Interrupted as exc:
        log(f"interrupted ({exc}) while setting up; nothing to keep, re-run the same command")
        return 130
    t0 = time.perf_counter()
    baselines, baseline_frame = lc.baselines()
    baseline_frame.attrs["bias_rmse"] = baselines["bias"]["rmse"]
    lc.timings["baselines"] = round(time.perf_counter() - t0, 1)
    wanted = parse_points(args.points or lc.settings["points"], len(lc.all_rows))
    rows_by_n = lc.point_rows([n for _, n in wanted])
    steps_for = {label: approx_steps(rows_by_n[n], lc.tcfg.batch_size, args.seed) for label, n in wanted}
    if lc.tcfg.max_steps is not None:
        steps_for = {k: min(v, lc.tcfg.max_steps) for k, v in steps_for.items()}
    for label, n in wanted:
        log(f"point N={n:,} ({label}): {len(rows_by_n[n]):,} rows of {rows_by_n[n]['user_id'].nunique()} users, "
            f"~{steps_for[label]} steps")
    finished: list[dict[str, Any]] = []
    pending = [(label, n, rows_by_n[n]) for label, n in wanted]
    note: dict[str, Any] = {}
    status = 0

    def report() -> None:
        write_report(lc, finished, estimate_pending(pending, finished, note, len(lc.test), steps_for),
                     baselines, out, png, command)

    if args.report_only:
        still = []
        for label, n, rows in pending:
            doc = lc.cached_point(label, stable_hash(lc.point_inputs(n, rows)))
            if doc is not None:
                finished.append(doc)
            else:
                still.append((label, n, rows))
        pending = still
        progress_path = lc.work / "progress.json"
        if progress_path.is_file():
            note.update(json.loads(progress_path.read_text()))
        report()
        return 0
    try:
        while pending:
            label, n, rows = pending[0]
            note.clear()
            doc = lc.run_point(label, n, rows, baseline_frame, note)
            if doc is None:
                log("stopped by --max-minutes; re-run the same command to resume")
                break
            finished.append(doc)
            pending.pop(0)
            report()
    except Interrupted as exc:
        log(f"interrupted ({exc}); finished work is kept, re-run the same command to resume")
        status = 130
    if pending:
        report()
    return status


if __name__ == "__main__":
    sys.exit(main())
