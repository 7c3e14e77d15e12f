"""LoRA fine-tuning of the simulated users and the Table-1 experiment.

- :mod:`~recsim_personas.training.rows`: ``build_training_rows`` / ``build_test_rows`` (prompt + target
  per interaction, retrieval never returns the row itself); :mod:`~recsim_personas.training.sampling`:
  ``cap_per_user``, ``subsample_to_size``.
- :mod:`~recsim_personas.training.config`: ``LoraTrainConfig`` with the ``paper`` and ``cpu`` presets.
- :mod:`~recsim_personas.training.lora`: ``train_adapter`` (answer-token loss, shared user prefix,
  resumable checkpoints, ``save_pretrained`` output), built on ``tokens``, ``schedule``, ``forward``,
  ``checkpoint``, ``peft_setup``; ``adapter_folder``: ``TrainResult``, ``load_train_result``,
  ``read_adapter_info``.
- :mod:`~recsim_personas.training.experiment`: ``run_experiment`` (rows 3-10 of the paper's Table 1)
  over ``experiment_config`` (``ExperimentConfig``), ``plan`` (``plan_experiment``), ``run_inputs``
  (``evaluation_rows``, ``select_users``), ``run_paths``, ``train_all`` (``train_adapters``),
  ``evaluation`` (``evaluate_rows``) and ``table`` (``experiment_table``, ``finished_adapters``).
- :mod:`~recsim_personas.training.estimate`: ``measure_rates``, ``estimate_experiment``.

Names load on first use, so ``import recsim_personas.training`` stays cheap (torch and peft load only
when training starts).
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "adapter_folder": ("TrainResult",),
    "config": ("LoraTrainConfig",),
    "evaluation": ("evaluate_rows",),
    "experiment": ("ExperimentResult", "run_experiment"),
    "experiment_config": ("ExperimentConfig",),
    "lora": ("train_adapter",),
    "plan": ("plan_experiment",),
    "rows": ("build_test_rows", "build_training_rows"),
    "run_inputs": ("evaluation_rows",),
    "train_all": ("train_adapters",),
})
