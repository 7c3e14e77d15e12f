"""What a user's console shows: library warnings as one note line, no third-party warnings, progress
bars only on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recsim_personas.progress import ENV_VAR, bars_enabled, progress_bar

BIN = Path(sys.executable).parent


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "RECSIM_PERSONAS_WARNINGS")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=120, check=False)


QUIET = """
    import warnings
    from recsim_personas.cli.main import quiet_console
    from recsim_personas.errors import RecsimWarning
    quiet_console()
    warnings.warn("3 of 9 prompts were shortened", RecsimWarning)
    warnings.warn("`foo` is deprecated", FutureWarning)
    warnings.warn("bar will change", DeprecationWarning)
    warnings.warn("a third-party notice")
"""


def test_cli_shows_library_warnings_as_one_note_line_and_hides_third_party_ones():
    done = _python(QUIET)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "recsim-personas: note: 3 of 9 prompts were shortened\n"


def test_warnings_env_var_shows_every_warning_for_debugging():
    done = _python(QUIET, RECSIM_PERSONAS_WARNINGS="1")
    assert "FutureWarning: `foo` is deprecated" in done.stderr
    assert "RecsimWarning: 3 of 9 prompts were shortened" in done.stderr


def test_progress_bar_is_silent_off_a_terminal_and_forced_by_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert not bars_enabled()
    with progress_bar(range(3), desc="x") as bar:
        assert bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setenv(ENV_VAR, "1")
    assert bars_enabled() and not bars_enabled(enabled=False)
    bar = progress_bar(total=2, desc="forced", file=io.StringIO())
    assert not bar.disable
    bar.close()
    assert progress_bar(total=2, enabled=False).disable  # the caller's progress=False wins
    monkeypatch.setenv(ENV_VAR, "0")
    assert progress_bar(total=2).disable


@pytest.mark.integration
def test_cli_command_prints_no_python_warning_and_no_bar_in_a_log(tmp_path):
    """Real commands with their output going to a pipe (as in CI): tables only."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "RECSIM_PERSONAS_WARNINGS")}
    env["RECSIM_PERSONAS_CACHE"] = str(tmp_path / "cache")
    run = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "recsim-personas"), *args], capture_output=True, text=True,
                              env=env, timeout=600, check=False)

    built = cli("memory", "--out", str(run), "--embedder", "hashing:64", "--users", "8",
                "--min-interactions", "30", "--max-interactions", "70", "--k", "2")
    assert built.returncode == 0, built.stderr
    done = cli("simulate", "--run-dir", str(run), "--agent", "bias", "--policies", "random,popularity",
               "--episodes", "4", "--horizon", "3", "--n-envs", "2", "--out", str(tmp_path / "sim"))
    assert done.returncode == 0, done.stderr
    assert "PersonaRec-v0 simulation" in done.stdout
    both = built.stdout + built.stderr + done.stdout + done.stderr
    assert "Warning" not in both and "Traceback" not in both
    assert "\r" not in both  # no progress bar redraws in a log
