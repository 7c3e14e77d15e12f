"""User memories: distilled profiles (M_s), enriched interactions (M_l), embeddings, retrieval, personas.

Distillation (:mod:`recsim_personas.memory.distill`) walks each user's train ratings in chronological
batches with a text backend (``template``, ``openai``, ``hf``) and writes the profile and one memory
per train interaction.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

#: Each public name and the submodule that is its home (imported on first use).
_WHERE: dict[str, str] = {
    "TextBackend": "backends.steps",
    "make_backend": "backends.factory",
    "Distiller": "distill",
    "distill_users": "distill",
    "BACKENDS": "distill_config",
    "DistillConfig": "distill_config",
    "DistillResult": "distill_result",
    "LOG_COLUMNS": "distill_result",
    "MEMORY_COLUMNS": "distill_result",
    "PROFILE_COLUMNS": "profile",
    "UserProfile": "profile",
    "TrainStatistics": "statistics",
    "TraitCuts": "statistics",
    "UserStatistics": "statistics",
    "TRAIT_ATTRIBUTION": "traits",
    "render_persona": "traits",
    "trait_text": "traits",
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
