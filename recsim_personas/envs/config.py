"""Settings of ``PersonaRec-v0`` as data: :class:`PersonaRecConfig`.

Every keyword that ``gym.make("PersonaRec-v0", ...)`` accepts (besides ``agent``, ``population`` and
``render_mode``, which are objects) is a field here, with help text in the field's metadata. Loading,
saving and documenting come from the library's :class:`~recsim_personas.config.Config` base (a
config round-trips through ``to_dict`` / ``from_dict``; ``field_help``); ``__post_init__`` reports
all invalid fields at once, before any data or model is loaded.

Example:
    >>> cfg = PersonaRecConfig(horizon=10, slate_size=3, reward="like")
    >>> PersonaRecConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> cfg.resolved_agent
    'bias'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from recsim_personas.agents.exits import ExitRuleConfig
from recsim_personas.agents.lm_agent import DEFAULT_EXIT_HAZARD
from recsim_personas.config import Config, help_text
from recsim_personas.errors import ConfigError, not_one_of, unknown_keys

__all__ = ["DEFAULT_POLICIES", "POLICY_NAMES", "PersonaRecConfig"]

Reward = Literal["rating", "normalized", "like"]
RatingMode = Literal["sample", "expectation"]
SeenRule = Literal["penalty", "mask", "allow"]
ExitMode = Literal["agent", "rule", "none"]
ExitCalibration = Literal["anchored", "raw"]
AgentKind = Literal["auto", "lm", "bias", "mf"]
CheapAgent = Literal["bias", "mf"]
ObservationMode = Literal["dict", "flat"]
RecommenderData = Literal["logged", "train"]
#: Names :func:`~recsim_personas.envs.policies.make_policy` accepts.
POLICY_NAMES: tuple[str, ...] = ("random", "popularity", "als", "mf", "oracle", "bandit")
#: What ``simulate`` compares by default.
DEFAULT_POLICIES: tuple[str, ...] = ("random", "popularity", "als", "mf", "oracle")
ItemEmbedding = Literal["mf", "svd"]
MemoryMode = Literal["ms", "msml"]



@dataclass(frozen=True)
class PersonaRecConfig(Config):
    """What one ``PersonaRec-v0`` session looks like and which simulated users answer.

    See :class:`~recsim_personas.envs.persona_rec.PersonaRecEnv` for how each field acts.
    """

    horizon: int = field(
        default=20, metadata=help_text("Steps per session; the episode is truncated after this many.")
    )
    slate_size: int = field(
        default=1,
        metadata=help_text(
            "Items per recommendation. 1: Discrete action, the user rates the item. >1: "
            "MultiDiscrete action, the user picks one item of the slate or none (conditional logit)."
        ),
    )
    reward: Reward = field(
        default="rating",
        metadata=help_text(
            "rating: the rating (0 when nothing was rated); normalized: (rating - min) / (max - min); "
            "like: 1.0 when the rating is at or above like_threshold."
        ),
    )
    like_threshold: float = field(
        default=4.0, metadata=help_text("A rating at or above this counts as a like (stars).")
    )
    rating: RatingMode = field(
        default="sample",
        metadata=help_text(
            "sample: draw the rating from the agent's distribution with the env's np_random; "
            "expectation: use the distribution's mean (off the scale's grid)."
        ),
    )
    seen_items: SeenRule = field(
        default="penalty",
        metadata=help_text(
            "What happens to an item the user rated in train or was already shown in this session: "
            "penalty: not rated, reward = seen_penalty; mask: choosing it raises EnvError (use "
            "info['action_mask']); allow: rated again as usual."
        ),
    )
    seen_penalty: float = field(
        default=-1.0, metadata=help_text("Reward of a seen item under seen_items='penalty'.")
    )
    exit: ExitMode = field(
        default="agent",
        metadata=help_text(
            "Who decides that the user leaves after a step: agent (the user agent's "
            "leave_probability; the LM agent scores a leave/stay prompt, the bias agent applies the "
            "patience rule), rule (the patience rule of recsim_personas.agents.exits), none (never)."
        ),
    )
    exit_rule: ExitRuleConfig = field(
        default_factory=ExitRuleConfig,
        metadata=help_text("Parameters of the patience rule (exit='rule', and the bias agent)."),
    )
    exit_calibration: ExitCalibration = field(
        default="anchored",
        metadata=help_text(
            "LM agent exit (exit='agent'): anchored = the model's leave answer relative to its answer "
            "on an empty session, around exit_hazard; raw = the model's probability as is "
            "(recsim_personas.agents.lm_agent)."
        ),
    )
    exit_hazard: tuple[float, float, float] = field(
        default=DEFAULT_EXIT_HAZARD,
        metadata=help_text("LM agent, anchored exit: per-step leave probability for activity low, mid, high."),
    )
    choice_temperature: float = field(
        default=0.5,
        metadata=help_text("Slate choice model: logit temperature in stars (> 0); lower = pickier."),
    )
    no_choice_utility: float = field(
        default=3.0,
        metadata=help_text(
            "Slate choice model: the expected rating that the 'pick nothing' option is worth (stars)."
        ),
    )
    history_len: int = field(
        default=10, metadata=help_text("Recent items (and their ratings) in the observation.")
    )
    agent: AgentKind = field(
        default="auto",
        metadata=help_text(
            "The simulated user when none is passed: lm (persona-LoRA language model; needs run_dir "
            "with trained adapters), bias (cheap user+item bias model with noise and the patience "
            "exit), mf (cheap latent-factor model: biased MF with each user's tastes drawn from "
            "its posterior, held-out-calibrated noise, the patience exit), auto (lm when run_dir "
            "is set, else cheap_agent)."
        ),
    )
    cheap_agent: CheapAgent = field(
        default="bias",
        metadata=help_text(
            "The cheap user model agent='auto' picks without run_dir: bias (PersonaRec-v0) or mf "
            "(PersonaRec-v1: users with tastes)."
        ),
    )
    run_dir: str | None = field(
        default=None,
        metadata=help_text(
            "A run folder of the memory stage (profiles, personas, embeddings, split, adapters). "
            "None: the embedded default (ml-latest-small, paper split, template profiles)."
        ),
    )
    dataset: str = field(
        default="ml-latest-small",
        metadata=help_text("Dataset of the default population (run_dir=None): ml-latest-small, ml-100k, ml-1m."),
    )
    data_dir: str | None = field(
        default=None,
        metadata=help_text("Folder of the dataset files (None: the embedded ml-latest-small)."),
    )
    memory_mode: MemoryMode = field(
        default="ms",
        metadata=help_text("LM agent prompt memories: ms (profile) or msml (profile + retrieved M_l)."),
    )
    cue: bool | None = field(
        default=None,
        metadata=help_text(
            "LM agent collaborative cue: prompts also state the user's and the item's mean ratings and "
            "a bias model's estimate, with the persona adapters trained with it "
            "(adapters/persona_<k>_cue__<mode>). None: as the run folder's adapters were trained "
            "(the cue only when the folder has the cue adapters and not the plain ones)."
        ),
    )
    model: str | None = field(
        default=None,
        metadata=help_text(
            "LM agent base model: hub id or local path (None: the model the adapters were trained "
            "on, else the default SmolLM2-135M-Instruct)."
        ),
    )
    server: str | None = field(
        default=None,
        metadata=help_text(
            "LM agent: URL of an OpenAI-compatible server (vLLM) that serves the run's base model "
            "and persona adapters, e.g. http://127.0.0.1:8000/v1 (start one with `recsim-personas "
            "serve RUN --launch`); None: run the model in this process."
        ),
    )
    device: str = field(default="auto", metadata=help_text("LM agent device: auto, cpu or cuda."))
    dtype: str = field(default="auto", metadata=help_text("LM agent dtype: auto, float32, bfloat16."))
    warm_cache: bool = field(
        default=False,
        metadata=help_text(
            "LM agent: compute every user's profile-prefix caches (and exit anchors) when the "
            "environment is created, so that steps pay only for item and session tokens (about "
            "1,100 prompt tokens per user up front: minutes for the default 115 users on a CPU). "
            "False: each user's are computed at their first session."
        ),
    )
    noise_std: float | None = field(
        default=None,
        metadata=help_text(
            "Cheap agents: standard deviation of the Gaussian rating noise in stars (None: bias = "
            "the predictor's residual RMSE on train; mf = what is left of the model's held-out RMSE "
            "after the drawn tastes' share)."
        ),
    )
    observation: ObservationMode = field(
        default="dict",
        metadata=help_text(
            "dict: the Dict observation (persona, profile, history_items, history_ratings, step); "
            "flat: one float32 Box (profile, the user's collaborative embedding, persona one-hot, the "
            "history as item feature vectors and normalised ratings, step / horizon) for MLP policies."
        ),
    )
    recommender_data: RecommenderData = field(
        default="logged",
        metadata=help_text(
            "What a recommender knows before a session, for the built-in policies (popularity, ALS, "
            "MF, bandit) and the item and user features: logged = every rating of the dataset "
            "except the population's test rows (the log the cheap users are fitted on, other users' "
            "ratings too); train = the population's train split only."
        ),
    )
    item_embedding: ItemEmbedding = field(
        default="mf",
        metadata=help_text(
            "Collaborative part of the item and user features: mf = [bias, factors] of the "
            "recommender's own 32-factor biased MF on recommender_data; svd = a 16-dimensional "
            "truncated SVD of the mean-centred ratings."
        ),
    )
    mask_in_obs: bool = field(
        default=False,
        metadata=help_text(
            "Carry the action mask (1 = neither seen nor forbidden) in the observation: an "
            "'action_mask' key (dict) or n_items trailing entries (flat)."
        ),
    )

    def __post_init__(self) -> None:
        errors: list[str] = []
        if isinstance(self.exit_rule, dict):
            try:
                object.__setattr__(self, "exit_rule", ExitRuleConfig.from_dict(self.exit_rule))
            except ConfigError as exc:
                errors.append(str(exc))
        elif not isinstance(self.exit_rule, ExitRuleConfig):
            errors.append(f"exit_rule must be an ExitRuleConfig or a dict, got {type(self.exit_rule).__name__}")
        if isinstance(self.run_dir, Path):
            object.__setattr__(self, "run_dir", str(self.run_dir))
        if isinstance(self.data_dir, Path):
            object.__setattr__(self, "data_dir", str(self.data_dir))
        for name in ("horizon", "slate_size", "history_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("like_threshold", "seen_penalty", "no_choice_utility"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                errors.append(f"{name} must be a finite number, got {value!r}")
        hazard = self.exit_hazard
        if (
            not isinstance(hazard, (list, tuple))
            or len(hazard) != 3
            or not all(isinstance(h, (int, float)) and 0 < h < 1 for h in hazard)
        ):
            errors.append(f"exit_hazard must be three probabilities in (0, 1) (activity low, mid, high), got {hazard!r}")
        else:
            object.__setattr__(self, "exit_hazard", tuple(float(h) for h in hazard))
        if not isinstance(self.mask_in_obs, bool):
            errors.append(f"mask_in_obs must be True or False, got {self.mask_in_obs!r}")
        if self.server is not None and not (
            isinstance(self.server, str) and self.server.startswith(("http://", "https://"))
        ):
            errors.append(f"server must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.server!r}")
        if self.cue is not None and not isinstance(self.cue, bool):
            errors.append(f"cue must be True, False or None, got {self.cue!r}")
        if not isinstance(self.warm_cache, bool):
            errors.append(f"warm_cache must be True or False, got {self.warm_cache!r}")
        if not (isinstance(self.choice_temperature, (int, float)) and self.choice_temperature > 0):
            errors.append(f"choice_temperature must be > 0, got {self.choice_temperature!r}")
        if self.noise_std is not None and not (
            isinstance(self.noise_std, (int, float)) and self.noise_std >= 0
        ):
            errors.append(f"noise_std must be >= 0 or None, got {self.noise_std!r}")
        for name, kind in (
            ("reward", Reward),
            ("rating", RatingMode),
            ("seen_items", SeenRule),
            ("exit", ExitMode),
            ("exit_calibration", ExitCalibration),
            ("agent", AgentKind),
            ("cheap_agent", CheapAgent),
            ("observation", ObservationMode),
            ("recommender_data", RecommenderData),
            ("item_embedding", ItemEmbedding),
            ("memory_mode", MemoryMode),
        ):
            choices = get_args(kind)
            value = getattr(self, name)
            if value not in choices:
                errors.append(not_one_of(name, value, choices))
        if self.agent == "lm" and self.run_dir is None:
            errors.append(
                "agent='lm' needs run_dir: a run folder with trained persona adapters "
                "(make one with `recsim-personas memory` and `recsim-personas train`); or use agent='bias'"
            )
        if errors:
            raise ConfigError("invalid PersonaRecConfig: " + "; ".join(errors))

    @property
    def resolved_agent(self) -> Literal["lm", "bias", "mf"]:
        """The agent kind ``agent='auto'`` stands for: ``lm`` with a run folder, else ``cheap_agent``."""
        if self.agent == "auto":
            return "lm" if self.run_dir is not None else self.cheap_agent
        return self.agent

    def replace(self, **changes: Any) -> PersonaRecConfig:
        """A copy with ``changes`` applied; unknown names raise :class:`ConfigError` naming them as
        ``gym.make`` options (``gym.make`` passes its keyword options through here)."""
        _check_names(changes)
        return super().replace(**changes)


def _check_names(data: dict[str, Any]) -> None:
    known = list(PersonaRecConfig.field_help())
    parts = unknown_keys(data, known)
    if parts:
        raise ConfigError(
            f"unknown PersonaRec-v0 option(s): {', '.join(parts)}; known options: {', '.join(known)}, "
            "plus the objects agent=, population= and render_mode="
        )
