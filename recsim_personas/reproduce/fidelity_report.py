"""The fidelity report of a run folder: every evaluated agent against the bias predictor, same rows.

:func:`fidelity_report` reads the Table-1 predictions a run folder holds (``results/row<NN>_*.parquet``,
one row per test rating with the agent's rating distribution), fits the user + item bias predictor
on the **same ratings the agents' item averages come from** (the run's rating pool,
:func:`recsim_personas.memory.statistics.rating_pool`) and, for comparison, on the split's train rows
only, and scores everything with :func:`recsim_personas.eval.fidelity.fidelity_metrics` on exactly
the agents' rows. Per agent: the metrics overall and per persona, and the paired bootstrap interval
(over users) of ``agent - bias`` for RMSE and per-user Spearman. It writes ``fidelity.json``,
``fidelity.md`` and ``fidelity_calibration.png`` (P(like) reliability of the best agent and bias)
into the run folder, and :attr:`FidelityReport.verdict` states the interval in one sentence.

An agent whose row was calibrated (its ``row<NN>_*.json`` has a ``calibration`` entry: a
temperature fitted on the validation slice, never on test rows; see
:mod:`recsim_personas.training.calibration`) gets a second row right after its raw one, named
``<agent> (T=<temperature>)``, with every metric and the paired interval computed on the
temperature-scaled distributions of the same test rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.errors import DataError

__all__ = ["FidelityReport", "fidelity_report", "fidelity_verdict"]

_ROW_FILE = re.compile(r"row(\d+)_(.+)__(ms|msml)\.parquet$")
_COLUMNS = ("rmse", "mae", "rmse_mode", "spearman", "ndcg@10", "auc_like", "hist_tv", "hist_w1", "nll")


@dataclass
class FidelityReport:
    """What :func:`fidelity_report` found and wrote.

    Attributes:
        rows: One dict per predictor (agents by Table-1 row, each calibrated one followed by its
            calibrated row, then the bias predictors): ``name``, the metrics, ``paired`` (agents:
            the bootstrap interval against bias), ``per_persona``; agents also ``temperature``
            (``None`` for a raw row) and calibrated rows ``calibration`` (the fit on the validation slice).
        verdict: One sentence on the best agent against bias, with the paired interval.
        files: Written files by name.
    """

    rows: list[dict[str, Any]]
    verdict: str
    item_stats: str
    files: dict[str, Path] = field(default_factory=dict)

    def markdown(self) -> str:
        head = ["predictor", "rows", "users", "RMSE", "MAE", "RMSE mode", "Spearman (per user)",
                "NDCG@10 (per user)", "AUC like", "hist TV", "hist W1", "NLL", "RMSE - bias [95%]",
                "Spearman - bias [95%]"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            m = r["metrics"]
            cells = [r["name"], str(m["n"]), str(m["users"])]
            cells += [_f(m.get(c)) for c in _COLUMNS]
            p = r.get("paired")
            cells.append(_interval(p["rmse_diff"], p["rmse_diff_ci"]) if p else "")
            cells.append(_interval(p["spearman_diff"], p["spearman_diff_ci"]) if p else "")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _f(value: Any, fmt: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, fmt)


def _interval(point: float | None, ci: list[float] | None) -> str:
    if point is None or ci is None:
        return "-"
    return f"{point:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def fidelity_verdict(best: dict[str, Any], bias_name: str = "user+item bias") -> str:
    """The sentence the demo and reproduce print: the best agent's RMSE and Spearman against bias."""
    p, m = best["paired"], best["metrics"]
    lo, hi = p["rmse_diff_ci"]
    if hi < 0:
        reading = "the agent is more accurate than bias on these rows"
    elif lo > 0:
        reading = "the agent is less accurate than bias on these rows"
    else:
        reading = "the interval includes 0: no difference these rows can show"
    rho = ""
    if p.get("spearman_diff_ci"):
        slo, shi = p["spearman_diff_ci"]
        rho = (f"; per-user Spearman {_f(m.get('spearman'))}, agent minus bias "
               f"{p['spearman_diff']:+.3f} [{slo:+.3f}, {shi:+.3f}]")
    return (
        f"Best simulated user: {best['name']}, RMSE {m['rmse']:.3f} on {m['n']} test ratings of {m['users']} "
        f"users. RMSE minus {bias_name} (fitted on the same ratings): {p['rmse_diff']:+.3f}, 95% paired "
        f"bootstrap interval over users [{lo:+.3f}, {hi:+.3f}] ({reading}){rho}."
    )


def calibrated_verdict(raw: dict[str, Any], calibrated: dict[str, Any]) -> str:
    """The sentence on the same agent temperature-scaled: T, where it was fitted, RMSE / NLL / interval."""
    fit, m, p = calibrated["calibrated"], calibrated["metrics"], calibrated["paired"]
    lo, hi = p["rmse_diff_ci"]
    nll = ""
    if raw["metrics"].get("nll") is not None and m.get("nll") is not None:
        nll = f", test NLL {raw['metrics']['nll']:.3f} -> {m['nll']:.3f}"
    return (
        f"Calibrated (T={calibrated['temperature']:.2f}, fitted on {fit.get('n_rows', '?')} validation ratings "
        f"held out of training, never on test rows): RMSE {raw['metrics']['rmse']:.3f} -> {m['rmse']:.3f}{nll}; "
        f"RMSE minus bias {p['rmse_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]."
    )


def _agent_frames(run: Path, results_dir: str) -> list[tuple[int, str, str, pd.DataFrame, dict[str, Any] | None]]:
    """``(row, adapter, mode, raw predictions, calibration or None)`` of every evaluated row."""
    import json

    out = []
    for path in sorted((run / results_dir).glob("row*__*.parquet")):
        match = _ROW_FILE.search(path.name)
        if match:
            calibration = None
            doc_path = path.with_suffix(".json")
            if doc_path.is_file():
                try:
                    calibration = json.loads(doc_path.read_text(encoding="utf-8")).get("calibration")
                except json.JSONDecodeError:
                    calibration = None
            out.append((int(match.group(1)), match.group(2), match.group(3), pd.read_parquet(path), calibration))
    return out


def _agent_row(name: str, frame: pd.DataFrame, scale: Any, *, n_boot: int, seed: int) -> dict[str, Any]:
    """One agent's report row on ``frame`` (with its ``bias`` column): metrics, per persona, paired, bins."""
    from recsim_personas.eval.fidelity import calibration_bins, fidelity_metrics, paired_difference

    metrics = fidelity_metrics(frame, scale)
    per_persona = {}
    if "persona" in frame.columns:
        for persona, part in frame.groupby("persona", sort=True):
            per_persona[str(int(persona))] = {k: fidelity_metrics(part, scale)[k] for k in
                                              ("n", "users", "rmse", "spearman", "ndcg@10", "auc_like")}
    paired = paired_difference(frame, "expectation", "bias", n_boot=n_boot, seed=seed)
    return {"name": name, "metrics": metrics, "paired": paired, "per_persona": per_persona,
            "calibration": calibration_bins(_p_like(frame, scale, metrics["like_threshold"]),
                                            frame["rating"].to_numpy() >= metrics["like_threshold"])}


def _row_name(no: int, adapter: str, mode: str) -> str:
    memories = "M_s" if mode == "ms" else "M_s + M_l"
    label = {"base": "prompted base", "single_max": "theta_single (max)", "single_min": "theta_single (min)",
             "persona": "theta_persona"}.get(adapter, adapter)
    return f"row {no}: {label}, {memories}"


def fidelity_report(
    run_dir: str | Path,
    dataset: Any,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    write: bool = True,
    results_dir: str = "results",
) -> FidelityReport:
    """Score every evaluated agent of ``run_dir`` against the bias predictor on the same rows.

    ``results_dir``: the folder of predictions (``results``: Table 1's; ``fidelity_results``: the
    reproduce preset's ``evaluation.fidelity_rows`` re-scored on more test rows).

    Raises:
        DataError: the run folder has no split or no evaluated rows (run ``evaluate`` first).
    """
    from recsim_personas.baselines.bias import BiasPredictor
    from recsim_personas.data.splits import Split
    from recsim_personas.eval.calibration import TemperatureCalibrator, calibrate_predictions
    from recsim_personas.eval.fidelity import (
        calibration_bins,
        fidelity_metrics,
        level_columns,
        plot_calibration,
        point_distribution,
    )
    from recsim_personas.memory.pipeline import run_item_stats
    from recsim_personas.memory.statistics import rating_pool

    run = Path(run_dir)
    if not (run / "split" / "config.json").is_file():
        raise DataError(f"run folder {run} has no split; build it with `recsim-personas memory --out {run}`")
    agents = _agent_frames(run, results_dir)
    if not agents:
        raise DataError(
            f"run folder {run} has no evaluated rows ({results_dir}/row*.parquet); run "
            f"`recsim-personas evaluate {run}` first"
        )
    split = Split.load(run / "split")
    scale = split.scale or dataset.scale
    item_stats = run_item_stats(run)
    pool = rating_pool(dataset, split.train, split.test, item_stats)
    bias = BiasPredictor(scale=scale).fit(pool)
    bias_train = BiasPredictor(scale=scale).fit(split.train) if item_stats != "train" else None

    rows: list[dict[str, Any]] = []
    reference = None
    for no, adapter, mode, frame, fit in agents:
        frame = frame.assign(bias=bias.predict(frame["user_id"], frame["item_id"]))
        name = _row_name(no, adapter, mode)
        where = {"row": no, "adapter": adapter, "memory": mode}
        rows.append({**_agent_row(name, frame, scale, n_boot=n_boot, seed=seed), **where, "temperature": None})
        if fit is not None:
            t = float(fit["temperature"])
            calibrated = calibrate_predictions(frame, scale, TemperatureCalibrator(temperature=t),
                                               level_columns(frame, scale))
            rows.append({**_agent_row(f"{name} (T={t:.2f})", calibrated, scale, n_boot=n_boot, seed=seed),
                         **where, "temperature": t, "calibrated": dict(fit)})
        if reference is None or len(frame) > len(reference):
            reference = frame
    assert reference is not None
    for name, model in (("user+item bias (same ratings)", bias), ("user+item bias (train rows only)", bias_train)):
        if model is None:
            continue
        frame = reference.assign(bias=model.predict(reference["user_id"], reference["item_id"]))
        metrics = fidelity_metrics(frame, scale, predicted="bias", distribution=point_distribution(
            frame["bias"].to_numpy(), scale))
        rows.append({"name": name, "metrics": metrics, "paired": None, "per_persona": {},
                     "fit_rows": int(len(pool) if model is bias else len(split.train))})
    raw = [r for r in rows if r.get("paired") and r.get("temperature") is None]
    trained = [r for r in raw if r["adapter"] != "base"] or raw
    best = min(trained, key=lambda r: r["metrics"]["rmse"])
    best_calibrated = next((r for r in rows if r.get("temperature") is not None and r["row"] == best["row"]), None)
    verdict = fidelity_verdict(best)
    if best_calibrated is not None:
        verdict += " " + calibrated_verdict(best, best_calibrated)
    report = FidelityReport(rows=rows, verdict=verdict, item_stats=item_stats)
    if write:
        from recsim_personas.artifacts import atomic_write_json, atomic_write_text

        threshold = best["metrics"]["like_threshold"]
        predicted = bias.predict(reference["user_id"], reference["item_id"])
        # The point predictor's P(like): a normal around its prediction with its residual spread on
        # the ratings it was fitted on (continuity-corrected by half a step).
        sigma = float(np.std(pool["rating"].to_numpy() - bias.predict(pool["user_id"], pool["item_id"])))
        from scipy.stats import norm

        bias_p_like = 1.0 - norm.cdf(threshold - scale.step / 2, loc=predicted, scale=sigma)
        bias_bins = calibration_bins(bias_p_like, reference["rating"].to_numpy() >= threshold)
        atomic_write_json(run / "fidelity.json", {
            "item_stats": item_stats, "pool_rows": len(pool), "rows": rows, "verdict": report.verdict,
            "averaging": "rmse/mae/auc/hist per rating; spearman and ndcg@10 per user (mean over users); "
                         "paired intervals resample users",
        })
        atomic_write_text(run / "fidelity.md", report.markdown() + "\n\n" + report.verdict + "\n")
        report.files["fidelity.json"], report.files["fidelity.md"] = run / "fidelity.json", run / "fidelity.md"
        curves = {best["name"]: best["calibration"]}
        if best_calibrated is not None:
            curves[best_calibrated["name"]] = best_calibrated["calibration"]
        curves[f"user+item bias (normal, sd {sigma:.2f})"] = bias_bins
        report.files["fidelity_calibration.png"] = plot_calibration(
            curves,
            run / "fidelity_calibration.png",
            title=f"Calibration of P(rating >= {threshold:g}) on {len(reference)} test ratings",
        )
    return report


def _p_like(frame: pd.DataFrame, scale: Any, threshold: float) -> np.ndarray:
    """The agent's P(rating >= threshold) per row, from its normalised distribution over the levels."""
    from recsim_personas.eval.fidelity import level_columns

    dist = frame[level_columns(frame, scale)].to_numpy(dtype=np.float64)
    dist = dist / np.maximum(dist.sum(axis=1, keepdims=True), 1e-12)
    return dist[:, scale.levels >= threshold - 1e-9].sum(axis=1)
