"""Small deterministic text helpers shared by the simulated models: seeded uniforms, language, counts."""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+", re.UNICODE)

_STOPWORDS = {
    "en": {"the", "and", "is", "my", "to", "it", "not", "i", "you", "your", "of", "for", "this", "have", "with", "will"},
    "es": {"el", "la", "de", "que", "mi", "no", "y", "es", "su", "con", "por", "para", "un", "una", "le", "lo", "he"},
    "fr": {"le", "la", "de", "et", "je", "mon", "est", "pas", "vous", "votre", "un", "une", "nous", "il", "pour", "que"},
    "de": {"der", "die", "das", "und", "ich", "ist", "nicht", "mein", "sie", "ihre", "den", "wir", "mit", "ihnen", "von"},
}
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German"}


def uniform(key: str, *salt: object) -> float:
    """A deterministic number in [0, 1) for `key` and `salt` (the simulator's only source of randomness)."""
    h = hashlib.blake2b(("|".join([key, *map(str, salt)])).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def pick(options, key: str, *salt: object):
    """One element of `options` (a list, or a single value), chosen deterministically."""
    if not isinstance(options, list):
        return options
    return options[int(uniform(key, *salt) * len(options))]


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def word_count(text: str) -> int:
    return len(words(text))


def token_count(text: str) -> int:
    """A stand-in tokenizer: about four characters per token, at least one for non-empty text."""
    return (len(text) + 3) // 4 if text else 0


def detect_language(text: str) -> str:
    """The language (en/es/fr/de) whose function words occur most often; English on a tie."""
    tokens = [w.lower() for w in words(text)]
    best, best_n = "en", sum(t in _STOPWORDS["en"] for t in tokens)
    for lang in ("es", "fr", "de"):
        n = sum(t in _STOPWORDS[lang] for t in tokens)
        if n > best_n:
            best, best_n = lang, n
    return best
