"""Fault injection (issue 15): poisoned caches, hanging and lying servers on 127.0.0.1, damaged run
folders, signals, bad output paths and encodings. Every case ends in the identical result or one
readable line naming what is wrong and how to repair it.

Numbered failures of issue 15 and their tests:

1. cache replays rejected answers / other endpoints: ``test_rejected_answers_are_not_cached``,
   ``test_a_poisoned_cache_is_not_replayed_to_another_endpoint``;
2. run folders trust any file: ``test_damaged_run_folder_file_*``, ``test_changed_split_*``;
3. resume after Ctrl-C / SIGTERM: ``test_signal_mid_step_resumes_bit_identical``;
4. config errors after the work: ``test_reproduce_config_errors_come_before_any_work``;
5. unbounded waits: ``test_hanging_endpoint_*``, ``test_huge_retry_after_*``, ``test_unknown_hub_id_*``;
6. output paths: ``test_output_path_*``;
7. smaller: ``test_yaml_not_utf8_*``, ``test_csv_encoding_*``, ``test_n_users_not_a_number_*``,
   ``test_second_writer_*``, ``test_train_dry_run_*``.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from fake_openai_server import FakeOpenAIServer, default_chat_content
from test_distill_openai import config_for, make_dataset, users_in

from recsim_personas.errors import BackendError
from recsim_personas.memory import distill_users


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


# -- 1. the request cache --------------------------------------------------------------------------
def _lying(body):
    """Non-JSON content for user 2's enrich steps, valid answers otherwise."""
    if 2 in users_in(body) and "TASK: explain" in json.dumps(body):
        return "Sure! No JSON today."
    return default_chat_content(body)


def test_rejected_answers_are_not_cached(tmp_path):
    dataset = make_dataset()
    with FakeOpenAIServer(responder=_lying) as server:
        config = config_for(server.base_url, tmp_path, max_retries=1)
        with pytest.raises(BackendError, match="user 2, batch 1/2, step enrich: 2 answers rejected"):
            distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        sent = server.count()
    stored = [json.loads(f.read_text())["response"]["content"] for f in (tmp_path / "cache").rglob("*.json")]
    assert stored and len(stored) < sent
    assert not any("No JSON" in c for c in stored)
    # The same endpoint answering well now: the rejected steps are asked again and the run finishes.
    with FakeOpenAIServer() as fixed:
        config = config_for(fixed.base_url, tmp_path, max_retries=1)
        result = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        assert fixed.count() > 0
    assert len(result.profiles) == 4


def test_a_poisoned_cache_is_not_replayed_to_another_endpoint(tmp_path):
    dataset = make_dataset()
    with FakeOpenAIServer(responder=lambda body: "not json at all") as bad:
        config = config_for(bad.base_url, tmp_path, max_retries=0)
        with pytest.raises(BackendError):
            distill_users(dataset, None, dataset.interactions, config=config, progress=False)
    with FakeOpenAIServer() as good:
        config = config_for(good.base_url, tmp_path, max_retries=0)
        result = distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        assert good.count() == 4 * 6  # every request reached the new endpoint
    assert len(result.memories) == len(dataset.interactions)


def test_cache_entries_of_one_endpoint_serve_only_that_endpoint(tmp_path):
    from recsim_personas.memory.backends.cache import RequestCache

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    a = RequestCache(tmp_path, endpoint="http://127.0.0.1:1/v1")
    b = RequestCache(tmp_path, endpoint="http://127.0.0.1:2/v1")
    a.put(body, {"content": "from a"})
    assert a.get(body) == {"content": "from a"}
    assert b.get(body) is None
    with pytest.raises(ValueError, match="content"):
        a.put(body, {"content": None})


# -- 5. bounded waits --------------------------------------------------------------------------------
def test_hanging_endpoint_stops_the_run_within_the_timeouts(tmp_path):
    dataset = make_dataset()
    with FakeOpenAIServer(fail_if=lambda path, body: "hang", hang_seconds=3.0) as server:
        config = config_for(server.base_url, tmp_path, timeout=0.3, request_retries=1, concurrency=2)
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match=re.escape(
            f"cannot reach the OpenAI-compatible endpoint {server.base_url} (2 attempts: no answer "
            "within 0.3 s)"
        )) as info:
            distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        elapsed = time.perf_counter() - t0
        sent = server.count()
    assert "\n" not in str(info.value) and "--request-timeout" in str(info.value)
    assert elapsed < 2.5  # 2 attempts x 0.3 s + backoff, not one wait per user
    assert sent <= 4  # the first cohort of 2 users, 2 attempts each: the other users are not tried


def test_huge_retry_after_fails_at_once_naming_the_setting(tmp_path):
    dataset = make_dataset()
    with FakeOpenAIServer(fail_if=lambda path, body: "429", retry_after=86400) as server:
        config = config_for(server.base_url, tmp_path, retry_after_max=5.0)
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match=re.escape(
            "asks to retry after 86400 s (HTTP 429"
        )) as info:
            distill_users(dataset, None, dataset.interactions, config=config, progress=False)
        assert time.perf_counter() - t0 < 2.0
    assert "retry_after_max=5 s" in str(info.value) and "--max-retry-after" in str(info.value)


def test_network_defaults_are_seconds_not_minutes():
    from recsim_personas.memory.distill import DistillConfig

    cfg = DistillConfig(backend="openai")
    worst_first_error = (cfg.request_retries + 1) * cfg.timeout + cfg.request_retries * cfg.backoff_max
    assert worst_first_error <= 120
    assert cfg.retry_after_max <= 60


def test_the_first_retry_prints_one_note(tmp_path):
    from recsim_personas.memory.backends.openai_backend import BackendRetryWarning

    dataset = make_dataset()
    with FakeOpenAIServer(faults={1: "500", 2: "500", 3: "500"}) as server:
        config = config_for(server.base_url, tmp_path, concurrency=1)
        with pytest.warns(BackendRetryWarning) as caught:
            distill_users(dataset, None, dataset.interactions, config=config, progress=False)
    notes = [w for w in caught if issubclass(w.category, BackendRetryWarning)]
    assert len(notes) == 1 and "HTTP 500" in str(notes[0].message)
