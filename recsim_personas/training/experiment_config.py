"""The settings of the Table-1 experiment: :class:`ExperimentConfig`, over the rows of Table 1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError, did_you_mean
from recsim_personas.training.config import PRESETS, LoraTrainConfig

__all__ = ["ADAPTER_KINDS", "MEMORY_MODES", "TABLE1_ROWS", "ExperimentConfig"]

MemoryMode = Literal["ms", "msml"]
AdapterKind = Literal["persona", "single_min", "single_max"]
EvalMode = Literal["score", "generate"]
#: Memory modes: the profile M_s alone, or with retrieved memories M_l.
MEMORY_MODES: tuple[str, ...] = get_args(MemoryMode)
#: Adapter kinds that are trained (``base`` = the prompted model, no adapter).
ADAPTER_KINDS: tuple[str, ...] = get_args(AdapterKind)
#: Table 1 row number -> (adapter kind, memory mode), as in the paper.
TABLE1_ROWS: dict[int, tuple[str, str]] = {
    3: ("base", "ms"),
    4: ("base", "msml"),
    5: ("single_max", "ms"),
    6: ("single_min", "ms"),
    7: ("single_max", "msml"),
    8: ("single_min", "msml"),
    9: ("persona", "ms"),
    10: ("persona", "msml"),
}


def _choices(values: Sequence[str], allowed: Sequence[str], what: str, errors: list[str]) -> tuple[str, ...]:
    out = tuple(values)
    for v in out:
        if v not in allowed:
            errors.append(f"{what}: unknown value {v!r}; choose from {', '.join(allowed)}.{did_you_mean(v, allowed)}")
    if len(set(out)) != len(out):
        errors.append(f"{what} has duplicates: {list(out)}")
    return out


@dataclass(frozen=True)
class ExperimentConfig(Config):
    """What the Table-1 experiment trains and evaluates.

    Every field has help text in its metadata (:meth:`field_help`). ``to_dict`` / ``from_dict``
    round-trip; ``from_dict`` reads ``memory_modes`` and ``adapters`` also as comma-separated text.
    """

    config_name: ClassVar[str] = "ExperimentConfig"

    model: str | None = field(
        default=None, metadata={"help": "Base LM: None = packaged SmolLM2-135M-Instruct, or a hub id / path."}
    )
    device: str = field(default="auto", metadata={"help": "auto (CUDA if present), cpu or cuda."})
    train_preset: Literal["cpu", "paper"] = field(
        default="cpu", metadata={"help": "LoraTrainConfig preset: cpu or paper."}
    )
    train_overrides: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "LoraTrainConfig fields overriding the preset."}
    )
    memory_modes: tuple[MemoryMode, ...] = field(
        default=("ms", "msml"), metadata={"help": "Memory modes: ms (M_s) and/or msml (M_s + M_l)."}
    )
    adapters: tuple[AdapterKind, ...] = field(
        default=("persona", "single_min", "single_max"),
        metadata={"help": "Adapter kinds to train and evaluate."},
    )
    base_rows: bool = field(
        default=True, metadata={"help": "Also evaluate the prompted base model (rows 3-4)."}
    )
    max_users: int | None = field(
        default=None,
        metadata={"help": "Use at most N users of the split (seeded, proportional per persona, at least "
                  "one per persona), or None for all (CPU budget)."},
    )
    train_rows_per_user: int | float | None = field(
        default=None,
        metadata={"help": "Cap on train rows per user (int), a fraction, or None for all (CPU budget)."},
    )
    test_rows_per_user: int | None = field(
        default=None, metadata={"help": "Cap on test rows per user, or None for all (CPU budget)."}
    )
    eval_mode: EvalMode = field(
        default="score", metadata={"help": "score (distribution, one pass) or generate (the paper's)."}
    )
    template: str = field(default="paper", metadata={"help": "Prompt preset (paper or compact)."})
    cue: bool = field(
        default=False,
        metadata={"help": "Collaborative cue: every train and test prompt also states the user's mean rating "
                  "and count, the item's mean and count and a bias model's estimate (leave-one-out for "
                  "train rows); the adapters are then named <adapter>_cue__<mode> and the results "
                  "row<NN>_<adapter>_cue__<mode>, apart from those without it."},
    )
    k: int = field(default=1, metadata={"help": "Memories retrieved per prompt in msml mode (paper: 1)."})
    delta: float = field(default=0.0, metadata={"help": "Minimum cosine similarity of a memory."})
    eval_batch_size: int = field(default=64, metadata={"help": "Requests per agent call."})
    scorer_batch: int = field(default=16, metadata={"help": "Rows per scoring forward pass."})
    server: str | None = field(
        default=None,
        metadata={"help": "Evaluate through a vLLM server that serves the base model and the run's "
                  "adapters (`recsim-personas serve RUN --launch`), e.g. http://127.0.0.1:8000/v1; "
                  "None: in this process."},
    )
    calibrate: bool = field(
        default=True,
        metadata={"help": "Hold out the newest validation_fraction of each user's train rows (never trained "
                  "on), score them with every evaluated agent and fit a temperature of its rating "
                  "distribution on them: the test predictions get calibrated distributions beside the raw "
                  "ones (the fidelity report shows both)."},
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of each user's train rows (the newest) held out as the "
                               "validation slice when calibrate is on, in (0, 1)."},
    )
    validation_rows: int | None = field(
        default=None,
        metadata={"help": "Score at most N validation rows per evaluated agent (a seeded sample, the same "
                  "share of every user's slice), or None for the whole slice (CPU budget)."},
    )
    calibrate_rows: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "Table-1 rows whose temperature is fitted when calibrate is on (each costs one "
                  "scoring pass over the validation rows), or None for every evaluated row; the slice is "
                  "held out of training either way."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the row caps, sub-sampling and sampling."})

    def __post_init__(self) -> None:
        errors: list[str] = []
        object.__setattr__(self, "memory_modes", _choices(self.memory_modes, MEMORY_MODES, "memory_modes", errors))
        object.__setattr__(self, "adapters", _choices(self.adapters, ADAPTER_KINDS, "adapters", errors))
        if not self.memory_modes:
            errors.append("memory_modes is empty; give ms and/or msml")
        if not self.adapters and not self.base_rows:
            errors.append("nothing to do: adapters is empty and base_rows is False")
        if self.train_preset not in PRESETS:
            errors.append(f"train_preset: unknown preset {self.train_preset!r}; choose from {', '.join(PRESETS)}."
                          + did_you_mean(self.train_preset, PRESETS))
        else:
            try:
                self.train_config()
            except ConfigError as exc:
                errors.append(f"train_overrides: {exc}")
        if self.eval_mode not in get_args(EvalMode):
            errors.append(f"eval_mode must be score or generate, got {self.eval_mode!r}")
        r = self.train_rows_per_user
        if r is not None and (isinstance(r, bool) or not (
            (isinstance(r, int) and r >= 1) or (isinstance(r, float) and 0 < r <= 1)
        )):
            errors.append(f"train_rows_per_user must be an int >= 1, a fraction in (0, 1] or None, got {r!r}")
        u = self.max_users
        if u is not None and (isinstance(u, bool) or not isinstance(u, int) or u < 1):
            errors.append(f"max_users must be an int >= 1 or None, got {u!r}")
        t = self.test_rows_per_user
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            errors.append(f"test_rows_per_user must be an int >= 1 or None, got {t!r}")
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            errors.append(f"validation_fraction must be a number in (0, 1), got {f!r}")
        v = self.validation_rows
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            errors.append(f"validation_rows must be an int >= 1 or None, got {v!r}")
        if self.calibrate_rows is not None:
            object.__setattr__(self, "calibrate_rows", tuple(int(n) for n in self.calibrate_rows))
            unknown = [n for n in self.calibrate_rows if n not in TABLE1_ROWS]
            if unknown:
                errors.append(f"calibrate_rows: {unknown} are not Table-1 rows ({', '.join(map(str, TABLE1_ROWS))})")
        if not isinstance(self.calibrate, bool):
            errors.append(f"calibrate must be true or false, got {self.calibrate!r}")
        if self.k < 1:
            errors.append(f"k must be >= 1, got {self.k}")
        if self.eval_batch_size < 1 or self.scorer_batch < 1:
            errors.append("eval_batch_size and scorer_batch must be >= 1")
        try:
            from recsim_personas.agents.prompts import get_template

            get_template(self.template)
        except ConfigError as exc:
            errors.append(f"template: {exc}")
        if errors:
            raise ConfigError("invalid ExperimentConfig:\n  - " + "\n  - ".join(errors))

    def train_config(self) -> LoraTrainConfig:
        """The LoRA settings: the preset with :attr:`train_overrides` applied."""
        return LoraTrainConfig.preset(self.train_preset, **dict(self.train_overrides))

    def calibrated(self, row: int) -> bool:
        """Whether Table-1 row ``row`` gets a temperature (``calibrate`` and ``calibrate_rows``)."""
        return self.calibrate and (self.calibrate_rows is None or row in self.calibrate_rows)

    def rows(self) -> list[int]:
        """Table-1 row numbers this config produces, ascending."""
        out = []
        for no, (kind, mode) in TABLE1_ROWS.items():
            if mode in self.memory_modes and (kind in self.adapters or (kind == "base" and self.base_rows)):
                out.append(no)
        return out
