"""The names of trained LoRA adapters: ``<adapter>__<memory mode>`` (docs/design.md).

An adapter folder in a run folder (``adapters/persona_2__ms``), the name peft and vLLM load it
under, and the key of its train result are one string: the adapter (``persona_<p>``,
``single_min``, ``single_max``) and the memory mode it was trained for (``ms``, ``msml``), joined by
:data:`SEPARATOR`. :func:`adapter_name` builds it and :func:`split_adapter_name` reads it back.

Example:
    >>> adapter_name("single_max", "ms")
    'single_max__ms'
    >>> persona_adapter_name(2, "msml")
    'persona_2__msml'
    >>> split_adapter_name("persona_2__msml")
    ('persona_2', 'msml')

An adapter trained with the collaborative cue in its prompts (the user's and the item's mean
ratings and a bias model's estimate, :mod:`recsim_personas.memory.cue`) carries :data:`CUE_SUFFIX`
on its adapter part, so that it never overwrites, nor is served as, the adapter without it:

    >>> adapter_name("single_max", "ms", cue=True)
    'single_max_cue__ms'
    >>> persona_adapter_name(2, "ms", cue=True)
    'persona_2_cue__ms'
"""

from __future__ import annotations

from recsim_personas.errors import AdapterError

__all__ = [
    "ADAPTER_FILES",
    "ADAPTER_GLOB",
    "ADAPTER_INFO",
    "CUE_SUFFIX",
    "SEPARATOR",
    "adapter_name",
    "persona_adapter",
    "persona_adapter_name",
    "split_adapter_name",
]

#: Joins the adapter and its memory mode.
SEPARATOR = "__"
#: Ends the adapter part of the name of an adapter trained with the collaborative cue.
CUE_SUFFIX = "_cue"
#: ``Path.glob`` pattern of adapter folder names.
ADAPTER_GLOB = f"*{SEPARATOR}*"
#: The library's record of a finished adapter, beside peft's files in its folder.
ADAPTER_INFO = "recsim_adapter.json"
#: peft's ``save_pretrained`` files of an adapter folder.
ADAPTER_FILES: tuple[str, ...] = ("adapter_config.json", "adapter_model.safetensors")


def adapter_name(adapter: str, memory_mode: str, *, cue: bool = False) -> str:
    """``<adapter>__<memory_mode>``, e.g. ``single_max__ms`` or ``persona_2__msml``; with ``cue``
    (trained with the collaborative cue) ``<adapter>_cue__<memory_mode>``."""
    return f"{adapter}{CUE_SUFFIX if cue else ''}{SEPARATOR}{memory_mode}"


def persona_adapter(persona: int) -> str:
    """The adapter of persona ``persona`` without its memory mode: ``persona_<p>``."""
    return f"persona_{int(persona)}"


def persona_adapter_name(persona: int, memory_mode: str, *, cue: bool = False) -> str:
    """Name of persona ``persona``'s adapter for ``memory_mode``: ``persona_<p>__<mode>``
    (``persona_<p>_cue__<mode>`` with ``cue``)."""
    return adapter_name(persona_adapter(persona), memory_mode, cue=cue)


def split_adapter_name(name: str) -> tuple[str, str]:
    """``(adapter, memory_mode)`` of an adapter name: the inverse of :func:`adapter_name`.

    Raises:
        AdapterError: ``name`` has no ``__`` separator.
    """
    adapter, sep, mode = name.rpartition(SEPARATOR)
    if not sep or not adapter or not mode:
        raise AdapterError(
            f"{name!r} is not an adapter name; adapter names read <adapter>{SEPARATOR}<memory mode>, "
            "e.g. persona_0__ms"
        )
    return adapter, mode
