"""The shapes set's words, each a pure function of the drawn shapes and the generator it is given:
five captions per image in English and their German translations (one `CaptionPlan` renders
both), VQA questions with ten human-like answers, and the referring phrases that pick out one
object of a scene."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.demo.draw import COLORS, SHAPES, Shape

PLURALS = {s: s + "s" for s in SHAPES}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# Human-like answer variation: a synonym a person might type, scored as wrong by exact match.
_COLOR_SYNONYMS = {"purple": ["violet"], "green": ["dark green"], "blue": ["dark blue"], "yellow": ["gold"]}
_SHAPE_SYNONYMS = {
    "circle": ["oval", "round"],
    "square": ["rectangle", "box"],
    "triangle": ["triangular"],
    "star": ["star shape"],
    "diamond": ["rhombus"],
}


# --- captions ----------------------------------------------------------------------------------------


def _number(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _groups(shapes: list[Shape]) -> list[str]:
    """'a red circle', 'two blue squares': one phrase per (colour, shape), in first-seen order."""
    counts = Counter((s.color, s.kind) for s in shapes)
    return [
        f"a {color} {kind}" if n == 1 else f"{_number(n)} {color} {PLURALS[kind]}"
        for (color, kind), n in counts.items()
    ]


@dataclass(frozen=True)
class CaptionPlan:
    """The random choices behind one image's five captions: group orders and the background's word.
    One plan renders the English captions and their German translations alike."""

    first: list[int]
    counted: list[int]
    beside: list[int]
    tone: int
    scene: list[int]


def caption_plan(rng: np.random.Generator, shapes: list[Shape]) -> CaptionPlan:
    n = len(Counter((s.color, s.kind) for s in shapes))
    # drawn in the order the English captions always drew them: the main set's stream is unchanged
    first, counted, beside = (rng.permutation(n).tolist() for _ in range(3))
    tone = int(rng.integers(3))
    return CaptionPlan(first, counted, beside, tone, rng.permutation(n).tolist())


def captions(rng: np.random.Generator, shapes: list[Shape], language: str = "en") -> list[str]:
    """Five references in different styles; all name every shape with its colour. language: "en"
    or "de" (the same five, translated, for the same draws of `rng`)."""
    plan = caption_plan(rng, shapes)
    if language == "en":
        return render_captions(shapes, plan)
    if language == "de":
        return render_captions_de(shapes, plan)
    raise ValueError(f"unknown caption language {language!r}; known: en, de")


def _left_to_right(shapes: list[Shape]) -> list[Shape]:
    return sorted(shapes, key=lambda s: (s.box[0] + s.box[2], s.box[1]))


def render_captions(shapes: list[Shape], plan: CaptionPlan) -> list[str]:
    groups = _groups(shapes)
    n = len(shapes)

    def ordered(order: list[int]) -> list[str]:
        return [groups[i] for i in order]

    first = _join(ordered(plan.first)) + "."
    first = first[0].upper() + first[1:]
    counted = f"{_number(n)} shape{'s' if n > 1 else ''}: {_join(ordered(plan.counted))}"
    order = ordered(plan.beside)
    if len(order) > 1:
        beside = f"{order[0]} next to {_join(order[1:])}"
    elif n == 1:
        beside = f"{order[0]} on a plain background"
    else:
        beside = f"{order[0]} side by side"
    if n == 1:
        positional = f"a single {shapes[0].phrase} in the picture"
    else:
        positional = "from left to right: " + _join([f"a {s.phrase}" for s in _left_to_right(shapes)])
    tone = ("light", "pale", "plain")[plan.tone]
    scene = f"a simple drawing of {_join(ordered(plan.scene))} on a {tone} background"
    return [first, counted, beside, positional, scene]


# German: nouns with gender and plural forms; adjectives take the endings of their case and gender.
_DE_NOUNS = {  # gender, singular, plural (nominative), plural (dative)
    "circle": ("m", "Kreis", "Kreise", "Kreisen"),
    "square": ("n", "Quadrat", "Quadrate", "Quadraten"),
    "triangle": ("n", "Dreieck", "Dreiecke", "Dreiecken"),
    "star": ("m", "Stern", "Sterne", "Sternen"),
    "diamond": ("f", "Raute", "Rauten", "Rauten"),
}
# "violett", not the commoner "lila": lila takes no endings, and the set should show them
_DE_COLORS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "violett"}
_DE_NUMBERS = ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn")
# after the indefinite article: (article, adjective ending) by case and gender
_DE_ARTICLE = {
    ("nom", "m"): ("ein", "er"),
    ("nom", "n"): ("ein", "es"),
    ("nom", "f"): ("eine", "e"),
    ("dat", "m"): ("einem", "en"),
    ("dat", "n"): ("einem", "en"),
    ("dat", "f"): ("einer", "en"),
}


def _de_join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " und " + parts[-1]


def _de_group(color: str, kind: str, n: int, case: str, *, single: bool = False) -> str:
    """'ein roter Kreis' (nominative), 'einem roten Kreis' (dative), 'zwei rote Kreise', 'zwei roten
    Kreisen'; single: 'ein einzelner roter Kreis'."""
    gender, noun, plural, plural_dative = _DE_NOUNS[kind]
    adjective = _DE_COLORS[color]
    if n == 1:
        article, ending = _DE_ARTICLE[case, gender]
        extra = f"einzeln{ending} " if single else ""
        return f"{article} {extra}{adjective}{ending} {noun}"
    number = _de_number(n)
    # no article: the strong plural endings, -e in the nominative, -en (and -n on the noun) in the dative
    return f"{number} {adjective}e {plural}" if case == "nom" else f"{number} {adjective}en {plural_dative}"


def _de_number(n: int) -> str:
    return _DE_NUMBERS[n] if n < len(_DE_NUMBERS) else str(n)


def render_captions_de(shapes: list[Shape], plan: CaptionPlan) -> list[str]:
    """The German translations of `render_captions`, caption for caption."""
    counts = Counter((s.color, s.kind) for s in shapes)
    keys = list(counts)  # first-seen order, as _groups
    n = len(shapes)

    def ordered(order: list[int], case: str) -> list[str]:
        return [_de_group(*keys[i], counts[keys[i]], case) for i in order]

    first = _de_join(ordered(plan.first, "nom")) + "."
    first = first[0].upper() + first[1:]
    counted = (
        f"{'eine Form' if n == 1 else _de_number(n) + ' Formen'}: {_de_join(ordered(plan.counted, 'nom'))}"
    )
    if len(keys) > 1:
        head, *rest = plan.beside
        beside = f"{ordered([head], 'nom')[0]} neben {_de_join(ordered(rest, 'dat'))}"
    elif n == 1:
        beside = f"{ordered(plan.beside, 'nom')[0]} auf einem schlichten Hintergrund"
    else:
        beside = f"{ordered(plan.beside, 'nom')[0]} nebeneinander"
    if n == 1:
        positional = f"{_de_group(shapes[0].color, shapes[0].kind, 1, 'nom', single=True)} im Bild"
    else:
        positional = "von links nach rechts: " + _de_join(
            [_de_group(s.color, s.kind, 1, "nom") for s in _left_to_right(shapes)]
        )
    tone = ("hellen", "blassen", "schlichten")[plan.tone]
    scene = f"eine einfache Zeichnung von {_de_join(ordered(plan.scene, 'dat'))} auf einem {tone} Hintergrund"
    return [first, counted, beside, positional, scene]


# --- referring phrases ------------------------------------------------------------------------------

# Where an object is, as referring phrases say it: the word, its phrase after the noun, and the test
# "box a lies entirely on that side of box b" (boxes never overlap, so one of the four holds).
DIRECTIONS: dict[str, tuple[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]]] = {
    "left": ("on the left", lambda a, b: a[2] <= b[0]),
    "right": ("on the right", lambda a, b: a[0] >= b[2]),
    "top": ("at the top", lambda a, b: a[3] <= b[1]),
    "bottom": ("at the bottom", lambda a, b: a[1] >= b[3]),
}


def referring_phrases(target: Shape, scene: list[Shape]) -> list[str]:
    """Every phrase that picks out `target` alone in `scene`, in a fixed order:

    "the red circle"                    always (no two objects share colour and shape)
    "the circle"                        when it is the only circle
    "the red shape"                     when it is the only red object
    "the left circle", "the circle on the left", "the top shape", "the shape at the bottom", ...
                                        when its box lies entirely on that side of the boxes of
                                        all other circles (of all other objects, for "shape")
    """
    phrases = [f"the {target.color} {target.kind}"]
    if sum(s.kind == target.kind for s in scene) == 1:
        phrases.append(f"the {target.kind}")
    if sum(s.color == target.color for s in scene) == 1:
        phrases.append(f"the {target.color} shape")
    for noun, group in (
        (target.kind, [s for s in scene if s.kind == target.kind]),
        ("shape", scene),
    ):
        others = [s for s in group if s is not target]
        if not others:
            continue  # "the left circle" of one circle says no more than "the circle"
        for word, (after, beyond) in DIRECTIONS.items():
            if all(beyond(target.box, o.box) for o in others):
                phrases += [f"the {word} {noun}", f"the {noun} {after}"]
    return phrases


def region_description(target: Shape, scene: list[Shape]) -> str:
    """How a region is described (Visual Genome's short phrases): its colour and shape, and where it
    is when its box lies on one side of every other box ("red circle on the left")."""
    others = [s for s in scene if s is not target]
    for after, beyond in DIRECTIONS.values():
        if others and all(beyond(target.box, o.box) for o in others):
            return f"{target.color} {target.kind} {after}"
    return f"{target.color} {target.kind}"


def detailed_caption(scene: list[Shape]) -> str:
    """A detailed caption (Florence-2's `<DETAILED_CAPTION>`): one sentence naming every shape
    from left to right, with its colour and where it is."""
    parts = [f"a {region_description(s, scene)}" for s in _left_to_right(scene)]
    return f"A drawing of {_number(len(scene))} shapes: {_join(parts)}."


def paragraph(scene: list[Shape]) -> str:
    """A paragraph (Florence-2's `<MORE_DETAILED_CAPTION>`): the scene, then a sentence per shape
    from left to right, then what the shapes have in common."""
    sentences = [f"The image shows {_number(len(scene))} shapes on a light background."]
    for s in _left_to_right(scene):
        where = region_description(s, scene).removeprefix(s.phrase).strip()
        sentences.append(f"The {s.phrase} is {where or 'beside the others'}.")
    colors = {s.color for s in scene}
    sentences.append(
        "They are all " + scene[0].color + "." if len(colors) == 1 else "Each has its own colour."
    )
    return " ".join(sentences)


def pick_phrases(rng: np.random.Generator, target: Shape, scene: list[Shape]) -> list[str]:
    """Two or three of `target`'s phrases (fewer where fewer exist), as people give 2-3 per object."""
    phrases = referring_phrases(target, scene)
    keep = min(len(phrases), int(rng.integers(2, 4)))
    return [phrases[i] for i in rng.permutation(len(phrases))[:keep]]


# --- questions ----------------------------------------------------------------------------------------


def _qa(question_type: str, rest: str, answer_type: str, answer: str) -> dict[str, Any]:
    # VQAv2's question_type is the question's first words
    q = f"{question_type} {rest}"
    return {"question": q, "question_type": question_type, "answer_type": answer_type, "answer": answer}


def questions(rng: np.random.Generator, shapes: list[Shape]) -> list[dict[str, Any]]:
    """Two or three questions of different types, each only where its answer is unambiguous."""
    kinds = Counter(s.kind for s in shapes)
    colors = Counter(s.color for s in shapes)
    candidates = [_qa("how many", "shapes are there?", "number", str(len(shapes)))]
    # yes/no: present or absent with equal odds, so "yes" is not a free win.
    absent = [k for k in SHAPES if k not in kinds]
    present = sorted(kinds, key=SHAPES.index)
    if absent and rng.random() < 0.5:
        asked, yes = absent[int(rng.integers(len(absent)))], "no"
    else:
        asked, yes = present[int(rng.integers(len(present)))], "yes"
    candidates.append(_qa("is there a", f"{asked}?", "yes/no", yes))
    unique_kinds = [s for s in shapes if kinds[s.kind] == 1]
    if unique_kinds:
        s = unique_kinds[int(rng.integers(len(unique_kinds)))]
        candidates.append(_qa("what color is the", f"{s.kind}?", "other", s.color))
    unique_colors = [s for s in shapes if colors[s.color] == 1]
    if unique_colors:
        s = unique_colors[int(rng.integers(len(unique_colors)))]
        candidates.append(_qa("what shape is the", f"{s.color} object?", "other", s.kind))
    k = min(len(candidates), int(rng.integers(2, 4)))
    picked = sorted(rng.choice(len(candidates), size=k, replace=False).tolist())
    return [candidates[i] for i in picked]


def human_answers(rng: np.random.Generator, q: dict[str, Any]) -> list[str]:
    """Ten answers: at least seven exactly right, the rest a synonym or a plausible mistake."""
    truth: str = q["answer"]
    answers = [truth] * 10
    for i in rng.choice(10, size=int(rng.integers(0, 4)), replace=False).tolist():
        answers[i] = _variant(rng, q["question_type"], truth)
    return answers


def _variant(rng: np.random.Generator, qtype: str, truth: str) -> str:
    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    synonym = rng.random() < 0.6
    if qtype == "how many":
        n = int(truth)
        if synonym:
            return _number(n)  # "two" for "2": equal after VQA answer normalisation
        return str(n + 1 if n == 1 or rng.random() < 0.5 else n - 1)
    if qtype == "is there a":
        return "no" if truth == "yes" else "yes"
    if qtype == "what color is the":
        if synonym and truth in _COLOR_SYNONYMS:
            return pick(_COLOR_SYNONYMS[truth])
        return pick([c for c in COLORS if c != truth])
    if synonym:
        return pick(_SHAPE_SYNONYMS[truth])
    return pick([s for s in SHAPES if s != truth])


def most_frequent(answers: list[str]) -> str:
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)  # first seen among the most frequent
