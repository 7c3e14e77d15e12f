"""The Table-1 experiment: train theta_persona / theta_single(min) / theta_single(max), evaluate all rows.

Given a run folder from the memory stage (split, profiles, memories, embeddings, personas) and an
:class:`ExperimentConfig`, :func:`run_experiment` produces the small-LM rows of the paper's Table 1:

====  ==============  ==========
No.   adapter         memories
====  ==============  ==========
3     - (prompted)    M_s
4     - (prompted)    M_s + M_l
5     single (max)    M_s
6     single (min)    M_s
7     single (max)    M_s + M_l
8     single (min)    M_s + M_l
9     persona         M_s
10    persona         M_s + M_l
====  ==============  ==========

Training data, per memory mode: one row per train interaction (at most ``train_rows_per_user`` per
user, drawn at random with the seed). ``persona_<p>`` trains on the rows of persona ``p``'s users.
``single_min`` / ``single_max`` train on all users' rows, sub-sampled by the same fraction per user to
the size of the smallest / largest persona dataset (the paper's fair comparison). Evaluation: the test
rows (at most ``test_rows_per_user`` per user, drawn at random), each persona adapter on its own
users, the single adapters and the prompted base model on everyone.

The work is split by job: :mod:`~recsim_personas.training.experiment_config` (the config),
:mod:`~recsim_personas.training.plan` (counting without a model), :mod:`~recsim_personas.training.train_all`
(training), :mod:`~recsim_personas.training.evaluation` (evaluation), :mod:`~recsim_personas.training.table`
(the frame); this module runs them in order.

Calibration (``calibrate``, on by default): the newest ``validation_fraction`` of each user's train
rows is held out of every adapter's training rows, scored by each evaluated agent, and a temperature
of its rating distribution is fitted there (:mod:`~recsim_personas.training.calibration`); the
test predictions get calibrated distributions beside the raw ones.

Caching: every finished adapter lives in ``adapters/<name>__<mode>/`` (with ``recsim_adapter.json``;
an interrupted adapter resumes from its checkpoint) and every finished evaluation in
``results/row<NN>_<adapter>__<mode>.json`` together with the predictions parquet. A re-run skips what
is finished with the same inputs and redoes what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# Besides its own two names, this module keeps importable (for compatibility) the names it held
# before the re-cut; their homes are experiment_config, plan, run_inputs, run_paths, evaluation,
# table and train_all.
from recsim_personas.training.context import load_context
from recsim_personas.training.evaluation import evaluate_rows
from recsim_personas.training.experiment_config import ADAPTER_KINDS as ADAPTER_KINDS
from recsim_personas.training.experiment_config import TABLE1_ROWS as TABLE1_ROWS
from recsim_personas.training.experiment_config import ExperimentConfig
from recsim_personas.training.plan import ExperimentPlan as ExperimentPlan
from recsim_personas.training.plan import plan_experiment as plan_experiment
from recsim_personas.training.run_inputs import persona_map as persona_map
from recsim_personas.training.run_inputs import select_users as select_users
from recsim_personas.training.run_paths import adapter_dir as adapter_dir
from recsim_personas.training.table import experiment_table
from recsim_personas.training.table import finished_adapters as finished_adapters
from recsim_personas.training.train_all import train_adapters

__all__ = ["ExperimentResult", "run_experiment"]



@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        table: One row per Table-1 row (``No.``, ``Adapter``, ``Memories``, ``RMSE``, ``MAE``, ``URR``,
            ``outside_mass``, ``RMSE (mode)``, ``RMSE (sample)``, ``test_rows``, ``train_rows``,
            ``train_seconds``, ``eval_seconds``; with calibration also ``T``, ``RMSE (calibrated)``,
            ``MAE (calibrated)``).
        train: ``{"<name>__<mode>": TrainResult}``.
        results: ``{row: results dict}`` as written to ``results/``.
        persona_points: Per persona adapter: ``persona``, ``memory``, ``train_rows``, ``rmse``, ``mae``
            (the paper's Figure 3).
    """

    table: pd.DataFrame
    train: dict[str, Any]
    results: dict[int, dict[str, Any]]
    persona_points: list[dict[str, Any]]


def run_experiment(
    run_dir: str | Path, dataset: Any, config: ExperimentConfig, *, model: Any = None, tokenizer: Any = None,
    progress: bool = True, log: Callable[[str], None] | None = None,
) -> ExperimentResult:
    """Train every adapter, evaluate every row; resumable (finished work is reused).

    Args:
        run_dir: Run folder from the memory stage (split, memories, embeddings, personas).
        dataset: The dataset the run folder was built from.
        config: What to train and evaluate.
        model: A loaded base model (default: ``load_causal_lm(config.model)``); returned unchanged.
        tokenizer: Its tokenizer (required with ``model``).
        progress: Progress bars.
        log: Receives progress lines (adapter finished, row evaluated).

    Returns:
        :class:`ExperimentResult` whose ``table`` has the paper's row numbering 3-10 and the train
        time per row.
    """
    ctx = load_context(run_dir, dataset, config, model, tokenizer)
    train = train_adapters(run_dir, dataset, config, progress=progress, log=log, _ctx=ctx) if config.adapters else {}
    results = evaluate_rows(run_dir, dataset, config, progress=progress, log=log, _ctx=ctx)
    table, points = experiment_table(config, results, train, ctx.personas)
    return ExperimentResult(table=table, train=train, results=results, persona_points=points)
