"""The openai backend over real HTTP against a local fake server: retries, cache, resume, errors."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, default_chat_content

from recsim_personas.data.dataset import RatingDataset, RatingScale
from recsim_personas.errors import BackendError
from recsim_personas.memory import DistillConfig, distill_users, make_backend
from recsim_personas.memory.distill import Distiller

N_USERS, PER_USER, BATCH = 4, 12, 6  # 2 batches x 3 steps = 6 requests per user
REQUESTS_PER_USER = 6
GENRES = ("Horror", "Romance", "Comedy", "Drama")


def make_dataset() -> RatingDataset:
    """Every user rates their own films ("U3 Film 5"), so each request names exactly one user."""
    rng = np.random.default_rng(1)
    titles, rows = [], []
    for u in range(1, N_USERS + 1):
        for k in range(PER_USER):
            item = len(titles) + 1
            titles.append(f"U{u} Film {k}")
            rows.append((u, item, float(rng.integers(1, 6)), 1000 * u + k))
    n = len(titles)
    items = pd.DataFrame(
        {
            "title": titles,
            "year": pd.array([1980 + i % 20 for i in range(n)], dtype="Int64"),
            "genres": [(GENRES[i % 4],) for i in range(n)],
            "description": [f"A story number {i}." for i in range(n)],
            "director": [None] * n,
            "cast": [None] * n,
        },
        index=pd.Index(np.arange(1, n + 1), name="item_id"),
    )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return RatingDataset("disjoint", inter, items, pd.DataFrame(), RatingScale(1, 5, 1))


def config_for(server_url: str, tmp_path, **overrides) -> DistillConfig:
    values = dict(
        backend="openai", base_url=server_url, model="gpt-4o", batch_size=BATCH,
        cache_dir=str(tmp_path / "cache"), concurrency=2, request_retries=4,
        backoff_base=0.001, backoff_max=0.01, timeout=5.0, max_retries=1,
    )
    values.update(overrides)
    return DistillConfig(**values)


def users_in(body: dict) -> set[int]:
    return {int(u) for u in re.findall(r"U(\d+) Film", json.dumps(body))}


@pytest.fixture()
def dataset() -> RatingDataset:
    return make_dataset()


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_distils_over_http_and_counts_tokens_and_cost(dataset, tmp_path):
    with FakeOpenAIServer() as server:
        result = distill_users(dataset, None, dataset.interactions,
                               config=config_for(server.base_url, tmp_path), progress=False)
        assert server.count() == N_USERS * REQUESTS_PER_USER
        body = server.bodies()[0]
    assert body["model"] == "gpt-4o" and body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system"
    assert len(result.profiles) == N_USERS
    assert len(result.memories) == len(dataset.interactions)
    assert result.memories.text.str.match(r"I rated movie U\d Film \d+ \(\d{4}\) as \d because it "
                                          r"matched my taste \(note [0-9a-f]{8}-\d+\)\.$").all()
    assert result.profiles.taste.str.startswith("I enjoy films with a clear story").all()
    usage = result.usage
    assert usage["backend_http_requests"] == N_USERS * REQUESTS_PER_USER
    assert usage["backend_prompt_tokens"] > 0 and usage["backend_completion_tokens"] > 0
    expected = (usage["backend_prompt_tokens"] * 2.5 + usage["backend_completion_tokens"] * 10) / 1e6
    assert usage["backend_cost_usd"] == pytest.approx(expected, rel=1e-4)
    assert result.log.empty


def test_retries_429_500_timeouts_and_malformed_bodies(dataset, tmp_path):
    faults = {1: "429", 2: "500", 4: "malformed", 6: "empty", 8: "503", 9: "hang"}
    with FakeOpenAIServer(faults=faults, retry_after=0.2, hang_seconds=1.0) as server:
        config = config_for(server.base_url, tmp_path, concurrency=1, timeout=0.3)
        result = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        total = server.count()
        times = [t for _, _, _, t in server.requests]
        sent = [f for _, f in server.faults_sent]
    assert sent == ["429", "500", "malformed", "empty", "503", "hang"]
    assert total == N_USERS * REQUESTS_PER_USER + len(faults)
    assert result.usage["backend_retries"] == len(faults)
    assert times[1] - times[0] >= 0.2  # Retry-After honoured
    assert len(result.memories) == len(dataset.interactions)


def test_second_run_is_served_from_the_cache(dataset, tmp_path):
    with FakeOpenAIServer() as server:
        config = config_for(server.base_url, tmp_path)
        first = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        assert server.count() == N_USERS * REQUESTS_PER_USER
        server.reset_counts()
        second = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        assert server.count() == 0
    assert second.usage["backend_cache_hits"] == N_USERS * REQUESTS_PER_USER
    assert second.usage["backend_cost_usd"] == 0
    pd.testing.assert_frame_equal(first.profiles, second.profiles)
    pd.testing.assert_frame_equal(first.memories, second.memories)


def test_persistent_500_for_one_user_loses_no_finished_user(dataset, tmp_path):
    ckpt = tmp_path / "ckpt"
    with FakeOpenAIServer() as clean:
        reference = distill_users(dataset, None, dataset.interactions,
                                  config=config_for(clean.base_url, tmp_path / "ref"),
                                  progress=False)

    def user3_fails(path, body):
        return "500" if 3 in users_in(body) else None

    with FakeOpenAIServer(fail_if=user3_fails) as server:
        config = config_for(server.base_url, tmp_path)
        with pytest.raises(BackendError, match=r"failed for 1 of 4 users \(users \[3\]\): user 3, "
                           r"batch 1/2, step update: .*HTTP 500.*checkpointed in .*a re-run resumes after them"):
            distill_users(dataset, None, dataset.interactions, config=config, progress=False,
                          checkpoint_dir=ckpt)
        assert sorted(p.name for p in ckpt.iterdir()) == ["user-1.json", "user-2.json",
                                                           "user-4.json"]
        server.fail_if = None
        server.reset_counts()
        result = distill_users(dataset, None, dataset.interactions, config=config,
                               progress=False, checkpoint_dir=ckpt)
        bodies = server.bodies()
    assert len(bodies) == REQUESTS_PER_USER
    assert all(users_in(b) == {3} for b in bodies)
    assert result.usage["resumed_users"] == 3
    pd.testing.assert_frame_equal(result.profiles, reference.profiles)
    pd.testing.assert_frame_equal(result.memories, reference.memories)


def test_interrupt_after_two_users_resumes_without_repeating_them(dataset, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    saved: list[int] = []
    original = Distiller._save_checkpoint

    def save_then_crash(self, directory, run, row):
        original(self, directory, run, row)
        saved.append(run.user_id)
        if len(saved) == 2:
            raise KeyboardInterrupt("injected crash after user 2")

    with FakeOpenAIServer() as server:
        config = config_for(server.base_url, tmp_path, cache=False)  # prove the checkpoints alone
        monkeypatch.setattr(Distiller, "_save_checkpoint", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            distill_users(dataset, None, dataset.interactions, config=config, progress=False,
                          checkpoint_dir=ckpt)
        monkeypatch.setattr(Distiller, "_save_checkpoint", original)
        server.reset_counts()
        result = distill_users(dataset, None, dataset.interactions, config=config,
                               progress=False, checkpoint_dir=ckpt)
        bodies = server.bodies()
    assert saved == [1, 2]
    assert len(bodies) == 2 * REQUESTS_PER_USER
    assert set().union(*(users_in(b) for b in bodies)) == {3, 4}
    assert result.usage["resumed_users"] == 2 and len(result.profiles) == N_USERS


def test_corrupt_cache_entries_are_fetched_again(dataset, tmp_path):
    with FakeOpenAIServer() as server:
        config = config_for(server.base_url, tmp_path)
        first = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        files = sorted((tmp_path / "cache").rglob("*.json"))
        assert len(files) == N_USERS * REQUESTS_PER_USER
        files[0].write_text("{ not json", encoding="utf-8")
        files[1].write_text("", encoding="utf-8")
        files[2].write_text(json.dumps({"key": "wrong", "response": {}}), encoding="utf-8")
        server.reset_counts()
        second = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        assert server.count() == 3
    assert second.usage["backend_cache_corrupt_refetched"] == 3
    pd.testing.assert_frame_equal(first.memories, second.memories)
    assert all(json.loads(f.read_text())["response"]["content"] for f in files[:3])


def test_unreachable_endpoint_is_one_line_naming_the_url(dataset, tmp_path):
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    config = config_for(url, tmp_path, request_retries=1)
    with pytest.raises(BackendError, match=re.escape(
        f"cannot reach the OpenAI-compatible endpoint {url} (2 attempts: "
    )) as info:
        distill_users(dataset, None, dataset.interactions, config=config, progress=False)
    assert "\n" not in str(info.value)


def test_invalid_json_is_retried_then_names_the_user_and_batch(dataset, tmp_path):
    def responder(body):
        if 2 in users_in(body) and "TASK: explain" in json.dumps(body):
            return "Sure! Here are my thoughts, no JSON today."
        return default_chat_content(body)

    with FakeOpenAIServer(responder=responder) as server:
        config = config_for(server.base_url, tmp_path, max_retries=2)
        with pytest.raises(BackendError, match=re.escape(
            "user 2, batch 1/2, step enrich: 3 answers rejected, last invalid_output (answer is "
            "not a JSON object"
        )):
            distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        retries = [b for b in server.bodies() if users_in(b) == {2} and
                   "TASK: explain" in b["messages"][1]["content"]]
    assert len(retries) == 3
    # A retry shows the model its rejected answer and why (so it is a new request, not a cache hit).
    assert retries[1]["messages"][2] == {"role": "assistant",
                                         "content": "Sure! Here are my thoughts, no JSON today."}
    assert "rejected: answer is not a JSON object" in retries[1]["messages"][3]["content"]


def test_over_long_answers_are_rejected_logged_and_replaced(dataset, tmp_path):
    def responder(body):
        if "TASK: explain" in json.dumps(body):
            return default_chat_content(body)
        return json.dumps({"taste": "I like long words. " * 60})  # 240 words

    with FakeOpenAIServer(responder=responder) as server:
        config = config_for(server.base_url, tmp_path, max_words=200, max_retries=1,
                            fallback="template")
        result = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
    log = result.log
    too_long = log[log.reason == "too_long"]
    # update + reflect of 2 batches x 4 users, each tried twice
    assert len(too_long) == N_USERS * 2 * 2 * 2
    assert (too_long.words > 200).all() and set(too_long.step) == {"update", "reflect"}
    assert (log.reason == "fallback_template").sum() == N_USERS * 2 * 2
    assert not result.profiles.taste.str.contains("long words").any()
    assert result.memories.text.str.contains("matched my taste").all()  # enrich was fine


def test_missing_api_key_for_a_remote_endpoint(tmp_path):
    config = DistillConfig(backend="openai", base_url="https://api.example.com/v1",
                           cache_dir=str(tmp_path))
    with pytest.raises(BackendError, match=re.escape(
        "no API key for https://api.example.com/v1: set the OPENAI_API_KEY environment variable"
    )):
        make_backend("openai", config=config)


def test_fake_server_embeddings_are_deterministic_unit_vectors():
    from openai import OpenAI

    with FakeOpenAIServer(embedding_dim=16) as server:
        client = OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        a = client.embeddings.create(model="e", input=["a film", "another film"])
        b = client.embeddings.create(model="e", input="a film")
        assert server.count("/v1/embeddings") == 2
    va = np.array(a.data[0].embedding)
    assert va.shape == (16,) and np.linalg.norm(va) == pytest.approx(1.0)
    assert np.allclose(va, b.data[0].embedding)
    assert not np.allclose(va, a.data[1].embedding)
