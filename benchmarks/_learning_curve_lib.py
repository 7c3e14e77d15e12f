"""The pieces of ``benchmarks/learning_curve.py``: its settings, the nested row selection, the
estimates of the remaining time and the report (JSON, table, PNG). See that script's docstring."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

BASELINES = ("global-mean", "bias", "biased-mf")
BASELINE_LABEL = {"global-mean": "global mean", "bias": "user+item bias", "biased-mf": "biased MF"}
MEMORY_MODE = "ms"
TEMPLATE = "paper"
CHUNK_ROWS = 250
#: Seconds per scored rating for estimates until this machine has measured it (about 2 ratings/s:
#: the README's agent throughput table, warm M_s ratings on the idle 2-core machine).
ASSUMED_SCORE_S = 0.5


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
         path: Path, n_test: int, n_users: int, *, cue: bool = False) -> Path:
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
            agent = "theta_single (M_s) + cue" if cue else "theta_single (M_s)"
            ax.plot(xs, ys, "o-", color="tab:blue", lw=2, ms=7, label=f"{agent}, SmolLM2-135M")
            for x, y, p in zip(xs, ys, points, strict=True):
                d = p["paired"]["bias"]
                diff, ci = (d["rmse_diff"], d["rmse_diff_ci"]) if key == "rmse" else (
                    d["spearman_diff"], d["spearman_diff_ci"])
                ax.annotate(f"{y:.3f}\nvs bias {diff:+.3f}\n[{ci[0]:+.3f}, {ci[1]:+.3f}]", (x, y),
                            textcoords="offset points", xytext=(0, -10), ha="center", va="top", fontsize=8,
                            color="tab:blue", bbox={"fc": "white", "ec": "none", "alpha": 0.85})
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
    what = "Learning curve with the collaborative cue in every prompt" if cue else "Learning curve"
    fig.suptitle(f"{what} on the same {n_test:,} test ratings of {n_users} users (ML-1M paper split). "
                 "\nAnnotations: agent minus bias, 95% paired bootstrap over users", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def write_json(write_text: Any, path: Path, doc: dict[str, Any]) -> None:
    """A cache file (a finished point, the progress note) as indented JSON, written atomically."""
    write_text(path, json.dumps(doc, indent=1, default=str))


def write_report(lc: Any, finished: list[dict[str, Any]], pending: list[dict[str, Any]],
                 baselines: dict[str, Any], out: Path, png: Path, command: str) -> None:
    import torch

    from recsim_personas.benchmarking import write_results
    from recsim_personas.data.splits import PAPER_SPLIT

    points = [{k: p[k] for k in ("label", "n_requested", "adapter", "agent", "point_metrics", "paired", "scoring",
                                 "cue") if k in p} for p in finished]
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
    if lc.cue:
        from _learning_curve_cue import table_lines

        lines += table_lines(finished)
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
            "cue": ({"on": True, "damping": lc.cue_stats.damping, "columns": "user mean and count (train rows), "
                     "item mean and count (rating pool), damped user+item bias estimate; leave-one-out "
                     "for train rows", "no_cue_work": str(lc.no_cue_work)} if lc.cue else False),
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
    plot(finished, baselines, pending, png, len(lc.test), int(lc.test["user_id"].nunique()), cue=bool(lc.cue))
    log(f"wrote {out} and {png}")
