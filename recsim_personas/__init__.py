"""recsim-personas: simulated recommender-system users from persona LoRA adapters on small LMs.

Implements *Personas within Parameters* (Thakur, Agrawal, Mukund, arXiv 2509.09689, 2025) and wraps
the user agents as the Gymnasium environment ``PersonaRec-v0``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Registers PersonaRec-v0 with Gymnasium (string entry points: no torch or pandas import here).
from recsim_personas import envs as _envs  # noqa: F401

__all__ = ["__version__"]
