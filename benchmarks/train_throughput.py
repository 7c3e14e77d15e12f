"""Benchmark: LoRA training tokens per second against the FLOP floor measured in the same run.

Command (from the project root; a few minutes on 2 cores)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --threads 1
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/train_throughput.py --batch-sizes 8,16,32

Model: SmolLM2-135M-Instruct in the dtype ``dtype="auto"`` picks on this machine
(:func:`recsim_personas.agents.cpu_dtype.cpu_auto_dtype`; ``--dtype`` to force one), the ``cpu`` LoRA
preset (rank 16 on all seven projections, prefix sharing). Rows: real M_s training rows (paper
prompt, leave-one-out item averages) of a template-distilled ml-latest-small run (8 users, hashing
embeddings, cached under ``cache_dir("benchmarks")``).

Per batch size: ``--steps`` optimizer steps, the first one (allocations, lazy initialisation) not
timed. Tokens are what the trainer processes (a shared profile prefix counts once per group, as it
is computed once). The FLOP floor: a training token costs about ``6 x non-embedding params`` FLOPs
(2 forward, about twice that backward), divided by the matmul rate of the same dtype measured in the
same process before and after the steps (the better of the two). Target: at least 25% of the floor.

Writes ``--out`` (default ``results/train_throughput.json``) through
:mod:`recsim_personas.benchmarking` and prints a Markdown table for the README.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path


def training_rows(tokenizer, n_users: int):
    """Real M_s training rows of a cached template-distilled ml-latest-small run."""
    import pandas as pd

    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import (
        MemoryPipelineConfig,
        build_memories,
        run_item_catalog,
    )
    from recsim_personas.paths import cache_dir
    from recsim_personas.training.rows import build_training_rows

    dataset = load_dataset("ml-latest-small")
    run_dir = cache_dir("benchmarks") / "train-throughput-run"
    config = MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=2))
    split = SplitConfig(min_interactions=100, max_interactions=200, n_users=n_users, seed=0)
    run = build_memories(dataset, split, config, run_dir, progress=False)
    catalog = run_item_catalog(run_dir, dataset)
    train = pd.read_parquet(run_dir / "split" / "train.parquet")
    return build_training_rows(run.store(), catalog, train, memory_mode="ms", scale=dataset.scale,
                               tokenizer=tokenizer)


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__, raw=True)
    parser.add_argument("--model", default=None, help="base model (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="auto", help="auto (measured choice), float32 or bfloat16")
    parser.add_argument("--batch-sizes", default="8,16", help="rows per optimizer step, comma-separated")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per batch size (first untimed)")
    parser.add_argument("--users", type=int, default=8, help="users of ml-latest-small whose rows are used")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "train_throughput", argv)

    import torch

    from recsim_personas.agents.cpu_dtype import cpu_auto_dtype
    from recsim_personas.agents.flops import count_parameters, matmul_rate
    from recsim_personas.agents.llm import load_causal_lm, resolve_dtype
    from recsim_personas.hardware import cpu_info
    from recsim_personas.training.config import LoraTrainConfig
    from recsim_personas.training.lora import train_adapter

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = resolve_dtype(args.dtype, "cpu")
    dtype_name = str(dtype).replace("torch.", "")
    model, tokenizer = load_causal_lm(args.model, device="cpu", dtype=dtype_name)
    rows = training_rows(tokenizer, args.users)
    non_embedding, _ = count_parameters(model)
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        rate_before = matmul_rate(dtype_name, size=1024, seconds=1.0)
        tcfg = LoraTrainConfig.preset("cpu", max_steps=args.steps, batch_size=batch, checkpoint_every=0,
                                      dtype=dtype_name)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            res = train_adapter(model, tokenizer, rows, tcfg, Path(tmp) / "a", name="bench", progress=False)
            wall = time.perf_counter() - start
        rate_after = matmul_rate(dtype_name, size=1024, seconds=1.0)
        rate = max(rate_before, rate_after)
        curve = res.curve
        timed = curve[1:]
        seconds = curve[-1]["seconds"] - curve[0]["seconds"]
        tokens_per_step = res.train_tokens / max(1, res.steps)
        timed_tokens = tokens_per_step * len(timed)
        tps = timed_tokens / seconds
        floor_tps = rate / (6.0 * non_embedding)
        results.append({
            "batch_size": batch, "steps": res.steps, "timed_steps": len(timed), "tokens_per_step": tokens_per_step,
            "rows_per_step": timed[0].get("rows") if timed else None,
            "seconds_per_step": seconds / max(1, len(timed)), "tokens_per_s": tps,
            "matmul_gflops": rate / 1e9, "matmul_gflops_before_after": [rate_before / 1e9, rate_after / 1e9],
            "floor_tokens_per_s": floor_tps, "fraction_of_floor": tps / floor_tps, "wall_s": wall,
        })
        print(f"batch {batch}: {tps:.0f} tokens/s, floor {floor_tps:.0f} ({100 * tps / floor_tps:.0f}%), "
              f"{seconds / max(1, len(timed)):.1f} s/step, {tokens_per_step:.0f} tokens/step", flush=True)

    path = results_file.write(
        config={"model": args.model or "SmolLM2-135M-Instruct", "dtype": dtype_name, "dtype_arg": args.dtype,
                "cpu_auto_dtype": cpu_auto_dtype(), "lora_preset": "cpu", "steps": args.steps,
                "users": args.users, "rows": len(rows), "threads": torch.get_num_threads(),
                "non_embedding_params": non_embedding, "flops_per_token": 6 * non_embedding},
        metrics={"batches": results, "target_fraction_of_floor": 0.25},
    )
    cpu = cpu_info()
    print(f"\n{cpu['model']}, bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}; dtype {dtype_name} "
          f"({torch.get_num_threads()} threads)\n")
    print("| rows / step | tokens / step | s / step | tokens/s | matmul GFLOP/s | floor tokens/s | of floor |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch_size']} | {r['tokens_per_step']:.0f} | {r['seconds_per_step']:.2f} | {r['tokens_per_s']:.0f} "
              f"| {r['matmul_gflops']:.0f} | {r['floor_tokens_per_s']:.0f} | {100 * r['fraction_of_floor']:.0f}% |")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
