"""The batched ``PersonaRec-v0``: ``N`` sessions, one user-agent call per step.

:class:`PersonaRecVectorEnv` is what ``gym.make_vec("PersonaRec-v0", num_envs=N)`` returns (the
registered ``vector_entry_point``). Unlike Gymnasium's ``SyncVectorEnv``, which would step ``N``
copies of the environment one after another, it keeps the ``N`` sessions in arrays and sends every
sub-environment's (user, item) requests to the user agent **in one** ``rate`` call per step (the
language-model agent answers them in one forward pass, mixing persona adapters in the batch and
keeping each user's profile prefix cache), and one ``leave_probability`` call.

With a language-model agent the environment also makes the agent's prefix cache large enough to
keep every session's profile prefixes (rating and exit prompts) for the whole episode, and every
user's when the population fits in half of the device's memory
(:func:`~recsim_personas.envs.prefix_cache.reserve_prefix_cache`); otherwise the LRU would evict
live sessions at ``N = 32`` and recompute their ~550-token prefixes at every step.

Semantics match :class:`~recsim_personas.envs.persona_rec.PersonaRecEnv` exactly: sub-environment
``i`` owns a random generator seeded with ``seed + i`` (or ``seed[i]``), drawn in the same order as
the single environment, so with the same seed and actions sub-environment ``i`` reproduces
``PersonaRecEnv`` reset with ``seed + i`` step for step (a test checks it).

Autoreset follows Gymnasium 1.x (``metadata["autoreset_mode"]``):

- ``NEXT_STEP`` (default): a sub-environment that terminated or truncated is reset by the *next*
  ``step`` call, whose action for it is ignored; that step returns its first observation with
  reward 0 and ``terminated = truncated = False``.
- ``SAME_STEP``: reset inside the step that ended it; the final observation and info are in
  ``info["final_obs"]`` / ``info["final_info"]``.
- ``DISABLED``: the caller resets ended sub-environments with
  ``reset(options={"reset_mask": mask})``; stepping an ended one raises ``EnvError``.

Reset options: ``{"user_id": id or a sequence of N ids (None entries = sample)}``,
``{"reset_mask": bool array}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recsim_personas.agents.protocol import UserAgent
from recsim_personas.envs.config import PersonaRecConfig
from recsim_personas.envs.engine import parse_actions
from recsim_personas.envs.population import UserPopulation
from recsim_personas.envs.prefix_cache import reserve_prefix_cache
from recsim_personas.envs.session_setup import CatalogueViews, build_session_parts
from recsim_personas.errors import EnvError

__all__ = ["PersonaRecVectorEnv", "reserve_prefix_cache"]


class PersonaRecVectorEnv(CatalogueViews, VectorEnv):
    """``num_envs`` sessions of ``PersonaRec-v0`` stepped together (module docstring).

    Args:
        num_envs: Number of sub-environments (sessions).
        config: A :class:`~recsim_personas.envs.config.PersonaRecConfig` (or dict); keyword options
            override its fields, as for the single environment.
        agent: A user agent object, or ``"bias"`` / ``"lm"`` (default: ``config.agent``).
        population: A :class:`~recsim_personas.envs.population.UserPopulation` (default: from config).
        render_mode: ``"ansi"`` or None.
        autoreset_mode: An :class:`gymnasium.vector.AutoresetMode` (or its value string).

    Example:
        >>> import gymnasium as gym, numpy as np
        >>> envs = gym.make_vec("PersonaRec-v0", num_envs=4, agent="bias")    # doctest: +SKIP
        >>> obs, info = envs.reset(seed=0)                                     # doctest: +SKIP
        >>> obs, r, term, trunc, info = envs.step(np.zeros(4, dtype=np.int64)) # doctest: +SKIP
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["ansi"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        config: PersonaRecConfig | dict[str, Any] | None = None,
        *,
        agent: UserAgent | str | None = None,
        population: UserPopulation | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **options: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise EnvError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            choices = ", ".join(m.value for m in AutoresetMode)
            raise EnvError(f"autoreset_mode must be one of {choices}, got {autoreset_mode!r}") from None
        parts = build_session_parts(
            int(num_envs), config, agent, population, render_mode, self.metadata["render_modes"], options
        )
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.num_envs = int(num_envs)
        self.config, self.population, self.agent = parts.config, parts.population, parts.agent
        self.render_mode = render_mode
        self._engine = parts.engine
        self.single_action_space = parts.action_space
        self.single_observation_space = parts.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._rngs: list[np.random.Generator] | None = None
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._started = np.zeros(self.num_envs, dtype=bool)
        self._all = np.arange(self.num_envs, dtype=np.int64)
        self._no_envs = np.zeros(0, dtype=np.int64)
        self._empty_info = self._engine.empty_step_info()

    # -- catalogue helpers ----------------------------------------------------------------------------
    @property
    def user_ids(self) -> np.ndarray:
        """The current user of each sub-environment."""
        return self._engine.user_id.copy()

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_items)`` bool: the action mask of each sub-environment's current session.

        A sub-environment waiting for its next-step autoreset shows its ended session's mask (its
        action is ignored)."""
        return self._engine.action_mask(self._all).astype(bool)

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    # -- seeding ---------------------------------------------------------------------------------------
    def _seed(self, seed: int | Sequence[int | None] | None) -> None:
        if seed is None:
            if self._rngs is None:
                self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
            return
        if isinstance(seed, (int, np.integer)):
            seeds: list[int | None] = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = _one_per_env(
                seed, self.num_envs,
                "reset got {got} seeds for {n} sub-environments; pass one int (sub-env i gets seed "
                "+ i) or a list of num_envs seeds",
            )
        if self._rngs is None:
            self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i] = seeding.np_random(int(s))[0]

    # -- Gymnasium API ---------------------------------------------------------------------------------
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) else None)
        self._seed(seed)
        options = dict(options or {})
        unknown = set(options) - {"user_id", "reset_mask"}
        if unknown:
            raise EnvError(
                f"unknown reset option(s) {sorted(unknown)}; PersonaRec-v0 (vector) accepts "
                "options={'user_id': id or ids, 'reset_mask': bool array}"
            )
        mask = options.get("reset_mask")
        if mask is None:
            idx = self._all
        else:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise EnvError(
                    f"reset_mask must be a bool array of shape ({self.num_envs},), got "
                    f"{mask.dtype} {mask.shape}"
                )
            idx = np.flatnonzero(mask)
        user_ids = options.get("user_id")
        self._reset_sessions(idx, user_ids)
        info = _vector_info(self.num_envs, [(idx, self._engine.reset_info(idx))])
        return self._engine.observation(self._all), info

    def _reset_sessions(self, idx: np.ndarray, user_ids: Any = None) -> None:
        rngs = self._rngs
        assert rngs is not None
        if user_ids is None:
            wanted: list[Any] = [None] * len(idx)
        elif np.ndim(user_ids) == 0:
            wanted = [user_ids] * len(idx)
        else:
            all_ids = _one_per_env(
                user_ids, self.num_envs,
                "options['user_id'] has {got} entries for {n} sub-environments; pass one id, or "
                "num_envs ids (None = sample)",
            )
            wanted = [all_ids[i] for i in idx.tolist()]
        pos = np.empty(len(idx), dtype=np.int64)
        for j, (i, uid) in enumerate(zip(idx.tolist(), wanted, strict=True)):
            if uid is None:
                pos[j] = int(rngs[i].integers(self.population.n_users))
            else:
                pos[j] = self.population.user_position(uid)
        self._engine.reset(idx, pos)
        self._autoreset[idx] = False
        self._started[idx] = True

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._rngs is None or not self._started.all():
            raise EnvError("call reset() before step(): some sub-environments have no session yet")
        engine, n = self._engine, self.num_envs
        acts = parse_actions(actions, n, self.config.slate_size, self.population.n_items, batched=True)
        mode = self.autoreset_mode
        if mode == AutoresetMode.NEXT_STEP:
            reset_idx = np.flatnonzero(self._autoreset)
            step_idx = np.flatnonzero(~self._autoreset)
        else:
            if engine.ended.any():
                raise EnvError(
                    f"sub-environment(s) {np.flatnonzero(engine.ended).tolist()} ended; with "
                    "autoreset_mode=DISABLED reset them with reset(options={'reset_mask': mask})"
                )
            reset_idx = step_idx = np.zeros(0, dtype=np.int64)
            step_idx = self._all

        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        if len(reset_idx):
            self._reset_sessions(reset_idx)
        parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        if len(step_idx):
            rngs = self._rngs
            uniforms = np.stack([rngs[i].random(3) for i in step_idx.tolist()])
            r, term, trunc, info = engine.step(step_idx, acts[step_idx], uniforms, session_info=False)
            rewards[step_idx], terminated[step_idx], truncated[step_idx] = r, term, trunc
            parts.append((step_idx, info))
        # Last, an empty part: every step info key is present (masked False) even when no
        # sub-environment stepped, so callers can always read info["_item_id"].
        parts.append((self._no_envs, self._empty_info))
        # user_id, persona, step and action_mask: every sub-env has them (stepped or just reset).
        parts.insert(0, (self._all, engine.reset_info(self._all)))
        done = terminated | truncated

        if mode == AutoresetMode.SAME_STEP and done.any():
            ended = np.flatnonzero(done)
            final_obs = engine.observation(ended)
            step_info = _vector_info(n, parts)
            obs_objects = np.full(n, None, dtype=object)
            for j, i in enumerate(ended.tolist()):
                obs_objects[i] = (
                    final_obs[j] if isinstance(final_obs, np.ndarray)
                    else {key: value[j] for key, value in final_obs.items()}
                )
            self._reset_sessions(ended)
            # Sub-environments that went on keep their step info; ended ones get their reset info.
            info: dict[str, Any] = {}
            for key, value in step_info.items():
                if not key.startswith("_"):
                    info[key] = value.copy()
                    info[f"_{key}"] = step_info[f"_{key}"] & ~done
            for key, value in engine.reset_info(ended).items():
                if key not in info:
                    info[key] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
                    info[f"_{key}"] = np.zeros(n, dtype=bool)
                info[key][ended] = value
                info[f"_{key}"][ended] = True
            info["final_obs"], info["_final_obs"] = obs_objects, done.copy()
            info["final_info"], info["_final_info"] = step_info, done.copy()
            return engine.observation(self._all), rewards, terminated, truncated, info

        if mode == AutoresetMode.NEXT_STEP:
            self._autoreset = done.copy()
        return engine.observation(self._all), rewards, terminated, truncated, _vector_info(n, parts)

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(
            self._engine.render_session(i) if self._started[i] else "PersonaRec-v0 | no session yet\n"
            for i in range(self.num_envs)
        )

    def __repr__(self) -> str:
        return (
            f"PersonaRecVectorEnv(num_envs={self.num_envs}, population={self.population.name!r}, "
            f"agent={type(self.agent).__name__}, autoreset_mode={self.autoreset_mode.value})"
        )


def _vector_info(
    n: int, parts: list[tuple[np.ndarray, dict[str, np.ndarray]]]
) -> dict[str, np.ndarray]:
    """Gymnasium's vector info layout: ``info[key]`` of length ``n`` plus a ``_key`` bool mask.

    ``parts`` are ``(sub-env indices, batched info)`` pairs; a key missing from every non-empty
    part is still present (zeros, mask all False) when an empty part lists it.
    """
    out: dict[str, np.ndarray] = {}
    for idx, info in parts:
        full = len(idx) == n
        for key, value in info.items():
            if key not in out:
                if full:
                    # The common case: one part covers every sub-env; its arrays are fresh.
                    out[key] = value
                    out[f"_{key}"] = np.ones(n, dtype=bool)
                    continue
                out[key] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
                if value.dtype == object:
                    out[key][:] = None
                out[f"_{key}"] = np.zeros(n, dtype=bool)
            if len(idx):
                out[key][idx] = value
                out[f"_{key}"][idx] = True
    return out


def _one_per_env(values: Any, num_envs: int, message: str) -> list[Any]:
    """``list(values)``, which must have one entry per sub-environment (else ``message`` as EnvError)."""
    out = list(values)
    if len(out) != num_envs:
        raise EnvError(message.format(got=len(out), n=num_envs))
    return out
