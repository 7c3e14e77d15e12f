"""The results file every benchmark writes: one schema, one ``--out`` meaning.

Each script in ``benchmarks/`` (and the result-writing examples) builds its command line with
:func:`bench_argparser`, whose ``--out PATH`` is always the results JSON file (default
``results/<name>.json``; scratch and run folders get their own options, such as ``--run-dir`` or
``--work-dir``), and writes its measurements with :class:`ResultsFile` (or :func:`write_results`).
Every file then has the same top-level keys:

``schema``
    :data:`SCHEMA`, the layout's version.
``benchmark``, ``command``, ``written_at``
    The script's name, the command line that ran it, and when the file was written (UTC).
``config``
    What was measured: the script's options and any setting that decides the numbers.
``metrics``
    The measurements.
``results``, ``checks``
    Per-model or per-policy rows (a list, may be empty), and pass/fail checks (a list of objects
    with at least ``check``, a name, and ``passed``, a bool; may be empty).
``git``, ``versions``, ``hardware``
    Added here: the commit and whether the tree was dirty, package versions, and the machine
    (``cpu``: model and flags from :mod:`recsim_personas.hardware`; ``cuda``; ``cpu_count``;
    ``torch_threads``; ``load_average`` before and after the run, as the CPU is often shared).

A script may add named sections beside them (``sections=``; an example's ``learning_curve``), never
one of the keys above. The file is written atomically: a crash never leaves half a file.

Example:
    >>> parser = bench_argparser("benchmarks/memory.py", "Benchmark: ...", out="memory-ml1m.json")  # doctest: +SKIP
    >>> args = parser.parse_args(argv)                                                             # doctest: +SKIP
    >>> results = ResultsFile(out_path(args), "memory", argv)                                      # doctest: +SKIP
    >>> results.write(config={...}, metrics={...}, checks=[...])                                   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recsim_personas.artifacts import atomic_write_json, environment_info, git_info
from recsim_personas.hardware import cpu_info

__all__ = [
    "ADDED_KEYS",
    "REQUIRED_KEYS",
    "SCHEMA",
    "ResultsFile",
    "bench_argparser",
    "check_document",
    "out_path",
    "write_results",
]

#: The layout's version, written as the file's ``schema`` key.
SCHEMA = "recsim-personas-results/1"
#: Keys every results file has, in this order.
REQUIRED_KEYS = (
    "schema", "benchmark", "command", "written_at", "config", "metrics", "results", "checks",
    "git", "versions", "hardware",
)
#: The keys this module fills in (a script passes the others).
ADDED_KEYS = ("schema", "written_at", "git", "versions", "hardware")
#: The ``hardware`` keys every file has.
HARDWARE_KEYS = ("machine", "processor", "cpu_count", "cpu", "cuda", "torch_threads", "load_average")


def _json_path(text: str) -> str:
    """``--out``'s type: a path ending in ``.json`` (a folder there is the old meaning of some scripts)."""
    if not text.endswith(".json"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a .json file: --out is always the results JSON file "
            "(a run or scratch folder has its own option, see --help)"
        )
    return text


def bench_argparser(
    script: str | os.PathLike[str], description: str | None, *, out: str | None = None, raw: bool = False,
) -> argparse.ArgumentParser:
    """The argument parser every benchmark starts from: ``--out PATH``, the results JSON file.

    Args:
        script: the script's path (``__file__``); its stem names the default results file, and the
            project root is the folder above the script's.
        description: the script's docstring; its first paragraph is the ``--help`` summary unless
            ``raw`` (then all of it, as written).
        out: the default file name under ``results/`` (default ``<script stem>.json``). It may hold
            ``{option}`` placeholders filled from the parsed options by :func:`out_path` (one file
            per budget, preset or dataset).
        raw: show the whole docstring in ``--help``, formatted as written.

    Returns:
        An ``argparse.ArgumentParser``; the script adds its own options to it. ``--json`` is kept as
        a hidden alias of ``--out`` for the scripts that used that name.
    """
    script = Path(script)
    text = description or ""
    parser = argparse.ArgumentParser(
        prog=f"{script.parent.name}/{script.name}",
        description=text if raw else text.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )
    root = script.resolve().parent.parent
    default = str(root / "results" / (out or f"{script.stem}.json"))
    parser.add_argument(
        "--out", "--json", dest="out", type=_json_path, default=default, metavar="PATH.json",
        help=f"the results JSON file (default: results/{out or script.stem + '.json'})",
    )
    return parser


def out_path(args: argparse.Namespace, **fields: Any) -> Path:
    """``args.out`` with its ``{name}`` placeholders filled from ``fields``, then from ``args``."""
    text = str(args.out)
    if "{" in text:
        text = text.format(**{**vars(args), **fields})
    return Path(text)


def _command(script: str, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", script, *(shlex.quote(str(a)) for a in args)]).strip()


def _hardware(load_before: Sequence[float] | None, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    env_hw = environment_info()["hardware"]
    torch = sys.modules.get("torch")
    after = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    hardware: dict[str, Any] = {
        "machine": env_hw.get("machine"),
        "processor": env_hw.get("processor"),
        "cpu_count": env_hw.get("cpu_count"),
        "cpu": cpu_info(),
        "cuda": env_hw.get("cuda"),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "load_average": {"before": None if load_before is None else [round(x, 2) for x in load_before],
                         "after": after},
    }
    for key, value in (extra or {}).items():
        if key in HARDWARE_KEYS:
            raise ValueError(f"hardware key {key!r} is filled in by recsim_personas.benchmarking")
        hardware[key] = value
    return hardware


def check_document(doc: Mapping[str, Any]) -> list[str]:
    """Every way ``doc`` departs from the schema (an empty list: it follows it)."""
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in doc]
    if problems:
        return problems
    if doc["schema"] != SCHEMA:
        problems.append(f"schema is {doc['schema']!r}, not {SCHEMA!r}")
    for key in ("benchmark", "command", "written_at"):
        if not isinstance(doc[key], str) or not doc[key]:
            problems.append(f"{key} must be a non-empty string")
    for key in ("config", "metrics", "git", "versions", "hardware"):
        if not isinstance(doc[key], Mapping):
            problems.append(f"{key} must be an object")
    for key in ("results", "checks"):
        if not isinstance(doc[key], list) or not all(isinstance(r, Mapping) for r in doc[key]):
            problems.append(f"{key} must be a list of objects")
    if not problems:
        for c in doc["checks"]:
            if not isinstance(c.get("check"), str) or not isinstance(c.get("passed"), bool):
                problems.append(f"check {c!r} needs a 'check' name (string) and 'passed' (bool)")
        if set(doc["git"]) != {"commit", "dirty"}:
            problems.append("git must hold exactly 'commit' and 'dirty'")
        missing_hw = [k for k in HARDWARE_KEYS if k not in doc["hardware"]]
        if missing_hw:
            problems.append(f"hardware lacks {missing_hw}")
        elif not {"model", "flags"} <= set(doc["hardware"]["cpu"]):
            problems.append("hardware.cpu needs 'model' and 'flags'")
    return problems


class ResultsFile:
    """One benchmark run's results file: created when the run starts, written when it has numbers.

    Creating it records the load average and the git commit before the run; :meth:`write` (call it again as rows
    arrive: a run cut short keeps what it measured) adds git, versions and hardware and writes the
    file atomically.

    Args:
        path: the results JSON file (``out_path(args)``).
        benchmark: the script's name (``"memory"``).
        argv: the script's arguments (``None``: ``sys.argv[1:]``), recorded in ``command``.
        script: the script's path from the project root (default ``benchmarks/<benchmark>.py``).
    """

    def __init__(
        self, path: str | os.PathLike[str], benchmark: str, argv: Sequence[str] | None = None,
        *, script: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.benchmark = benchmark
        self.command = _command(script or f"benchmarks/{benchmark}.py", argv)
        self.load_before = tuple(os.getloadavg()) if hasattr(os, "getloadavg") else None
        # The commit the run started on: a long run's checkout may move on before it writes.
        self.git = git_info()

    def document(
        self,
        *,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        results: Sequence[Mapping[str, Any]] = (),
        checks: Sequence[Mapping[str, Any]] = (),
        hardware: Mapping[str, Any] | None = None,
        sections: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON-able document (see the module docstring for its keys)."""
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "benchmark": self.benchmark,
            "command": self.command,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": dict(config),
            "metrics": dict(metrics),
            "results": [dict(r) for r in results],
            "checks": [dict(c) for c in checks],
            "git": self.git,
            "versions": environment_info()["versions"],
            "hardware": _hardware(self.load_before, hardware),
        }
        for key, value in (sections or {}).items():
            if key in doc:
                raise ValueError(f"section {key!r} is one of the schema's own keys; put it in config or metrics")
            doc[key] = value
        problems = check_document(doc)
        if problems:
            raise ValueError(f"results for {self.benchmark} do not follow the schema: {'; '.join(problems)}")
        return doc

    def write(self, **parts: Any) -> Path:
        """Write :meth:`document` (same keywords) atomically to :attr:`path`; returns the path."""
        atomic_write_json(self.path, self.document(**parts))
        return self.path


def write_results(
    path: str | os.PathLike[str], *, benchmark: str, config: Mapping[str, Any], metrics: Mapping[str, Any],
    argv: Sequence[str] | None = None, script: str | None = None, **parts: Any,
) -> Path:
    """One call for a run that writes once: ``ResultsFile(path, benchmark, argv).write(...)``."""
    return ResultsFile(path, benchmark, argv, script=script).write(config=config, metrics=metrics, **parts)
