"""RatingScorer on a tiny random llama over the real SmolLM2 tokenizer (fp32).

Tolerances (tests/tolerances.py): probabilities of two code paths agree within FP32_PATH_ATOL
(float32 reductions reordered by batching, caching and the CPU's kernels); a distribution sums to 1
within fp32_sum_atol(levels) (float32 summation error), never to 1e-9.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tolerances import FP32_PATH_ATOL, fp32_sum_atol

from recsim_personas.agents.prompts import build_exit_prompt, build_rating_prompt
from recsim_personas.agents.scoring import RatingScorer, ScoringConfig, parse_rating
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import AdapterError, ConfigError, ModelError, RecsimWarning

STARS = RatingScale(1, 5, 1)
HALF = RatingScale(0.5, 5, 0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _item(i: int) -> SimpleNamespace:
    return SimpleNamespace(
        item_id=i, title=f"Movie {i}", year=1990 + i, genres=("Drama",), avg_rating=3.0 + i / 10,
        description="A story about " + "things " * (2 * i), cast="Ann Lee, Bo Chan" if i % 2 else None,
    )


def _prompts(tokenizer, scale=STARS, users=3, items=4):
    """users x items prompts; the profiles have different lengths (different prefix lengths)."""
    return [
        build_rating_prompt(
            "paper", f"PERSONA: user {u}. " + "I like slow dramas. " * (3 * u + 1), _item(i), [], scale,
            tokenizer=tokenizer,
        )
        for u in range(users)
        for i in range(items)
    ]


def _full_logprob(model, tokenizer, text: str, continuation: str) -> float:
    """log p(continuation | text) by plain full forward passes (independent of the scorer)."""
    ctx = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = tokenizer(text + continuation, add_special_tokens=False)["input_ids"]
    assert full[: len(ctx)] == ctx
    keep = len(full) - len(ctx) + 1
    with torch.no_grad():
        logits = model(torch.tensor([full]), logits_to_keep=keep).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)  # row r predicts token len(full) - keep + r + 1
    return float(sum(logp[t - len(ctx), full[t]] for t in range(len(ctx), len(full))))


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [
        ("4", STARS, 4.0),
        ("A 5.", STARS, 5.0),
        ("I'd say 3.5 stars", HALF, 3.5),
        ("I'd say 3.5 stars", STARS, None),
        ("five", STARS, None),
        ("", STARS, None),
        ("6", STARS, None),
        ("4.0", STARS, 4.0),
        ("0.5", HALF, 0.5),
        ("rating: 2\n", STARS, 2.0),
    ],
)
def test_parse_rating_crafted_outputs(text, scale, expected):
    assert parse_rating(text, scale) == expected


def test_prefix_cache_matches_uncached_and_batch_matches_single(tiny_lm):
    model, tok = tiny_lm
    prompts = _prompts(tok, users=3, items=3)
    cached = RatingScorer(model, tok, STARS, prefix_cache=True, max_batch=5)
    got = cached.score(prompts)
    ref = RatingScorer(model, tok, STARS, prefix_cache=False).score(prompts)
    single = RatingScorer(model, tok, STARS, prefix_cache=False, max_batch=1).score(prompts)
    assert cached.cache_info()["entries"] == 3 and cached.cache_info()["hits"] > 0
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(got.outside_mass, ref.outside_mass, atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(single.probs, ref.probs, atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(got.probs.sum(axis=1), 1.0, atol=fp32_sum_atol(STARS.n_levels))
    # The scores are the model's own next-token probabilities, renormalised over the digits.
    lp = np.array([_full_logprob(model, tok, prompts[0].text, str(d)) for d in range(1, 6)])
    np.testing.assert_allclose(got.probs[0], np.exp(lp) / np.exp(lp).sum(), atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(got.outside_mass[0], 1 - np.exp(lp).sum(), atol=FP32_PATH_ATOL)


def test_one_batch_mixes_prefix_lengths_and_cache_is_reused(tiny_lm):
    model, tok = tiny_lm
    prompts = _prompts(tok, users=3, items=2)
    lengths = {len(tok(p.prefix, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lengths) == 3
    scorer = RatingScorer(model, tok, STARS, max_batch=len(prompts))
    first = scorer.score(prompts)
    assert scorer.stats["forward_passes"] == 2  # one prefix pass (3 users) + one suffix pass
    again = scorer.score(prompts[::-1])
    assert scorer.stats["forward_passes"] == 3  # prefixes cached: only the suffix pass
    np.testing.assert_allclose(again.probs[::-1], first.probs, atol=FP32_PATH_ATOL)
    ref = RatingScorer(model, tok, STARS, prefix_cache=False, max_batch=1).score(prompts)
    np.testing.assert_allclose(first.probs, ref.probs, atol=FP32_PATH_ATOL)


@pytest.mark.parametrize("window", [64, 4096])
def test_sliding_window_model_falls_back_only_when_the_window_is_reached(smollm2_tokenizer, window):
    from transformers import MistralConfig, MistralForCausalLM

    tok = smollm2_tokenizer
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=window,
                           max_position_embeddings=4096, pad_token_id=tok.pad_token_id)
    model = MistralForCausalLM(config).eval()
    prompts = _prompts(tok, users=2, items=2)
    scorer = RatingScorer(model, tok, STARS)
    got = scorer.score(prompts)
    ref = RatingScorer(model, tok, STARS, prefix_cache=False, max_batch=1).score(prompts)
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)
    assert (scorer.cache_info()["entries"] > 0) == (window == 4096)


def test_prompt_split_at_a_bad_seam_is_scored_from_its_full_text(tiny_lm):
    from recsim_personas.agents.prompts import RatingPrompt

    model, tok = tiny_lm
    good = _prompts(tok, users=1, items=2)
    # Moving the space before the title into the prefix: " " + "Movie" apart, " Movie" together.
    assert all(p.suffix.startswith(" Movie") for p in good)
    bad = [RatingPrompt(p.prefix + " ", p.suffix[1:]) for p in good]
    scorer = RatingScorer(model, tok, STARS)
    with pytest.warns(RecsimWarning, match="tokenize differently apart than together"):
        got = scorer.score(bad)
    assert scorer.stats["seam_fallbacks"] == 2 and scorer.cache_info()["entries"] == 0
    ref = RatingScorer(model, tok, STARS, prefix_cache=False).score([p.text for p in bad])
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)


def test_cache_is_bounded(tiny_lm):
    model, tok = tiny_lm
    scorer = RatingScorer(model, tok, STARS, cache_entries=2)
    scorer.score(_prompts(tok, users=3, items=1))
    assert scorer.cache_info()["entries"] == 2
    scorer.clear_cache()
    assert scorer.cache_info() == {**scorer.cache_info(), "entries": 0, "bytes": 0}


def test_half_star_levels_use_sequence_probabilities(tiny_lm):
    model, tok = tiny_lm
    prompts = _prompts(tok, HALF, users=2, items=2)
    got = RatingScorer(model, tok, HALF, max_batch=3).score(prompts)
    texts = [HALF.format(v) for v in HALF.levels]
    assert texts[:2] == ["0.5", "1.0"]
    for row in (0, 3):
        lp = np.array([_full_logprob(model, tok, prompts[row].text, t) for t in texts])
        np.testing.assert_allclose(got.probs[row], np.exp(lp) / np.exp(lp).sum(), atol=FP32_PATH_ATOL)
    ref = RatingScorer(model, tok, HALF, prefix_cache=False).score(prompts)
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)


@pytest.mark.parametrize("path", ["eager", "repeat"])
def test_half_star_continuation_paths_agree(tiny_lm, monkeypatch, path):
    """The tree-mask continuation under eager attention, and the per-branch fallback, match sdpa."""
    model, tok = tiny_lm
    prompts = _prompts(tok, HALF, users=2, items=1)
    ref = RatingScorer(model, tok, HALF).score(prompts)
    scorer = RatingScorer(model, tok, HALF)
    if path == "eager":
        model.set_attn_implementation("eager")
        assert scorer._config()._attn_implementation == "eager"
    else:
        monkeypatch.setattr(scorer, "_continuation_tree", None)
        monkeypatch.setattr(
            scorer, "_continuation_logp",
            lambda state, seqs, names: scorer._continuation_repeat(
                state, seqs, sorted({tuple(x[:-1]) for x in seqs}), names),
        )
    np.testing.assert_allclose(scorer.score(prompts).probs, ref.probs, atol=FP32_PATH_ATOL)


def test_level_that_prefixes_another_is_closed_with_end_token(tiny_lm):
    model, tok = tiny_lm
    scale = RatingScale(1, 10, 1)  # "1" is a prefix of "10"
    prompt = _prompts(tok, scale, users=1, items=1)[0]
    got = RatingScorer(model, tok, scale).score([prompt])
    eos = tok.eos_token
    lp = [_full_logprob(model, tok, prompt.text, "1" + eos)] + [
        _full_logprob(model, tok, prompt.text, str(v) + (eos if v == 1 else "")) for v in range(2, 11)
    ]
    lp = np.array(lp)
    np.testing.assert_allclose(got.probs[0], np.exp(lp) / np.exp(lp).sum(), atol=FP32_PATH_ATOL)


def test_scale_without_end_token_is_a_clear_error(tiny_lm):
    model, tok = tiny_lm
    scale = RatingScale(1, 10, 1)

    class NoEndToken:
        """The SmolLM2 tokenizer without an end token."""

        eos_token_id = None

        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, *args, **kwargs):
            return tok(*args, **kwargs)

    scorer = RatingScorer(model, NoEndToken(), scale)
    with pytest.raises(ModelError, match=re.escape("level '1' is a prefix of another level")):
        scorer.score(_prompts(tok, scale, users=1, items=1))


def _two_adapter_model(model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
                     init_lora_weights=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, cfg, adapter_name="persona_0")
    torch.manual_seed(2)
    peft_model.add_adapter("persona_1", cfg)
    peft_model.eval()
    return peft_model


def test_mixed_adapter_batch_equals_per_adapter_runs(tiny_lm):
    model, tok = tiny_lm
    peft_model = _two_adapter_model(model)
    prompts = _prompts(tok, users=3, items=2)
    names = ["persona_0", None, "persona_1", "persona_1", "__base__", "persona_0"]
    mixed = RatingScorer(peft_model, tok, STARS, max_batch=6, group_by_adapter=False).score(prompts, names)
    grouped = RatingScorer(peft_model, tok, STARS, max_batch=6).score(prompts, names)
    separate = np.zeros_like(mixed.probs)
    for name in ("persona_0", "persona_1", None):
        rows = [i for i, n in enumerate(names) if (n or "__base__") == (name or "__base__")]
        res = RatingScorer(peft_model, tok, STARS, prefix_cache=False).score([prompts[i] for i in rows], name)
        separate[rows] = res.probs
    np.testing.assert_allclose(mixed.probs, separate, atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(grouped.probs, separate, atol=FP32_PATH_ATOL)
    # The gathered-weights bmm path (scattered rows) agrees too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("recsim_personas.agents.scoring._MAX_RUNS_PER_ADAPTER", 0)
        scattered = RatingScorer(peft_model, tok, STARS, max_batch=6, group_by_adapter=False).score(prompts, names)
    np.testing.assert_allclose(scattered.probs, separate, atol=FP32_PATH_ATOL)
    # peft's own per-sample adapter_names path and plain peft forward passes agree with the router.
    via_peft = RatingScorer(peft_model, tok, STARS, max_batch=6, fast_lora=False).score(prompts, names)
    np.testing.assert_allclose(via_peft.probs, separate, atol=FP32_PATH_ATOL)
    peft_model.set_adapter("persona_1")
    lp = np.array([_full_logprob(peft_model, tok, prompts[2].text, str(d)) for d in range(1, 6)])
    peft_model.set_adapter("persona_0")
    np.testing.assert_allclose(mixed.probs[2], np.exp(lp) / np.exp(lp).sum(), atol=FP32_PATH_ATOL)
    # The adapters really differ from each other and from the base model.
    all_a = RatingScorer(peft_model, tok, STARS).score(prompts[:1] * 3, ["persona_0", "persona_1", None])
    assert np.abs(all_a.probs[0] - all_a.probs[1]).max() > 1e-3
    assert np.abs(all_a.probs[0] - all_a.probs[2]).max() > 1e-3
    assert peft_model.active_adapter == "persona_0"  # restored after single-adapter batches


def test_unknown_adapter_has_did_you_mean(tiny_lm):
    model, tok = tiny_lm
    prompts = _prompts(tok, users=1, items=1)
    with pytest.raises(AdapterError, match="the model holds no adapters"):
        RatingScorer(model, tok, STARS).score(prompts, ["persona_0"])
    peft_model = _two_adapter_model(model)
    with pytest.raises(AdapterError, match=re.escape("unknown adapter 'persona_2'")) as err:
        RatingScorer(peft_model, tok, STARS).score(prompts, ["persona_2"])
    assert "Did you mean 'persona_0'?" in str(err.value) or "Did you mean 'persona_1'?" in str(err.value)


def test_generate_is_seeded_and_parses_with_urr(tiny_lm):
    model, tok = tiny_lm
    prompts = _prompts(tok, users=2, items=2)
    scorer = RatingScorer(model, tok, STARS)
    texts1, batch1 = scorer.generate(prompts, seed=7)
    texts2, _ = scorer.generate(prompts, seed=7)
    assert texts1 == texts2 and all(isinstance(t, str) for t in texts1)
    expected = [parse_rating(t, STARS) is not None for t in texts1]
    assert batch1.valid.tolist() == expected
    # Uncached one-at-a-time greedy decoding gives the same answers as cached batched decoding.
    greedy = RatingScorer(model, tok, STARS, temperature=0.0).generate(prompts)[0]
    greedy1 = RatingScorer(model, tok, STARS, temperature=0.0, prefix_cache=False, max_batch=1).generate(prompts)[0]
    assert greedy == greedy1


def test_generate_rating_batch_from_crafted_outputs(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    outputs = ["4", "A 5.", "five", "", "6", "3"]
    token_rows = [tok(o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] * 5 for o in outputs]
    scorer = RatingScorer(model, tok, STARS, max_batch=len(outputs), group_by_adapter=False, prefix_cache=False)
    step = {"i": 0}

    def fake_sample(logits, gen):
        i = step["i"]
        step["i"] += 1
        return torch.tensor([row[i] for row in token_rows])

    monkeypatch.setattr(scorer, "_sample", fake_sample)
    prompts = [_prompts(tok, users=1, items=1)[0]] * len(outputs)
    texts, batch = scorer.generate(prompts)
    assert texts == outputs
    assert batch.valid.tolist() == [True, True, False, False, False, True]
    assert 1 - batch.valid.mean() == pytest.approx(0.5)  # URR counts the unparsable rows
    np.testing.assert_array_equal(batch.probs[0], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(batch.probs[1], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(batch.probs[2], 0.2)
    assert batch.outside_mass.tolist() == [0, 0, 1, 1, 1, 0]


def test_choice_probs_for_exit_prompt(tiny_lm):
    model, tok = tiny_lm
    prompts = [
        build_exit_prompt("PERSONA: x", "An occasional viewer.", [("Heat (1995)", 2.0)] * n, STARS, tokenizer=tok)
        for n in (0, 1, 3)
    ]
    scorer = RatingScorer(model, tok, STARS)
    probs, outside = scorer.choice_probs(prompts, options=("A", "B"))
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    lp = np.array([_full_logprob(model, tok, prompts[2].text, o) for o in "AB"])
    np.testing.assert_allclose(probs[2], np.exp(lp) / np.exp(lp).sum(), atol=FP32_PATH_ATOL)
    assert np.all((outside >= 0) & (outside <= 1))
    with pytest.raises(ModelError, match="share their first token"):
        scorer.choice_probs(prompts, options=("stay here", "stay away"))


def test_bad_settings_and_empty_input(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(ConfigError, match="top_p must be in"):
        RatingScorer(model, tok, STARS, top_p=50)
    cfg = ScoringConfig(max_batch=3, top_k=50, prefix_cache=False)
    assert ScoringConfig.from_dict(cfg.to_dict()) == cfg
    assert RatingScorer.from_config(model, tok, STARS, cfg).config == cfg
    with pytest.raises(ConfigError, match=re.escape("'max_bach' (did you mean 'max_batch'?)")):
        ScoringConfig.from_dict({"max_bach": 2})
    with pytest.raises(ConfigError, match="max_batch must be an integer >= 1, got 0"):
        ScoringConfig(max_batch=0)
    scorer = RatingScorer(model, tok, STARS)
    empty = scorer.score([])
    assert empty.probs.shape == (0, 5)
    with pytest.raises(ConfigError, match="adapter_names has 2 entries for 1 prompts"):
        scorer.score(_prompts(tok, users=1, items=1), [None, None])


def test_continuation_tokens_are_the_tokens_scored_after_the_answer(tiny_lm):
    model, tok = tiny_lm
    prompt = _prompts(tok, HALF, users=1, items=1)[0]
    scorer = RatingScorer(model, tok, HALF)
    widths = []
    forward = scorer._forward
    scorer._forward = lambda **kw: (widths.append(kw["input_ids"].shape[1]), forward(**kw))[1]
    scorer.score([prompt])
    n = scorer.continuation_tokens(prompt)
    # Levels "0.5" ... "5.0": each digit and the "." after it (two tokens for each of 0-5).
    assert n == widths[-1] == 12
    assert RatingScorer(model, tok, STARS).continuation_tokens(_prompts(tok, STARS, users=1, items=1)[0]) == 0


def test_each_batch_keeps_an_adapters_rows_contiguous(tiny_lm, monkeypatch):
    """Rows are batched by suffix length, then grouped by adapter inside each batch, so the LoRA
    router applies one plain matmul per adapter instead of gathering weights per row (bmm)."""
    model, tok = tiny_lm
    peft_model = _two_adapter_model(model)
    prompts = _prompts(tok, users=3, items=4)
    names = ["persona_0", "persona_1", None, "persona_1"] * 3
    scorer = RatingScorer(peft_model, tok, STARS, max_batch=5)
    lengths = [len(r[2]) for r in scorer._rows(prompts)]
    by_length = sorted(range(len(prompts)), key=lambda i: lengths[i])
    seen = []
    for idx, _, batch_names in scorer._batches(prompts, names):
        runs = [n for j, n in enumerate(batch_names) if j == 0 or n != batch_names[j - 1]]
        assert len(runs) == len(set(batch_names)), batch_names
        seen.append(max(lengths[i] for i in idx))
    # The padding is that of length-sorted batches.
    assert seen == [max(lengths[i] for i in by_length[s : s + 5]) for s in range(0, len(prompts), 5)]
    bmm_calls = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda *a, **k: (bmm_calls.append(1), real_bmm(*a, **k))[1])
    got = scorer.score(prompts, names)
    assert bmm_calls == []
    ref = RatingScorer(peft_model, tok, STARS, fast_lora=False).score(prompts, names)
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)
