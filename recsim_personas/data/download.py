"""Download a MovieLens archive from GroupLens, check its sha256 and extract it into the cache.

For users with internet; the library never downloads anything on its own. Extraction is atomic:
the archive is streamed to a temporary file, its sha256 checked, extracted into a temporary folder
beside the target and renamed into place, so a failed or interrupted download never leaves a
partial dataset folder. Offline, the first connection error ends the command with one line naming
``--data-dir``.

The expected checksums (and sizes) are those of the official archives, as pinned by
TensorFlow Datasets in ``tensorflow_datasets/url_checksums/movielens.txt`` (tensorflow/datasets,
commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c); many independent projects pin the same values
(e.g. the ml-1m hash in TensorFlow's on-device recommendation example,
``MOVIELENS_ZIP_HASH = "a6898adb..."``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recsim_personas.errors import DataError, did_you_mean

__all__ = [
    "ARCHIVES",
    "DATA_URL_ENV",
    "DEFAULT_BASE_URL",
    "ArchiveSpec",
    "cached_dataset_dir",
    "download_dataset",
    "downloads_dir",
]

#: Official GroupLens location of the MovieLens archives.
DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
#: Environment variable overriding :data:`DEFAULT_BASE_URL` (a mirror, or a test server).
DATA_URL_ENV = "RECSIM_PERSONAS_DATA_URL"
_COMPLETE = ".recsim-complete"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ArchiveSpec:
    """One downloadable archive.

    Attributes:
        name: Dataset name, also the archive stem and its top-level folder.
        sha256: Expected sha256 of the zip file.
        size: Expected size in bytes (for the progress bar; the checksum is what is enforced).
        files: Files the extracted folder must contain.
    """

    name: str
    sha256: str
    size: int
    files: tuple[str, ...]

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"


# Checksums and sizes: tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt
# (https://github.com/tensorflow/datasets/blob/1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c/
#  tensorflow_datasets/url_checksums/movielens.txt). The same sha256 values appear in many other
# public projects (e.g. tensorflow/examples' MovieLens-1M recommendation data script for ml-1m).
ARCHIVES: dict[str, ArchiveSpec] = {
    "ml-latest-small": ArchiveSpec(
        "ml-latest-small",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        978_202,
        ("ratings.csv", "movies.csv", "links.csv", "tags.csv", "README.txt"),
    ),
    "ml-100k": ArchiveSpec(
        "ml-100k",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        4_924_029,
        ("u.data", "u.item", "u.user", "u.genre", "README"),
    ),
    "ml-1m": ArchiveSpec(
        "ml-1m",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        5_917_549,
        ("ratings.dat", "movies.dat", "users.dat", "README"),
    ),
}


def downloads_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where datasets are extracted: ``cache_dir`` or ``recsim_personas.paths.cache_dir("datasets")``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from recsim_personas.paths import cache_dir as _cache_dir

    return _cache_dir("datasets")


def cached_dataset_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The extracted folder of ``name`` if the cache holds all its files, else ``None``.

    A folder the downloader made also holds ``.recsim-complete`` (URL and sha256); one a user
    extracted there by hand counts too, as long as every expected file is present.
    """
    spec = _spec(name)
    folder = downloads_dir(cache_dir) / spec.name
    if all((folder / f).is_file() for f in spec.files):
        return folder
    return None


def _spec(name: str) -> ArchiveSpec:
    if name not in ARCHIVES:
        raise DataError(
            f"unknown dataset {name!r}; downloadable: {', '.join(ARCHIVES)}.{did_you_mean(name, ARCHIVES)}"
        )
    return ARCHIVES[name]


def _offline_message(url: str, reason: object) -> str:
    reason_text = " ".join(str(reason).split()) or type(reason).__name__
    return (
        f"cannot reach {url}: {reason_text}. Download the archive on a machine with internet and "
        "pass --data-dir DIR, or use the embedded ml-latest-small."
    )


def _fetch(
    url: str, dest: Path, timeout: float, expected_size: int, progress: bool, label: str
) -> str:
    """Stream ``url`` into ``dest``; return the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"{url} answered HTTP {exc.code} {exc.reason}; check the URL (or {DATA_URL_ENV}) and retry"
        ) from None
    except (urllib.error.URLError, OSError) as exc:  # DNS failure, refused, timeout, TLS
        reason = getattr(exc, "reason", exc)
        raise DataError(_offline_message(url, reason)) from None
    with response:
        total = int(response.headers.get("Content-Length") or expected_size or 0) or None
        from recsim_personas.progress import progress_bar

        bar = progress_bar(total=total, unit="B", unit_scale=True, desc=label, leave=False,
                           enabled=progress)
        try:
            with open(dest, "wb") as out:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (TimeoutError, OSError) as exc:
                        raise DataError(
                            _offline_message(url, f"connection lost during download ({exc})")
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    return digest.hexdigest()


def _safe_extract(archive: Path, into: Path) -> None:
    """Extract ``archive`` into ``into``, refusing members that would land outside it."""
    root = into.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                target = (root / member.filename).resolve()
                if root != target and root not in target.parents:
                    raise DataError(
                        f"{archive.name}: member {member.filename!r} would extract outside the folder; refusing"
                    )
            zf.extractall(root)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive.name} is not a valid zip archive ({exc})") from None


def download_dataset(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    timeout: float = 15.0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download ``name`` from GroupLens, verify its sha256 and extract it into the cache.

    Args:
        name: ``ml-latest-small``, ``ml-100k`` or ``ml-1m``.
        cache_dir: Folder to extract into (default ``cache_dir("datasets")``); the dataset lands
            in ``<cache_dir>/<name>/``.
        base_url: Where ``<name>.zip`` lives (default ``$RECSIM_PERSONAS_DATA_URL`` or the
            official GroupLens URL).
        sha256: Expected checksum (default: the pinned official one).
        timeout: Seconds to wait for the server on connect and on each read.
        force: Download again even when a complete copy is in the cache.
        progress: Show a progress bar.

    Returns:
        The extracted folder.

    Raises:
        DataError: Unknown name, unreachable server (one line naming ``--data-dir``), HTTP error,
            checksum mismatch, a bad archive, or an archive without the expected files. Nothing
            is left in the cache on failure.
    """
    spec = _spec(name)
    root = downloads_dir(cache_dir)
    target = root / spec.name
    if not force:
        cached = cached_dataset_dir(name, root)
        if cached is not None:
            return cached
    base = (base_url or os.environ.get(DATA_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise DataError(
            f"base URL {base!r} must start with https:// or http:// (from base_url or ${DATA_URL_ENV})"
        )
    url = f"{base}/{spec.filename}"
    expected = (sha256 or spec.sha256).lower()
    root.mkdir(parents=True, exist_ok=True)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".zip.part", dir=root)
    os.close(fd)
    archive = Path(tmp_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".extract", dir=root))
    old: Path | None = None
    try:
        actual = _fetch(url, archive, timeout, spec.size, progress, spec.filename)
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; the download "
                "is corrupt or the file changed upstream, and nothing was extracted"
            )
        _safe_extract(archive, staging)
        inner = staging / spec.name
        if not inner.is_dir():
            inner = staging
        missing = [f for f in spec.files if not (inner / f).is_file()]
        if missing:
            raise DataError(f"{url}: the archive lacks {', '.join(missing)}; nothing was extracted")
        (inner / _COMPLETE).write_text(f"{url}\nsha256 {actual}\n", encoding="utf-8")
        if target.exists():
            old = root / f".{spec.name}.old.{os.getpid()}"
            os.replace(target, old)
        os.replace(inner, target)
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target
