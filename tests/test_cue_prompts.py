"""The collaborative cue in prompts, training rows, the LM agent and the names of cue adapters.

The no-leakage proof for the new prompt input: for every training row, changing the row's own label
(and nothing else) leaves the row's prompt unchanged, so nothing a training prompt shows depends on
its label; a test row's numbers are those of the train rows and the pool alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recsim_personas.adapter_names import adapter_name, persona_adapter_name, split_adapter_name
from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
from recsim_personas.agents.prompt_template import PROMPT_PRESETS
from recsim_personas.agents.prompts import build_rating_prompt
from recsim_personas.data.dataset import RatingScale
from recsim_personas.data.item_catalog import ItemInfo
from recsim_personas.errors import ConfigError
from recsim_personas.memory.cue import CueNumbers, CueStatistics
from recsim_personas.training.experiment_config import ExperimentConfig
from recsim_personas.training.rows import build_test_rows, build_training_rows, rows_digest
from recsim_personas.training.run_paths import adapter_dir, result_name, row_adapters

STARS = RatingScale(1, 5, 1)
NUMBERS = CueNumbers(user_mean=3.8, user_count=41, item_mean=4.1, item_count=230, estimate=4.0)
ITEM = ItemInfo(7, "Heat", 1995, ("Crime",), 4.1, 230, "A heist.", None, "Al Pacino")


class PoolCatalog:
    """Item facts whose average and count come from a rating pool (as ``ItemCatalog`` does)."""

    def __init__(self, pool: pd.DataFrame) -> None:
        self.stats = pool.groupby("item_id")["rating"].agg(["mean", "size"])

    def info(self, item_id: int) -> ItemInfo:
        mean, n = (self.stats.loc[item_id, "mean"], int(self.stats.loc[item_id, "size"])) if (
            item_id in self.stats.index) else (None, 0)
        return ItemInfo(int(item_id), f"Film {item_id}", 1980 + item_id % 30, ("Drama",),
                        None if mean is None else float(mean), n, f"Plot of film {item_id}.", None, None)


class Store:
    def profile(self, user_id: int) -> str:
        return f"PERSONA: user {user_id} likes slow films."


def _data(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, test, pool): the pool is the train rows plus other users' ratings, never a test row."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.integers(1, 7, 160), "item_id": rng.integers(1, 15, 160),
                          "rating": rng.integers(1, 6, 160).astype(float)})
    frame = frame.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    test_mask = (frame.user_id <= 3) & (frame.index % 4 == 0)
    train = frame[(frame.user_id <= 3) & ~test_mask].reset_index(drop=True)
    test = frame[test_mask].reset_index(drop=True)
    others = frame[frame.user_id > 3]
    pool = pd.concat([train, others], ignore_index=True)
    return train, test, pool


def _train_rows(train: pd.DataFrame, pool: pd.DataFrame, template: str = "paper") -> pd.DataFrame:
    cue = CueStatistics.fit(pool, train, STARS)
    return build_training_rows(Store(), PoolCatalog(pool), train, scale=STARS, template=template, cue=cue,
                               named_items="keep")


# -- prompts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["paper", "compact"])
@pytest.mark.parametrize("mode", ["ms", "msml"])
def test_default_prompt_is_unchanged_and_the_cue_adds_one_section(preset: str, mode: str) -> None:
    memories = [SimpleNamespace(item=ITEM, text="I rated it 5.")] if mode == "msml" else []
    plain = build_rating_prompt(preset, "PERSONA: p", ITEM, memories, STARS, memory_mode=mode)
    assert build_rating_prompt(preset, "PERSONA: p", ITEM, memories, STARS, memory_mode=mode,
                               numbers=None) == plain
    cued = build_rating_prompt(preset, "PERSONA: p", ITEM, memories, STARS, memory_mode=mode, numbers=NUMBERS)
    tpl = PROMPT_PRESETS[preset]
    line = {"paper": "NUMBERS: your mean rating is 3.80 over 41 movies; this movie's mean rating is 4.10 over "
                     "230 ratings; a bias model predicts 4.00.",
            "compact": "Numbers: your mean rating 3.8 over 41 films; this film's mean 4.1 over 230 ratings; a "
                       "bias model predicts 4.0."}[preset]
    # The cue is the one new paragraph, right before the answer cue; everything else is as before.
    assert cued.text == plain.text.replace(tpl.cue, line + "\n\n" + tpl.cue)
    assert cued.prefix == plain.prefix  # the user prefix (cached) stays item-independent


def test_missing_means_are_said_not_invented() -> None:
    numbers = CueNumbers(None, 0, None, 0, 3.6)
    text = build_rating_prompt("paper", "PERSONA: p", ITEM, [], STARS, numbers=numbers).text
    assert "NUMBERS: you have no other ratings; this movie has no other ratings; a bias model predicts 3.60." in text


def test_a_layout_without_numbers_refuses_the_cue_and_the_head_cannot_hold_it() -> None:
    tpl = replace(PROMPT_PRESETS["paper"], ms_body=("movie", "summary", "cue"))
    assert build_rating_prompt(tpl, "p", ITEM, [], STARS).text  # fine without the cue
    with pytest.raises(ConfigError, match="no 'numbers' section"):
        build_rating_prompt(tpl, "p", ITEM, [], STARS, numbers=NUMBERS)
    with pytest.raises(ConfigError, match="item-dependent"):
        replace(PROMPT_PRESETS["paper"], ms_head=("task", "numbers"))


# -- no leakage ------------------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["paper", "compact"])
def test_no_training_prompt_changes_when_its_own_label_changes(template: str) -> None:
    train, _, pool = _data()
    base = _train_rows(train, pool, template)
    assert base["suffix"].str.contains("bias model predicts").all()
    n_pool_train = len(train)  # the train rows are the pool's first rows (same order)
    changed_elsewhere = 0
    for k in range(len(train)):
        new = 1.0 if train.rating[k] != 1.0 else 5.0
        train2, pool2 = train.copy(), pool.copy()
        train2.loc[k, "rating"] = new
        pool2.loc[k, "rating"] = new
        assert k < n_pool_train and pool2.loc[k, ["user_id", "item_id"]].tolist() == train.loc[
            k, ["user_id", "item_id"]].tolist()
        rows = _train_rows(train2, pool2, template)
        # the row's own prompt shows nothing of its label ...
        assert rows.prefix[k] + rows.suffix[k] == base.prefix[k] + base.suffix[k], k
        assert rows.target[k] != base.target[k]
        # ... while the rows sharing its user or item do see the changed rating (the test has teeth)
        changed_elsewhere += int((rows.suffix != base.suffix).sum())
    assert changed_elsewhere > 0


def test_test_prompts_show_only_train_and_pool_numbers() -> None:
    train, test, pool = _data()
    cue = CueStatistics.fit(pool, train, STARS)
    rows = build_test_rows(Store(), PoolCatalog(pool), test, scale=STARS, cue=cue)
    for (_, t), suffix in zip(test.iterrows(), rows.suffix, strict=True):
        u, i = int(t.user_id), int(t.item_id)
        mine = train[train.user_id == u].rating
        item = pool[pool.item_id == i].rating
        mu = pool.rating.mean()
        est = np.clip(mu + (mine.sum() - len(mine) * mu) / (len(mine) + 5) + (item.sum() - len(item) * mu)
                      / (len(item) + 5), 1, 5)
        user_part = f"your mean rating is {mine.mean():.2f} over {len(mine)} movies" if len(mine) else (
            "you have no other ratings")
        item_part = f"this movie's mean rating is {item.mean():.2f} over {len(item)} ratings" if len(item) else (
            "this movie has no other ratings")
        assert f"NUMBERS: {user_part}; {item_part}; a bias model predicts {est:.2f}." in suffix
    # the test labels are in none of the sums: other test labels give the same prompts
    relabelled = build_test_rows(Store(), PoolCatalog(pool), test.assign(rating=6 - test.rating), scale=STARS,
                                 cue=cue)
    assert relabelled.suffix.tolist() == rows.suffix.tolist()


def test_the_cue_changes_the_rows_digest_hence_the_run_key() -> None:
    train, _, pool = _data()
    plain = build_training_rows(Store(), PoolCatalog(pool), train, scale=STARS, named_items="keep")
    assert not plain["suffix"].str.contains("NUMBERS").any()
    assert rows_digest(plain) != rows_digest(_train_rows(train, pool))


# -- agent, config, names ----------------------------------------------------------------------------
def test_lm_agent_states_the_cue_in_its_prompts() -> None:
    train, test, pool = _data()
    cue = CueStatistics.fit(pool, train, STARS)
    scorer = SimpleNamespace(scale=STARS, tokenizer=None, max_prompt_tokens=None)
    users, items = test.user_id.tolist(), test.item_id.tolist()
    with_cue = LMUserAgent(scorer, Store(), PoolCatalog(pool), cue=cue).prompts(users, items)
    without = LMUserAgent(scorer, Store(), PoolCatalog(pool)).prompts(users, items)
    expected = build_test_rows(Store(), PoolCatalog(pool), test, scale=STARS, cue=cue)
    assert [p.suffix for p in with_cue] == expected.suffix.tolist()  # as the test rows are built
    assert all("NUMBERS:" in p.text for p in with_cue) and not any("NUMBERS:" in p.text for p in without)


def test_cue_adapters_and_results_have_their_own_names() -> None:
    assert adapter_name("single_max", "ms", cue=True) == "single_max_cue__ms" != adapter_name("single_max", "ms")
    assert persona_adapter_name(2, "msml", cue=True) == "persona_2_cue__msml"
    assert split_adapter_name("persona_2_cue__msml") == ("persona_2_cue", "msml")
    store = SimpleNamespace(persona=lambda u: 1)
    assert adapter_naming(store, "persona", "ms", cue=True)(5) == "persona_1_cue__ms"
    assert adapter_naming(store, "single_min", "ms", cue=True)(5) == "single_min_cue__ms"
    assert row_adapters("persona", "ms", {1: 0, 2: 1}, cue=True) == ["persona_0_cue__ms", "persona_1_cue__ms"]
    assert adapter_dir("run", "single_min", "ms", cue=True) == Path("run/adapters/single_min_cue__ms")
    assert result_name(9, "persona", "ms", cue=True) == "row09_persona_cue__ms" != result_name(9, "persona", "ms")


def test_experiment_config_option_and_adapter_inputs() -> None:
    from recsim_personas.reproduce.stages import adapter_inputs

    on = ExperimentConfig(cue=True)
    assert ExperimentConfig.from_dict(on.to_dict()) == on and not ExperimentConfig().cue
    assert "cue" in ExperimentConfig.field_help()
    assert adapter_inputs(on) != adapter_inputs(ExperimentConfig())
    assert "cue" not in adapter_inputs(ExperimentConfig())  # the recorded adapters without it stay valid


def test_env_serves_an_adapter_trained_with_the_cue_with_the_cue(tmp_path: Path) -> None:
    from recsim_personas.envs.config import PersonaRecConfig
    from recsim_personas.envs.user_models import missing_adapters, resolve_cue

    def make(name: str) -> None:
        (tmp_path / "adapters" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "adapters" / name / "adapter_config.json").write_text("{}")

    for k in range(2):
        make(adapter_name(f"persona_{k}", "ms", cue=True))
    assert missing_adapters(tmp_path, 2, "ms", cue=True) == []
    assert resolve_cue(tmp_path, 2, "ms", None) is True  # only cue adapters: served with the cue
    assert resolve_cue(tmp_path, 2, "ms", False) is False
    for k in range(2):
        make(adapter_name(f"persona_{k}", "ms"))
    assert resolve_cue(tmp_path, 2, "ms", None) is False  # both: the plain ones unless asked
    assert PersonaRecConfig(cue=True).cue is True and PersonaRecConfig().cue is None
    with pytest.raises(ConfigError, match="cue must be"):
        PersonaRecConfig(cue="yes")  # type: ignore[arg-type]
