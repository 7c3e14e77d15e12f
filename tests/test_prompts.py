"""Prompt templates: the paper's Appendix C text, the prefix/suffix split, truncation, exit prompt."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import pytest

from recsim_personas.agents.prompts import (
    PROMPT_PRESETS,
    PromptMemory,
    PromptTemplate,
    PromptTruncatedWarning,
    build_exit_prompt,
    build_rating_prompt,
    format_levels,
    get_template,
)
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, ModelError

STARS = RatingScale(1, 5, 1)
HALF = RatingScale(0.5, 5, 0.5)
CAST_SEP = ". The cast of the movie is as follows: "


@pytest.fixture(scope="module")
def paper_block(shared_data) -> list[str]:
    """The paper's M_s + M_l rating prompt (Appendix C), one entry per paragraph."""
    text = (shared_data.parent / "paper" / "full-text.md").read_text(encoding="utf-8")
    start = text.index("Movie Rating prompt using both Short Term and Long Term Memories")
    block = text[start:].split("\n", 1)[1]
    block = block[: block.index("RATING:") + len("RATING:")]
    return [p.strip() for p in block.split("\n\n") if p.strip()]


def _paper_inputs(paras: list[str]):
    persona = paras[0]
    memory_line = next(p for p in paras if p.startswith("MY MEMORY: "))[len("MY MEMORY: ") :]
    m_desc, rest = memory_line.split(CAST_SEP)
    m_cast, m_text = rest.split(". I rated movie ", 1)
    summary = next(p for p in paras if p.startswith("SUMMARY: "))[len("SUMMARY: ") :]
    desc, cast = summary.split(CAST_SEP)
    lebowski = SimpleNamespace(
        item_id=1, title="Big Lebowski, The", year=1998, genres=("Comedy", "Crime", "Mystery", "Thriller"),
        avg_rating=3.74, description=desc, cast=cast,
    )
    falling = SimpleNamespace(
        item_id=2, title="Falling Down", year=1993, genres=("Action", "Drama"), avg_rating=3.45,
        description=m_desc, cast=m_cast,
    )
    return persona, lebowski, PromptMemory(falling, "I rated movie " + m_text)


def _item(i=1, **kw):
    base = dict(item_id=i, title=f"Movie {i}", year=2000, genres=("Drama", "War"), avg_rating=3.5,
                description="A long story. " * 3, cast="Ann Lee, Bo Chan")
    base.update(kw)
    return SimpleNamespace(**base)


def _tokens(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_paper_preset_reproduces_appendix_c_character_for_character(paper_block):
    persona, item, memory = _paper_inputs(paper_block)
    msml = build_rating_prompt("paper", persona, item, [memory], STARS, memory_mode="msml")
    assert msml.text == "\n\n".join(paper_block) + "\n"
    # M_s only: PERSONA, TASK, MOVIE, SUMMARY, RATING (the paper's first prompt).
    ms = build_rating_prompt("paper", persona, item, [], STARS)
    wanted = [paper_block[0]] + [p for p in paper_block if p.startswith(("TASK:", "SUMMARY:", "RATING:"))]
    wanted.insert(2, paper_block[-3])  # the MOVIE line of the rated item
    assert ms.text == "\n\n".join(wanted) + "\n"
    preset = get_template("paper")
    assert preset.version == "paper-1" and "Thakur" in preset.attribution and "CC BY 4.0" in preset.attribution


def test_half_star_scale_lists_every_level():
    assert format_levels(STARS) == "1, 2, 3, 4 or 5"
    assert format_levels(HALF) == "0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5 or 5.0"
    text = build_rating_prompt("paper", "PERSONA: p", _item(), [], HALF).text
    assert "likert scale from 0.5 to 5.0" in text
    assert "Always respond with either one of 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5 or 5.0." in text


@pytest.mark.parametrize("preset", sorted(PROMPT_PRESETS))
@pytest.mark.parametrize("scale", [STARS, HALF])
@pytest.mark.parametrize("mode", ["ms", "msml"])
def test_prefix_and_suffix_tokenize_the_same_apart_as_together(smollm2_tokenizer, preset, scale, mode):
    tok = smollm2_tokenizer
    memories = [PromptMemory(_item(7, title="Heat"), "I rated movie Heat (1995) as 4 because it is tense.")]
    p = build_rating_prompt(preset, "PERSONA: I like war films.", _item(), memories, scale,
                            memory_mode=mode, tokenizer=tok)
    assert _tokens(tok, p.prefix) + _tokens(tok, p.suffix) == _tokens(tok, p.text)
    assert p.prefix.startswith("<|im_start|>system\nPERSONA: I like war films.<|im_end|>\n<|im_start|>user\n")
    assert p.suffix.endswith("<|im_end|>\n<|im_start|>assistant\n")
    if mode == "ms" and preset == "paper":  # the item-independent "MOVIE: The movie" is cached too
        assert p.prefix.endswith("\n\nMOVIE: The movie") and p.suffix.startswith(" Movie 1 was released")
    # The prefix depends on the user only.
    other = build_rating_prompt(preset, "PERSONA: I like war films.", _item(9, title="Other"), [], scale,
                                memory_mode=mode, tokenizer=tok)
    assert other.prefix == p.prefix and other.suffix != p.suffix


def test_compact_preset_is_shorter_and_caches_the_task(smollm2_tokenizer):
    tok = smollm2_tokenizer
    memories = [PromptMemory(_item(7), "I rated movie Movie 7 (2000) as 4 because it is tense.")]
    paper = build_rating_prompt("paper", "PERSONA: p", _item(), memories, STARS, tokenizer=tok)
    compact = build_rating_prompt("compact", "PERSONA: p", _item(), memories, STARS, tokenizer=tok)
    assert len(_tokens(tok, compact.suffix)) < len(_tokens(tok, paper.suffix)) - 40
    assert "Answer with one of 1, 2, 3, 4 or 5 only." in compact.prefix


def test_plain_text_without_chat_template(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = None
    p = build_rating_prompt("paper", "PERSONA: p", _item(), [], STARS, tokenizer=tok)
    assert "<|im_start|>" not in p.text
    assert p.prefix.startswith("PERSONA: p\n\nTASK: Rate the movie")
    assert p.suffix.endswith("RATING:\n")
    assert _tokens(tok, p.prefix) + _tokens(tok, p.suffix) == _tokens(tok, p.text)


def test_missing_item_fields_are_left_out():
    item = _item(year=None, avg_rating=None, description=None, cast=None, genres=())
    text = build_rating_prompt("paper", "PERSONA: p", item, [], STARS).text
    assert "MOVIE: The movie Movie 1 is of unknown genre." in text
    assert "SUMMARY" not in text and "released" not in text
    only_cast = build_rating_prompt("paper", "PERSONA: p", _item(description=None), [], STARS).text
    assert "SUMMARY: The cast of the movie is as follows: Ann Lee, Bo Chan" in only_cast


def test_too_long_prompt_drops_memories_then_shortens_summary(smollm2_tokenizer):
    tok = smollm2_tokenizer
    memories = [PromptMemory(_item(10 + j), f"I rated movie {j} as 3 because " + "it was long. " * 40)
                for j in range(3)]
    item = _item(description="word " * 300)
    full = build_rating_prompt("paper", "PERSONA: p", item, memories, STARS, tokenizer=tok)
    n_full = len(_tokens(tok, full.text))
    n_one = len(_tokens(tok, build_rating_prompt("paper", "PERSONA: p", item, memories[:1], STARS,
                                                 tokenizer=tok).text))
    with pytest.warns(PromptTruncatedWarning, match="kept 1 of 3 memories"):
        cut = build_rating_prompt("paper", "PERSONA: p", item, memories, STARS, tokenizer=tok,
                                  max_tokens=n_one)
    assert cut.truncated and len(_tokens(tok, cut.text)) <= n_one < n_full
    assert cut.text.count("MY MEMORY:") == 1
    with pytest.warns(PromptTruncatedWarning, match=r"kept 0 of 3 memories and cut the summary to \d+ words"):
        cut2 = build_rating_prompt("paper", "PERSONA: p", item, memories, STARS, tokenizer=tok, max_tokens=300)
    assert len(_tokens(tok, cut2.text)) <= 300 and "MY MEMORY:" not in cut2.text and "SUMMARY: word" in cut2.text
    with pytest.raises(ModelError, match="shorten the profile text"):
        build_rating_prompt("paper", "PERSONA: " + "long " * 500, item, memories, STARS, tokenizer=tok,
                            max_tokens=300)
    assert not full.truncated


def test_memory_objects_need_a_catalog():
    memory = SimpleNamespace(item_id=5, rating=4.0, text="I rated movie X as 4 because.", similarity=0.9)
    with pytest.raises(ConfigError, match=re.escape("memories[0] carries only item_id=5; pass catalog=")):
        build_rating_prompt("paper", "PERSONA: p", _item(), [memory], STARS)
    catalog = SimpleNamespace(info=lambda i: _item(i, title="Remembered"))
    text = build_rating_prompt("paper", "PERSONA: p", _item(), [memory], STARS, catalog=catalog).text
    assert "MOVIE: The movie Remembered was released in the year 2000" in text


def test_unknown_preset_and_template_round_trip():
    with pytest.raises(ConfigError, match=re.escape("Did you mean 'paper'?")):
        get_template("papr")
    with pytest.raises(ConfigError, match="memory_mode must be 'ms' or 'msml'"):
        build_rating_prompt("paper", "p", _item(), [], STARS, memory_mode="msl")
    with pytest.raises(ConfigError, match="needs the dataset's rating scale"):
        build_rating_prompt("paper", "p", _item(), [])
    for preset in PROMPT_PRESETS.values():
        assert PromptTemplate.from_dict(preset.to_dict()) == preset
    with pytest.raises(ConfigError, match=re.escape("'memory_titel' (did you mean 'memory_title'?)")):
        PromptTemplate.from_dict({**PROMPT_PRESETS["paper"].to_dict(), "memory_titel": "x"})
    with pytest.raises(ConfigError, match="item-dependent sections"):
        PROMPT_PRESETS["paper"].replace(ms_head=["task", "movie"])


def test_exit_prompt(smollm2_tokenizer):
    tok = smollm2_tokenizer
    session = [("Heat (1995)", 4.0), ("Babe (1995)", float("nan"))]
    p = build_exit_prompt("PERSONA: p", "An Occasional Viewer.", session, STARS, tokenizer=tok)
    assert "Your activity trait is described as: An Occasional Viewer." in p.prefix
    assert "- Heat (1995): 4\n- Babe (1995): not rated" in p.suffix
    assert "Answer A to stay or B to leave." in p.suffix
    assert _tokens(tok, p.prefix) + _tokens(tok, p.suffix) == _tokens(tok, p.text)
    assert p.suffix.endswith("<|im_start|>assistant\n")
    for option in ("A", "B"):
        assert len(_tokens(tok, "\n" + option)) == 2  # one token after the newline
    empty = build_exit_prompt("PERSONA: p", "x", [], STARS, tokenizer=tok)
    assert "(nothing yet)" in empty.suffix and empty.prefix == build_exit_prompt(
        "PERSONA: p", "x", session, STARS, tokenizer=tok).prefix
