"""The wording and layout of the simulated user's prompts, as versioned presets.

:class:`PromptTemplate` holds all text of the rating and exit prompts (a config: it round-trips to
JSON, and every field can be overridden); :data:`PROMPT_PRESETS` names the two presets, ``paper``
(the paper's Appendix C prompts) and ``compact`` (shorter, faster; see
:mod:`recsim_personas.agents.prompts`), and :func:`get_template` looks one up.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError, did_you_mean

__all__ = ["PROMPT_PRESETS", "PromptTemplate", "get_template"]


@dataclass(frozen=True)
class PromptTemplate(Config):
    """The wording and layout of the rating and exit prompts (all text of the agent lives here).

    Layout: the user turn is ``head`` sections, a blank line, ``body`` sections (joined by blank lines;
    empty sections are skipped). ``head`` must not depend on the item (it is the cached prefix).
    Section names: ``task``, ``memory_intro``, ``memory_title``, ``memories``, ``movie``, ``summary``,
    ``numbers``, ``cue``. ``numbers`` is the optional collaborative cue (the user's and the item's
    mean ratings and a bias model's estimate, :class:`~recsim_personas.memory.cue.CueNumbers`): it is
    empty, hence left out, unless the prompt builder is given the numbers; ``cue`` is the answer cue.

    Placeholders: ``task`` uses ``{min} {max} {anchors} {levels}``; ``anchor`` uses ``{level}
    {meaning}``; ``movie`` uses ``{title} {year_part} {genres} {avg_part}``; ``summary`` uses
    ``{description} {cast_part}`` (as does ``memory_summary``, the remembered item's summary, left
    out when empty); ``memory_entry`` uses ``{movie} {summary} {text}``; ``numbers`` uses ``{user}
    {item} {estimate}``, filled from ``numbers_user`` / ``numbers_item`` (``{mean} {count}``; the
    ``numbers_no_*`` texts when there is no other rating) and ``numbers_estimate`` (``{estimate}``);
    exit texts use
    ``{activity} {scale_min} {scale_max} {session} {stay} {leave}``.
    """

    config_name = "prompt template"

    name: str
    version: str
    attribution: str
    persona: str = "{profile}"
    task: str = (
        "TASK: Rate the movie given below on a likert scale from {min} to {max}, where {anchors}. "
        "Always respond with either one of {levels}. Do not output anything else."
    )
    anchors: tuple[str, ...] = (
        "{level} means you hated it",
        "{level} means you disliked it",
        "{level} means you are neutral about it",
        "{level} meaning you liked it",
        "{level} means you absolutely loved it",
    )
    anchor_join: tuple[str, str] = (", ", " and ")
    memory_intro: str = (
        "Given your persona and memory of some of movies you watched in the past, think carefully and "
        "rate the movie given in the end. Always use your memory at your own discretion as not "
        "everything is helpful. Also, historical average ratings of the movie mean an average rating "
        "of how other people have rated it, not you."
    )
    memory_title: str = "YOUR MEMORIES"
    memory_entry: str = "{movie}\n\nMY MEMORY: {summary}{text}"
    memory_summary: str = "{description}{cast_part}. "
    no_memories: str = "(no memories)"
    movie: str = "MOVIE: The movie {title}{year_part} is of {genres} genre{avg_part}."
    year_part: str = " was released in the year {year}"
    avg_part: str = " with historical average rating of {avg:.2f}"
    no_genres: str = "unknown"
    summary: str = "SUMMARY: {description}{cast_part}"
    cast_part: str = ". The cast of the movie is as follows: {cast}"
    max_cast: int | None = 15
    strip_period: bool = False
    numbers: str = "NUMBERS: {user}; {item}; {estimate}."
    numbers_user: str = "your mean rating is {mean:.2f} over {count} movies"
    numbers_no_user: str = "you have no other ratings"
    numbers_item: str = "this movie's mean rating is {mean:.2f} over {count} ratings"
    numbers_no_item: str = "this movie has no other ratings"
    numbers_estimate: str = "a bias model predicts {estimate:.2f}"
    cue: str = "RATING:"
    ms_head: tuple[str, ...] = ("task",)
    ms_body: tuple[str, ...] = ("movie", "summary", "numbers", "cue")
    msml_head: tuple[str, ...] = ("memory_intro", "memory_title")
    msml_body: tuple[str, ...] = ("memories", "task", "movie", "summary", "numbers", "cue")
    exit_head: str = (
        "TASK: You are browsing a movie recommendation system. After each recommendation you decide "
        "whether to stay for the next one or to leave the system. Your activity trait is described "
        "as: {activity}"
    )
    exit_body: str = (
        "SESSION: In this session you were recommended these movies and rated them from {scale_min} "
        "to {scale_max}:\n{session}\n\nQUESTION: Do you stay for the next recommendation or leave now? "
        "Answer {stay} to stay or {leave} to leave. Do not output anything else.\n\nANSWER:"
    )
    exit_empty_session: str = "(nothing yet)"
    exit_unrated: str = "not rated"

    _SECTIONS = ("task", "memory_intro", "memory_title", "memories", "movie", "summary", "numbers", "cue")

    def __post_init__(self) -> None:
        errors: list[str] = []
        for name in ("name", "version", "attribution"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                errors.append(f"{name} must be a non-empty string")
        for layout in ("ms_head", "ms_body", "msml_head", "msml_body", "anchors", "anchor_join"):
            value = getattr(self, layout)
            if isinstance(value, list):
                object.__setattr__(self, layout, tuple(value))
        for layout in ("ms_head", "ms_body", "msml_head", "msml_body"):
            for section in getattr(self, layout):
                if section not in self._SECTIONS:
                    errors.append(f"{layout}: unknown section {section!r}.{did_you_mean(section, self._SECTIONS)}")
        for layout in ("ms_head", "msml_head"):
            item_sections = {"movie", "summary", "memories", "numbers", "cue"} & set(getattr(self, layout))
            if item_sections:
                errors.append(
                    f"{layout} holds item-dependent sections {sorted(item_sections)}; the head is the "
                    "cached user prefix, move them to the body"
                )
        if "memories" not in self.msml_body:
            errors.append("msml_body must contain the 'memories' section")
        if len(self.anchor_join) != 2:
            errors.append("anchor_join must be (separator, last separator), e.g. (', ', ' and ')")
        if "{" in self.persona and "{profile}" not in self.persona:
            errors.append("persona must contain the {profile} placeholder")
        if self.max_cast is not None and (not isinstance(self.max_cast, int) or self.max_cast < 1):
            errors.append(f"max_cast must be an integer >= 1 or None, got {self.max_cast!r}")
        if errors:
            raise ConfigError(f"prompt template {self.name!r}: " + "; ".join(errors))


_PAPER_ATTRIBUTION = (
    "Appendix C of H. Thakur, E. Agrawal, S. Mukund (2025), 'Personas within Parameters: Fine-Tuning "
    "Small Language Models with Low-Rank Adapters to Mimic User Behaviors', CC BY 4.0; task sentence "
    "generalised to the dataset's rating scale."
)

#: Named presets; ``get_template(name)`` looks them up with a did-you-mean.
PROMPT_PRESETS: dict[str, PromptTemplate] = {
    "paper": PromptTemplate(name="paper", version="paper-1", attribution=_PAPER_ATTRIBUTION),
    "compact": PromptTemplate(
        name="compact",
        version="compact-1",
        attribution="recsim-personas; a shortened variant of the paper's prompt (Thakur et al. 2025)",
        task="Rate the movie below from {min} to {max} ({anchors}) as this user. Answer with one of "
        "{levels} only.",
        anchors=("{level} = hated", "", "", "", "{level} = loved"),
        anchor_join=(", ", ", "),
        memory_intro="",
        memory_title="Your past ratings:",
        memory_entry="- {movie} {text}",
        memory_summary="",
        max_cast=5,
        strip_period=True,
        no_memories="(none)",
        movie="Movie: {title}{year_part}; {genres}{avg_part}.",
        year_part=" ({year})",
        avg_part="; average {avg:.1f}",
        summary="{description}{cast_part}",
        cast_part=". Cast: {cast}",
        numbers="Numbers: {user}; {item}; {estimate}.",
        numbers_user="your mean rating {mean:.1f} over {count} films",
        numbers_no_user="no other ratings of yours",
        numbers_item="this film's mean {mean:.1f} over {count} ratings",
        numbers_no_item="no other ratings of this film",
        numbers_estimate="a bias model predicts {estimate:.1f}",
        cue="Rating:",
        ms_head=("task",),
        ms_body=("movie", "summary", "numbers", "cue"),
        msml_head=("task", "memory_title"),
        msml_body=("memories", "movie", "summary", "numbers", "cue"),
        exit_head="You are using a movie recommender. Activity: {activity}",
        exit_body="This session so far ({scale_min}-{scale_max}):\n{session}\n\nStay ({stay}) or "
        "leave ({leave})? Answer {stay} or {leave} only.",
    ),
}


def get_template(template: str | PromptTemplate) -> PromptTemplate:
    """The :class:`PromptTemplate` for a preset name (or the template itself).

    Raises:
        ConfigError: unknown preset name, with a did-you-mean.
    """
    if isinstance(template, PromptTemplate):
        return template
    if template not in PROMPT_PRESETS:
        raise ConfigError(
            f"unknown prompt template {template!r}; presets: {sorted(PROMPT_PRESETS)}."
            + did_you_mean(template, PROMPT_PRESETS)
        )
    return PROMPT_PRESETS[template]
