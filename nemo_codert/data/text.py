"""English-looking sentences from a small template grammar, for the offline speech corpus.

Words come from the Faker package (MIT licence), which ships part-of-speech word lists (about 490 verbs, 1140 nouns,
390 adjectives, 160 adverbs) and 690 first names, 1000 last names and the 50 US states with its wheel: over 3000
distinct words, no download. The templates use verbs in their base form after a modal or "to", so no conjugation
is needed and every sentence reads as grammatical English. Output is lowercase letters, apostrophes and spaces:
what eSpeak reads as written and a small BPE tokenizer covers.
"""

from __future__ import annotations

import random
import re
from typing import Dict, List, Sequence

__all__ = ["sentences", "word_lists"]

_WORD = re.compile(r"^[a-z']+$")

# {n}/{n2}: nouns, {a}/{a2}: adjectives, {v}: verbs (base form), {r}: adverbs, {p}/{p2}: first names,
# {l}: last names, {s}: states, {d}/{d2}: determiners.
_TEMPLATES = (
    "{p} will {v} {d} {a} {n}",
    "{d} {n} of {p} {l} is {r} {a}",
    "{p} and {p2} want to {v} {d} {a} {n} in {s}",
    "please do not {v} {d} {n} before {d2} {a} {n2}",
    "why would {d} {a} {n} {v} {p} {r}",
    "{d} {a} {n} can {v} {d2} {n2} today",
    "{p} {l} said {d} {n} was {r} {a}",
    "we should {v} {d} {n} and {d2} {a2} {n2} tomorrow",
    "i think {p} has to {v} {d} {a} {n} near {s}",
    "{d} {n} from {s} might {v} {d2} {a} {n2} {r}",
    "could you {v} {d} {n} for {p} {l}",
    "they never {v} {d} {a} {n} on sundays",
    "{p} asked {p2} to {v} {d} {n} with {d2} {n2}",
    "there is {r} {d} {a} {n} in {d2} {n2}",
    "{d} {a} {n} and {d2} {a2} {n2} will {v} together",
)
_DETERMINERS = ("the", "my", "your", "this", "that", "every", "our", "their", "his", "her", "some", "one")


def word_lists() -> Dict[str, List[str]]:
    """The grammar's word classes, lowercased and filtered to what eSpeak reads as written."""
    from faker.providers.address.en_US import Provider as Address
    from faker.providers.lorem.en_US import Provider as Lorem
    from faker.providers.person.en_US import Provider as Person

    def clean(words: Sequence[str]) -> List[str]:
        return sorted({w.lower() for w in words if _WORD.match(w.lower())})

    pos = Lorem.parts_of_speech
    return {
        "n": clean(pos["noun"]),
        "v": clean(pos["verb"]),
        "a": clean(pos["adjective"]),
        "r": clean(w for w in pos["adverb"] if w not in ("not",)),
        "p": clean(Person.first_names),
        "l": clean(Person.last_names),
        "s": sorted({s.lower() for s in Address.states}),
        "d": list(_DETERMINERS),
    }


def sentences(count: int, seed: int = 0) -> List[str]:
    """``count`` distinct sentences, deterministic for a seed."""
    words = word_lists()
    rng = random.Random(seed)
    seen: Dict[str, None] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError(f"the grammar could not produce {count} distinct sentences")
        fill = {
            key: rng.choice(words[key[0]]) for key in ("n", "n2", "a", "a2", "v", "r", "p", "p2", "l", "s", "d", "d2")
        }
        sentence = " ".join(rng.choice(_TEMPLATES).format(**fill).split())
        seen.setdefault(sentence, None)
    return list(seen)
