"""Distillation with the deterministic template backend: signal, protocol, limits, bad input."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingDataset, RatingScale
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.memory import (
    DistillConfig,
    UserProfile,
    distill_users,
    make_backend,
    render_persona,
)
from recsim_personas.memory.backends import StepRequest, StepResponse
from recsim_personas.memory.backends.template import TemplateBackend
from recsim_personas.memory.traits import (
    ACTIVITY_TRAITS,
    CONFORMITY_TRAITS,
    DIVERSITY_TRAITS,
)

GENRES = ("Horror", "Romance", "Comedy", "Drama", "Action")
PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / "full-text.md"


def make_dataset(
    n_users: int = 6, n_items: int = 60, per_user: int = 36, seed: int = 0
) -> RatingDataset:
    """Users 1 and 2 have opposite tastes (1: Horror +1.5 / Romance -1.5; 2: the reverse)."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "title": [f"Film {i}" for i in range(1, n_items + 1)],
            "year": pd.array([1950 + (i * 7) % 50 for i in range(n_items)], dtype="Int64"),
            "genres": [
                (GENRES[i % 5],) + ((GENRES[(i + 2) % 5],) if i % 3 == 0 else ())
                for i in range(n_items)
            ],
            "description": [None] * n_items,
            "director": [None] * n_items,
            "cast": [None] * n_items,
        },
        index=pd.Index(np.arange(1, n_items + 1), name="item_id"),
    )
    rows = []
    for u in range(1, n_users + 1):
        for k, item in enumerate(rng.choice(n_items, per_user, replace=False) + 1):
            genres = items.at[item, "genres"]
            lean = 1.5 * ("Horror" in genres) - 1.5 * ("Romance" in genres)
            lean = lean if u == 1 else -lean if u == 2 else 0.0
            rating = float(np.clip(round(3 + lean + rng.normal(0, 0.5)), 1, 5))
            rows.append((u, int(item), rating, 10_000 * u + 60 * k))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return RatingDataset("synthetic", inter, items, pd.DataFrame(), RatingScale(1, 5, 1))


class SpyBackend:
    """Wraps the template backend as an external backend, recording every request and answer."""

    name = "spy"
    parallelism = 2

    def __init__(self) -> None:
        self.inner = TemplateBackend()
        self.requests: list[StepRequest] = []
        self.responses: list[StepResponse] = []

    def run(self, requests: list[StepRequest]) -> list[StepResponse]:
        out = [self.inner.answer(r) for r in requests]
        self.requests.extend(requests)
        self.responses.extend(out)
        return out

    def identity(self) -> dict:
        return {"name": self.name}

    def usage(self) -> dict:
        return {}


def _sentence(taste: str, pattern: str) -> str:
    match = re.search(pattern, taste)
    return match.group(1) if match else ""


def test_persona_paragraph_matches_the_paper_character_for_character():
    text = PAPER.read_text(encoding="utf-8")
    start = text.index("Movie Rating prompt using both Short Term and Long Term Memories")
    paragraph = next(
        line for line in text[start:].splitlines() if line.startswith("PERSONA: ")
    )
    taste = re.search(r"dislikes is: (.*)\.\"\. The activity", paragraph).group(1)
    rendered = render_persona(ACTIVITY_TRAITS[1], CONFORMITY_TRAITS[1], DIVERSITY_TRAITS[2], taste)
    assert rendered == paragraph
    profile = UserProfile(7, activity_level=1, conformity_level=1, diversity_level=2, taste=taste)
    assert profile.profile_text == paragraph
    assert UserProfile.from_row(profile.to_row()) == profile


def test_opposite_tastes_are_stated_the_opposite_way():
    ds = make_dataset()
    result = distill_users(ds, None, ds.interactions, progress=False)
    horror_fan = result.profile(1).taste
    romance_fan = result.profile(2).taste
    likes = r"I especially enjoy (.*?) movies"
    dislikes = r"I am not fond of (.*?) movies"
    assert "Horror" in _sentence(horror_fan, likes)
    assert "Romance" not in _sentence(horror_fan, likes)
    assert "Romance" in _sentence(horror_fan, dislikes)
    assert "Horror" not in _sentence(horror_fan, dislikes)
    assert "Romance" in _sentence(romance_fan, likes)
    assert "Horror" not in _sentence(romance_fan, likes)
    assert "Horror" in _sentence(romance_fan, dislikes)
    # The explanations carry the same signal: a pure-Horror film rated high by user 1.
    mem = result.memories.merge(ds.items[["genres"]], left_on="item_id", right_index=True)
    fan_horror = mem[(mem.user_id == 1) & (mem.genres == ("Horror",)) & (mem.rating >= 4)]
    assert len(fan_horror) > 0
    assert fan_horror.text.str.contains("I usually like Horror").mean() > 0.5
    hater_horror = mem[(mem.user_id == 2) & (mem.genres == ("Horror",)) & (mem.rating <= 2)]
    assert hater_horror.text.str.contains("Horror movies usually do not appeal to me").mean() > 0.5


def test_one_memory_per_train_interaction_in_the_papers_format():
    ds = make_dataset()
    train = ds.interactions.groupby("user_id").head(25)  # a train subset: memories see only it
    result = distill_users(ds, None, train, progress=False)
    mem = result.memories
    assert list(mem.columns) == ["user_id", "item_id", "rating", "timestamp", "text"]
    assert len(mem) == len(train)
    merged = mem.merge(train, on=["user_id", "item_id"], suffixes=("", "_train"))
    assert len(merged) == len(train)
    assert (merged.rating == merged.rating_train).all()
    first = mem.iloc[0]
    title = ds.items.at[first.item_id, "title"]
    year = ds.items.at[first.item_id, "year"]
    assert first.text.startswith(f"I rated movie {title} ({year}) as {int(first.rating)} because ")
    # chronological within each user
    assert (mem.groupby("user_id").timestamp.diff().dropna() >= 0).all()
    assert list(result.profiles.columns) == [
        "user_id", "activity", "conformity", "diversity", "activity_level", "conformity_level",
        "diversity_level", "taste", "profile_text",
    ]
    assert result.log.empty


def test_batches_are_chronological_and_the_profile_is_refined_per_batch():
    ds = make_dataset(n_users=3, per_user=23)
    spy = SpyBackend()
    config = DistillConfig(batch_size=10)
    result = distill_users(ds, None, ds.interactions, spy, config, progress=False)
    for user in (1, 2, 3):
        reqs = [(r, a) for r, a in zip(spy.requests, spy.responses, strict=True)
                if r.context.user_id == user]
        kinds = [r.kind for r, _ in reqs]
        assert kinds == ["update", "enrich", "reflect"] * 3  # 23 ratings -> batches 10, 10, 3
        seen = [br.item_id for r, _ in reqs if r.kind == "enrich" for br in r.context.ratings]
        expected = ds.interactions[ds.interactions.user_id == user].sort_values("timestamp")
        assert seen == expected.item_id.tolist()
        assert [len(r.context.ratings) for r, _ in reqs if r.kind == "enrich"] == [10, 10, 3]
        # The taste flows: update(b) starts from reflect(b-1); reflect(b) from update(b).
        tastes = [a.payload["taste"] for r, a in reqs if r.kind != "enrich"]
        inputs = [r.context.taste for r, _ in reqs if r.kind != "enrich"]
        assert inputs[0] == ""
        assert inputs[1:] == tastes[:-1]
        assert result.profile(user).taste == tastes[-1]
        # Statistics grow with the batches; reflection sees the batch's reasons.
        counts = [r.context.stats.n_ratings for r, _ in reqs if r.kind == "update"]
        assert counts == [10, 20, 23]
        for r, _ in reqs:
            if r.kind == "reflect":
                assert set(r.context.reasons) == {br.item_id for br in r.context.ratings}


def test_reflection_revises_the_profile_with_new_evidence():
    # User 1 dislikes the two Horror films of the first two batches, then loves the two of
    # batch 3: cumulatively Horror is now about neutral (the update states no Horror lean), but
    # the batch contradicts the earlier profile, so the reflection adds a note.
    ds = make_dataset(n_users=4)
    items = ds.items
    horror = [i for i in items.index if items.at[i, "genres"] == ("Horror",)][:4]
    others = [i for i in items.index if "Horror" not in items.at[i, "genres"]][:26]
    first = [(h, 2.0) for h in horror[:2]] + [(o, 3.0 + k % 2) for k, o in enumerate(others[:18])]
    third = [(h, 5.0) for h in horror[2:]] + [(o, 3.0) for o in others[18:26]]
    rows = [(1, int(i), r, k) for k, (i, r) in enumerate(first + third)]
    other_users = ds.interactions[ds.interactions.user_id != 1]
    inter = pd.concat([other_users, pd.DataFrame(rows, columns=other_users.columns)])
    spy = SpyBackend()
    distill_users(ds, None, inter, spy, DistillConfig(), users=[1], progress=False)
    steps = {(r.kind, r.context.batch_index): a.payload for r, a in
             zip(spy.requests, spy.responses, strict=True)}
    note = "However, I have realized that I also enjoy Horror movies"
    assert "Horror" in _sentence(steps[("update", 1)]["taste"], r"I am not fond of (.*?) movies")
    assert "Horror" not in steps[("update", 2)]["taste"]
    assert note in steps[("reflect", 2)]["taste"]


def test_word_limit_cuts_template_text_and_logs_it():
    ds = make_dataset(n_users=3)
    result = distill_users(ds, None, ds.interactions, config=DistillConfig(max_words=12),
                           progress=False)
    assert (result.profiles.taste.str.split().str.len() <= 12).all()
    assert set(result.log.reason) == {"truncated"}
    assert set(result.log.columns) == {"user_id", "batch", "step", "attempt", "reason", "words",
                                       "detail"}
    assert (result.log.words > 12).all()
    assert result.usage["truncations"] == len(result.log)


def test_trait_levels_follow_the_statistics():
    ds = make_dataset(n_users=6)
    inter = ds.interactions
    # User 3 becomes very active; user 4 rates every film exactly at its average (a follower).
    avg = inter.groupby("item_id").rating.mean()
    extra = [(3, int(i), 3.0, 900_000 + int(i)) for i in ds.items.index
             if i not in set(inter[inter.user_id == 3].item_id)]
    inter = pd.concat([inter, pd.DataFrame(extra, columns=inter.columns)], ignore_index=True)
    mask = inter.user_id == 4
    inter.loc[mask, "rating"] = inter.loc[mask, "item_id"].map(avg).round().clip(1, 5)
    result = distill_users(ds, None, inter, progress=False)
    p3, p4 = result.profile(3), result.profile(4)
    assert p3.activity_level == 2 and p3.activity == ACTIVITY_TRAITS[2]
    assert p4.conformity_level == 2 and p4.conformity.startswith("A Dedicated Follower")
    assert result.profile(1).conformity_level < 2  # strong personal taste: not a follower
    cuts = result.trait_cuts
    assert cuts.activity[0] <= cuts.activity[1]


def test_same_input_same_output_and_checkpoint_resume(tmp_path):
    ds = make_dataset()
    fresh = distill_users(ds, None, ds.interactions, progress=False)
    ckpt = tmp_path / "ckpt"
    first = distill_users(ds, None, ds.interactions, users=[2, 1], progress=False,
                          checkpoint_dir=ckpt)
    assert first.usage["resumed_users"] == 0
    assert sorted(p.name for p in ckpt.iterdir()) == ["user-1.json", "user-2.json"]
    again = distill_users(ds, None, ds.interactions, progress=False, checkpoint_dir=ckpt)
    assert again.usage["resumed_users"] == 2
    pd.testing.assert_frame_equal(again.profiles, fresh.profiles)
    pd.testing.assert_frame_equal(again.memories, fresh.memories)
    assert first.profiles.user_id.tolist() == [2, 1]  # the order asked for
    # A changed config re-distils instead of reusing stale checkpoints.
    other = distill_users(ds, None, ds.interactions, config=DistillConfig(batch_size=5),
                          progress=False, checkpoint_dir=ckpt)
    assert other.usage["resumed_users"] == 0


def test_bad_users_get_clear_errors():
    ds = make_dataset(n_users=6)
    train = ds.interactions[ds.interactions.user_id != 6]
    with pytest.raises(DataError, match=re.escape(
        "unknown user id 99999: not in the train split (5 users, ids 1..5)"
    )):
        distill_users(ds, None, train, users=[1, 99999], progress=False)
    with pytest.raises(DataError, match=re.escape("user 6 has an empty train history")):
        distill_users(ds, None, train, users=[6], progress=False)
    with pytest.raises(DataError, match="train interactions lack column"):
        distill_users(ds, None, train.drop(columns="timestamp"), progress=False)


def test_config_validation_and_round_trip():
    config = DistillConfig(backend="openai", model="gpt-4o-mini", price_per_million=(0.15, 0.6),
                           batch_size=8)
    assert DistillConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'template'?")):
        DistillConfig(backend="templat")
    with pytest.raises(ConfigError, match=r"batch_size=0: must be an integer >= 1.*max_words=-1"):
        DistillConfig(batch_size=0, max_words=-1)
    with pytest.raises(ConfigError, match=re.escape("'batchsize' (did you mean 'batch_size'?)")):
        DistillConfig.from_dict({"batchsize": 3})
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'openai'?")):
        make_backend("opena")


@pytest.mark.integration
def test_template_distils_the_papers_200_users_quickly(shared_data):
    from recsim_personas.data import ItemCatalog, load_ml1m
    from recsim_personas.data.splits import PAPER_SPLIT, make_split

    ds = load_ml1m(shared_data / "ml-1m-users-1-2999")
    split = make_split(ds, PAPER_SPLIT)
    catalog = ItemCatalog(ds, split.train)
    start = time.perf_counter()
    result = distill_users(ds, catalog, split.train, progress=False)
    seconds = time.perf_counter() - start
    assert len(result.profiles) == 200
    assert len(result.memories) == len(split.train)
    assert result.profiles.taste.str.len().min() > 100
    for level in ("activity_level", "conformity_level", "diversity_level"):
        assert result.profiles[level].nunique() == 3  # population cuts use all three levels
    assert seconds < 60, f"template distillation took {seconds:.1f} s"


def test_result_saves_the_run_folder_files(tmp_path):
    ds = make_dataset(n_users=3)
    result = distill_users(ds, None, ds.interactions, config=DistillConfig(max_words=12),
                           progress=False)
    paths = result.save(tmp_path)
    assert {p.name for p in paths.values()} == {"profiles.parquet", "memories.parquet",
                                                "distill_log.parquet"}
    pd.testing.assert_frame_equal(pd.read_parquet(paths["memories"]), result.memories)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["profiles"]), result.profiles)
    assert len(pd.read_parquet(paths["log"])) == len(result.log) > 0
    empty = distill_users(ds, None, ds.interactions, progress=False)
    assert empty.log.empty
    assert pd.read_parquet(empty.save(tmp_path / "b")["log"]).columns.tolist() == list(
        empty.log.columns
    )
