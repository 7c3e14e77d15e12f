"""Train an item-scoring DQN on PersonaRec-v1's cheap users, then compare it with the baselines.

    OPENBLAS_NUM_THREADS=1 python examples/train_item_dqn.py --steps 200000 --episodes 1000

Why DQN here: a session is close to a contextual bandit (the reward is the rating of the item shown,
and a bad item also costs patience), so learning each item's value for the user from replayed
transitions uses far fewer environment steps than on-policy PPO (examples/train_maskable_ppo.py).

What it does, in the order a user would copy it:

1. Builds the library's batched env for SB3 (:class:`recsim_personas.envs.sb3.SB3VecEnv`, the
   latent-factor users of ``PersonaRec-v1``, the flat ``Box`` observation with the action mask as its
   last ``n_items`` entries) and trains stable-baselines3's ``DQN`` with an item-scoring Q-network:
   ``Q(s, i) = f_i . (A z + W mlp(z)) + b_i`` where ``f_i`` is the env's item features (``env.item_features``: genres, popularity, shrunk mean
   rating, ``[b_i, q_i]`` of the recommender's own 32-factor biased MF fitted on the logged
   ratings, i.e. every rating of the dataset except the evaluated users' test rows). The
   observation carries only what a recommender knows: the user's profile embedding and ``[b_u,
   p_u]`` from the same MF (their ratings before the session), the persona, the session's items
   and ratings so far, the step; never the simulator's latent tastes (each simulated user's tastes
   are a posterior draw around the simulator's own 50-factor fit, which no recommender sees). The
   context ``z`` (``--q-net compact``, the default) is read from the observation through
   ``env.observation_layout``: the user's ``[b_u, p_u]``, the session's taste so far (the mean of
   the rated history items' features, each weighted by its rating minus 3.5 stars), the share of
   the history filled and the step; ``--q-net full`` feeds the whole observation instead (it
   learns far less in the same steps: see the README). Items the mask hides get the fixed value ``seen_penalty`` (no gradient), so the greedy action is never a
   seen item and exploration draws among unmasked items.
2. Stops at ``--cpu-budget-s`` seconds of this process's CPU time (the machine is shared, so CPU
   seconds, not wall seconds, measure "2 cores for 10 minutes" = 1200 CPU-seconds) or
   ``--budget-s`` wall seconds, whichever comes first, and records both, with the load average.
3. Evaluates the greedy policy with ``evaluate_policy`` and the built-in random, popularity, ALS, MF
   and oracle policies with ``run_simulation``, on the same ``--episodes`` sessions (same users, same
   random streams), and prints a table with 95% intervals.
4. Writes ``--out`` (``results/rl-item-dqn.json``) and two plots beside it (learning curve,
   comparison).

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

ROOT = Path(__file__).resolve().parents[1]
LEARNED = "item-scoring DQN (learned)"


def item_dqn_classes(
    item_features: np.ndarray, seen_value: float, item_bias: bool = True,
    layout: dict[str, slice] | None = None,
) -> tuple[type, type]:
    """``(DQN subclass, policy class)``: masked per-env epsilon-greedy, item-scoring Q-network.

    ``Q(s, i) = f_i . (A z + W relu(V z)) + b_i``: the item's features ``f_i`` against a user
    vector computed from the observation. With ``layout`` (the env's ``observation_layout``) the
    context ``z`` is compact: the user's collaborative embedding, the session's taste so far (the
    mean of the rated history items' features weighted by their centred ratings), the share of
    the history filled, the step; without it ``z`` is the whole observation but the mask.
    ``item_bias=False`` drops the free per-item bias ``b_i`` (one shared constant): every item is
    then scored through its features only, so an item tried a few times cannot win on a lucky
    estimate of its own bias."""
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.dqn.policies import DQNPolicy
    from torch import nn

    n_items, d = item_features.shape

    class ItemQ(nn.Module):
        """``Q(s, i) = f_i . (A z + W mlp(z)) + b_i``; masked items get ``seen_value``."""

        def __init__(self, obs_dim: int, hidden: int = 128) -> None:
            super().__init__()
            self.register_buffer("features", torch.as_tensor(item_features, dtype=torch.float32))
            self.ctx = obs_dim - n_items
            z_dim = self.ctx
            if layout is not None:
                self.user, self.items, self.ratings, self.step = (
                    layout["user"], layout["history_items"], layout["history_ratings"], layout["step"])
                z_dim = (self.user.stop - self.user.start) + d + 2
            self.linear = nn.Linear(z_dim, d, bias=True)
            self.mlp = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, d, bias=False))
            nn.init.zeros_(self.mlp[2].weight)
            self.item_bias = nn.Parameter(torch.zeros(n_items if item_bias else 1))

        def context(self, obs: torch.Tensor) -> torch.Tensor:
            if layout is None:
                return obs[:, : self.ctx]
            m = len(obs)
            ratings = obs[:, self.ratings]                        # (m, H), 0 = padding or unrated
            hist = obs[:, self.items].reshape(m, ratings.shape[1], d)
            rated = (ratings > 0).float()
            centred = (ratings - 0.7) * rated                     # 0.7 = 3.5 stars on a 5-star scale
            filled = rated.sum(dim=1, keepdim=True)
            taste = (centred[:, :, None] * hist).sum(dim=1) / filled.clamp(min=1.0)
            return torch.cat([obs[:, self.user], taste, filled / ratings.shape[1], obs[:, self.step]], dim=1)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            z, mask = self.context(obs), obs[:, self.ctx :]
            user = self.linear(z) + self.mlp(z)
            q = user @ self.features.T + self.item_bias
            return torch.where(mask > 0.5, q, torch.full_like(q, seen_value))

    class ItemDQNPolicy(DQNPolicy):
        def make_q_net(self) -> Any:
            net = super().make_q_net()
            net.q_net = ItemQ(net.features_dim)
            return net

    class MaskedDQN(DQN):
        """DQN whose exploration picks, per session, a random item the mask allows."""

        def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                    deterministic: bool = False) -> tuple[np.ndarray, Any]:
            action, state = self.policy.predict(observation, state, episode_start, deterministic)
            if deterministic:
                return action, state
            obs = np.asarray(observation)
            batched = obs.ndim == 2
            obs2 = obs if batched else obs[None]
            action = np.array(action).reshape(-1).copy()
            explore = np.random.rand(len(obs2)) < self.exploration_rate
            for j in np.flatnonzero(explore):
                allowed = np.flatnonzero(obs2[j, -n_items:] > 0.5)
                action[j] = np.random.choice(allowed) if len(allowed) else np.random.randint(n_items)
            return (action if batched else action[0]), state

    return MaskedDQN, ItemDQNPolicy


class TrainingCurve:
    """SB3 callback: mean return of the training episodes per block of steps; stops at a CPU or wall budget."""

    def __new__(cls, cpu_budget_s: float, wall_budget_s: float, every: int) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class _Curve(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.start, self.cpu0 = time.perf_counter(), time.process_time()
                self.points: list[dict[str, float]] = []
                self._returns: list[float] = []
                self._next = every

            def _on_step(self) -> bool:
                for info in self.locals.get("infos", []):
                    if "episode" in info:
                        self._returns.append(float(info["episode"]["r"]))
                if self.num_timesteps >= self._next and self._returns:
                    self.points.append({
                        "timesteps": int(self.num_timesteps),
                        "seconds": round(time.perf_counter() - self.start, 1),
                        "cpu_seconds": round(time.process_time() - self.cpu0, 1),
                        "mean_return": float(np.mean(self._returns)),
                        "episodes": len(self._returns),
                    })
                    last = self.points[-1]
                    print(f"  {last['timesteps']:>9,} steps  training return {last['mean_return']:6.2f} "
                          f"({last['episodes']} episodes)  {last['cpu_seconds']:.0f} CPU-s", flush=True)
                    self._returns = []
                    self._next += every
                return (time.process_time() - self.cpu0 < cpu_budget_s
                        and time.perf_counter() - self.start < wall_budget_s)

        return _Curve()


def main(argv: list[str] | None = None) -> int:
    p = bench_argparser(__file__, __doc__, out="rl-item-dqn.json", raw=True)
    p.add_argument("--cpu-budget-s", type=float, default=1080.0,
                   help="training CPU seconds of this process (default 1080, under 2 cores x 10 min)")
    p.add_argument("--budget-s", type=float, default=3600.0, help="training wall seconds at most")
    p.add_argument("--steps", type=int, default=200_000,
                   help="planned training steps (exploration decays over the first 20%%); the budget may stop earlier")
    p.add_argument("--num-envs", type=int, default=32, help="sessions stepped together")
    p.add_argument("--episodes", type=int, default=1000, help="evaluation sessions per policy")
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gamma", type=float, default=0.7)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--buffer", type=int, default=20_000, help="replay buffer size (transitions)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--q-net", choices=("compact", "full"), default="compact",
                   help="context of the Q-network: compact (user embedding, session taste so far, "
                        "step) or full (the whole observation)")
    p.add_argument("--no-item-bias", action="store_true",
                   help="score items through their features only (no free per-item bias b_i)")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic population, a few hundred steps")
    args = p.parse_args(argv)
    # Created before training: the file records the load average before and after the run.
    results_file = ResultsFile(out_path(args), "train_item_dqn", argv, script="examples/train_item_dqn.py")

    import torch
    from stable_baselines3.common.vec_env import VecMonitor

    from recsim_personas.envs.evaluation import evaluate_policy
    from recsim_personas.envs.sb3 import SB3VecEnv
    from recsim_personas.envs.simulate import SimulationConfig, run_simulation

    torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
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
    raw = SB3VecEnv.make(num_envs=args.num_envs, observation="flat", mask_in_obs=True, **options, **objects)
    population, agent = raw.env.population, raw.env.agent
    seen_value = float(raw.env.config.seen_penalty)
    layout = raw.env.observation_layout if args.q_net == "compact" else None
    dqn_cls, policy_cls = item_dqn_classes(raw.env.item_features, seen_value, item_bias=not args.no_item_bias,
                                           layout=layout)
    hp = {"buffer_size": args.buffer, "learning_starts": 50 if args.smoke else 2_000, "batch_size": 256,
          "train_freq": 1, "gradient_steps": 2, "target_update_interval": 2_000, "gamma": args.gamma,
          "learning_rate": args.lr, "exploration_fraction": 0.2, "exploration_initial_eps": 1.0,
          "exploration_final_eps": 0.05, "optimize_memory_usage": True}
    model = dqn_cls(policy_cls, VecMonitor(raw), seed=args.seed, device="cpu", verbose=0,
                    replay_buffer_kwargs={"handle_timeout_termination": False}, **hp)
    # Exploration decays over the first 20% of --steps; the CPU budget may stop training earlier.
    steps_planned = min(args.steps, 2_000) if args.smoke else args.steps
    curve = TrainingCurve(args.cpu_budget_s, args.budget_s, every=max(args.num_envs * 8, steps_planned // 60))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps_planned, callback=curve)
    train_s, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load_end = [round(x, 2) for x in os.getloadavg()]
    steps = int(model.num_timesteps)
    print(f"trained {steps:,} steps in {train_s:.0f} s wall, {train_cpu:.0f} CPU-s "
          f"(load average {load_start[0]} -> {load_end[0]})")

    # 2. Evaluate on one schedule.
    sim = SimulationConfig(policies=("random", "popularity", "als", "mf", "oracle"), episodes=args.episodes,
                           horizon=options["horizon"], seed=args.seed, oracle_candidates=None,
                           env={"cheap_agent": "mf"})
    report = run_simulation(sim, agent=agent, population=population, progress=False)
    keep = ("policy", "return", "mean_rating", "like_rate", "session_length", "exit_rate")
    rows = [{k: r[k] for k in r if k.split("_ci")[0] in keep} for r in report.results]
    learned = evaluate_policy({**options, "observation": "flat", "mask_in_obs": True}, model,
                              episodes=args.episodes, seed=args.seed, population=population, agent=agent)
    rows.insert(4, {"policy": LEARNED, **{k: v for k, v in learned.to_dict().items()
                                          if k not in ("episodes", "steps")}})
    by = {r["policy"]: r for r in rows}
    pop_row, learned_row = by["popularity"], by[LEARNED]
    print(f"\n{'policy':<28} {'return [95% CI]':<26} {'mean rating':>11} {'length':>7}")
    for r in rows:
        lo, hi = r["return_ci"]
        print(f"{r['policy']:<28} {r['return']:6.2f} [{lo:6.2f}, {hi:6.2f}]  {r['mean_rating']:>11.2f} "
              f"{r['session_length']:>7.1f}")
    verdict = {
        "oracle_margin_over_popularity": by["oracle"]["return"] / pop_row["return"] - 1,
        "learned_margin_over_popularity": learned_row["return"] / pop_row["return"] - 1,
        "learned_beats_popularity_non_overlapping_95ci": learned_row["return_ci"][0] > pop_row["return_ci"][1],
        "within_budget_1200_cpu_seconds": train_cpu <= 1200.0,
    }
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in verdict.items()})

    # 3. Write.
    config = {**vars(args), "out": str(results_file.path), "options": options, "train_steps": steps,
              "stopped_by": "budget" if steps < steps_planned else "planned steps",
              "train_wall_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
              "budget_reading": "process CPU seconds of the one training process (torch and OpenBLAS "
                                "1 thread) <= 1200, i.e. 2 cores x 10 min; wall time inflated by the "
                                "shared machine's load",
              "algorithm": "stable-baselines3 DQN, item-scoring Q-network, masked exploration",
              "dqn": {**hp, "q_network": "f_i . (A z + W relu(V z)) + " + ("c (no per-item bias)" if args.no_item_bias else "b_i")
                      + ", hidden 128, masked -> seen_penalty; z = " + (
                          "[user MF embedding, ratings-weighted mean of the session's item features, history filled, step]"
                          if args.q_net == "compact" else "the whole observation but the mask")},
              "observation": "flat (profile, user MF embedding [b_u, p_u] of the recommender's 32-factor MF "
                             "on the logged ratings, persona, history item features and ratings, step) + "
                             "action mask; no simulator latent",
              "population": population.name, "agent": repr(agent)}
    path = results_file.write(
        config=config, metrics={}, results=rows,
        hardware={"training_load_average": {"start": load_start, "end": load_end}},
        sections={"verdict": verdict, "learning_curve": curve.points},
    )
    from train_maskable_ppo import plot

    plots = plot(curve.points, rows, path.with_suffix(""), args.episodes, learned=LEARNED)
    print(f"wrote {path}, {', '.join(str(x) for x in plots)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
