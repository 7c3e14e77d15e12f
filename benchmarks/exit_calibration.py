"""Benchmark: does the LM user agent's leave decision respond to the session, raw and anchored?

Command (from the project root; about 10 minutes on 2 cores)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/exit_calibration.py

Population: the embedded default (ml-latest-small, paper split, template profiles). Agent:
:class:`~recsim_personas.agents.lm_agent.LMUserAgent` on the default SmolLM2-135M-Instruct (the exit
prompt is scored by the base model, as in ``PersonaRec-v0``). For ``--users`` seeded users it asks
the exit prompt after four scripted sessions: nothing shown yet, three items rated at the top of the
scale, three at the bottom, three not rated (already seen), and reports the mean P(leave) of the
``raw`` model and of the ``anchored`` calibration (the default; ``recsim_personas.agents.lm_agent``)
with the expected session length ``1 / P(leave)`` a constant hazard of that size gives. Then it
rolls out ``--episodes`` sessions of a random policy in the env (``exit="agent"``, horizon
``--horizon``) with each calibration and reports the measured session lengths and exit rates.

What to read: a useful exit model leaves sooner after bad items than after good ones (the "bottom -
top" column > 0). Writes ``--out`` (default ``results/exit_calibration.json``) through
:mod:`recsim_personas.benchmarking` and prints a table.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__)
    parser.add_argument("--users", type=int, default=24, help="users asked the scripted sessions (default 24)")
    parser.add_argument("--episodes", type=int, default=16, help="rollout sessions per calibration (default 16)")
    parser.add_argument("--horizon", type=int, default=20, help="rollout horizon (default 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "exit_calibration", argv)

    import gymnasium as gym
    import torch
    from rich.console import Console
    from rich.table import Table

    import recsim_personas  # noqa: F401  (registers PersonaRec-v0)
    from recsim_personas.agents.llm import load_causal_lm
    from recsim_personas.agents.lm_agent import DEFAULT_EXIT_HAZARD, LMUserAgent
    from recsim_personas.agents.protocol import SessionEvent
    from recsim_personas.agents.scoring import RatingScorer
    from recsim_personas.envs.population import default_population

    if args.threads:
        torch.set_num_threads(args.threads)
    population = default_population()
    model, tokenizer = load_causal_lm(None)
    scorer = RatingScorer(model, tokenizer, population.scale)
    agents = {
        calibration: LMUserAgent(scorer, population.store, population.catalog, exit_calibration=calibration)
        for calibration in ("raw", "anchored")
    }
    rng = np.random.default_rng(args.seed)
    users = rng.choice(population.user_ids, size=min(args.users, population.n_users), replace=False).tolist()
    items = population.item_ids[rng.choice(population.n_items, size=3, replace=False)].tolist()
    scale = population.scale
    sessions = {
        "nothing shown": [],
        f"three rated {scale.format(scale.max)}": [SessionEvent(i, float(scale.max)) for i in items],
        f"three rated {scale.format(scale.min)}": [SessionEvent(i, float(scale.min)) for i in items],
        "three not rated": [SessionEvent(i, float("nan")) for i in items],
    }
    scripted: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for calibration, agent in agents.items():
        scripted[calibration] = {
            name: float(np.mean(agent.leave_probability(users, [events] * len(users))))
            for name, events in sessions.items()
        }
    scripted_seconds = time.perf_counter() - t0
    names = list(sessions)
    top, bottom = names[1], names[2]

    rollouts: dict[str, dict[str, float]] = {}
    for calibration, agent in agents.items():
        env = gym.make("PersonaRec-v0", agent=agent, population=population, horizon=args.horizon, exit="agent")
        action_rng = np.random.default_rng(args.seed)
        lengths = np.zeros(args.episodes, dtype=int)
        exited = np.zeros(args.episodes, dtype=bool)
        t0 = time.perf_counter()
        for episode in range(args.episodes):
            env.reset(seed=args.seed + episode)
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(int(action_rng.integers(population.n_items)))
                lengths[episode] += 1
                exited[episode] = terminated
                done = terminated or truncated
        env.close()
        rollouts[calibration] = {
            "mean_session_length": float(lengths.mean()),
            "exit_rate": float(exited.mean()),
            "seconds": time.perf_counter() - t0,
            "lengths": lengths.tolist(),
        }
        print(f"rollouts {calibration}: mean length {lengths.mean():.1f}, exit rate {exited.mean():.0%}", flush=True)

    table = Table(title="LM exit decision: mean P(leave) after scripted sessions, and random-policy rollouts")
    for col in ["calibration", *names, "bottom - top", "rollout length", "exit rate"]:
        table.add_column(col, justify="right")
    for calibration in agents:
        row = scripted[calibration]
        table.add_row(calibration, *[f"{row[n]:.3f}" for n in names], f"{row[bottom] - row[top]:+.3f}",
                      f"{rollouts[calibration]['mean_session_length']:.1f}",
                      f"{rollouts[calibration]['exit_rate']:.0%}")
    Console(width=140).print(table)

    path = results_file.write(
        config={"users": len(users), "episodes": args.episodes, "horizon": args.horizon, "seed": args.seed,
                "exit_hazard": list(DEFAULT_EXIT_HAZARD), "items": items, "population": repr(population),
                "torch_threads": torch.get_num_threads()},
        metrics={"scripted_mean_p_leave": scripted, "scripted_seconds": scripted_seconds,
                 "bottom_minus_top": {c: scripted[c][bottom] - scripted[c][top] for c in agents},
                 "rollouts": rollouts},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
