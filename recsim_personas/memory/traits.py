"""The paper's PERSONA paragraph (M_s), built from the social-trait texts of a user profile.

The three traits (activity, conformity, diversity) and their descriptions come from Agent4Rec
(Zhang et al., "On Generative Agents in Recommendation", SIGIR 2024; code:
github.com/LehengTHU/Agent4Rec, ``simulation/avatar.py``, MIT licence), which *Personas within
Parameters* (Thakur, Agrawal, Mukund, arXiv 2509.09689, 2025, CC BY 4.0) reuses verbatim in its
prompts (Appendix C). :func:`render_persona` reproduces the paper's PERSONA paragraph character for
character, including its doubled full stops and the stray quote after the taste description; a test
checks the rendering against the Appendix C example.

Levels are the degree of the named trait: ``0`` low, ``1`` mid, ``2`` high. Agent4Rec numbers
conformity by the *deviation* from historical ratings (its group 1 = "Dedicated Follower"); here
level 2 (high conformity) is the Dedicated Follower and level 0 (low conformity) the Maverick Critic.

Two wording choices, both documented rather than silent:

* The paper prints the high-diversity text with a space before a full stop ("in the world of
  movies . The movie choices"); Agent4Rec's source has no space. The paper's version is kept so that
  the rendered paragraph matches Appendix C exactly.
* Agent4Rec's high-conformity text ends with a space; trailing whitespace is stripped so the
  paragraph does not get ". ." in it.
"""

from __future__ import annotations

from typing import Literal

from recsim_personas.errors import ConfigError, did_you_mean

__all__ = [
    "ACTIVITY_TRAITS",
    "CONFORMITY_TRAITS",
    "DIVERSITY_TRAITS",
    "LEVEL_NAMES",
    "PERSONA_PREFIX",
    "PERSONA_SUFFIX",
    "TRAITS",
    "TRAIT_ATTRIBUTION",
    "TraitName",
    "render_persona",
    "trait_text",
]

TraitName = Literal["activity", "conformity", "diversity"]

#: Where the texts come from (for READMEs and result files).
TRAIT_ATTRIBUTION = (
    "Trait texts from Agent4Rec (Zhang et al., SIGIR 2024, github.com/LehengTHU/Agent4Rec, MIT), "
    "as used in Thakur, Agrawal, Mukund, 'Personas within Parameters', arXiv 2509.09689 (CC BY 4.0), "
    "Appendix C."
)

#: Names of the three levels, index = level.
LEVEL_NAMES: tuple[str, str, str] = ("low", "mid", "high")

#: Activity, by level (0 low .. 2 high): how often the user watches and how easily they leave.
ACTIVITY_TRAITS: tuple[str, str, str] = (
    "An Incredibly Elusive Occasional Viewer, so seldom attracted by movie recommendations that "
    "it's almost a legendary event when you do watch a movie. Your movie-watching habits are "
    "extraordinarily infrequent. And you will exit the recommender system immediately even if you "
    "just feel little unsatisfied.",
    "An Occasional Viewer, seldom attracted by movie recommendations. Only curious about watching "
    "movies that strictly align the taste. The movie-watching habits are not very infrequent. And "
    "you tend to exit the recommender system if you have a few unsatisfied memories.",
    "A Movie Enthusiast with an insatiable appetite for films, willing to watch nearly every movie "
    "recommended to you. Movies are a central part of your life, and movie recommendations are "
    "integral to your existence. You are tolerant of recommender system, which means you are not "
    "easy to exit recommender system even if you have some unsatisfied memory.",
)

#: Conformity, by level (0 low = ignores historical ratings .. 2 high = follows them).
CONFORMITY_TRAITS: tuple[str, str, str] = (
    "A Maverick Critic who completely ignores historical ratings and evaluates movies solely based "
    "on own taste. Usually give ratings that are a lot different from historical ratings.",
    "A Balanced Evaluator who considers both historical ratings and personal preferences when "
    "giving ratings to movies. Sometimes give ratings that are different from historical rating.",
    "A Dedicated Follower who gives ratings heavily relies on movie historical ratings, rarely "
    "expressing independent opinions. Usually give ratings that are same as historical ratings.",
)

#: Diversity, by level (0 low = one narrow taste .. 2 high = anything goes).
DIVERSITY_TRAITS: tuple[str, str, str] = (
    "An Exceedingly Discerning Selective Viewer who watches movies with a level of selectivity that "
    "borders on exclusivity. The movie choices are meticulously curated to match personal taste, "
    "leaving no room for even a hint of variety.",
    "A Niche Explorer who occasionally explores different genres and mostly sticks to preferred "
    "movie types.",
    "A Cinematic Trailblazer, a relentless seeker of the unique and the obscure in the world of "
    "movies . The movie choices are so diverse and avant-garde that they defy categorization.",
)

#: All trait tables by name.
TRAITS: dict[str, tuple[str, str, str]] = {
    "activity": ACTIVITY_TRAITS,
    "conformity": CONFORMITY_TRAITS,
    "diversity": DIVERSITY_TRAITS,
}

#: The paragraph's opening, up to the first trait text (verbatim from Appendix C).
PERSONA_PREFIX = (
    "PERSONA: You excel at role-playing. Picture yourself as a user exploring a movie "
    "recommendation system. You have the following social traits:. "
)
#: The paragraph's closing sentences after the taste description (verbatim from Appendix C).
PERSONA_SUFFIX = (
    "The activity characteristic pertains to the frequency of your movie-watching habits. The "
    "conformity characteristic measures the degree to which your ratings are influenced by "
    "historical ratings. The diversity characteristic gauges your likelihood of watching movies "
    "that may not align with your usual taste."
)


def trait_text(trait: str, level: int) -> str:
    """The description of ``trait`` at ``level`` (0 low, 1 mid, 2 high).

    Raises:
        ConfigError: an unknown trait name (with a did-you-mean) or a level outside 0..2.
    """
    if trait not in TRAITS:
        raise ConfigError(f"unknown trait {trait!r}; use one of {sorted(TRAITS)}.{did_you_mean(trait, TRAITS)}")
    if not isinstance(level, int) or isinstance(level, bool) or level not in (0, 1, 2):
        raise ConfigError(f"{trait} level must be 0 (low), 1 (mid) or 2 (high), got {level!r}")
    return TRAITS[trait][level]


def render_persona(activity: str, conformity: str, diversity: str, taste: str) -> str:
    """M_s as the paper's PERSONA paragraph (Appendix C), character for character.

    Args:
        activity: The activity trait text (see :data:`ACTIVITY_TRAITS`).
        conformity: The conformity trait text.
        diversity: The diversity trait text.
        taste: The first-person description of the user's tastes and dislikes.

    Returns:
        ``"PERSONA: You excel at role-playing. ... Your activity trait is described as: <activity>.
        Your conformity trait ... Beyond that, your profile description expressing your preferences
        and dislikes is: <taste>.". The activity characteristic ..."``. The doubled full stops and
        the stray quote are the paper's; they are kept so prompts match the published ones.
    """
    return (
        f"{PERSONA_PREFIX}"
        f"Your activity trait is described as: {activity.strip()}. "
        f"Your conformity trait is described as: {conformity.strip()}. "
        f"Your diversity trait is described as: {diversity.strip()}. "
        f"Beyond that, your profile description expressing your preferences and dislikes is: "
        f'{taste.strip()}.". '
        f"{PERSONA_SUFFIX}"
    )
