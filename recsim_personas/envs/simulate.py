"""Baseline policies in simulation, next to their offline metrics on the held-out split.

:func:`run_simulation` runs each policy for ``episodes`` sessions of at most ``horizon`` steps in the
vector environment and reports, per policy, with 95% confidence intervals over episodes (percentile
bootstrap, :func:`~recsim_personas.eval.intervals.mean_ci`: it stays inside the metric's range, which a t interval of a like rate
over a few sessions does not; with fewer than ``MIN_EPISODES_FOR_CI`` episodes no interval is
given, and the plot says "too few episodes"):

- ``mean_rating``: the mean rating the simulated users gave (per episode, over the steps where they
  rated an item; episodes without a rating are left out and counted in ``episodes_without_rating``);
- ``like_rate``: the share of steps whose item the user liked (rating >= ``like_threshold``);
- ``session_length``: steps before the user left or the horizon came;
- ``exit_rate``: the share of sessions that ended with the user leaving (not the horizon);
- ``return``: the summed reward of the session.

Every policy meets the **same users with the same random streams** (common random numbers): episode
``e`` is user ``schedule[e]`` (a seeded permutation of the population, repeated) and the vector env
is reset with the same seeds for each policy, so differences come from the policies.

Next to them, the same policies' **offline metrics** on the held-out test split through
:mod:`recsim_personas.eval.offline`: precision, recall and NDCG at ``k`` (per user; relevant = test
rating at or above the scale's default threshold) for every policy with a ranking model, and RMSE /
MAE (per rating) for policies that predict ratings (the oracle, whose prediction is the agent's
expected rating; computed only when that is cheap, i.e. for the bias agent). The learning bandit
has no offline model. Finally the **Spearman rank correlation** between the offline ordering
(NDCG at k) and each simulated ordering says whether offline evaluation ranks the policies as the
simulator does.

Output: a rich table, a PNG plot (matplotlib, Agg) and a JSON document (``config``, ``git``,
``versions``, ``hardware``, ``results``, ``correlations``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.config import Config, help_text
from recsim_personas.envs.policies import DEFAULT_POLICIES, POLICY_NAMES, make_policy
from recsim_personas.errors import ConfigError, closest
from recsim_personas.eval.intervals import MIN_EPISODES_FOR_CI, mean_ci

__all__ = [
    "SIM_METRICS",
    "SimulationConfig",
    "SimulationReport",
    "run_simulation",
    "spearman",
]

#: Per-episode metrics, in table order.
SIM_METRICS: tuple[str, ...] = ("mean_rating", "like_rate", "session_length", "exit_rate", "return")



@dataclass(frozen=True)
class SimulationConfig(Config):
    """What ``recsim-personas simulate`` runs."""

    policies: tuple[str, ...] = field(
        default=DEFAULT_POLICIES,
        metadata=help_text(f"Policies to compare: any of {', '.join(POLICY_NAMES)}."),
    )
    episodes: int = field(default=200, metadata=help_text("Sessions per policy."))
    horizon: int = field(default=20, metadata=help_text("Most steps per session."))
    n_envs: int = field(default=32, metadata=help_text("Sessions stepped together (vector env)."))
    seed: int = field(default=0, metadata=help_text("Seed of the user schedule, the env and the policies."))
    k: int = field(default=10, metadata=help_text("List length of the offline ranking metrics."))
    oracle_candidates: int | None = field(
        default=200, metadata=help_text("Items the oracle scores per step (None: the whole catalogue).")
    )
    env: dict[str, Any] = field(
        default_factory=dict,
        metadata=help_text("Further PersonaRec-v0 options (agent, run_dir, slate_size, reward, exit, ...)."),
    )

    def __post_init__(self) -> None:
        errors: list[str] = []
        if isinstance(self.policies, str):
            object.__setattr__(self, "policies", tuple(p.strip() for p in self.policies.split(",") if p.strip()))
        else:
            object.__setattr__(self, "policies", tuple(self.policies))
        if not self.policies:
            errors.append("policies must name at least one policy")
        for name in self.policies:
            if name not in POLICY_NAMES:
                close = closest(name, POLICY_NAMES)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(f"unknown policy {name!r}{hint}; choose from {', '.join(POLICY_NAMES)}")
        if len(set(self.policies)) != len(self.policies):
            errors.append(f"policies has duplicates: {list(self.policies)}")
        for name in ("episodes", "horizon", "n_envs", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                errors.append(f"{name} must be an integer >= 1, got {value!r}")
        if self.oracle_candidates is not None and (
            not isinstance(self.oracle_candidates, int) or self.oracle_candidates < 1
        ):
            errors.append(f"oracle_candidates must be an integer >= 1 or None, got {self.oracle_candidates!r}")
        if "horizon" in self.env:
            errors.append("set the horizon with SimulationConfig.horizon, not env['horizon']")
        if errors:
            raise ConfigError("invalid SimulationConfig: " + "; ".join(errors))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with fewer than 3 pairs or no spread."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return None
    from scipy import stats

    if np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(stats.spearmanr(x, y).statistic)


@dataclass
class SimulationReport:
    """Per-policy results, the correlations and the config; render with :meth:`table` / :meth:`plot`."""

    config: SimulationConfig
    results: list[dict[str, Any]]
    correlations: dict[str, float | None]
    env_info: dict[str, Any]

    def document(self) -> dict[str, Any]:
        """The JSON document (config, git, versions, hardware, results, correlations)."""
        from recsim_personas.eval.report import results_document

        return results_document(
            {**self.config.to_dict(), "env_info": self.env_info},
            self.results,
            correlations=self.correlations,
            averaging=(
                "simulated metrics: mean over episodes with 95% Student-t CIs (mean_rating over the "
                "rated steps of each episode); offline ranking metrics per user, RMSE/MAE per rating"
            ),
        )

    def table(self) -> Any:
        """A ``rich.table.Table`` of the results."""
        from rich.table import Table

        k = self.config.k
        table = Table(
            title=(
                f"PersonaRec-v0 simulation: {self.config.episodes} episodes x horizon "
                f"{self.config.horizon}, agent {self.env_info.get('agent')}"
            ),
            caption=(
                "simulated: mean over episodes ± half-width of the 95% bootstrap CI (none under 5 episodes); offline (test split): ranking per user, "
                "RMSE per rating. "
                + ", ".join(f"Spearman({k_}) = {_fmt(v, '.2f')}" for k_, v in self.correlations.items())
            ),
        )
        table.add_column("policy")
        for head in ("rating", "like rate", "length", "exit rate", "return"):
            table.add_column(head, justify="right")
        for head in (f"P@{k}", f"R@{k}", f"NDCG@{k}", "RMSE", "MAE"):
            table.add_column(head, justify="right")
        for row in self.results:
            cells = [row["policy"]]
            for m in SIM_METRICS:
                fmt = ".1f" if m == "session_length" else (".2f" if m in ("mean_rating", "return") else ".3f")
                lo, hi = row[m + "_ci"]
                half = None if lo is None or hi is None or math.isnan(lo) else (hi - lo) / 2
                cells.append(_fmt(row[m], fmt) if half is None else f"{_fmt(row[m], fmt)} ±{_fmt(half, fmt)}")
            for key in (f"precision@{k}", f"recall@{k}", f"ndcg@{k}", "rmse", "mae"):
                cells.append(_fmt(row.get(key), ".4f"))
            table.add_row(*cells)
        return table

    def plot(self, path: str | Path) -> Path:
        """Bar charts (simulated rating, like rate, offline NDCG@k) with CIs, written as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from recsim_personas.artifacts import atomic_path

        k = self.config.k
        names = [r["policy"] for r in self.results]
        panels = [
            ("mean_rating", "simulated mean rating"),
            ("like_rate", "simulated like rate"),
            (f"ndcg@{k}", f"offline NDCG@{k} (test split)"),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
        x = np.arange(len(names))
        for ax, (key, title) in zip(axes, panels, strict=True):
            vals = np.array([np.nan if r.get(key) is None else r[key] for r in self.results], dtype=float)
            err, too_few = None, False
            if key + "_ci" in self.results[0]:
                ci = np.array([[np.nan if c is None else c for c in r[key + "_ci"]] for r in self.results],
                              dtype=float)
                err = np.abs(np.stack([vals - ci[:, 0], ci[:, 1] - vals]))
                too_few = bool(np.isnan(ci).all())
            ax.bar(x, np.nan_to_num(vals), yerr=None if err is None or too_few else np.nan_to_num(err),
                   capsize=4, color="#4c72b0")
            for xi, v in zip(x, vals, strict=True):
                if np.isnan(v):
                    ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
            ax.set_xticks(x, names, rotation=20)
            if too_few:
                title += f"\nno 95% interval: too few episodes (< {MIN_EPISODES_FOR_CI})"
            elif err is not None:
                title += "\n95% bootstrap interval over episodes"
            ax.set_title(title, fontsize=9)
            if key == "like_rate":
                ax.set_ylim(0, 1.05)
        fig.suptitle(
            f"PersonaRec-v0: {self.config.episodes} episodes, horizon {self.config.horizon}, "
            f"agent {self.env_info.get('agent')}",
            fontsize=10,
        )
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        return path

    def save(self, out_dir: str | Path, stem: str = "simulate") -> dict[str, Path]:
        """Write ``<stem>.json`` and ``<stem>.png`` into ``out_dir``."""
        from recsim_personas.eval.report import write_results_json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return {
            "json": write_results_json(out / f"{stem}.json", self.document()),
            "png": self.plot(out / f"{stem}.png"),
        }


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def run_simulation(
    config: SimulationConfig,
    *,
    agent: Any = None,
    population: Any = None,
    progress: bool = True,
) -> SimulationReport:
    """Run every policy of ``config`` in the vector env and score it offline (module docstring).

    Args:
        config: What to run.
        agent: A user agent object (default: the one ``config.env`` names).
        population: A :class:`~recsim_personas.envs.population.UserPopulation` (default: from config).
        progress: Show a progress bar over policies (on a terminal).
    """
    from recsim_personas.data.splits import Split, SplitConfig
    from recsim_personas.envs.evaluation import run_episodes, user_schedule
    from recsim_personas.envs.vector import PersonaRecVectorEnv
    from recsim_personas.eval.offline import evaluate_predictor, evaluate_ranker
    from recsim_personas.progress import progress_bar

    env_opts = dict(config.env)
    env = PersonaRecVectorEnv(
        num_envs=min(config.n_envs, config.episodes),
        agent=agent if agent is not None else env_opts.pop("agent", None),
        population=population,
        horizon=config.horizon,
        **env_opts,
    )
    pop = env.population
    schedule = user_schedule(pop.user_ids, config.episodes, config.seed)
    split = Split(
        train=pop.train, test=pop.test, config=SplitConfig(), dataset_fingerprint="",
        dataset_name=pop.name, scale=pop.scale,
    )
    cheap_agent = type(env.agent).__name__ == "BiasUserAgent"

    results: list[dict[str, Any]] = []
    for name in progress_bar(config.policies, desc="policies", enabled=progress):
        params: dict[str, Any] = {}
        if name == "oracle":
            params["n_candidates"] = config.oracle_candidates
        policy = make_policy(name, env, seed=config.seed, **params)
        start = time.perf_counter()
        # Steps of a language-model agent take a second or more: show them (sessions may end before
        # the horizon, so the bar's total is an upper bound).
        with progress_bar(total=config.episodes * config.horizon, desc=f"simulate {name}", unit="step",
                          enabled=progress and not cheap_agent, leave=False) as bar:
            per_episode = run_episodes(env, policy, schedule, config.seed, on_steps=bar.update)
        sim_seconds = time.perf_counter() - start
        row: dict[str, Any] = {"policy": name}
        for metric in SIM_METRICS:
            mean, lo, hi = mean_ci(per_episode[metric])
            row[metric], row[metric + "_ci"] = mean, [lo, hi]
        row["episodes"] = config.episodes
        row["episodes_without_rating"] = int(np.isnan(per_episode["mean_rating"]).sum())
        row["steps"] = int(per_episode["session_length"].sum())
        row["sim_seconds"] = round(sim_seconds, 3)
        row["steps_per_second"] = round(row["steps"] / max(sim_seconds, 1e-9), 1)

        model = policy.recommender()
        for key in (f"precision@{config.k}", f"recall@{config.k}", f"ndcg@{config.k}", "rmse", "mae"):
            row[key] = None
        row["offline_note"] = None
        if model is None:
            row["offline_note"] = "learns online; no offline model"
        elif name == "oracle" and not cheap_agent:
            row["offline_note"] = "skipped: scoring every (user, item) with the LM agent is too costly"
        elif len(pop.test):
            ranking = evaluate_ranker(model, split, k=config.k)
            row.update({k_: v for k_, v in ranking.items() if k_ != "fallback_count"})
            if hasattr(model, "predict") and name == "oracle":
                pred = evaluate_predictor(model, split)
                row["rmse"], row["mae"] = pred["rmse"], pred["mae"]
        results.append(row)

    offline = [r[f"ndcg@{config.k}"] for r in results]
    correlations = {
        f"ndcg@{config.k} vs {m}": spearman(
            [np.nan if v is None else v for v in offline], [r[m] for r in results]
        )
        for m in ("mean_rating", "like_rate", "return")
    }
    env_info = {
        "agent": type(env.agent).__name__,
        "population": pop.name,
        "users": pop.n_users,
        "items": pop.n_items,
        "options": env.config.to_dict(),
    }
    return SimulationReport(config=config, results=results, correlations=correlations, env_info=env_info)
