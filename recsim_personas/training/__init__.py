"""LoRA fine-tuning of the simulated users and the Table-1 experiment.

- :mod:`~recsim_personas.training.rows`: ``build_training_rows`` / ``build_test_rows`` (prompt + target
  per interaction, retrieval never returns the row itself), ``cap_per_user``, ``subsample_to_size``.
- :mod:`~recsim_personas.training.config`: ``LoraTrainConfig`` with the ``paper`` and ``cpu`` presets.
- :mod:`~recsim_personas.training.lora`: ``train_adapter`` (answer-token loss, shared user prefix,
  resumable checkpoints, ``save_pretrained`` output), ``load_adapters``, ``load_train_result``.
- :mod:`~recsim_personas.training.experiment`: ``ExperimentConfig``, ``plan_experiment``,
  ``train_adapters``, ``evaluate_rows``, ``run_experiment`` (rows 3-10 of the paper's Table 1).

Nothing is imported here, so ``import recsim_personas.training`` stays cheap (torch and peft load only
when training starts).
"""

from __future__ import annotations

__all__: list[str] = []
