"""Benchmark: ratings per second of the language-model user agent, four ways, against the FLOP floor.

Command (from the project root; about 3-5 minutes on 2 idle cores)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/agent_throughput.py

Model: SmolLM2-135M-Instruct (``--model`` for another). Prompts: the ``paper`` template with M_s only
(``--memory-mode msml`` for M_s + M_l), built from a template-distilled memory run of the embedded
ml-latest-small (8 users, hashing embeddings, cached under ``cache_dir("benchmarks")``) by
``LMUserAgent.prompts``; when the memory pipeline cannot run, synthetic prompts of realistic length
(about 300-token profile prefix, 60-100-token item suffix). The JSON says which
(``config.prompt_source``). ml-latest-small rates in half stars, so each level ("3.5" = "3" "." "5")
needs the multi-token path; ``--scale 1-5`` scores the same prompts on ML-1M's 1-5 scale instead.

Modes, all in one run, same prompts:

(a) the paper's way, as a reimplementation runs it: the user's persona adapter active (peft
    ``set_adapter``), Hugging Face ``generate`` of 4 tokens (temperature 0.3, top-p 0.9) on the full
    prompt, one prompt at a time, then the regex; (a') the same with the library's lean ``generate``
    mode (base model, batch 1, no cache), for reference;
(b) ``score``, batched (``--max-batch``), full prompts, base model;
(c) (b) + the per-user prefix KV cache, several items per user (the prefix encoding is timed too);
(d) (c) with the four users on four different random LoRA adapters (r=16 on all seven linear
    projections, the training ``cpu`` preset) in the same batches (peft per-sample adapter names).

Checks: (b) == (c) on the same prompts, and (d) == the same prompts scored adapter by adapter
(``set_adapter`` path, its own prefix passes), max abs difference of the distributions < 1e-3 in
float32. In bfloat16 the (b)-vs-(c) difference is measured on a few prompts and reported (a
tolerance, not a check). bfloat16 against float32 speed is measured on the same prompts and decides
``recsim_personas.agents.llm.CPU_AUTO_DTYPE``.

FLOP floor: ``torch.matmul`` of 1024 and 2048 square matrices in the dtype used gives the machine's
rate R; a rating must process at least its suffix tokens S (the item text and, in M_s + M_l mode,
its memories; what no cache can share), so the floor is ``R / (2 * params * S)`` ratings/s. Targets:
(d) within 2x of the floor, and (d) >= 10x (a) with the M_s prompt.

The CPU is often shared: the JSON records the load average before and after the run.
Writes ``--out`` (default ``results/agent_throughput.json``) through
:mod:`recsim_personas.benchmarking`. Past results: the README's "Agent throughput" section and
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from recsim_personas.benchmarking import ResultsFile, bench_argparser, out_path

N_ADAPTERS = 4


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_gflops(dtype, sizes=(1024, 2048), repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` torch.matmul rate per square size, GFLOP/s."""
    import torch

    out = {}
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
        out[str(n)] = 2 * n**3 / best / 1e9
    return out


# -- prompts ----------------------------------------------------------------------------------------
def real_prompts(args, tokenizer):
    """``(prompts, user_index, source)`` from a template-distilled ml-latest-small run."""
    import pandas as pd

    from recsim_personas.agents.lm_agent import LMUserAgent
    from recsim_personas.data.item_catalog import ItemCatalog
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories
    from recsim_personas.paths import cache_dir

    dataset = load_dataset("ml-latest-small")
    run_dir = cache_dir("benchmarks") / "agent-throughput-run"
    config = MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=N_ADAPTERS, k_max=N_ADAPTERS))
    split = SplitConfig(min_interactions=40, max_interactions=200, n_users=8, seed=0)
    run = build_memories(dataset, split, config, run_dir, progress=False)
    store = run.store()
    train = pd.read_parquet(run_dir / "split" / "train.parquet")
    test = pd.read_parquet(run_dir / "split" / "test.parquet")
    catalog = ItemCatalog(dataset, train)
    users = [int(u) for u in store.users[: args.users]]
    scale = dataset.scale if args.scale == "dataset" else _scale_1_5()
    scorer_stub = SimpleNamespace(scale=scale, tokenizer=tokenizer, max_prompt_tokens=8000)
    agent = LMUserAgent(scorer_stub, store, catalog, memory_mode=args.memory_mode, template=args.template)
    user_ids, item_ids = [], []
    for u in users:
        items = test.loc[test["user_id"] == u, "item_id"].head(args.items_per_user).tolist()
        user_ids += [u] * len(items)
        item_ids += items
    prompts = agent.prompts(user_ids, item_ids)
    index = [users.index(u) for u in user_ids]
    source = (f"real: ml-latest-small (embedded), template-distilled memories of {len(users)} users, "
              f"{args.items_per_user} test items each, template {args.template!r}, mode {args.memory_mode}")
    return prompts, index, scale, source


def _scale_1_5():
    from recsim_personas.data.dataset import RatingScale

    return RatingScale(1, 5, 1)


def synthetic_prompts(args, tokenizer):
    """Prompts of realistic length when the memory pipeline is unavailable."""
    from recsim_personas.agents.prompts import build_rating_prompt
    from recsim_personas.data.dataset import RatingScale

    scale = RatingScale(0.5, 5, 0.5) if args.scale == "dataset" else _scale_1_5()
    rng = np.random.default_rng(0)
    words = ["drama", "thriller", "quiet", "classic", "heist", "western", "family", "comedy", "space", "war", "noir", "romance"]
    prompts, index = [], []
    for u in range(args.users):
        profile = "PERSONA: You excel at role-playing. " + " ".join(rng.choice(words, 230)) + "."
        for i in range(args.items_per_user):
            item = SimpleNamespace(
                item_id=i, title=f"Movie {u}-{i}", year=1990 + i, genres=("Drama", "Thriller"), avg_rating=3.5,
                description=" ".join(rng.choice(words, 40)) + ".", cast="Ann Lee, Bo Chan, Cy Diaz",
            )
            prompts.append(build_rating_prompt(args.template, profile, item, [], scale, tokenizer=tokenizer))
            index.append(u)
    return prompts, index, scale, "synthetic: ~300-token profile prefix, ~80-token item suffix"


# -- adapters ---------------------------------------------------------------------------------------
def random_adapters(model, r: int, seed: int = 0):
    """A PeftModel with ``N_ADAPTERS`` random LoRA adapters (r on all seven linear projections)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from recsim_personas.training.config import ALL_LINEAR_LLAMA

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(ALL_LINEAR_LLAMA),
                     init_lora_weights=False)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, cfg, adapter_name="persona_0")
    for j in range(1, N_ADAPTERS):
        torch.manual_seed(seed + j)
        peft_model.add_adapter(f"persona_{j}", cfg)
    # init_lora_weights=False draws B like A; scale it so the adapters move the output moderately.
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    peft_model.eval()
    return peft_model


# -- timing -----------------------------------------------------------------------------------------
#: CPU seconds of the last ``timed`` call (this process, all threads).
_LAST_CPU = [0.0]


def timed(fn):
    """``(result, wall seconds)``; the process CPU seconds go to ``_LAST_CPU``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _LAST_CPU[0] = time.process_time() - c
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = bench_argparser(__file__, __doc__)
    parser.add_argument("--model", default=None, help="hub id or local path (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--template", default="paper", help="prompt preset (paper, compact)")
    parser.add_argument("--memory-mode", default="ms", choices=["ms", "msml"])
    parser.add_argument("--scale", default="dataset", choices=["dataset", "1-5"])
    parser.add_argument("--users", type=int, default=4, help="users (one adapter each in (d))")
    parser.add_argument("--items-per-user", type=int, default=8, help="half cold, half warm")
    parser.add_argument("--max-batch", type=int, default=24)
    parser.add_argument("--paper-ratings", type=int, default=4, help="ratings timed in mode (a)")
    parser.add_argument("--full-ratings", type=int, default=8, help="ratings timed in mode (b)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument(
        "--threads", default="auto",
        help="torch threads, or auto: 2 on an idle machine, 1 when the 1-minute load average is above "
             "1.5 (on shared cores OpenMP barriers wait for descheduled threads; docs/benchmarks.md)",
    )
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 speed/tolerance measurement")
    parser.add_argument("--synthetic", action="store_true", help="synthetic prompts even if memories work")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, not a result)")
    args = parser.parse_args(argv)
    results_file = ResultsFile(out_path(args), "agent_throughput", argv)
    if args.quick:
        args.users, args.items_per_user, args.paper_ratings, args.full_ratings = 2, 4, 1, 2
        args.no_bf16 = True

    import torch

    from recsim_personas.agents.llm import load_causal_lm, load_tokenizer
    from recsim_personas.agents.scoring import RatingScorer

    load_before = results_file.load_before
    if args.threads == "auto":
        args.threads = 2 if load_before[0] <= 1.5 else 1
        print(f"threads: {args.threads} (auto; 1-minute load average {load_before[0]:.1f})")
    args.threads = int(args.threads)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    tokenizer = load_tokenizer(args.model)
    if args.synthetic:
        prompts, user_index, scale, source = synthetic_prompts(args, tokenizer)
    else:
        try:
            prompts, user_index, scale, source = real_prompts(args, tokenizer)
        except Exception as exc:  # any missing piece of the memory pipeline: fall back, and say so
            print(f"memory pipeline unavailable ({type(exc).__name__}: {exc}); using synthetic prompts")
            prompts, user_index, scale, source = synthetic_prompts(args, tokenizer)
    n = len(prompts)
    pre_tok = [len(tokenizer(p.prefix, add_special_tokens=False)["input_ids"]) for p in prompts]
    suf_tok = [len(tokenizer(p.suffix, add_special_tokens=False)["input_ids"]) for p in prompts]
    print(f"prompts: {source}\n  {n} prompts, prefix {np.mean(pre_tok):.0f} tokens, suffix {np.mean(suf_tok):.0f} "
          f"tokens (mean), scale {scale.min}-{scale.max} step {scale.step}")

    metrics: dict = {"prompt_tokens": {"prefix_mean": float(np.mean(pre_tok)), "suffix_mean": float(np.mean(suf_tok))}}
    checks: list[dict] = []

    # -- dtype: matmul rates and the same prompt scored in fp32 and bf16 ------------------------------
    rates = {"float32": matmul_gflops(torch.float32)}
    model, _ = load_causal_lm(args.model, dtype="float32")
    few = prompts[:1]
    scorer32 = RatingScorer(model, tokenizer, scale, prefix_cache=False)
    scorer32.score(prompts[1:2])  # warm-up
    ref32, t32 = timed(lambda: scorer32.score(few))
    dtype_choice: dict = {"prompts": len(few), "float32_seconds": t32}
    if not args.no_bf16:
        rates["bfloat16"] = matmul_gflops(torch.bfloat16, sizes=(1024,), repeats=1)
        model16, _ = load_causal_lm(args.model, dtype="bfloat16")
        s16 = RatingScorer(model16, tokenizer, scale, prefix_cache=False)
        b16, t16 = timed(lambda: s16.score(few))
        c16 = RatingScorer(model16, tokenizer, scale, prefix_cache=True).score(few)
        dtype_choice.update({
            "bfloat16_seconds": t16,
            "bf16_cached_vs_uncached_max_abs_diff": float(np.abs(b16.probs - c16.probs).max()),
            "bf16_vs_fp32_max_abs_diff": float(np.abs(b16.probs - ref32.probs).max()),
        })
        del model16, s16
        # fp32 again: under a shared CPU the first measurement may have been the unlucky one.
        _, t32b = timed(lambda: scorer32.score(few))
        dtype_choice["float32_seconds"] = min(t32, t32b)
        dtype_choice["float32_seconds_runs"] = [t32, t32b]
    dtype_choice["chosen"] = (
        "float32" if args.no_bf16 or dtype_choice["float32_seconds"] <= dtype_choice["bfloat16_seconds"] else "bfloat16"
    )
    metrics["dtype_choice"] = dtype_choice
    metrics["matmul_gflops"] = rates
    print(f"matmul GFLOP/s: {rates}\ndtype: {dtype_choice}")
    if dtype_choice["chosen"] != "float32":
        model, _ = load_causal_lm(args.model, dtype=dtype_choice["chosen"])
    dtype_name = dtype_choice["chosen"]
    params = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()

    # Each user's items are split in two: the "cold" half is scored with an empty prefix cache (the
    # prefix encoding is timed), the "warm" half afterwards, as the next requests of a session.
    half = args.items_per_user // 2
    pos_in_user = [user_index[:i].count(user_index[i]) for i in range(n)]
    cold = [i for i in range(n) if pos_in_user[i] < half]
    warm = [i for i in range(n) if pos_in_user[i] >= half]
    sub = lambda rows: [prompts[i] for i in rows]  # noqa: E731

    results: dict[str, dict] = {}

    def record(name: str, ratings: int, seconds: float, extra: dict | None = None) -> None:
        cpu = _LAST_CPU[0]
        # With the CPU shared, wall time includes waiting for other processes; CPU seconds over the
        # thread count estimate the uncontended wall time (a spinning OpenMP thread inflates it).
        results[name] = {"ratings": ratings, "seconds": seconds, "ratings_per_s": ratings / seconds,
                         "cpu_seconds": cpu, "ratings_per_cpu_s_per_thread": ratings / max(cpu / args.threads, 1e-9),
                         "peak_rss_mb": peak_rss_mb(), **(extra or {})}
        print(f"  ({name}) {ratings} ratings in {seconds:.1f} s ({cpu:.1f} CPU s): {ratings / seconds:.3f} ratings/s")

    # (a_lib) the library's generate mode without batching or cache (base model): the lean version
    # of (a), for reference.
    rows_a = cold[: args.paper_ratings]
    sa = RatingScorer(model, tokenizer, scale, prefix_cache=False, max_batch=1, max_new_tokens=4,
                      temperature=0.3, top_p=0.9)
    (texts_al, batch_al), tal = timed(lambda: sa.generate(sub(rows_a), seed=0))
    record("a_lib", len(rows_a), tal, {"texts": texts_al, "valid": batch_al.valid.tolist()})

    # (b) score, batched, full prompts.
    rows_b = cold[: args.full_ratings]
    sb = RatingScorer(model, tokenizer, scale, prefix_cache=False, max_batch=args.max_batch)
    rb, tb = timed(lambda: sb.score(sub(rows_b)))
    record("b", len(rows_b), tb, {"forward_passes": sb.stats["forward_passes"]})

    # (c) + prefix cache: cold (prefixes encoded in the timed call), then warm.
    sc = RatingScorer(model, tokenizer, scale, prefix_cache=True, max_batch=args.max_batch)
    rc_cold, tc_cold = timed(lambda: sc.score(sub(cold)))
    record("c_cold", len(cold), tc_cold, {"forward_passes": sc.stats["forward_passes"]})
    rc_warm, tc_warm = timed(lambda: sc.score(sub(warm)))
    record("c", len(warm), tc_warm, {"cache": sc.cache_info()})

    # (d) + 4 random LoRA adapters mixed in each batch.
    peft_model = random_adapters(model, args.lora_r)
    names = [f"persona_{u % N_ADAPTERS}" for u in user_index]
    sd = RatingScorer(peft_model, tokenizer, scale, prefix_cache=True, max_batch=args.max_batch)
    _rd_cold, td_cold = timed(lambda: sd.score(sub(cold), [names[i] for i in cold]))
    record("d_cold", len(cold), td_cold, {"adapters_in_run": len(set(names)), "lora_r": args.lora_r})
    rd_warm, td_warm = timed(lambda: sd.score(sub(warm), [names[i] for i in warm]))
    record("d", len(warm), td_warm, {"adapters_in_run": len({names[i] for i in warm}), "lora_r": args.lora_r})

    # (a) the paper's way, as a reimplementation would run it: the user's persona adapter active
    # (peft set_adapter), Hugging Face generate on the full prompt (4 new tokens, temperature 0.3,
    # top-p 0.9), one prompt at a time, then the regex.
    from recsim_personas.agents.scoring import parse_rating

    def paper_way() -> list[str]:
        texts = []
        for i in rows_a:
            peft_model.set_adapter(names[i])
            ids = tokenizer(prompts[i].text, add_special_tokens=False, return_tensors="pt")
            with torch.inference_mode():
                out = peft_model.generate(**ids, max_new_tokens=4, do_sample=True, temperature=0.3, top_p=0.9,
                                          pad_token_id=tokenizer.pad_token_id)
            texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
        return texts

    torch.manual_seed(0)
    texts_a, ta = timed(paper_way)
    record("a", len(rows_a), ta, {"texts": texts_a, "valid": [parse_rating(t, scale) is not None for t in texts_a]})

    # Checks: (b) == (c); (d) == adapter-by-adapter runs (their own prefix passes, set per adapter).
    diff_bc = float(np.abs(rb.probs - rc_cold.probs[: len(rows_b)]).max())
    ref_d = np.zeros_like(rd_warm.probs)
    for name in sorted({names[i] for i in warm}):
        rows = [j for j, i in enumerate(warm) if names[i] == name]
        ref_d[rows] = RatingScorer(peft_model, tokenizer, scale, max_batch=args.max_batch, fast_lora=False).score(
            [prompts[warm[j]] for j in rows], name).probs
    diff_d = float(np.abs(rd_warm.probs - ref_d).max())
    tol = 1e-3 if dtype_name == "float32" else 5e-2
    checks.append({"check": "b_equals_c", "max_abs_diff": diff_bc, "tolerance": tol, "passed": bool(diff_bc < tol)})
    checks.append({"check": "d_equals_per_adapter_peft", "max_abs_diff": diff_d, "tolerance": tol,
                   "passed": bool(diff_d < tol)})
    metrics["adapters_vs_base_max_abs_diff"] = float(np.abs(rd_warm.probs - rc_warm.probs).max())
    metrics["outside_mass_mean_base"] = float(np.concatenate([rc_cold.outside_mass, rc_warm.outside_mass]).mean())

    # FLOP floor.
    rate = max(rates[dtype_name].values())
    s_tokens = float(np.mean(suf_tok))
    floor = rate * 1e9 / (2 * params * s_tokens)
    metrics["floor"] = {
        "params": params, "embedding_params": emb, "suffix_tokens_per_rating": s_tokens,
        "matmul_gflops_used": rate, "floor_ratings_per_s": floor,
        "answer_continuation_tokens_per_rating": (
            0 if float(scale.step).is_integer() else 2 * (int(scale.max) + 1)
        ),
    }
    # Multi-token levels (half stars: "3" "." "5") make every rating also process the levels' tokens
    # after the answer position; the floor counts the suffix only, this one counts both.
    cont = metrics["floor"]["answer_continuation_tokens_per_rating"]
    floor_answer = rate * 1e9 / (2 * params * (s_tokens + cont))
    metrics["floor"]["floor_with_answer_tokens_ratings_per_s"] = floor_answer
    ratio_a = {m: results[m]["ratings_per_s"] / results["a"]["ratings_per_s"] for m in results}
    metrics["modes"] = results
    metrics["ratio_to_a"] = ratio_a
    metrics["d_fraction_of_floor"] = results["d"]["ratings_per_s"] / floor
    metrics["d_fraction_of_floor_with_answer_tokens"] = results["d"]["ratings_per_s"] / floor_answer
    metrics["cpu_time_estimates"] = {
        "note": "ratings per (process CPU seconds / threads): the wall rate without waiting for other processes",
        "ratio_to_a": {m: results[m]["ratings_per_cpu_s_per_thread"] / results["a"]["ratings_per_cpu_s_per_thread"]
                       for m in results},
        "d_fraction_of_floor": results["d"]["ratings_per_cpu_s_per_thread"] / floor,
    }
    checks.append({"check": "d_within_2x_of_floor", "value": metrics["d_fraction_of_floor"], "target": 0.5,
                   "passed": bool(metrics["d_fraction_of_floor"] >= 0.5)})
    checks.append({"check": "d_at_least_10x_a", "value": ratio_a["d"], "target": 10.0,
                   "passed": bool(ratio_a["d"] >= 10.0 and args.memory_mode == "ms")})
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics["load_average_before"] = list(load_before)
    metrics["load_average_after"] = list(os.getloadavg())
    metrics["total_seconds"] = time.perf_counter() - t_start

    # Table.
    labels = {"a": "(a) paper: HF generate + adapter, 1 at a time", "a_lib": "(a') library generate, 1 at a time, no cache",
              "b": "(b) score, batched, full prompts",
              "c_cold": "(c) (b) + prefix cache, cold (prefix encoded)", "c": "(c) (b) + prefix cache, warm",
              "d_cold": f"(d) (c) + {N_ADAPTERS} mixed LoRA adapters, cold",
              "d": f"(d) (c) + {N_ADAPTERS} mixed LoRA adapters, warm"}
    print(f"\nSmolLM2-135M ({dtype_name}, {args.threads} threads), {source}")
    print(f"{'mode':52s} {'ratings/s':>10s} {'x (a)':>8s} {'x floor':>8s} {'CPU-time est.':>14s} {'peak RSS MB':>12s}")
    for m in ("a", "a_lib", "b", "c_cold", "c", "d_cold", "d"):
        r = results[m]
        print(f"{labels[m]:52s} {r['ratings_per_s']:10.3f} {ratio_a[m]:8.1f} {r['ratings_per_s'] / floor:8.2f} "
              f"{r['ratings_per_cpu_s_per_thread']:14.3f} {r['peak_rss_mb']:12.0f}")
    print(f"{'FLOP floor (2 x params x suffix tokens / matmul rate)':52s} {floor:10.3f}")
    if cont:
        print(f"{'FLOP floor counting the levels tokens too':52s} {floor_answer:10.3f}")
    print(f"matmul {dtype_name}: {rate:.1f} GFLOP/s; params {params / 1e6:.1f} M; suffix {s_tokens:.0f} tokens/rating")
    for c in checks:
        print(f"check {c['check']}: {'PASS' if c['passed'] else 'FAIL'} {c}")
    print(f"CPU-time estimates: {metrics['cpu_time_estimates']}")
    print(f"load average before {load_before}, after {os.getloadavg()}")

    out = results_file.write(
        config={**vars(args), "prompt_source": source, "dtype": dtype_name,
                "scale": {"min": scale.min, "max": scale.max, "step": scale.step}},
        metrics=metrics, checks=checks,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
