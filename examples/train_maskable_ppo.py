"""Train a recommender with RL on PersonaRec-v1's cheap users, then compare it with the baselines.

    OPENBLAS_NUM_THREADS=1 python examples/train_maskable_ppo.py --budget-s 540 --episodes 1000

What it does, in the order a user would copy it:

1. Builds the library's batched env for SB3 (:class:`recsim_personas.envs.sb3.SB3VecEnv`, the
   latent-factor users of ``PersonaRec-v1``, the flat ``Box`` observation) and trains sb3-contrib's
   ``MaskablePPO`` on it for ``--budget-s`` seconds of wall time. The env's ``action_masks()`` hides
   the items each user has already seen. The policy scores items: its action logits are
   ``item_features @ W h(obs) + b_item`` (:class:`ItemScoringPolicy`), so one small head covers the
   2,517-item catalogue and items with similar features share what is learned.
2. Evaluates the trained policy (deterministic, masked) with ``evaluate_policy`` and the built-in
   random, popularity, ALS and oracle policies with ``run_simulation``, on the same ``--episodes``
   sessions (same users, same random streams), and prints a table with 95% intervals.
3. Writes ``--out`` (``results/rl-maskable-ppo.json``: config, git, versions, hardware, results,
   learning curve) and two plots beside it (learning curve, comparison).

``--smoke`` runs the same code on a small synthetic population for a few hundred steps (what CI runs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path


def item_scoring_policy(item_features: np.ndarray) -> tuple[type, dict[str, Any]]:
    """``(policy class, policy_kwargs)`` for MaskablePPO: logits ``F @ (W h) + b`` over the catalogue."""
    import torch
    from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    from torch import nn

    class ItemScorer(nn.Module):
        def __init__(self, latent_dim: int, features: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("features", torch.as_tensor(features, dtype=torch.float32))
            self.project = nn.Linear(latent_dim, features.shape[1], bias=False)
            self.item_bias = nn.Parameter(torch.zeros(features.shape[0]))

        def forward(self, latent: torch.Tensor) -> torch.Tensor:
            return self.project(latent) @ self.features.T + self.item_bias

    class ItemScoringPolicy(MaskableActorCriticPolicy):
        def _build(self, lr_schedule: Any) -> None:
            super()._build(lr_schedule)
            self.action_net = ItemScorer(self.mlp_extractor.latent_dim_pi, item_features)
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    return ItemScoringPolicy, {"net_arch": {"pi": [128], "vf": [128]}}


class LearningCurve:
    """SB3 callback: the mean return of the training episodes that ended in each rollout; stops at a wall-time budget."""

    def __new__(cls, budget_s: float) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class _Curve(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.start = time.perf_counter()
                self.points: list[dict[str, float]] = []
                self._returns: list[float] = []

            def _on_step(self) -> bool:
                for info in self.locals.get("infos", []):
                    if "episode" in info:
                        self._returns.append(float(info["episode"]["r"]))
                return time.perf_counter() - self.start < budget_s

            def _on_rollout_end(self) -> None:
                if self._returns:
                    self.points.append({
                        "timesteps": int(self.num_timesteps),
                        "seconds": round(time.perf_counter() - self.start, 1),
                        "mean_return": float(np.mean(self._returns)),
                        "episodes": len(self._returns),
                    })
                    self._returns = []

        return _Curve()


def main(argv: list[str] | None = None) -> int:
    p = bench_argparser(__file__, __doc__, out="rl-maskable-ppo.json", raw=True)
    p.add_argument("--budget-s", type=float, default=540.0, help="training wall time (default 540 s)")
    p.add_argument("--max-steps", type=int, default=50_000_000, help="training steps at most")
    p.add_argument("--num-envs", type=int, default=128, help="sessions stepped together")
    p.add_argument("--episodes", type=int, default=1000, help="evaluation sessions per policy")
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic population, a few hundred steps")
    p.add_argument("--replot", type=Path, default=None, metavar="JSON", help="only redraw the plots of a results file")
    args = p.parse_args(argv)
    results_file = ResultsFile(out_path(args), "train_maskable_ppo", argv, script="examples/train_maskable_ppo.py")
    if args.replot is not None:
        import json

        doc = json.loads(args.replot.read_text(encoding="utf-8"))
        paths = plot(doc["learning_curve"], doc["results"], args.replot.with_suffix(""), doc["config"]["episodes"])
        print(f"wrote {', '.join(str(x) for x in paths)}")
        return 0

    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from recsim_personas.envs.evaluation import evaluate_policy
    from recsim_personas.envs.sb3 import SB3VecEnv
    from recsim_personas.envs.simulate import SimulationConfig, run_simulation

    torch.set_num_threads(args.threads)
    options: dict[str, Any] = {"horizon": args.horizon, "cheap_agent": "mf"}
    population = agent = None
    if args.smoke:
        from recsim_personas.envs.config import PersonaRecConfig
        from recsim_personas.envs.population import build_agent, synthetic_population

        population = synthetic_population(n_users=30, n_items=90, seed=args.seed)
        agent = build_agent(PersonaRecConfig(agent="mf"), population)
        options["horizon"] = min(args.horizon, 5)
    objects = {"population": population, "agent": agent}

    # 1. Train.
    raw = SB3VecEnv.make(num_envs=args.num_envs, observation="flat", **options, **objects)
    population, agent = raw.env.population, raw.env.agent
    objects = {"population": population, "agent": agent}
    venv = VecNormalize(VecMonitor(raw), norm_obs=False, norm_reward=True, gamma=0.95)
    policy_cls, policy_kwargs = item_scoring_policy(raw.env.item_features)
    n_steps = 16 if args.smoke else 32
    model = MaskablePPO(
        policy_cls, venv, n_steps=n_steps, batch_size=min(1024, n_steps * args.num_envs), n_epochs=4,
        gamma=0.95, learning_rate=1e-3, ent_coef=0.003, seed=args.seed, policy_kwargs=policy_kwargs,
        device="cpu", verbose=0,
    )
    curve = LearningCurve(args.budget_s)
    start = time.perf_counter()
    model.learn(total_timesteps=args.max_steps, callback=curve)
    train_s = time.perf_counter() - start
    steps = int(model.num_timesteps)
    print(f"trained {steps:,} steps in {train_s:.0f} s ({steps / train_s:,.0f} steps/s)")

    # 2. Evaluate on one schedule.
    sim = SimulationConfig(policies=("random", "popularity", "als", "mf", "oracle"), episodes=args.episodes,
                           horizon=options["horizon"], seed=args.seed, oracle_candidates=None,
                           env={"cheap_agent": "mf"})
    report = run_simulation(sim, agent=agent, population=population, progress=False)
    rows = [{k: r[k] for k in r if k.split("_ci")[0] in ("policy", "return", "mean_rating", "like_rate",
                                                          "session_length", "exit_rate")}
            for r in report.results]
    learned = evaluate_policy({**options, "observation": "flat"}, model, episodes=args.episodes,
                              seed=args.seed, population=population, agent=agent)
    rows.insert(4, {"policy": "MaskablePPO (learned)", **{
        k: v for k, v in learned.to_dict().items() if k not in ("episodes", "steps")}})
    by = {r["policy"]: r for r in rows}
    pop_row = by["popularity"]
    print(f"\n{'policy':<24} {'return [95% CI]':<26} {'mean rating':>11} {'length':>7}")
    for r in rows:
        lo, hi = r["return_ci"]
        print(f"{r['policy']:<24} {r['return']:6.2f} [{lo:6.2f}, {hi:6.2f}]      {r['mean_rating']:>11.2f} "
              f"{r['session_length']:>7.1f}")
    learned_row = by["MaskablePPO (learned)"]
    verdict = {
        "oracle_margin_over_popularity": by["oracle"]["return"] / pop_row["return"] - 1,
        "learned_margin_over_popularity": learned_row["return"] / pop_row["return"] - 1,
        "learned_beats_popularity_non_overlapping_95ci": learned_row["return_ci"][0] > pop_row["return_ci"][1],
    }
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in verdict.items()})

    # 3. Write.
    config = {**vars(args), "out": str(args.out), "options": options, "train_steps": steps,
              "train_seconds": round(train_s, 1), "algorithm": "sb3-contrib MaskablePPO, ItemScoringPolicy",
              "ppo": {"n_steps": n_steps, "batch_size": model.batch_size, "n_epochs": 4, "gamma": 0.95,
                      "learning_rate": 1e-3, "ent_coef": 0.003, "net_arch": policy_kwargs["net_arch"],
                      "reward_normalisation": "VecNormalize(norm_reward=True)"},
              "population": population.name, "agent": repr(agent)}
    path = results_file.write(config=config, metrics={}, results=rows,
                              sections={"verdict": verdict, "learning_curve": curve.points})
    plots = plot(curve.points, rows, path.with_suffix(""), args.episodes)
    print(f"wrote {path}, {', '.join(str(x) for x in plots)}")
    return 0


def plot(points: list[dict[str, float]], rows: list[dict[str, Any]], stem: Path, episodes: int,
         learned: str = "MaskablePPO (learned)") -> list[Path]:
    """``<stem>-curve.png`` (training return against steps) and ``<stem>-comparison.png``.

    ``python examples/train_maskable_ppo.py --replot results/rl-maskable-ppo.json`` redraws them from
    a results file."""
    by = {r["policy"]: r["return"] for r in rows}
    popularity, oracle = by["popularity"], by["oracle"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if points:
        ax.plot([q["timesteps"] for q in points], [q["mean_return"] for q in points], color="#4c72b0",
                label=f"{learned.replace(' (learned)', '')}, training episodes (exploring)")
    ax.axhline(popularity, color="#dd8452", ls="--", label="popularity (evaluation)")
    ax.axhline(oracle, color="#55a868", ls=":", label="oracle (evaluation)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return")
    ax.set_title("PersonaRec-v1, latent-factor users: learning curve", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths.append(stem.parent / f"{stem.name}-curve.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    names = [r["policy"].replace(" (learned)", "\n(learned)").replace("item-scoring ", "item-scoring\n")
             for r in rows]
    means = np.array([r["return"] for r in rows])
    ci = np.array([r["return_ci"] for r in rows])
    colours = {"random": "#8c8c8c", "popularity": "#dd8452", "als": "#c44e52", "mf": "#937860",
               "oracle": "#55a868"}
    ax.bar(np.arange(len(rows)), means, yerr=np.abs(np.stack([means - ci[:, 0], ci[:, 1] - means])),
           capsize=4, color=[colours.get(r["policy"], "#4c72b0") for r in rows])
    # The bars start at 0 (the return's lower end; a seen-item penalty can go below) so heights compare.
    ax.set_ylim(min(0.0, float(ci[:, 0].min()) * 1.1), float(ci[:, 1].max()) * 1.1)
    ax.set_xticks(np.arange(len(rows)), names, fontsize=8)
    ax.set_ylabel("mean episode return (95% CI)")
    for x, (m, hi) in enumerate(zip(means, ci[:, 1], strict=True)):
        ax.text(x, hi, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(f"PersonaRec-v1, latent-factor users: {episodes} evaluation sessions per policy",
                 fontsize=10)
    fig.tight_layout()
    paths.append(stem.parent / f"{stem.name}-comparison.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


if __name__ == "__main__":
    raise SystemExit(main())
