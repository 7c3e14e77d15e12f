"""``recsim-personas memory``: distil profiles and memories, embed them, cluster personas.

Builds a run folder: the split, one profile per user and one explained memory per train rating
(distillation with the template, openai or hf backend), embeddings of profiles and item texts, and K
personas (KMeans++ on profile embeddings) with descriptions and plots. Unchanged stages are skipped
on re-runs.

Examples::

    recsim-personas memory --out runs/mem                           # embedded ml-latest-small
    recsim-personas memory --dataset ml-1m --data-dir ~/data/ml-1m --out runs/ml1m
    recsim-personas memory --out runs/ml1m --stages personas --k elbow    # re-cluster only
    recsim-personas memory --backend openai --model gpt-4o --base-url http://localhost:8000/v1 --out runs/gpt

Runs the stages split -> distill -> embed -> personas of
:func:`recsim_personas.memory.pipeline.build_memories` into ``--out``. Stages whose inputs did not
change since the last run are skipped, so re-running after a change redoes only what depends on it.
Prints the time of each stage and a table of the personas.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``memory`` command."""
    from recsim_personas.cli.common import add_dataset_arguments, add_split_arguments
    from recsim_personas.cli.options import add_command, add_count_option

    p = add_command(sub, "memory", run,
                    help="distil user profiles (M_s) and memories (M_l), embed them, cluster personas",
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_arguments(p)
    add_split_arguments(p)
    g = p.add_argument_group("memory")
    g.add_argument("--out", default="runs/memory", metavar="RUN_DIR", help="run folder to write")
    g.add_argument("--stages", default="distill,embed,personas", metavar="A,B",
                   help="stages to (re-)run, from distill, embed, personas (split always runs); "
                   "earlier stages not named must be up to date")
    g.add_argument("--backend", default="template", choices=("template", "openai", "hf"),
                   help="distillation backend: template (offline, deterministic), openai "
                   "(any OpenAI-compatible endpoint; key in $OPENAI_API_KEY), hf (local chat model)")
    g.add_argument("--model", default=None,
                   help="distillation model (openai: default gpt-4o; hf: hub id or path, default "
                   "the packaged SmolLM2-135M-Instruct)")
    g.add_argument("--base-url", default=None, metavar="URL",
                   help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, llama.cpp)")
    g.add_argument("--batch-size", type=int, default=10,
                   help="ratings per chronological distillation batch (paper: at most 10)")
    g.add_argument("--max-words", type=int, default=2000,
                   help="reject generations longer than this many words (paper: 2000)")
    g.add_argument("--embedder", default="minilm",
                   help="minilm (offline all-MiniLM-L6-v2), hashing, openai:MODEL, or a "
                   "sentence-transformers id / path")
    g.add_argument("--embedding-base-url", default=None, metavar="URL",
                   help="endpoint of an openai:MODEL embedder")
    g.add_argument("--item-scope", default="split", choices=("split", "catalog"),
                   help="embed the items of the split's users, or every item of the catalogue")
    add_count_option(g, "--k", "persona", word="elbow", words=("auto", "none"), default=4, metavar="K|elbow",
                     help="number of personas (paper: 4), or 'elbow' to choose K by the elbow method")
    g.add_argument("--k-max", type=int, default=10, help="largest K of the elbow curve")
    n = p.add_argument_group("network (openai backend)")
    n.add_argument("--request-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="seconds a request waits for its answer (5 s to connect)")
    n.add_argument("--request-attempts", type=int, default=3, metavar="N",
                   help="attempts per request on 429 / 5xx / timeout; an endpoint that hangs or is "
                   "down in every attempt stops the run")
    n.add_argument("--max-retry-after", type=float, default=30.0, metavar="SECONDS",
                   help="longest Retry-After honoured; a server asking for longer stops the run")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace) -> Any:
    from recsim_personas.errors import ConfigError
    from recsim_personas.memory.distill import DistillConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig

    if args.request_attempts < 1:
        raise ConfigError(f"--request-attempts must be >= 1, got {args.request_attempts}")
    distill_kw: dict[str, Any] = {"backend": args.backend, "batch_size": args.batch_size,
                                  "max_words": args.max_words, "timeout": args.request_timeout,
                                  "request_retries": args.request_attempts - 1,
                                  "retry_after_max": args.max_retry_after}
    if args.model:
        distill_kw["model"] = args.model
    if args.base_url:
        distill_kw["base_url"] = args.base_url
    return MemoryPipelineConfig(
        distill=DistillConfig(**distill_kw),
        embedder=args.embedder,
        embedding_base_url=args.embedding_base_url,
        item_scope=args.item_scope,
        personas=PersonaConfig(k=args.k, k_max=args.k_max, seed=args.seed),
    )


def _detail(detail: dict[str, Any]) -> str:
    keys = ("users", "train_rows", "test_rows", "memories", "rejected", "embedder", "profiles", "items",
            "cache_hits", "k", "elbow_k", "sizes")
    return ", ".join(f"{k}={detail[k]}" for k in keys if k in detail)


def run(args: argparse.Namespace) -> int:
    """Run the command; user errors propagate as ``RecsimError`` (exit code 2 in ``main``)."""
    import json

    from recsim_personas.artifacts import RunFolder
    from recsim_personas.cli.common import check_models, dataset_and_split_config
    from recsim_personas.cli.outputs import check_output_dir
    from recsim_personas.memory.pipeline import build_memories, parse_stages

    config = _config(args)  # validate before loading anything
    parse_stages(args.stages)
    check_output_dir(args.out, "--out")
    check_models([(args.model if args.backend == "hf" else None, "--model")], [(args.embedder, "--embedder")])
    notes: list[str] = []
    dataset, split_config = dataset_and_split_config(args, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    def report(t: Any) -> None:
        state = f"{t.seconds:8.2f} s" if t.ran else "  skipped "
        print(f"  {t.stage:<9} {state}  {_detail(t.detail)}", flush=True)

    print(f"memory -> {args.out}  ({dataset.name}, {split_config.describe()})")
    with RunFolder(args.out).lock("recsim-personas memory"):
        run_folder = build_memories(dataset, split_config, config, args.out, stages=args.stages,
                                    progress=not args.quiet, on_stage=report)
    total = sum(t.seconds for t in run_folder.timings.values())
    print(f"  {'total':<9} {total:8.2f} s")

    personas_json = run_folder / "personas.json"
    if "personas" in run_folder.timings and personas_json.is_file():
        meta = json.loads(personas_json.read_text(encoding="utf-8"))
        print(f"\nPersonas: K={meta['k']} ({meta['k_source']}; elbow suggests {meta['elbow_k']}), "
              f"words: {meta['word_method']}")
        print(f"{'persona':>7} {'users':>5} {'ratings':>7} {'mean':>5}  distinct words | over-represented words")
        for d in meta["personas"]:
            mean = f"{d['rating_mean']:.2f}" if d.get("rating_mean") is not None else "-"
            top = ", ".join(w for w, _ in d["top_words"][:5]) or "-"
            over = ", ".join(w for w, _ in d["over_represented"][:5]) or "-"
            print(f"{d['persona']:>7} {d['size']:>5} {d['n_ratings']:>7} {mean:>5}  {top} | {over}")
        print(f"plots: {run_folder / 'plots'}")
    return 0
