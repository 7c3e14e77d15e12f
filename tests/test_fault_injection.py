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


# -- 3. deterministic resume from every stop ------------------------------------------------------
def _train_job(out, *args: str) -> int:
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(here / "train_job.py"), str(out), *args], env=env,
                          capture_output=True, text=True, timeout=240)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode


@pytest.mark.integration
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_signal_mid_step_resumes_bit_identical(signame, smollm2_tokenizer, tmp_path):
    import signal

    import torch
    from conftest import build_tiny_llama
    from safetensors.torch import load_file
    from test_lora_training import _config, _rows

    from recsim_personas.training.lora import train_adapter

    out = tmp_path / "adapter"
    # A step of the job is one user's group: a prefix pass, then the item pass. The 10th forward is
    # step 5's item pass: its prefix pass has already drawn dropout masks from the RNG.
    assert _train_job(out, signame, "10") == 128 + int(getattr(signal, signame))
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert 1 <= state["step"] < 8  # written at the boundary after the interrupted step
    assert not (out / "recsim_adapter.json").exists()

    # Resume here, and train uninterrupted here: the same model, rows and config as the job's.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def model():
            m = build_tiny_llama(smollm2_tokenizer)
            with torch.no_grad():
                m.get_input_embeddings().weight.mul_(20.0)
            return m

        cfg = _config(max_steps=8, checkpoint_every=0, dropout=0.1)
        rows = _rows(smollm2_tokenizer)
        resumed = train_adapter(model(), smollm2_tokenizer, rows, cfg, out, name="a", progress=False)
        train_adapter(model(), smollm2_tokenizer, rows, cfg, tmp_path / "full", name="a",
                             progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from_step == state["step"] and resumed.steps == 8
    a = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit, not within a tolerance


# -- 2. run folders that verify themselves ---------------------------------------------------------
_SPLIT = dict(min_interactions=30, max_interactions=60, n_users=4, seed=0)


def _memory_config():
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import MemoryPipelineConfig

    return MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=3, n_init=2))


@pytest.fixture(scope="module")
def built_run(tmp_path_factory):
    """A finished memory run folder (template distillation, hashing embeddings, 2 personas, 4 users)."""
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.pipeline import build_memories

    root = tmp_path_factory.mktemp("memrun") / "run"
    dataset = load_dataset("ml-latest-small")
    build_memories(dataset, SplitConfig(**_SPLIT), _memory_config(), root, progress=False)
    return root, dataset


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _fake_adapter(run, name):
    """An adapter folder with real safetensors bytes, recorded as trained on the current memories."""
    import torch
    from safetensors.torch import save_file

    from recsim_personas.integrity import record_adapters

    folder = run / "adapters" / name
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text("{}")
    (folder / "recsim_adapter.json").write_text(json.dumps({"run_key": "x"}))
    record_adapters(run, [name], {"lora": "test"})
    return folder


MEMORY_RUN_FILES = ["split/train.parquet", "split/test.parquet", "split/config.json", "profiles.parquet",
                    "memories.parquet", "distill_log.parquet", "embeddings/profiles.npy",
                    "embeddings/profile_user_ids.npy", "embeddings/items.npy", "embeddings/item_ids.npy",
                    "personas.parquet", "personas.json"]


@pytest.mark.parametrize("name", MEMORY_RUN_FILES)
def test_damaged_run_folder_file_is_refused_in_one_line(name, built_run, tmp_path):
    from recsim_personas.envs.population import population_from_run_dir
    from recsim_personas.errors import DataError

    run = _copy(built_run[0], tmp_path / "run")
    _truncate(run / name)
    with pytest.raises(DataError, match=re.escape(f"run folder {run}: {name} has ")) as info:
        population_from_run_dir(run, dataset=built_run[1])
    message = str(info.value)
    assert "\n" not in message and f"`recsim-personas memory --out {run}`" in message


@pytest.mark.parametrize("name", ["memories.parquet", "embeddings/items.npy", "personas.parquet",
                                  "split/train.parquet"])
def test_damaged_run_folder_file_is_rebuilt_identically(name, built_run, tmp_path):
    from recsim_personas.artifacts import file_record
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.memory.pipeline import build_memories

    run = _copy(built_run[0], tmp_path / "run")
    before = {f: file_record(run / f) for f in MEMORY_RUN_FILES}
    _truncate(run / name)
    rebuilt = build_memories(built_run[1], SplitConfig(**_SPLIT), _memory_config(), run, progress=False)
    assert any(t.ran for t in rebuilt.timings.values())
    assert {f: file_record(run / f) for f in MEMORY_RUN_FILES if f != "personas.json"} == {
        f: r for f, r in before.items() if f != "personas.json"}


def test_gym_make_refuses_a_damaged_run_folder(built_run, tmp_path):
    import gymnasium as gym

    from recsim_personas.errors import DataError

    run = _copy(built_run[0], tmp_path / "run")
    _truncate(run / "memories.parquet")
    with pytest.raises(DataError, match=re.escape(f"run folder {run}: memories.parquet has ")):
        gym.make("recsim_personas:PersonaRec-v0", run_dir=str(run), agent="bias")


def test_damaged_adapter_file_is_refused_or_repaired(built_run, tmp_path):
    from recsim_personas.errors import DataError
    from recsim_personas.integrity import RunRepairWarning, verify_run_folder

    run = _copy(built_run[0], tmp_path / "run")
    folder = _fake_adapter(run, "persona_0__ms")
    verify_run_folder(run, adapters=["persona_0__ms"])  # intact: no error
    _truncate(folder / "adapter_model.safetensors")
    with pytest.raises(DataError, match=re.escape(
        f"run folder {run}: adapters/persona_0__ms/adapter_model.safetensors has "
    )) as info:
        verify_run_folder(run, adapters=["persona_0__ms"])
    assert f"`recsim-personas train {run}`" in str(info.value)
    with pytest.warns(RunRepairWarning, match="rebuilding stage adapter:persona_0__ms"):
        verify_run_folder(run, adapters=["persona_0__ms"], repair=("adapters",))
    assert not (folder / "recsim_adapter.json").exists()  # so train_adapter trains it again


def test_unrecorded_truncated_safetensors_is_found_by_its_header(built_run, tmp_path):
    from recsim_personas.errors import DataError
    from recsim_personas.integrity import verify_run_folder

    run = _copy(built_run[0], tmp_path / "run")
    folder = _fake_adapter(run, "persona_1__ms")
    from recsim_personas.artifacts import RunFolder
    from recsim_personas.memory.pipeline import MemoryRun

    MemoryRun(run).forget("adapter:persona_1__ms")  # as if trained from Python, no record
    assert RunFolder(run).stage_record("adapter:persona_1__ms") is None
    _truncate(folder / "adapter_model.safetensors")
    with pytest.raises(DataError, match=r"adapter_model\.safetensors has \d+ bytes, its header describes"):
        verify_run_folder(run, adapters=["persona_1__ms"])


def test_changed_split_makes_the_old_adapters_stale(built_run, tmp_path):
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.errors import DataError
    from recsim_personas.integrity import verify_run_folder
    from recsim_personas.memory.pipeline import build_memories

    run = _copy(built_run[0], tmp_path / "run")
    _fake_adapter(run, "persona_0__ms")
    build_memories(built_run[1], SplitConfig(**{**_SPLIT, "seed": 1}), _memory_config(), run, progress=False)
    with pytest.raises(DataError, match=re.escape(
        f"run folder {run}: adapter persona_0__ms was trained on other memories (split/train.parquet"
    )) as info:
        verify_run_folder(run, adapters=["persona_0__ms"])
    assert f"re-train it with `recsim-personas train {run}`" in str(info.value)


def test_second_writer_fails_at_once_naming_the_first(built_run, tmp_path, capsys):
    from recsim_personas.artifacts import RunFolder
    from recsim_personas.cli.main import main

    run = _copy(built_run[0], tmp_path / "run")
    with RunFolder(run).lock("recsim-personas memory"):
        t0 = time.perf_counter()
        code = main(["memory", "--out", str(run), "--embedder", "hashing:64", "--k", "2", "--quiet",
                     "--min-interactions", "30", "--max-interactions", "60", "--users", "4"])
        elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 30
    assert f"run folder {run} is being written by pid " in err and "(recsim-personas memory" in err
    assert "Traceback" not in err


def test_train_dry_run_says_done_only_for_what_the_real_run_reuses(built_run, tmp_path, capsys):
    from recsim_personas.cli.main import main

    run = _copy(built_run[0], tmp_path / "run")
    # A finished-looking adapter folder that no record ties to these memories and settings.
    folder = run / "adapters" / "single_max__ms"
    folder.mkdir(parents=True)
    for f in ("adapter_config.json", "adapter_model.safetensors", "recsim_adapter.json"):
        (folder / f).write_text("{}")
    assert main(["train", str(run), "--dry-run", "--adapters", "single_max", "--memory", "ms"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("single_max__ms"))
    assert line.endswith("to train")

    from recsim_personas.integrity import record_adapters
    from recsim_personas.reproduce.stages import adapter_inputs
    from recsim_personas.training.experiment import ExperimentConfig

    config = ExperimentConfig(memory_modes=("ms",), adapters=("single_max",), template="paper")
    record_adapters(run, ["single_max__ms"], adapter_inputs(config))
    assert main(["train", str(run), "--dry-run", "--adapters", "single_max", "--memory", "ms"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("single_max__ms"))
    assert line.endswith("done")


# -- 4. every config error before any work -----------------------------------------------------------
def test_reproduce_config_errors_come_before_any_work(tmp_path, capsys):
    from recsim_personas.cli.main import main

    out = tmp_path / "run"
    t0 = time.perf_counter()
    code = main(["reproduce", "--preset", "demo", "--out", str(out), "simulation.policies=[]",
                 "simulation.episodes=0", "evaluation.test_rows_per_user=0"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 30
    assert "simulation: invalid SimulationConfig: policies must name at least one policy" in err
    assert "episodes must be an integer >= 1, got 0" in err
    assert "test_rows_per_user must be an int >= 1 or None, got 0" in err
    assert not out.exists()  # nothing was written, nothing loaded
    assert "Traceback" not in err


def test_n_users_not_a_number_gives_one_message(capsys):
    from recsim_personas.cli.main import main

    assert main(["reproduce", "--preset", "demo", "split.n_users=abc", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "split.n_users: expected int | null, got 'abc'" in err
    assert "not supported between" not in err and "1 error(s)" in err


def test_yaml_not_utf8_names_the_line_and_byte(tmp_path, capsys):
    from recsim_personas.cli.main import main

    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: 1\nout: caf\xe9\n")
    assert main(["reproduce", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"recsim-personas reproduce: error: {path} line 2 (byte offset 16): byte 0xe9 is not "
                   "UTF-8; save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def test_reproduce_dry_run_makes_the_real_checks_and_runs_nothing(built_run, tmp_path, capsys):
    from recsim_personas.cli.main import main

    run = _copy(built_run[0], tmp_path / "run")
    _truncate(run / "memories.parquet")
    assert main(["reproduce", "--preset", "demo", "--out", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "config: valid" in out and "memories.parquet has" in out and "rebuilds its stage" in out
    assert not (run / "reproduce_config.json").exists() and not (run / "adapters").exists()


# -- 5. an unknown hub id offline fails at once ----------------------------------------------------
@pytest.mark.parametrize("option", [["--backend", "hf", "--model", "nobody/no-such-model"],
                                    ["--embedder", "nobody/no-such-embedder"]])
def test_unknown_hub_id_offline_fails_at_once(option, tmp_path, capsys, monkeypatch):
    from recsim_personas.cli.main import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    code = main(["memory", "--out", str(tmp_path / "run"), *option])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10
    assert len(err.strip().splitlines()) == 1 and "is not in the local Hugging Face cache" in err
    assert option[-2] in err and not (tmp_path / "run").exists()


def test_network_settings_are_in_help(capsys):
    from recsim_personas.cli.main import main

    with pytest.raises(SystemExit):
        main(["memory", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--request-timeout", "30.0"), ("--request-attempts", "3"),
                          ("--max-retry-after", "30.0")):
        assert re.search(re.escape(flag) + r" \w+ .*?\(default: " + re.escape(default) + r"\)", text)


# -- 6. output paths and writes ----------------------------------------------------------------------
def test_output_path_that_is_a_file_fails_before_work(tmp_path, capsys):
    from recsim_personas.cli.main import main

    existing = tmp_path / "file.txt"
    existing.write_text("x")
    cases = [
        (["memory", "--out", str(existing)], f"--out {existing} is a file, not a folder"),
        (["memory", "--out", str(existing / "run")], f"--out {existing / 'run'}: {existing} is a file"),
        (["baselines", "--json", str(tmp_path), "--models", "bias"], f"--json {tmp_path} is a folder"),
        (["reproduce", "--out", str(existing), "--dry-run"], f"--out (out) {existing} is a file"),
        (["simulate", "--out", str(existing), "--episodes", "1"], f"--out {existing} is a file"),
    ]
    for argv, message in cases:
        t0 = time.perf_counter()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert time.perf_counter() - t0 < 15


def test_oserror_at_a_write_is_one_line_naming_the_path(tmp_path, monkeypatch):
    import errno
    import os

    from recsim_personas.artifacts import atomic_write_json
    from recsim_personas.errors import OutputError

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    target = tmp_path / "results" / "table.json"
    with pytest.raises(OutputError, match=re.escape(
        f"cannot write {target}: No space left on device; free disk space"
    )):
        atomic_write_json(target, {"a": 1})
    assert list(target.parent.iterdir()) == []  # the temporary file is gone too


# -- 7. encodings ------------------------------------------------------------------------------------
def _csv_with_0xff(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,3.0,101\n2,\xff3,5.0,102\n"
                     b"2,1,2.0,103\n")
    return path


def test_csv_encoding_error_names_offset_and_the_cli_option(tmp_path):
    from recsim_personas.data.custom_csv import load_csv
    from recsim_personas.data.dataset import RatingScale
    from recsim_personas.errors import DataError

    path = _csv_with_0xff(tmp_path)
    columns = {"user_id": "userId", "item_id": "movieId", "rating": "rating", "timestamp": "timestamp"}
    with pytest.raises(DataError, match=re.escape(
        f"{path}: line 4, field 'encoding': byte 0xff at byte offset 58 is not utf-8; pass --encoding "
        "latin-1"
    )):
        load_csv(path, columns=columns, scale=RatingScale(0.5, 5, 0.5))
    kept = load_csv(path, columns=columns, scale=RatingScale(0.5, 5, 0.5), skip_bad_rows=True)
    assert len(kept.interactions) == 3  # --skip-bad-rows drops the undecodable line


def test_csv_encoding_option_on_the_cli(tmp_path, capsys):
    from recsim_personas.cli.main import main

    path = _csv_with_0xff(tmp_path)
    argv = ["baselines", "--dataset", "csv", "--csv", str(path), "--csv-scale", "0.5:5:0.5",
            "--models", "global-mean", "--users", "all", "--min-interactions", "none",
            "--max-interactions", "none", "--split", "random:0.5"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --encoding latin-1" in err and len(err.strip().splitlines()) == 1
    # latin-1 reads the byte (as 'ÿ3', not a number: a bad field the loader names), --skip-bad-rows drops it
    assert main([*argv, "--encoding", "latin-1"]) == 2
    assert "field 'movieId'" in capsys.readouterr().err


def test_lm_env_refuses_a_damaged_or_stale_adapter_before_loading_a_model(built_run, tmp_path):
    from recsim_personas.data.splits import SplitConfig
    from recsim_personas.envs.population import population_from_run_dir
    from recsim_personas.errors import DataError
    from recsim_personas.memory.pipeline import build_memories

    run = _copy(built_run[0], tmp_path / "run")
    folders = [_fake_adapter(run, f"persona_{k}__ms") for k in range(2)]
    population_from_run_dir(run, require_adapters="ms", dataset=built_run[1])  # intact: loads
    _truncate(folders[1] / "adapter_model.safetensors")
    with pytest.raises(DataError, match=re.escape(
        f"run folder {run}: adapters/persona_1__ms/adapter_model.safetensors has "
    )):
        population_from_run_dir(run, require_adapters="ms", dataset=built_run[1])
    stale = _copy(built_run[0], tmp_path / "stale")
    for k in range(2):
        _fake_adapter(stale, f"persona_{k}__ms")
    build_memories(built_run[1], SplitConfig(**{**_SPLIT, "seed": 1}), _memory_config(), stale, progress=False)
    with pytest.raises(DataError, match="adapter persona_0__ms was trained on other memories"):
        population_from_run_dir(stale, require_adapters="ms", dataset=built_run[1])


_MEMORY_ARGV = ["--embedder", "hashing:64", "--k", "2", "--k-max", "3", "--min-interactions", "30",
                "--max-interactions", "60", "--users", "4", "--seed", "0", "--quiet"]
_SIGNAL_AFTER_USER_2 = """
import os, signal, sys
from recsim_personas.cli.main import main
from recsim_personas.memory.distill import Distiller
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
save, saved = Distiller._save_checkpoint, []
def save_then_signal(self, directory, run, row):
    save(self, directory, run, row)
    saved.append(run.user_id)
    if len(saved) == 2:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
Distiller._save_checkpoint = save_then_signal
sys.exit(main(["memory", *sys.argv[2:]]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("signame", ["SIGTERM"])  # SIGINT: test_distill_openai's interrupt test
def test_signal_during_distillation_resumes_to_identical_files(signame, built_run, tmp_path, capsys):
    import signal
    import subprocess
    import sys

    from recsim_personas.artifacts import file_record
    from recsim_personas.cli.main import main

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_USER_2, signame, "--out", str(out),
                           *_MEMORY_ARGV], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 128 + int(getattr(signal, signame)), proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "interrupted; finished work is saved and a re-run resumes from it")
    assert "Traceback" not in proc.stderr
    assert len(list((out / "distill_checkpoint").glob("user-*.json"))) == 2
    assert not list(out.rglob("*.tmp"))  # no half-written file
    assert main(["memory", "--out", str(out), *_MEMORY_ARGV]) == 0
    capsys.readouterr()
    # The same split and distillation as the uninterrupted `built_run` (whose personas differ: n_init).
    for name in ("split/train.parquet", "split/test.parquet", "profiles.parquet", "memories.parquet",
                 "embeddings/profiles.npy", "embeddings/items.npy"):
        assert file_record(out / name) == file_record(built_run[0] / name), name


def test_output_path_in_a_read_only_folder_fails_before_work(tmp_path, monkeypatch):
    import os

    from recsim_personas.cli.outputs import check_output_dir, check_output_file
    from recsim_personas.errors import OutputError

    # The suite may run as root, for whom every folder is writable: the permission answer is faked.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(OutputError, match=re.escape(
        f"--out {tmp_path / 'run'}: folder {tmp_path} is not writable; choose another path"
    )):
        check_output_dir(tmp_path / "run")
    with pytest.raises(OutputError, match=re.escape(f"--json {tmp_path / 'a' / 'r.json'}: folder {tmp_path} is not writable")):
        check_output_file(tmp_path / "a" / "r.json")
