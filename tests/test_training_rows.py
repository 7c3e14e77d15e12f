"""Training rows: prompts + targets from a real run folder, no label leakage, per-user sub-sampling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.training.rows import (
    ROW_COLUMNS,
    build_test_rows,
    build_training_rows,
    cap_per_user,
    profile_names_item,
    rows_digest,
    subsample_to_size,
)

SPLIT_KW = {"min_interactions": 30, "max_interactions": 60, "n_users": 4, "seed": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run folder: template distillation + hashing embeddings on 4 users of ml-latest-small."""
    from recsim_personas.data.item_catalog import ItemCatalog
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.data.splits import Split, SplitConfig
    from recsim_personas.memory.personas import PersonaConfig
    from recsim_personas.memory.pipeline import (
        MemoryPipelineConfig,
        build_memories,
        run_item_catalog,
    )
    from recsim_personas.memory.statistics import rating_pool
    from recsim_personas.memory.store import MemoryStore

    root = tmp_path_factory.mktemp("rows") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("RECSIM_PERSONAS_CACHE", str(root.parent / "cache"))
    try:
        dataset = load_dataset("ml-latest-small")
        config = MemoryPipelineConfig(embedder="hashing:64", personas=PersonaConfig(k=2, k_max=3, n_init=2))
        build_memories(dataset, SplitConfig(**SPLIT_KW), config, root, progress=False)
    finally:
        mp.undo()
    split = Split.load(root / "split")
    catalog = run_item_catalog(root, dataset, split)  # whole-dataset averages (item_stats="dataset")
    return {"dataset": dataset, "split": split, "catalog": catalog, "store": MemoryStore.from_run_dir(root),
            "train_catalog": ItemCatalog(dataset, split.train), "pool": rating_pool(dataset, split.train, split.test)}


def _rows(run, mode="ms", **kw):
    return build_training_rows(run["store"], run["catalog"], run["split"].train, memory_mode=mode,
                               scale=run["dataset"].scale, **kw)


def test_one_row_per_train_interaction_with_target(run):
    rows = _rows(run, named_items="keep")
    train = run["split"].train
    assert list(rows.columns) == list(ROW_COLUMNS)
    assert len(rows) == len(train)
    pd.testing.assert_series_equal(rows["item_id"], train["item_id"].reset_index(drop=True), check_names=False)
    scale = run["dataset"].scale
    assert rows["target"].tolist() == [scale.format(r) for r in train["rating"]]
    # Half-star scale: the targets are "3.5"-style texts, on the scale.
    assert all(re.fullmatch(r"\d\.\d", t) for t in rows["target"])
    # The profile is the prefix (user-only, cacheable); the item is in the suffix.
    first = rows.iloc[0]
    assert run["store"].profile(int(first.user_id)).strip()[:40] in first.prefix
    assert run["catalog"].info(int(first.item_id)).title in first.suffix
    assert (rows["n_memories"] == 0).all()


def test_msml_rows_retrieve_other_train_items_never_the_row_itself(run):
    rows = _rows(run, "msml", k=2, named_items="keep")
    train = run["split"].train
    own = {(int(u), int(i)) for u, i in zip(train["user_id"], train["item_id"], strict=True)}
    assert (rows["n_memories"] == 2).all()
    store, catalog = run["store"], run["catalog"]
    for row in rows.itertuples():
        # What a prompt would show without exclusion: the row's own item is the best match ...
        unguarded = store.retrieve(row.user_id, row.item_id, k=2)
        assert unguarded[0].item_id == row.item_id
        # ... but the row retrieved the next ones instead, all from the same user's train items.
        guarded = store.retrieve(row.user_id, row.item_id, k=2, exclude_item=row.item_id)
        assert row.item_id not in [m.item_id for m in guarded]
        for m in guarded:
            assert (row.user_id, m.item_id) in own
            assert m.text in row.suffix
        info = catalog.info(row.item_id)
        own_line = f"MOVIE: The movie {info.title} was released in the year {info.year} is of"
        assert row.suffix.count(own_line) == 1  # only as the item to rate, never as a memory


def test_store_that_leaks_the_row_is_refused(run):
    class LeakyStore:
        def __init__(self, inner):
            self.inner = inner

        def profile(self, user_id):
            return self.inner.profile(user_id)

        def retrieve_batch(self, users, items, k=1, delta=0.0, exclude_items=None):
            return self.inner.retrieve_batch(users, items, k=k, delta=delta, exclude_items=None)

    with pytest.raises(DataError, match=r"returned the row's own item .* leak the target rating"):
        build_training_rows(LeakyStore(run["store"]), run["catalog"], run["split"].train.head(3),
                            memory_mode="msml", scale=run["dataset"].scale)


def test_test_rows_use_train_memories_only(run):
    test = run["split"].test
    rows = build_test_rows(run["store"], run["catalog"], test, memory_mode="msml", scale=run["dataset"].scale)
    assert len(rows) == len(test)
    train_pairs = set(zip(run["split"].train["user_id"], run["split"].train["item_id"], strict=True))
    for row in rows.head(20).itertuples():
        for m in run["store"].retrieve(row.user_id, row.item_id, k=1):
            assert (row.user_id, m.item_id) in train_pairs


def test_rows_match_the_agents_prompts(run, tiny_lm):
    """Training prompts are exactly what LMUserAgent builds at inference (same builder, same memories)."""
    from recsim_personas.agents.lm_agent import LMUserAgent
    from recsim_personas.agents.scoring import RatingScorer
    model, tokenizer = tiny_lm
    head = run["split"].test.head(5)
    scorer = RatingScorer(model, tokenizer, run["dataset"].scale)
    for mode in ("ms", "msml"):
        agent = LMUserAgent(scorer, run["store"], run["catalog"], memory_mode=mode)
        prompts = agent.prompts(head["user_id"].tolist(), head["item_id"].tolist())
        rows = build_test_rows(run["store"], run["catalog"], head, memory_mode=mode, scale=run["dataset"].scale,
                               tokenizer=tokenizer, max_tokens=scorer.max_prompt_tokens)
        assert rows["prefix"].tolist() == [p.prefix for p in prompts]
        assert rows["suffix"].tolist() == [p.suffix for p in prompts]
        assert rows["prefix"].iloc[0].startswith("<|im_start|>system")


def test_per_user_cap_and_fraction(run):
    train = run["split"].train
    capped = cap_per_user(train, 5, seed=1)
    assert (capped.groupby("user_id").size() == 5).all()
    assert capped.index.is_monotonic_increasing  # input order kept
    again = cap_per_user(train, 5, seed=1)
    pd.testing.assert_frame_equal(capped, again)
    assert not capped.equals(cap_per_user(train, 5, seed=2))
    half = cap_per_user(train, 0.5, seed=0)
    sizes = train.groupby("user_id").size()
    assert (half.groupby("user_id").size() == (sizes * 0.5).round().clip(lower=1)).all()
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(ConfigError, match="per_user must be"):
            cap_per_user(train, bad)


def test_subsample_to_size_takes_the_same_fraction_of_every_user():
    rng = np.random.default_rng(0)
    counts = {1: 100, 2: 60, 3: 37, 4: 3}
    rows = pd.DataFrame({"user_id": np.repeat(list(counts), list(counts.values()))})
    rows["row"] = np.arange(len(rows))
    rows = rows.sample(frac=1.0, random_state=1).reset_index(drop=True)
    for n in (0, 1, 50, 123, 199, 200):
        out = subsample_to_size(rows, n, seed=int(rng.integers(100)))
        assert len(out) == n
        got = out.groupby("user_id").size().reindex(list(counts), fill_value=0)
        expected = np.array(list(counts.values())) * n / len(rows)
        assert np.all(np.abs(got.to_numpy() - expected) < 1.0)  # each user within one row of f * n_u
        assert out["row"].is_unique
        assert set(out["row"]) <= set(rows["row"])
    pd.testing.assert_frame_equal(subsample_to_size(rows, 77, seed=3), subsample_to_size(rows, 77, seed=3))
    assert not subsample_to_size(rows, 77, seed=3).equals(subsample_to_size(rows, 77, seed=4))
    with pytest.raises(ConfigError, match=re.escape("target size must be an integer in [0, 200]")):
        subsample_to_size(rows, 201)


def test_bad_input_is_named(run):
    with pytest.raises(ConfigError, match=re.escape("memory_mode must be 'ms' or 'msml', got 'msl'. Did you mean 'msml'")):
        _rows(run, "msl")
    with pytest.raises(DataError, match="lack column"):
        build_training_rows(run["store"], run["catalog"], run["split"].train.drop(columns="rating"),
                            scale=run["dataset"].scale)
    with pytest.raises(DataError, match="not on the scale 1-5 step 1"):
        build_training_rows(run["store"], run["catalog"], run["split"].train.head(3),
                            scale=RatingScale(1, 5, 1))


def test_rows_digest_changes_with_content(run):
    rows = _rows(run, named_items="keep").head(10)
    assert rows_digest(rows) == rows_digest(rows.copy())
    changed = rows.copy()
    changed.loc[0, "target"] = "1.0" if changed.loc[0, "target"] != "1.0" else "2.0"
    assert rows_digest(changed) != rows_digest(rows)


# -- no row sees its own label ------------------------------------------------------------------
_AVG = re.compile(r"historical average rating of (\d+\.\d\d)")


def _own_item_line(row) -> str:
    """The MOVIE line of the item the row asks about (the last one in the suffix)."""
    return [line for line in (row.prefix + row.suffix).splitlines() if line.startswith("MOVIE:")][-1]


@pytest.mark.parametrize("averages", ["train", "dataset"])
def test_an_item_with_a_single_train_rating_shows_no_average_in_its_own_row(run, averages):
    catalog = run["train_catalog"] if averages == "train" else run["catalog"]
    pool = run["split"].train if averages == "train" else run["pool"]
    rows = build_training_rows(run["store"], catalog, run["split"].train, scale=run["dataset"].scale,
                               named_items="keep")
    stats = catalog.stats()
    single = rows[rows["item_id"].map(stats["n_ratings"]) == 1]
    assert len(single) > (20 if averages == "train" else 0)  # 4 users share few films
    for row in single.itertuples():
        line = _own_item_line(row)
        assert catalog.info(row.item_id).title in line
        assert "historical average" not in line, line
    # Items with more ratings show the average of the *other* ratings, never one counting the row.
    multi = rows[rows["item_id"].map(stats["n_ratings"]) > 1]
    assert len(multi) > 0
    for row in multi.itertuples():
        others = pool[(pool["item_id"] == row.item_id) & (pool["user_id"] != row.user_id)]["rating"]
        shown = float(_AVG.search(_own_item_line(row)).group(1))
        assert shown == pytest.approx(others.mean(), abs=0.005)
    # Test rows keep the catalog's average (a test rating is never part of it).
    test = run["split"].test
    test_rows = build_test_rows(run["store"], catalog, test.head(30), scale=run["dataset"].scale)
    for row in test_rows.itertuples():
        avg = catalog.info(row.item_id).avg_rating
        line = _own_item_line(row)
        assert (avg is None) == ("historical average" not in line)


@pytest.mark.parametrize("averages", ["train", "dataset"])
def test_no_memory_text_states_its_own_rating_through_an_average(run, averages):
    from recsim_personas.memory.distill import distill_users

    if averages == "dataset":
        memories, pool = run["store"]._memories, run["pool"]  # the run folder's own M_l texts
    else:  # train-only averages: most items have one rating, the memory's own
        memories = distill_users(run["dataset"], run["train_catalog"], run["split"].train,
                                 progress=False).memories
        pool = run["split"].train
    counts = pool.groupby("item_id")["rating"].agg(["sum", "count"])  # the averages memories quote
    quoted = alone = 0
    for m in memories.itertuples():
        total, n = counts.loc[m.item_id]
        found = re.search(r"its (\d+\.\d\d) historical average", m.text)
        if n == 1:
            # The only rating is the memory's own: no average to quote.
            assert found is None and "no one else's rating" in m.text, m.text
            alone += 1
            continue
        assert found is not None, m.text
        quoted += 1
        assert float(found.group(1)) == pytest.approx((total - m.rating) / (n - 1), abs=0.005)
    assert quoted > 0 and (alone > 20 if averages == "train" else True)


def test_rows_whose_item_the_profile_names_are_dropped(run):
    kept = _rows(run, named_items="keep")
    dropped = _rows(run)
    store, catalog = run["store"], run["catalog"]
    named = [profile_names_item(store.profile(int(r.user_id)), catalog.info(int(r.item_id)))
             for r in kept.itertuples()]
    assert sum(named) > 0  # template profiles quote liked / disliked train films
    assert dropped.attrs["dropped_named"] == sum(named)
    assert len(dropped) == len(kept) - sum(named)
    assert not any(profile_names_item(store.profile(int(r.user_id)), catalog.info(int(r.item_id)))
                   for r in dropped.itertuples())
    with pytest.raises(ConfigError, match=re.escape("named_items must be 'drop' or 'keep', got 'skip'")):
        _rows(run, named_items="skip")


def test_profile_names_item_matches_whole_titles_only():
    from recsim_personas.data.item_catalog import ItemInfo

    def info(title, year=1995):
        return ItemInfo(1, title, year, (), 3.0, 2, None, None, None)

    text = "Films I loved include Heat (1995) and Toy Story. I rate movies 4 out of 5."
    assert profile_names_item(text, info("Heat"))
    assert profile_names_item(text, info("Toy Story", 1990))
    assert not profile_names_item(text, info("Hea"))  # inside a longer word
    assert not profile_names_item(text, info("Casino"))


def test_leave_one_out_takes_one_rating_out():
    from recsim_personas.data.item_catalog import ItemInfo
    from recsim_personas.memory.statistics import leave_one_out

    item = ItemInfo(7, "X", None, (), 4.0, 3, None, None, None)  # ratings 5, 4, 3
    assert leave_one_out(item, 5.0).avg_rating == pytest.approx(3.5)
    assert leave_one_out(item, 5.0).n_ratings == 2
    alone = ItemInfo(7, "X", None, (), 2.0, 1, None, None, None)
    assert leave_one_out(alone, 2.0).avg_rating is None
    with pytest.raises(DataError, match="item 7: leave_one_out needs an item whose average counts"):
        leave_one_out(ItemInfo(7, "X", None, (), None, 0, None, None, None), 2.0)
