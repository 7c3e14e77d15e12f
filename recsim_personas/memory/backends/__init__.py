"""Text backends behind one protocol: how a distillation step's text gets written.

The distiller (:mod:`recsim_personas.memory.distill`) walks each user's train ratings in
chronological batches and, per batch, asks the backend for three steps:

* ``"update"``: the profile's taste description, updated with the batch's ratings;
* ``"enrich"``: one reason per rating of the batch (the M_l text is "I rated movie <title> (<year>)
  as <rating> because <reason>");
* ``"reflect"``: the taste description revised against the batch's evidence.

A backend answers a list of :class:`StepRequest` (several users at once: the distiller advances
``backend.parallelism`` users in lockstep) with one :class:`StepResponse` each, in order. LLM
backends return raw text that :mod:`recsim_personas.memory.prompts` parses; the template backend
returns the parsed payload directly. Validation, retries, the word limit and fallbacks live in the
distiller, so every backend gets the same rules.

Backends: ``template`` (default, deterministic statistics, no model), ``openai`` (any
OpenAI-compatible endpoint), ``hf`` (a local transformers chat model). Build one with
:func:`make_backend`.
"""

from __future__ import annotations

from recsim_personas.lazy import lazy_exports

# Each submodule and the public names it is the home of (imported on first use).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "factory": ("make_backend",),
    "steps": ("BatchRating", "StepContext", "StepKind", "StepRequest", "StepResponse", "TextBackend"),
})
