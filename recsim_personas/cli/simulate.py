"""``recsim-personas simulate``: baseline policies in PersonaRec-v0, next to their offline metrics.

Runs recommendation policies (random, popularity, ALS, an oracle that asks the simulator, an
epsilon-greedy bandit) against the simulated users of PersonaRec-v0 and reports simulated rating,
like rate, session length, exit rate and return with 95% CIs, next to each policy's offline
precision/recall/NDCG@k on the test split, and the Spearman correlation of the two orderings. Table
+ PNG + JSON.

Examples::

    recsim-personas simulate                                        # embedded default, mf agent
    recsim-personas simulate --policies random,popularity,als,oracle,bandit --episodes 400 --horizon 20
    recsim-personas simulate --run-dir runs/ml1m --agent lm --episodes 64 --horizon 10
    recsim-personas simulate --slate-size 5 --reward like --exit rule --out results/sim

Runs every policy for ``--episodes`` sessions of at most ``--horizon`` steps in the vector
environment (the same users and random streams for every policy, the schedule of
:func:`~recsim_personas.envs.evaluation.evaluate_policy`) and prints, per policy, the mean
simulated rating, like rate, session length, exit rate and return with 95% confidence intervals,
next to precision / recall / NDCG at ``--k`` on the held-out test split (and RMSE / MAE for the
oracle, whose prediction is the agent's expected rating), and the Spearman correlation between the
offline and the simulated ordering of the policies. Writes ``simulate.json`` and ``simulate.png``
into ``--out`` (default: ``<run-dir>/results`` with a run folder, else ``runs/simulate``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def _policies(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` command."""
    from recsim_personas.cli.options import add_command, add_count_option

    p = add_command(sub, "simulate", run,
                    help="run baseline policies in PersonaRec-v0; compare with their offline metrics")
    g = p.add_argument_group("simulation")
    from recsim_personas.envs.config import DEFAULT_POLICIES, POLICY_NAMES

    g.add_argument("--policies", type=_policies, default=DEFAULT_POLICIES,
                   metavar="A,B,...", help=f"policies: {', '.join(POLICY_NAMES)} "
                   f"(default: {','.join(DEFAULT_POLICIES)})")
    g.add_argument("--episodes", type=int, default=200, help="sessions per policy (default: %(default)s)")
    g.add_argument("--horizon", type=int, default=20, help="most steps per session (default: %(default)s)")
    g.add_argument("--n-envs", type=int, default=32,
                   help="sessions stepped together in the vector env (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of users, env and policies (default: 0)")
    g.add_argument("--k", type=int, default=10, help="list length of offline metrics (default: 10)")
    add_count_option(g, "--oracle-candidates", "candidate", words=("none",), default=200,
                     help="items the oracle scores per step (default: 200; 'all' = whole catalogue)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="folder for simulate.json and simulate.png (default: <run-dir>/results, "
                   "else runs/simulate)")
    e = p.add_argument_group("environment (PersonaRec-v0 options)")
    e.add_argument("--agent", default="auto", choices=("auto", "mf", "bias", "lm"),
                   help="simulated users: mf (cheap latent-factor users with tastes, PersonaRec-v1's), "
                   "bias (cheap user + item bias users, PersonaRec-v0's), lm (persona LoRA; needs "
                   "--run-dir with adapters), auto (lm with --run-dir, else mf)")
    e.add_argument("--run-dir", default=None, metavar="DIR",
                   help="run folder from `recsim-personas memory` (+ `train`); default: the "
                   "embedded ml-latest-small population")
    e.add_argument("--dataset", default="ml-latest-small", help="default population's dataset")
    e.add_argument("--data-dir", default=None, help="folder of the dataset files")
    e.add_argument("--memory-mode", default="ms", choices=("ms", "msml"), help="LM agent memories")
    e.add_argument("--model", default=None, help="LM agent base model (hub id or path)")
    e.add_argument("--server", default=None, metavar="URL",
                   help="LM agent: score with a vLLM server (`recsim-personas serve RUN --launch`), e.g. "
                   "http://127.0.0.1:8000/v1; default: in this process")
    e.add_argument("--slate-size", type=int, default=1, help="items per recommendation (default 1)")
    e.add_argument("--reward", default="rating", choices=("rating", "normalized", "like"))
    e.add_argument("--exit", default="agent", choices=("agent", "rule", "none"))
    e.add_argument("--rating", default="sample", choices=("sample", "expectation"))
    e.add_argument("--seen-items", default="penalty", choices=("penalty", "mask", "allow"))


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    from rich.console import Console

    from recsim_personas.cli.common import check_models, check_server
    from recsim_personas.cli.options import config_from_args
    from recsim_personas.cli.outputs import check_output_dir
    from recsim_personas.envs.simulate import SimulationConfig, run_simulation

    check_server(args.server)  # a server that is down: one line now, not after the population loads

    # The PersonaRec-v0 options (in simulate.json in this order); the rest are SimulationConfig's fields.
    env_options = ("run_dir", "dataset", "data_dir", "memory_mode", "model", "server", "slate_size", "reward",
                   "exit", "rating", "seen_items")
    env = {"agent": args.agent, "cheap_agent": "mf", **{name: getattr(args, name) for name in env_options}}
    config = config_from_args(SimulationConfig, args, env=env)
    out = Path(args.out) if args.out else (Path(args.run_dir) / "results" if args.run_dir else Path("runs/simulate"))
    check_output_dir(out, "--out")  # before the sessions run, not after
    check_models([(args.model, "--model")])
    report = run_simulation(config, progress=True)
    Console(width=max(160, Console().width)).print(report.table())
    paths = report.save(out)
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0
