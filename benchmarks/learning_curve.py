"""Benchmark: RMSE and per-user Spearman of one theta_single adapter against its number of train rows.

Commands (from the project root)::

    .venv/bin/python benchmarks/learning_curve.py --smoke                  # whole path in minutes
    .venv/bin/python benchmarks/learning_curve.py --points 1000            # one point (about an hour)
    .venv/bin/python benchmarks/learning_curve.py --points 1000 --cue      # the same with the cue
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

With ``--cue`` (``benchmarks/_learning_curve_cue.py``) every train and test prompt also states the
collaborative cue (the user's mean and count, the item's mean and count, a bias model's estimate;
leave-one-out for train rows); the point trains on the same rows and scores the same test rows as
without it, in its own work folder (``curve-cue/``, adapters ``single_n<N>_cue__ms``), writes
``results/learning-curve-cue.json`` and adds the paired interval of (cue agent - no-cue agent)
when the no-cue point's predictions are in ``curve/points/``.

Writes ``results/learning-curve.json`` (``config``, ``git``, ``versions``, ``hardware``,
``load_average``, ``metrics``: finished points, pending points with their estimated remaining time,
baselines, timings, tokens/s) and ``results/learning-curve.png`` (RMSE and per-user Spearman against
N with the baselines as reference lines), after every finished point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _learning_curve_lib, _learning_curve_cue

from _learning_curve_lib import (
    BASELINES,
    CHUNK_ROWS,
    MEMORY_MODE,
    TEMPLATE,
    approx_steps,
    estimate_pending,
    load_average,
    log,
    nested_rows,
    parse_points,
    write_json,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ml-1m-users-1-2999"
DEFAULT_RUN = ROOT / "runs" / "learning-curve"
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


class LearningCurve:
    """The state of one invocation: run folder, model, rows, test sample, cached points."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.budget = "smoke" if args.smoke else "full"
        self.settings = BUDGETS[self.budget]
        self.run_dir: Path = args.run_dir
        self.cue = bool(args.cue)
        self.no_cue_work = self.run_dir / ("curve-smoke" if args.smoke else "curve")
        self.work = self.no_cue_work.with_name(self.no_cue_work.name + ("-cue" if self.cue else ""))
        self.cue_stats: Any = None
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
        self.pool = rating_pool(self.dataset, self.split.train, self.split.test, self.memory_config.item_stats)
        if self.cue:
            from recsim_personas.memory.cue import CueStatistics

            self.cue_stats = CueStatistics.fit(self.pool, self.split.train, self.scale)
        train = self.split.train[self.split.train["user_id"].isin(self.users)].reset_index(drop=True)
        rows_inputs = {"format": _FORMAT, "train": rows_digest(train.astype(str), ("user_id", "item_id", "rating")),
                       "memories": file_digest(self.run_dir / "memories.parquet"),
                       "profiles": file_digest(self.run_dir / "profiles.parquet"),
                       "item_stats": self.memory_config.item_stats, "mode": MEMORY_MODE, "template": TEMPLATE,
                       "model": self.model_name, "max_tokens": self.max_tokens}
        if self.cue:
            rows_inputs.update(cue=True, cue_damping=self.cue_stats.damping)
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
                tokenizer=self.tokenizer, max_tokens=self.max_tokens, cue=self.cue_stats)
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
        self.same_rows: dict[str, Any] | None = None
        if self.cue:
            from _learning_curve_cue import same_train_rows

            self.same_rows = same_train_rows(self.no_cue_work, self.all_rows)
            log(f"cue: train rows the same as the no-cue run's: {self.same_rows}; first prompt ends "
                f"{self.all_rows['suffix'].iloc[0][-260:]!r}")

        # One seeded test sample, the same for every point and baseline.
        test = self.split.test[self.split.test["user_id"].isin(self.users)]
        n_test = min(self.settings["test_rows"], len(test))
        pick = np.sort(np.random.default_rng(self.args.seed).choice(len(test), size=n_test, replace=False))
        self.test = test.iloc[pick][["user_id", "item_id", "rating"]].sort_values(
            ["user_id", "item_id"], kind="stable").reset_index(drop=True)
        self.test_hash = rows_digest(self.test.astype(str), ("user_id", "item_id", "rating"))
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
        if self.cue:
            from _learning_curve_cue import same_test_rows

            log(f"cue: no-cue predictions on the same test rows: {same_test_rows(self.no_cue_work, self.test)}")

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

        inputs = {"format": _FORMAT, "n": n, "rows": rows_digest(rows), "lora": self.tcfg.to_dict(),
                  "model": self.model_name, "test": self.test_hash, "mode": MEMORY_MODE, "template": TEMPLATE,
                  "eval_mode": "score", "chunk_rows": CHUNK_ROWS, "seed": self.args.seed,
                  "dtype": str(next(self.model.parameters()).dtype)}
        if self.cue:  # only then, so the hashes of the points without the cue stay valid
            inputs.update(cue=True, cue_damping=self.cue_stats.damping)
        return inputs

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

        write_json(atomic_write_text, self.work / "progress.json", {**note, "pid": os.getpid(), "updated": time.time(),
                                                        "load_average": load_average()})

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def run_point(self, label: str, n: int, rows: Any, baseline_frame: Any,
                  progress_note: dict[str, Any]) -> dict[str, Any] | None:
        """Train, score and measure point N; ``None`` when --max-minutes stopped it (resumable)."""
        import pandas as pd

        from recsim_personas.adapter_names import adapter_name
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
        name = adapter_name(f"single_n{label}", MEMORY_MODE, cue=self.cue)
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
                                        seed=self.args.seed, cue=self.cue_stats)
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
        if self.cue:
            from _learning_curve_cue import no_cue_comparison

            paired["no-cue"] = no_cue_comparison(frame, self.no_cue_work, label, self.args.seed)
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
            "paired": paired, **({"cue": {"same_train_rows": self.same_rows}} if self.cue else {}),
            "scoring": {"rows": len(frame), "seconds_this_run": round(scoring_seconds, 1),
                        "rows_this_run": scored_now,
                        "ratings_per_s": scored_now / scoring_seconds if scoring_seconds else None},
            "seconds_this_run": round(time.perf_counter() - t_run, 1),
        }
        atomic_write_parquet(self.work / "points" / f"n{label}-predictions.parquet", frame)
        write_json(atomic_write_text, self.point_path(label), doc)
        p = paired["bias"]
        log(f"point N={n:,}: RMSE {metrics['rmse']:.4f} (bias {baseline_frame.attrs['bias_rmse']:.4f}; "
            f"agent - bias {p['rmse_diff']:+.4f} [{p['rmse_diff_ci'][0]:+.4f}, {p['rmse_diff_ci'][1]:+.4f}]), "
            f"Spearman {metrics['spearman']:.3f}")
        if paired.get("no-cue") and "error" not in paired["no-cue"]:
            q = paired["no-cue"]
            log(f"point N={n:,}: cue - no-cue RMSE {q['rmse_diff']:+.4f} [{q['rmse_diff_ci'][0]:+.4f}, "
                f"{q['rmse_diff_ci'][1]:+.4f}], Spearman {q['spearman_diff']:+.3f}")
        return doc


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
    parser.add_argument("--cue", action="store_true",
                        help="state the collaborative cue (user and item means and counts, a bias model's "
                             "estimate) in every prompt; own work folder curve-cue/, default --out "
                             "results/learning-curve-cue.json, compared with the no-cue point's predictions")
    args = parser.parse_args(argv)

    from recsim_personas.artifacts import stable_hash
    from recsim_personas.interrupts import Interrupted, terminate_as_interrupt

    terminate_as_interrupt()
    lc = LearningCurve(args)
    default_out = parser.get_default("out")
    out = (lc.work / f"learning-curve-smoke{'-cue' if lc.cue else ''}.json" if args.smoke and args.out == default_out
           else Path(args.out).with_name("learning-curve-cue.json") if lc.cue and args.out == default_out
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
