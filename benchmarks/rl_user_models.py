"""How much personalisation pays under each cheap user model: the oracle's margin over popularity.

    OPENBLAS_NUM_THREADS=1 python benchmarks/rl_user_models.py --episodes 1000

For each user model of the embedded default population (ml-latest-small, 115 users), runs random,
popularity, ALS, the recommender's biased MF and the oracle (whole catalogue scored) in the vector env on one user schedule
(``run_simulation``: same users and random streams for every policy), plus "best global list": one
ranking for everybody, by the simulator's mean rating over the population's users (the best a
policy can do without personalising, given the simulator's own means). User models:

- ``bias``: user + item biases fitted on the population's train split (``PersonaRec-v0``);
- ``mf``: the latent-factor users of ``PersonaRec-v1`` (biased MF on ml-latest-small without the
  population's test ratings, 50 factors, reg 0.1; each user's tastes one draw from the ridge
  posterior, noise = the rest of the held-out residual variance);
- ``mf-mean``: the same model with each user's tastes at the point estimate (v1 before the
  posterior draw: tastes shrunk towards the item means) and noise = the held-out residual;
- ``mf-train-only``: the point-estimate model fitted on the population's 9.6k train ratings only.

The recommenders are fitted on ``--recommender-data`` (``logged``, the env's default: every rating
of ml-latest-small except the population's test rows; ``train``: the population's train split).

Writes ``results/rl-user-models.json`` (config, git, versions, hardware with CPU model and flags,
results) and prints a table.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path

POLICIES = ("random", "popularity", "als", "mf", "oracle")


def main(argv: list[str] | None = None) -> int:
    p = bench_argparser(__file__, __doc__, out="rl-user-models.json", raw=True)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recommender-data", choices=("logged", "train"), default="logged",
                   help="what the recommenders are fitted on (the env's recommender_data)")
    args = p.parse_args(argv)
    results_file = ResultsFile(out_path(args), "rl_user_models", argv)

    from recsim_personas.agents.mf_agent import LatentFactorUserAgent
    from recsim_personas.envs.config import PersonaRecConfig
    from recsim_personas.envs.evaluation import evaluate_policy
    from recsim_personas.envs.population import build_agent, load_population, simulator_ratings
    from recsim_personas.envs.simulate import SimulationConfig, run_simulation
    from recsim_personas.envs.vector import PersonaRecVectorEnv

    population = load_population(PersonaRecConfig())
    activity = dict(zip(population.user_ids.tolist(), population.activity_levels.tolist(), strict=True))
    agents = {
        "bias": build_agent(PersonaRecConfig(agent="bias"), population),
        "mf": build_agent(PersonaRecConfig(agent="mf"), population),
        "mf-mean": LatentFactorUserAgent.fit(
            simulator_ratings(population), population.scale, activity_levels=activity,
            table_users=population.user_ids, table_items=population.item_ids, tastes="mean",
        ),
        "mf-train-only": LatentFactorUserAgent.fit(
            population.train, population.scale, activity_levels=activity,
            table_users=population.user_ids, table_items=population.item_ids, tastes="mean",
        ),
    }
    rows: list[dict[str, Any]] = []
    for name, agent in agents.items():
        t0 = time.perf_counter()
        sim = SimulationConfig(policies=POLICIES, episodes=args.episodes, horizon=args.horizon,
                               seed=args.seed, oracle_candidates=None,
                               env={"recommender_data": args.recommender_data})
        report = run_simulation(sim, agent=agent, population=population, progress=False)
        by = {r["policy"]: r for r in report.results}
        env = PersonaRecVectorEnv(32, population=population, agent=agent, horizon=args.horizon)
        means = agent.mean_rating(np.repeat(population.user_ids, population.n_items),
                                  np.tile(population.item_ids, population.n_users))
        global_score = means.reshape(population.n_users, population.n_items).mean(axis=0)

        def global_list(obs: Any, info: Any, score: np.ndarray = global_score) -> np.ndarray:
            return np.where(info["action_mask"].astype(bool), score[None, :], -np.inf).argmax(axis=1)

        best_global = evaluate_policy(env, global_list, args.episodes, args.seed).to_dict()
        row: dict[str, Any] = {"user_model": name, "agent": repr(agent)}
        for policy in POLICIES:
            row[policy], row[f"{policy}_ci"] = by[policy]["return"], by[policy]["return_ci"]
        row["best_global_list"], row["best_global_list_ci"] = best_global["return"], best_global["return_ci"]
        row["oracle_margin_over_popularity"] = row["oracle"] / row["popularity"] - 1
        row["best_global_list_margin_over_popularity"] = row["best_global_list"] / row["popularity"] - 1
        row["oracle_margin_over_best_global_list"] = row["oracle"] / row["best_global_list"] - 1
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{name:<14} random {row['random']:6.2f}  popularity {row['popularity']:6.2f}  "
              f"ALS {row['als']:6.2f}  MF {row['mf']:6.2f}  best global list {row['best_global_list']:6.2f}  "
              f"oracle {row['oracle']:6.2f}  oracle / popularity - 1 = "
              f"{row['oracle_margin_over_popularity']:+.1%}", flush=True)
    config = {**vars(args), "out": str(args.out), "population": population.name,
              "metric": "mean episode return, 95% CI", "oracle_candidates": "all"}
    print(f"wrote {results_file.write(config=config, metrics={}, results=rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
