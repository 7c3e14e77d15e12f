"""stable-baselines3 on the batched ``PersonaRec``: :class:`SB3VecEnv`, a ``VecEnv`` adapter.

SB3 steps ``make_vec_env("PersonaRec-v1")`` (a ``DummyVecEnv``) one sub-environment after another,
which with the cheap users gives about 5k steps/s. :class:`SB3VecEnv` presents the library's own
:class:`~recsim_personas.envs.vector.PersonaRecVectorEnv` (one user-agent call per step for all
sessions) through SB3's ``VecEnv`` interface instead: SB3's autoreset convention (an ended
sub-environment is reset inside the step; its last observation is in
``infos[i]["terminal_observation"]``, a truncation sets ``infos[i]["TimeLimit.truncated"]``) maps to
the vector env's ``SAME_STEP`` autoreset. ``env_method("action_masks")`` gives sb3-contrib's
``MaskablePPO`` each session's mask of seen items.

Needs the ``rl`` extra (``pip install "recsim-personas[rl]"``).

Example:
    >>> from sb3_contrib import MaskablePPO                                       # doctest: +SKIP
    >>> venv = SB3VecEnv.make(num_envs=32, observation="flat")                    # doctest: +SKIP
    >>> model = MaskablePPO("MlpPolicy", VecMonitor(venv)).learn(100_000)         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from recsim_personas.envs.vector import PersonaRecVectorEnv
from recsim_personas.errors import ConfigError

try:
    from stable_baselines3.common.vec_env import VecEnv
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ConfigError(
        "recsim_personas.envs.sb3 needs stable-baselines3: pip install 'recsim-personas[rl]'"
    ) from exc

__all__ = ["SB3VecEnv"]

#: Per-step info keys copied into SB3's per-sub-environment info dicts.
_INFO_KEYS = ("user_id", "item_id", "rated", "rating", "n_seen")

class SB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over one :class:`PersonaRecVectorEnv` (module docstring).

    Args:
        env: A ``PersonaRecVectorEnv`` made with ``autoreset_mode="SameStep"``; or use
            :meth:`make`.
    """

    def __init__(self, env: PersonaRecVectorEnv) -> None:
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ConfigError(
                "SB3VecEnv needs a PersonaRecVectorEnv with autoreset_mode='SameStep' (SB3 resets "
                "inside the step); build it with SB3VecEnv.make(num_envs=..., **options)"
            )
        self.env = env
        self.render_mode = env.render_mode
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed_next: int | None = None

    @classmethod
    def make(cls, num_envs: int = 32, **options: Any) -> SB3VecEnv:
        """A ``PersonaRecVectorEnv(num_envs, autoreset_mode="SameStep", **options)`` wrapped.

        ``options`` are ``PersonaRec`` options; ``cheap_agent`` defaults to ``"mf"`` (the
        ``PersonaRec-v1`` users)."""
        options.setdefault("cheap_agent", "mf")
        return cls(PersonaRecVectorEnv(num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **options))

    # -- VecEnv API ----------------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seed_next = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def reset(self) -> Any:
        seed = self._seed_next
        if seed is None and any(s is not None for s in self._seeds):
            seeds = self._seeds
            obs, info = self.env.reset(seed=list(seeds))
        else:
            obs, info = self.env.reset(seed=seed)
        self._seed_next = None
        self._reset_seeds()
        self.reset_infos = [{"user_id": int(u)} for u in info["user_id"]]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> Any:
        assert self._actions is not None, "step_async first"
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        self._actions = None
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        step_info = info.get("final_info") if done.any() else info
        for key in _INFO_KEYS:
            source = step_info if key in step_info else info
            if key in source:
                values = source[key]
                for i in range(self.num_envs):
                    infos[i][key] = values[i].item() if hasattr(values[i], "item") else values[i]
        for i in np.flatnonzero(done).tolist():
            infos[i]["terminal_observation"] = info["final_obs"][i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_items)`` bool masks of the current sessions."""
        return self.env.action_masks()

    def has_attr(self, attr_name: str) -> bool:
        return hasattr(self.env, attr_name)

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None,
                   **method_kwargs: Any) -> list[Any]:
        idx: Iterable[int] = list(self._get_indices(indices))
        if method_name == "action_masks":
            masks = self.env.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
