"""User memories: distilled profiles (M_s), enriched interactions (M_l), embeddings, retrieval, personas.

Distillation (:mod:`recsim_personas.memory.distill`) walks each user's train ratings in chronological
batches with a text backend (``template``, ``openai``, ``hf``) and writes the profile and one memory
per train interaction.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "backends.factory": ("make_backend",),
    "backends.steps": ("TextBackend",),
    "distill": ("Distiller", "distill_users"),
    "distill_config": ("BACKENDS", "DistillConfig"),
    "distill_result": ("DistillResult", "LOG_COLUMNS", "MEMORY_COLUMNS"),
    "profile": ("PROFILE_COLUMNS", "UserProfile"),
    "statistics": ("TrainStatistics", "TraitCuts", "UserStatistics"),
    "traits": ("TRAIT_ATTRIBUTION", "render_persona", "trait_text"),
})
