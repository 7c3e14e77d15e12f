"""The downloader against a small archive served on 127.0.0.1 by the test (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsim_personas.data import load_dataset
from recsim_personas.data.download import (
    ARCHIVES,
    DATA_URL_ENV,
    cached_dataset_dir,
    download_dataset,
)
from recsim_personas.data.movielens import ML100K_GENRES
from recsim_personas.errors import DataError

# A tiny but valid ml-100k (the loader tests cover the format itself).
_FLAGS = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)  # Drama
ML100K_ITEMS = [f"{i}|Film {i} (199{i})|01-Jan-199{i}||http://imdb/{i}|{_FLAGS}" for i in (1, 2, 3)]
ML100K_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067"]
ML100K_RATINGS = [
    "1\t1\t5\t881250949",
    "1\t2\t3\t881250950",
    "2\t1\t4\t881250951",
    "2\t3\t1\t881250952",
    "3\t2\t2\t881250953",
]


def _ml100k_zip(extra_members: dict[str, str] | None = None) -> bytes:
    members = {
        "ml-100k/u.data": "\n".join(ML100K_RATINGS) + "\n",
        "ml-100k/u.item": "\n".join(ML100K_ITEMS) + "\n",
        "ml-100k/u.user": "\n".join(ML100K_USERS) + "\n",
        "ml-100k/u.genre": "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)),
        "ml-100k/README": "test archive\n",
        **(extra_members or {}),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text.encode("latin-1"))
    return buf.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) from a local HTTP server in a thread."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


def test_good_checksum_extracts_and_load_dataset_finds_it(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = served
    data = _ml100k_zip()
    (root / "ml-100k.zip").write_bytes(data)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECSIM_PERSONAS_CACHE", str(cache))
    folder = download_dataset(
        "ml-100k", base_url=base, sha256=hashlib.sha256(data).hexdigest(), progress=False
    )
    assert folder == cache / "datasets" / "ml-100k"
    assert (folder / "u.data").read_text() == "\n".join(ML100K_RATINGS) + "\n"
    assert cached_dataset_dir("ml-100k") == folder
    assert hashlib.sha256(data).hexdigest() in (folder / ".recsim-complete").read_text()
    # nothing else left beside it (no archive, no staging folder)
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == ["ml-100k"]
    assert load_dataset("ml-100k").n_ratings == len(ML100K_RATINGS)


def test_bad_checksum_leaves_no_folder(served: tuple[str, Path], tmp_path: Path) -> None:
    base, root = served
    (root / "ml-100k.zip").write_bytes(_ml100k_zip())
    cache = tmp_path / "cache"
    with pytest.raises(
        DataError,
        match=re.escape(f"checksum mismatch for {base}/ml-100k.zip: expected sha256 {'0' * 64}"),
    ):
        download_dataset("ml-100k", cache, base_url=base, sha256="0" * 64, progress=False)
    assert list(cache.iterdir()) == []


def test_default_checksum_rejects_a_different_archive(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    (root / "ml-1m.zip").write_bytes(b"not the real archive")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=re.escape(f"expected sha256 {ARCHIVES['ml-1m'].sha256}")):
        download_dataset("ml-1m", cache, base_url=base, progress=False)
    assert list(cache.iterdir()) == []


def test_offline_fails_at_once_with_one_line(closed_port_url: str, tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        download_dataset("ml-1m", tmp_path, base_url=closed_port_url, progress=False)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot reach {closed_port_url}/ml-1m.zip: ")
    assert message.endswith(
        "Download the archive on a machine with internet and pass --data-dir DIR, or use the embedded ml-latest-small."
    )
    assert elapsed < 5
    assert list(tmp_path.iterdir()) == []


def test_base_url_from_environment(
    closed_port_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_URL_ENV, closed_port_url + "/")
    with pytest.raises(DataError, match=re.escape(f"cannot reach {closed_port_url}/ml-100k.zip")):
        download_dataset("ml-100k", tmp_path, progress=False)


def test_http_error_is_named(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=re.escape(f"{base}/ml-100k.zip answered HTTP 404")):
        download_dataset("ml-100k", cache, base_url=base, progress=False)
    assert list(cache.iterdir()) == []


def test_cached_copy_is_reused_and_force_replaces_it(
    served: tuple[str, Path], tmp_path: Path, closed_port_url: str
) -> None:
    base, root = served
    data = _ml100k_zip()
    (root / "ml-100k.zip").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    folder = download_dataset("ml-100k", cache, base_url=base, sha256=digest, progress=False)
    (folder / "marker-from-first-download").write_text("x")
    # cached: no network needed
    assert download_dataset("ml-100k", cache, base_url=closed_port_url, progress=False) == folder
    again = download_dataset(
        "ml-100k", cache, base_url=base, sha256=digest, force=True, progress=False
    )
    assert again == folder and not (folder / "marker-from-first-download").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]


def test_archive_missing_files_or_escaping_paths_is_refused(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    evil = _ml100k_zip({"../evil.txt": "x"})
    (root / "ml-100k.zip").write_bytes(evil)
    with pytest.raises(DataError, match="would extract outside the folder"):
        download_dataset(
            "ml-100k",
            tmp_path / "c1",
            base_url=base,
            sha256=hashlib.sha256(evil).hexdigest(),
            progress=False,
        )
    assert not (tmp_path / "evil.txt").exists() and list((tmp_path / "c1").iterdir()) == []

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
    (root / "ml-100k.zip").write_bytes(buf.getvalue())
    with pytest.raises(
        DataError, match=re.escape("the archive lacks u.item, u.user, u.genre, README")
    ):
        download_dataset(
            "ml-100k",
            tmp_path / "c2",
            base_url=base,
            sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
            progress=False,
        )
    assert list((tmp_path / "c2").iterdir()) == []


def test_unknown_name_suggests(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Did you mean 'ml-1m'"):
        download_dataset("ml-1M", tmp_path)


def test_pinned_checksums_are_sha256_hex() -> None:
    for spec in ARCHIVES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name


def _cli(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    from recsim_personas.cli import main

    monkeypatch.setattr(main, "COMMANDS", ("data",))  # other command modules may not exist yet
    return main.main(argv)


def test_cli_offline_exit_code_2_and_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    closed_port_url: str,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(DATA_URL_ENV, closed_port_url)
    code = _cli(monkeypatch, ["data", "download", "ml-1m", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "cannot reach" in err and "--data-dir DIR" in err


def test_cli_download_and_info(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    served: tuple[str, Path],
    tmp_path: Path,
) -> None:
    base, root = served
    data = _ml100k_zip()
    (root / "ml-100k.zip").write_bytes(data)
    monkeypatch.setitem(
        ARCHIVES,
        "ml-100k",
        ARCHIVES["ml-100k"].__class__(
            "ml-100k", hashlib.sha256(data).hexdigest(), len(data), ARCHIVES["ml-100k"].files
        ),
    )
    monkeypatch.setenv("RECSIM_PERSONAS_CACHE", str(tmp_path))
    assert _cli(monkeypatch, ["data", "download", "ml-100k", "--base-url", base]) == 0
    assert str(tmp_path / "datasets" / "ml-100k") in capsys.readouterr().out
    assert _cli(monkeypatch, ["data", "info", "ml-100k"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ratings\s+5$", out, re.M) and re.search(r"^users\s+3$", out, re.M)
    assert _cli(monkeypatch, ["data", "info", "ml-10k"]) == 2
    assert "Did you mean 'ml-100k'" in capsys.readouterr().err
