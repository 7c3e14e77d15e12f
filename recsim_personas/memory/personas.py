"""Personas: KMeans++ clusters of profile embeddings, each described by words, size and ratings.

The paper groups users into K = 4 personas with KMeans++ on the embeddings of their profiles
(short-term memory M_s), K chosen by the elbow method, and describes each persona by its top-10
distinctive nouns and adjectives (Appendix B). This module does the same:

**Clustering.** ``sklearn.cluster.KMeans(init="k-means++", n_init=config.n_init,
random_state=config.seed)``. Personas are numbered by size, largest first (ties: the persona holding
the smallest user id first), so labels do not depend on KMeans' arbitrary cluster order.

**Choosing K (elbow).** The inertia (within-cluster sum of squares) is computed for every
K = 1..k_max (capped at the number of users). Following the "kneedle" idea (Satopaa et al., 2011),
both axes are scaled to [0, 1] and the elbow is the K whose point lies farthest from the straight
chord joining the first and last points: the K after which adding clusters stops paying off. With
fewer than three candidate K, or a straight curve, the smallest K is chosen. The curve is always
computed and plotted; ``config.k`` (the paper's preset: 4) overrides the choice.

**Distinctive words** (:mod:`recsim_personas.memory.persona_words`): ``top_words`` is the paper's
one-vs-all set difference of each persona's content words, ``over_represented`` the words most
over-represented in the persona. **Plots** (:mod:`recsim_personas.memory.persona_plots`): the elbow
curve, persona sizes, the distinctive words per persona.

Example:
    >>> clusters = PersonaClusters.fit(user_ids, embeddings, PersonaConfig(k=4))   # doctest: +SKIP
    >>> clusters.describe(profiles, train)                                          # doctest: +SKIP
    >>> clusters.save(run_dir)                                                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recsim_personas.artifacts import atomic_write_json, atomic_write_parquet
from recsim_personas.config import Config, refuse_unknown_keys
from recsim_personas.errors import ConfigError, DataError, closest
from recsim_personas.memory.persona_words import STOPWORDS as STOPWORDS  # compatibility re-export
from recsim_personas.memory.persona_words import (
    content_words,
    distinctive_words,
    over_represented_words,
    word_method,
)

__all__ = [
    "PAPER_PERSONAS",
    "PersonaClusters",
    "PersonaConfig",
    "PersonaDescription",
    "elbow_k",
]

TextColumn = Literal["profile_text", "taste"]
_TEXT_COLUMNS = ("profile_text", "taste")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _checked_keys(cls: type, data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} must be a mapping, got {type(data).__name__}")
    refuse_unknown_keys(cls, data, what)
    return dict(data)


@dataclass(frozen=True)
class PersonaConfig(Config):
    """How to cluster profiles into personas and describe them.

    Attributes:
        k: Number of personas; ``None`` = choose by the elbow method over ``1..k_max``.
        k_max: Largest K of the elbow curve (capped at the number of users).
        seed: ``random_state`` of KMeans.
        n_init: KMeans++ restarts per K (the best inertia wins).
        top_words: Words listed per persona (the paper: 10).
        text_column: Profile column whose words describe a persona: ``"profile_text"`` (the M_s
            paragraph that is embedded) or ``"taste"`` (the first-person description only).
    """

    k: int | None = None
    k_max: int = 10
    seed: int = 0
    n_init: int = 10
    top_words: int = 10
    text_column: TextColumn = "profile_text"

    config_name = "persona config"

    def __post_init__(self) -> None:
        problems = []
        if self.k is not None and (not _is_int(self.k) or self.k < 1):
            problems.append(f"k must be an integer >= 1 or None (elbow), got {self.k!r}")
        if not _is_int(self.k_max) or self.k_max < 2:
            problems.append(f"k_max must be an integer >= 2, got {self.k_max!r}")
        if not _is_int(self.seed) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        if not _is_int(self.n_init) or self.n_init < 1:
            problems.append(f"n_init must be an integer >= 1, got {self.n_init!r}")
        if not _is_int(self.top_words) or self.top_words < 1:
            problems.append(f"top_words must be an integer >= 1, got {self.top_words!r}")
        if self.text_column not in _TEXT_COLUMNS:
            close = closest(self.text_column, _TEXT_COLUMNS)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"text_column {self.text_column!r} is not one of {', '.join(_TEXT_COLUMNS)}{hint}")
        if problems:
            raise ConfigError("invalid PersonaConfig: " + "; ".join(problems))


#: The paper's setting: K = 4 personas.
PAPER_PERSONAS = PersonaConfig(k=4)


# -- choosing K --------------------------------------------------------------------------------

def elbow_k(ks: Sequence[int], inertias: Sequence[float]) -> int:
    """The elbow of an inertia curve: the K farthest from the chord of the normalised curve.

    Args:
        ks: Increasing candidate K values.
        inertias: KMeans inertia for each K (non-increasing in practice).

    Returns:
        The chosen K (the first K when fewer than three points or the curve is a straight line).
    """
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"elbow needs one inertia per K, got {len(x)} K and {len(y)} inertias")
    if len(x) < 3:
        return int(x[0])
    xn = (x - x[0]) / (x[-1] - x[0])
    span = y.max() - y.min()
    if span <= 0:
        return int(x[0])
    yn = (y - y.min()) / span
    # Distance to the chord through the first and last points (up to a constant factor).
    x0, y0, x1, y1 = xn[0], yn[0], xn[-1], yn[-1]
    dist = np.abs((y1 - y0) * xn - (x1 - x0) * yn + x1 * y0 - y1 * x0)
    if dist.max() <= 1e-12:
        return int(x[0])
    return int(x[int(np.argmax(dist))])


# -- clusters ----------------------------------------------------------------------------------

def _single_thread() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


@dataclass
class PersonaDescription:
    """What characterises one persona.

    Attributes:
        persona: Persona id, 0..K-1 (0 is the largest).
        size: Number of users.
        share: Fraction of all users.
        top_words: The paper's distinctive words, ``(word, count)``.
        over_represented: Words over-represented in the persona, ``(word, score)``.
        rating_mean: Mean train rating of the persona's users (per rating).
        rating_std: Standard deviation of those ratings.
        user_mean_rating: Mean over users of each user's mean train rating (per user).
        n_ratings: Train ratings of the persona's users.
        rating_distribution: Share of train ratings at each rating value.
        trait_levels: Mean activity / conformity / diversity level (0 low, 1 mid, 2 high), when the
            profiles have them.
    """

    persona: int
    size: int
    share: float
    top_words: list[tuple[str, int]] = field(default_factory=list)
    over_represented: list[tuple[str, float]] = field(default_factory=list)
    rating_mean: float | None = None
    rating_std: float | None = None
    user_mean_rating: float | None = None
    n_ratings: int = 0
    rating_distribution: dict[str, float] = field(default_factory=dict)
    trait_levels: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top_words"] = [[w, int(n)] for w, n in self.top_words]
        d["over_represented"] = [[w, float(s)] for w, s in self.over_represented]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonaDescription:
        d = _checked_keys(cls, data, "persona description")
        d["top_words"] = [(str(w), int(n)) for w, n in d.get("top_words", [])]
        d["over_represented"] = [(str(w), float(s)) for w, s in d.get("over_represented", [])]
        return cls(**d)


class PersonaClusters:
    """Users grouped into K personas by KMeans++ on their profile embeddings.

    Build with :meth:`fit`; add descriptions with :meth:`describe`; write ``personas.parquet``,
    ``personas.json`` and ``plots/*.png`` with :meth:`save`; read back with :meth:`load`.

    Attributes:
        config: The :class:`PersonaConfig`.
        user_ids: Clustered users, shape ``(n,)``.
        labels: Persona of each user, shape ``(n,)``, 0..K-1 with 0 the largest.
        centroids: Cluster centres in embedding space, shape ``(K, d)``, row = persona.
        k: Number of personas.
        k_source: ``"given"`` (``config.k``) or ``"elbow"``.
        ks, inertias: The elbow curve.
        elbow: The K the elbow method picks (whether or not it was used).
        descriptions: One :class:`PersonaDescription` per persona after :meth:`describe`.
        word_method: How words were extracted (``"spacy:en_core_web_sm"`` or ``"stopword-fallback"``).
    """

    def __init__(self, config: PersonaConfig, user_ids: np.ndarray, labels: np.ndarray,
                 centroids: np.ndarray, ks: list[int], inertias: list[float], elbow: int,
                 descriptions: list[PersonaDescription] | None = None, word_method: str | None = None,
                 ) -> None:
        self.config = config
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.k = len(self.centroids)
        self.k_source = "given" if config.k is not None else "elbow"
        self.ks = [int(k) for k in ks]
        self.inertias = [float(v) for v in inertias]
        self.elbow = int(elbow)
        self.descriptions = list(descriptions or [])
        self.word_method = word_method

    # -- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, user_ids: Sequence[int] | np.ndarray, embeddings: np.ndarray,
            config: PersonaConfig | None = None) -> PersonaClusters:
        """Cluster users by their profile embeddings.

        Args:
            user_ids: One id per row of ``embeddings``.
            embeddings: Profile embeddings, shape ``(n, d)``.
            config: Clustering settings (default: elbow over K = 1..10, seed 0).

        Raises:
            DataError: Shapes disagree, non-finite values, or fewer users than ``config.k``.
        """
        from sklearn.cluster import KMeans

        config = config or PersonaConfig()
        users = np.asarray(user_ids, dtype=np.int64)
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(users):
            raise DataError(f"personas need one embedding row per user: {len(users)} users, shape {x.shape}")
        if len(users) == 0:
            raise DataError("personas need at least one profile embedding; the run has none")
        if not np.isfinite(x).all():
            raise DataError("profile embeddings contain NaN or infinity; re-run the embed stage")
        if len(np.unique(users)) != len(users):
            raise DataError("personas: user ids repeat; profile_user_ids.npy must list each user once")
        n = len(users)
        if config.k is not None and config.k > n:
            raise DataError(
                f"k={config.k} personas need at least {config.k} users with profiles; the run has {n}. "
                "Lower k (--k) or use more users"
            )
        ks = list(range(1, min(config.k_max, n) + 1))
        models: dict[int, Any] = {}
        inertias = []
        # On a few thousand profiles OpenMP threads cost more than they save (measured 6x slower on
        # a busy 2-core machine: 0.43 s vs 0.07 s per fit of 200 x 384); big inputs keep them.
        limit = _single_thread() if n * x.shape[1] <= 5_000_000 else contextlib.nullcontext()
        with limit:
            for k in ks:
                models[k] = cls._kmeans(KMeans, x, k, config)
                inertias.append(float(models[k].inertia_))
            elbow = elbow_k(ks, inertias)
            k = config.k if config.k is not None else elbow
            model = models.get(k) or cls._kmeans(KMeans, x, k, config)
        raw = np.asarray(model.labels_, dtype=np.int64)
        # Number personas by size (largest first), ties by their smallest user id.
        order = sorted(range(k), key=lambda c: (-(raw == c).sum(),
                                                users[raw == c].min() if (raw == c).any() else 1 << 62))
        remap = np.empty(k, dtype=np.int64)
        remap[order] = np.arange(k)
        labels = remap[raw]
        centroids = np.asarray(model.cluster_centers_)[order]
        return cls(config, users, labels, centroids, ks, inertias, elbow)

    @staticmethod
    def _kmeans(kmeans_cls: Any, x: np.ndarray, k: int, config: PersonaConfig) -> Any:
        with warnings.catch_warnings():
            # Identical profiles make fewer distinct clusters than k; sklearn warns and still works.
            warnings.filterwarnings("ignore", message="Number of distinct clusters")
            return kmeans_cls(n_clusters=k, init="k-means++", n_init=config.n_init,
                              random_state=config.seed).fit(x)

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """Persona of new profile embeddings: the nearest centroid (Euclidean, as KMeans)."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        d = ((x[:, None, :] - self.centroids[None, :, :]) ** 2).sum(-1)
        return np.argmin(d, axis=1).astype(np.int64)

    @property
    def sizes(self) -> np.ndarray:
        """Users per persona, shape ``(K,)``."""
        return np.bincount(self.labels, minlength=self.k)

    def assignments(self) -> pd.DataFrame:
        """``user_id, persona`` per user, sorted by user id (``personas.parquet``)."""
        frame = pd.DataFrame({"user_id": self.user_ids, "persona": self.labels})
        return frame.sort_values("user_id", kind="stable").reset_index(drop=True)

    # -- describing ------------------------------------------------------------------------
    def describe(self, profiles: pd.DataFrame, train: pd.DataFrame | None = None
                 ) -> list[PersonaDescription]:
        """Describe each persona by its words, size and rating statistics (stored in ``descriptions``).

        Args:
            profiles: ``profiles.parquet`` rows: ``user_id`` and ``config.text_column``; the
                ``*_level`` trait columns when present.
            train: Train interactions (``user_id``, ``rating``) for rating statistics.

        Raises:
            DataError: A clustered user has no profile row, or the text column is missing.
        """
        col = self.config.text_column
        if col not in profiles.columns or "user_id" not in profiles.columns:
            raise DataError(f"profiles need columns user_id and {col!r}; got {', '.join(map(str, profiles.columns))}")
        by_user = profiles.drop_duplicates("user_id").set_index("user_id")
        missing = [int(u) for u in self.user_ids if u not in by_user.index]
        if missing:
            raise DataError(f"no profile row for clustered user(s) {missing[:5]}; re-run the distill stage")
        texts = by_user.loc[self.user_ids, col].fillna("").astype(str).tolist()
        words = content_words(texts)
        persona_counts: dict[int, Counter[str]] = {p: Counter() for p in range(self.k)}
        persona_docs: dict[int, list[set[str]]] = {p: [] for p in range(self.k)}
        for label, ws in zip(self.labels, words):
            persona_counts[int(label)].update(ws)
            persona_docs[int(label)].append(set(ws))
        top = distinctive_words(persona_counts, self.config.top_words)
        over = over_represented_words(persona_docs, self.config.top_words)
        self.word_method = word_method()

        ratings = None
        if train is not None and len(train):
            persona_of = dict(zip(self.user_ids.tolist(), self.labels.tolist()))
            ratings = train[["user_id", "rating"]].copy()
            ratings["persona"] = ratings["user_id"].map(persona_of)
            ratings = ratings.dropna(subset=["persona"])
        level_cols = [c for c in ("activity_level", "conformity_level", "diversity_level") if c in by_user.columns]
        n = len(self.user_ids)
        out = []
        for p in range(self.k):
            members = self.user_ids[self.labels == p]
            desc = PersonaDescription(persona=p, size=len(members), share=round(len(members) / n, 4),
                                      top_words=top[p], over_represented=over[p])
            if ratings is not None:
                r = ratings[ratings["persona"] == p]
                if len(r):
                    desc.n_ratings = len(r)
                    desc.rating_mean = round(float(r["rating"].mean()), 4)
                    desc.rating_std = round(float(r["rating"].std(ddof=0)), 4)
                    desc.user_mean_rating = round(float(r.groupby("user_id")["rating"].mean().mean()), 4)
                    dist = r["rating"].value_counts(normalize=True).sort_index()
                    desc.rating_distribution = {f"{v:g}": round(float(s), 4) for v, s in dist.items()}
            for c in level_cols:
                desc.trait_levels[c.removesuffix("_level")] = round(float(by_user.loc[members, c].mean()), 3)
            out.append(desc)
        self.descriptions = out
        return out

    # -- files -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The ``personas.json`` content."""
        return {
            "k": self.k,
            "k_source": self.k_source,
            "elbow_k": self.elbow,
            "elbow": {"ks": self.ks, "inertias": [round(v, 6) for v in self.inertias],
                      "method": "kneedle: max distance to the chord of the normalised curve"},
            "config": self.config.to_dict(),
            "word_method": self.word_method,
            "sizes": self.sizes.tolist(),
            "personas": [d.to_dict() for d in self.descriptions],
        }

    def save(self, run_dir: str | Path, *, plots: bool = True) -> list[str]:
        """Write ``personas.parquet``, ``personas.json`` and (``plots``) ``plots/*.png`` atomically.

        Returns:
            The written paths, relative to ``run_dir``.
        """
        run_dir = Path(run_dir)
        atomic_write_parquet(run_dir / "personas.parquet", self.assignments())
        written = ["personas.parquet"]
        if plots:
            written += self.plot(run_dir / "plots", relative_to=run_dir)
        atomic_write_json(run_dir / "personas.json", {**self.to_json(), "centroids": self.centroids.tolist()})
        written.append("personas.json")
        return written

    @classmethod
    def load(cls, run_dir: str | Path) -> PersonaClusters:
        """Read what :meth:`save` wrote.

        Raises:
            DataError: A file is missing or unreadable.
        """
        import json

        run_dir = Path(run_dir)
        pq, js = run_dir / "personas.parquet", run_dir / "personas.json"
        for path in (pq, js):
            if not path.is_file():
                raise DataError(f"{path} is missing; run the personas stage (recsim-personas memory --stages personas)")
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{js} line {exc.lineno}: not valid JSON ({exc.msg}); re-run the personas stage") from None
        frame = pd.read_parquet(pq)
        clusters = cls(
            PersonaConfig.from_dict(meta["config"]), frame["user_id"].to_numpy(), frame["persona"].to_numpy(),
            np.asarray(meta.get("centroids", np.zeros((meta["k"], 0))), dtype=np.float32),
            meta["elbow"]["ks"], meta["elbow"]["inertias"], meta["elbow_k"],
            [PersonaDescription.from_dict(d) for d in meta.get("personas", [])], meta.get("word_method"),
        )
        clusters.k = int(meta["k"])
        return clusters

    def plot(self, out_dir: str | Path, *, relative_to: str | Path | None = None) -> list[str]:
        """Draw ``elbow.png``, ``persona_sizes.png`` and ``persona_words.png`` into ``out_dir``.

        Returns:
            The written paths (relative to ``relative_to`` when given).
        """
        from recsim_personas.memory.persona_plots import plot_personas

        return plot_personas(self, out_dir, relative_to=relative_to)
