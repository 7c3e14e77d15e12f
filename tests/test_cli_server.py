"""``--server URL`` on simulate, evaluate and reproduce: checked before any work, passed to the scorer.

A server that is down is one line on stderr and exit code 2, seconds after the start (the served
scorer's connect timeout and bounded retries), before a population or a model loads. A server that
answers ``/v1/models`` (the fake OpenAI server of the served-scorer tests) lets the command go on,
and the URL reaches the environment and evaluation configs.
"""

from __future__ import annotations

import socket
import time

import pytest
from fake_openai_server import FakeOpenAIServer

from recsim_personas.cli.main import main


def _down_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there once the socket is closed


def _models_only() -> FakeOpenAIServer:
    return FakeOpenAIServer(models=[{"id": "smollm2", "object": "model", "parent": None}])


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["simulate", "--agent", "lm", "--run-dir", "{tmp}/run", "--out", "{tmp}/out"], "--server"),
        (["evaluate", "{tmp}/run"], "--server"),
        (["reproduce", "--preset", "demo", "--out", "{tmp}/run"], "--server (model.server)"),
    ],
    ids=["simulate", "evaluate", "reproduce"],
)
def test_unreachable_server_is_one_line_and_exit_code_2(tmp_path, capsys, command, option):
    url = _down_url()
    argv = [a.format(tmp=tmp_path) for a in command] + ["--server", url]
    start = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - start < 30  # 4 attempts x connect timeout at most, no population loaded
    assert len(err.splitlines()) == 1, err
    assert f"{option}: cannot reach the model server at {url} (4 attempts" in err


def test_server_must_be_an_http_url(tmp_path, capsys):
    assert main(["reproduce", "--preset", "demo", "--out", str(tmp_path / "run"), "--server", "localhost:8000"]) == 2
    assert "server must be an http(s) URL" in capsys.readouterr().err


def test_simulate_passes_the_server_to_the_environment(tmp_path, monkeypatch):
    seen = {}

    def fake_run_simulation(config, progress=True):
        seen.update(config.env)
        raise KeyboardInterrupt  # stop here: the wiring is what is checked

    monkeypatch.setattr("recsim_personas.envs.simulate.run_simulation", fake_run_simulation)
    with _models_only() as server:
        url = server.base_url
        code = main(["simulate", "--agent", "lm", "--run-dir", str(tmp_path), "--out", str(tmp_path / "out"),
                     "--server", url])
        assert server.requests == []  # only GET /v1/models (not recorded) was asked: no scoring yet
    assert code == 130 and seen["server"] == url and seen["agent"] == "lm"


def test_evaluate_and_reproduce_take_the_server_into_their_configs(tmp_path, monkeypatch):
    from recsim_personas.cli.main import build_parser
    from recsim_personas.cli.train import experiment_config_from_args
    from recsim_personas.reproduce.loading import load_reproduce_config
    from recsim_personas.reproduce.stages import experiment_config, simulation_config

    url = "http://127.0.0.1:8000/v1"
    args = build_parser().parse_args(["evaluate", str(tmp_path), "--server", url])
    assert experiment_config_from_args(args).server == url
    captured = {}

    def fake_run_reproduction(config, estimate_only=False):
        captured["config"] = config
        raise KeyboardInterrupt  # stop here: the wiring is what is checked

    monkeypatch.setattr("recsim_personas.reproduce.pipeline.run_reproduction", fake_run_reproduction)
    with _models_only() as server:
        served = server.base_url
        assert main(["reproduce", "--preset", "demo", "--out", str(tmp_path / "run"), "--server", served]) == 130
    config = captured["config"]
    assert config.model.server == served
    assert experiment_config(config).server == served
    assert simulation_config(config).env["server"] == served
    # Without --server nothing changes: in-process scoring.
    plain = load_reproduce_config("demo", overrides=[], extra={"out": str(tmp_path / "run2")})
    assert experiment_config(plain).server is None and "server" not in simulation_config(plain).env
