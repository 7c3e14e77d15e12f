"""User memories: distilled profiles (M_s), enriched interactions (M_l), embeddings, retrieval, personas.

Distillation (:mod:`recsim_personas.memory.distill`) walks each user's train ratings in chronological
batches with a text backend (``template``, ``openai``, ``hf``) and writes the profile and one memory
per train interaction.
"""

from __future__ import annotations

# -- distillation (profiles, memories, backends) --
from recsim_personas.memory.backends import TextBackend, make_backend
from recsim_personas.memory.distill import Distiller, distill_users
from recsim_personas.memory.distill_config import BACKENDS, DistillConfig
from recsim_personas.memory.distill_result import LOG_COLUMNS, MEMORY_COLUMNS, DistillResult
from recsim_personas.memory.profile import PROFILE_COLUMNS, UserProfile
from recsim_personas.memory.statistics import TrainStatistics, TraitCuts, UserStatistics
from recsim_personas.memory.traits import TRAIT_ATTRIBUTION, render_persona, trait_text

__all__ = [
    "BACKENDS",
    "LOG_COLUMNS",
    "MEMORY_COLUMNS",
    "PROFILE_COLUMNS",
    "TRAIT_ATTRIBUTION",
    "DistillConfig",
    "DistillResult",
    "Distiller",
    "TextBackend",
    "TrainStatistics",
    "TraitCuts",
    "UserProfile",
    "UserStatistics",
    "distill_users",
    "make_backend",
    "render_persona",
    "trait_text",
]
