"""Words that describe a persona: content words of profile texts, ranked one persona against the rest.

The words of each persona's profile texts are collected: nouns and adjectives with spaCy's
``en_core_web_sm`` when spaCy and that model are installed (the paper's method), else a POS-free
fallback: lowercase word tokens of three or more letters minus an English stopword list
(:data:`STOPWORDS`). :func:`distinctive_words` is the paper's one-vs-all set difference: the words
used by the persona's users and by no user of any other persona, ranked by count (ties
alphabetically). Because profiles share most vocabulary, these are often rare words;
:func:`over_represented_words` adds the words most over-represented in the persona by document
frequency (smoothed log ratio, used by at least two of its users), which tends to name genres and
tones.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["STOPWORDS", "content_words", "distinctive_words", "over_represented_words", "word_method"]

logger = logging.getLogger(__name__)

#: English stopwords removed by the POS-free fallback (function words, pronouns, auxiliaries, and
#: a few words every profile uses, such as "movie"/"film", which carry no persona information).
_STOPWORD_TEXT = """
a about above after again against all also am an and any are aren as at be because been before being
below between both but by can cannot could did didn do does doesn doing don down during each even ever
every few for from further get gets got had hadn has hasn have haven having he her here hers herself
him himself his how however i if in into is isn it its itself just least less let like ll made make
makes many may me might more most much must my myself no nor not now of off often on once one only or
other others ought our ours ourselves out over own quite rather really re same shan she should shouldn
since so some such than that the their theirs them themselves then there these they this those though
through to too under until up upon us ve very was wasn we well were weren what when where whether which
while who whom whose why will with within without won would wouldn yet you your yours yourself
yourselves movie movies film films
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
_SPACY: dict[str, Any] = {}


def _spacy_nlp() -> Any | None:
    """spaCy's ``en_core_web_sm`` pipeline, or ``None`` when spaCy or the model is missing."""
    if "nlp" not in _SPACY:
        nlp = None
        try:
            import spacy

            nlp = spacy.load("en_core_web_sm", disable=["parser", "ner", "lemmatizer"])
        except ImportError:
            pass
        except OSError:  # spaCy without the model
            logger.warning("spaCy is installed but en_core_web_sm is not; using the POS-free fallback")
        _SPACY["nlp"] = nlp
    return _SPACY["nlp"]


def word_method() -> str:
    """Which word extractor :func:`content_words` uses here: ``"spacy"`` or ``"stopword-fallback"``."""
    return "spacy:en_core_web_sm" if _spacy_nlp() is not None else "stopword-fallback"


def content_words(texts: Sequence[str]) -> list[list[str]]:
    """Nouns and adjectives of each text (spaCy), or its non-stopword words (fallback), lowercase."""
    nlp = _spacy_nlp()
    if nlp is not None:
        return [
            [t.text.lower() for t in doc if t.pos_ in ("NOUN", "ADJ") and t.is_alpha and len(t.text) > 2]
            for doc in nlp.pipe([str(t) for t in texts])
        ]
    out = []
    for text in texts:
        words = (w.removesuffix("'s") for w in _WORD.findall(str(text).lower().replace("\u2019", "'")))
        out.append([w for w in words if len(w) > 2 and "'" not in w and w not in STOPWORDS])
    return out


def distinctive_words(words_by_persona: dict[int, Counter[str]], top_n: int = 10
                      ) -> dict[int, list[tuple[str, int]]]:
    """The paper's one-vs-all set difference: words of a persona that no other persona uses.

    Args:
        words_by_persona: Word counts of each persona's texts.
        top_n: Words kept per persona.

    Returns:
        Per persona, up to ``top_n`` ``(word, count)`` pairs, most frequent first (ties A-Z).
    """
    out: dict[int, list[tuple[str, int]]] = {}
    for p, counts in words_by_persona.items():
        others: set[str] = set()
        for q, c in words_by_persona.items():
            if q != p:
                others.update(c)
        unique = [(w, n) for w, n in counts.items() if w not in others]
        out[p] = sorted(unique, key=lambda wn: (-wn[1], wn[0]))[:top_n]
    return out


def over_represented_words(docs_by_persona: dict[int, list[set[str]]], top_n: int = 10
                           ) -> dict[int, list[tuple[str, float]]]:
    """Words whose share of users is highest in a persona relative to the other personas.

    Score: ``log((df_p + 0.5) / (n_p + 1)) - log((df_rest + 0.5) / (n_rest + 1))`` where ``df`` is the
    number of users whose text uses the word; a word needs ``df_p >= 2`` (or 1 in a one-user persona).

    Returns:
        Per persona, up to ``top_n`` ``(word, score)`` pairs, highest score first (ties A-Z).
    """
    df = {p: Counter(w for doc in docs for w in doc) for p, docs in docs_by_persona.items()}
    total: Counter[str] = Counter()
    for c in df.values():
        total.update(c)
    n_all = sum(len(d) for d in docs_by_persona.values())
    out: dict[int, list[tuple[str, float]]] = {}
    for p, docs in docs_by_persona.items():
        n_p = len(docs)
        n_rest = n_all - n_p
        need = 2 if n_p > 1 else 1
        scored = []
        for w, d in df[p].items():
            if d < need:
                continue
            rest = total[w] - d
            score = math.log((d + 0.5) / (n_p + 1)) - math.log((rest + 0.5) / (n_rest + 1))
            scored.append((w, round(score, 4)))
        out[p] = sorted(scored, key=lambda ws: (-ws[1], ws[0]))[:top_n]
    return out
