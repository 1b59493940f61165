"""Text preprocessing with NLTK: the steps that turn a shopper's message into bag-of-words features.

Each step is a small method so that the notebook and the tests can show and check it alone::

    normalize -> tokenize -> remove_stopwords -> correct -> lemmatize -> synonyms -> stem -> dedupe

``Preprocessor.surface`` runs the first three (the words spelling correction knows), and
``Preprocessor.__call__`` runs all of them.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from . import config

#: NLTK resources the pipeline reads: ``nltk.download`` name -> path inside ``NLTK_DATA``.
NLTK_RESOURCES = {
    "punkt_tab": "tokenizers/punkt_tab/english/",
    "stopwords": "corpora/stopwords/",
    "wordnet": "corpora/wordnet/",
    "words": "corpora/words/",
}
#: Stop words that carry intent ("where is my order" vs "how is my order"): never removed.
KEEP_WORDS = frozenset({
    "how", "what", "when", "where", "why", "which", "who", "whom", "not", "no", "nor", "can",
    "off", "up", "down", "out", "over", "again", "more", "all", "any", "same", "too", "very",
    "before", "after", "above", "below", "against", "few", "other", "only", "own", "don",
})
#: Messages are cut to this many characters before preprocessing (a pasted 100 KB log is not a question).
MAX_CHARS = 1000
#: NLTK's Treebank tokenizer splits contractions: "can't" -> "ca" "n't".
_CONTRACTIONS = {"n't": "not", "ca": "can", "wo": "will", "'m": "am", "'re": "are", "'ve": "have",
                 "'ll": "will", "'d": "would", "'s": ""}
#: Languages written in Latin letters that NLTK has stop words for: a message with more of their
#: stop words than English ones is not English (accents are folded as ``normalize`` does).
OTHER_LANGUAGES = ("catalan", "danish", "dutch", "finnish", "french", "german", "hungarian", "indonesian",
                   "italian", "norwegian", "portuguese", "romanian", "slovene", "spanish", "swedish", "turkish")
#: E-mail addresses, in linear time: one starts only at a word's start or after an "@", and none of its
#: parts holds an "@" (``\S+@\S+\.\S+`` backtracked cubically on "@@@...": 1.7 s for a 1,000-character message).
_EMAIL = re.compile(r"(?<![^\s@])[^\s@]+@[^\s@]+\.[^\s@]+")
_URL = re.compile(r"https?://\S+|www\.\S+|" + _EMAIL.pattern)
_WORD = re.compile(r"[A-Za-z]+")
_NOT_LETTERS = re.compile(r"[^a-z' ]+")


class NLTKDataError(RuntimeError):
    """An NLTK resource the preprocessing needs is not installed."""


def _nltk_path() -> None:
    """Let NLTK also look where the download registry puts its packages (after ``NLTK_DATA`` and its own places)."""
    import nltk

    folder = str(config.nltk_dir())
    if folder not in nltk.data.path:
        nltk.data.path.append(folder)


def ensure_nltk_data(download: bool | None = None) -> None:
    """Check that every resource in ``NLTK_RESOURCES`` is found; fetch missing ones through the download
    registry (checked against NLTK's published MD5, written atomically) when ``download``.

    ``download`` defaults to "not ``SHOPBOT_OFFLINE``": build steps (notebook 06, ``train_intents``,
    ``pipeline.prerequisites``) call it so; a ``Preprocessor`` (what a serving kernel makes) never
    downloads. Raises ``NLTKDataError`` naming what to download (or to point ``NLTK_DATA`` at) when a
    resource is still missing.
    """
    import nltk

    from .downloads import DownloadError, fetch

    _nltk_path()
    download = not config.offline() if download is None else download
    missing, errors = [], []
    for name, path in NLTK_RESOURCES.items():
        try:
            nltk.data.find(path)
            continue
        except LookupError:
            pass
        if download:
            try:
                fetch(f"nltk/{name}", download=True)
                nltk.data.find(path)
                continue
            except (DownloadError, LookupError) as exc:
                errors.append(str(exc))
        missing.append(name)
    if missing:
        raise NLTKDataError(
            f"NLTK data missing: {', '.join(missing)}. Run `python -m shopbot_utils download "
            f"{' '.join('nltk/' + m for m in missing)}` (checked downloads) "
            "or set NLTK_DATA to a folder that has them (this project's tests use ../shared/nltk_data)."
            + (f" Download errors: {'; '.join(errors)}" if errors else ""))


#: Training words seen at most this often are spelling-corrected too (see ``Preprocessor.correct``).
RARE = 2


def max_edits(word: str) -> int:
    """How many edits spelling correction may make: none for short words, 1 up to 5 letters, else 2."""
    return 0 if len(word) < 4 else 1 if len(word) <= 5 else 2


class Preprocessor:
    """NLTK preprocessing; ``vocabulary`` is the set of surface words spelling correction maps onto."""

    def __init__(self, vocabulary: Iterable[str] | Mapping[str, int] = (), features: Iterable[str] = ()):
        from nltk.corpus import stopwords, words
        from nltk.stem import PorterStemmer, WordNetLemmatizer

        ensure_nltk_data(download=False)  # serving never downloads: build steps fetched the data
        english_stop = frozenset(stopwords.words("english"))
        self.stop_words = english_stop - KEEP_WORDS
        self._english_stop = english_stop
        self._foreign_stop = {lang: frozenset(self.normalize(w) for w in stopwords.words(lang)) - english_stop
                              for lang in OTHER_LANGUAGES}
        self.english = frozenset(w.lower() for w in words.words())
        self.lemmatizer, self.stemmer = WordNetLemmatizer(), PorterStemmer()
        self.set_vocabulary(vocabulary, features)

    def set_vocabulary(self, vocabulary: Iterable[str] | Mapping[str, int], features: Iterable[str] = ()) -> None:
        """``vocabulary``: the words spelling correction may produce (the training texts' surface
        words, repeated or as ``{word: count}``: ties go to the commoner word); ``features``: the
        stems the model knows, which ``synonyms`` maps unknown words onto."""
        counts = Counter(vocabulary) if not isinstance(vocabulary, Mapping) else Counter(dict(vocabulary))
        self.counts = dict(sorted(counts.items()))
        self.vocabulary = list(self.counts)
        self.features = frozenset(features)
        self._correct_word.cache_clear()
        self._synonym.cache_clear()

    # ---------------------------------------------------------------- the steps
    @staticmethod
    def normalize(text: str) -> str:
        """Lower-case ASCII letters only: accents folded, URLs/e-mails/digits/emoji/punctuation removed;
        at most ``MAX_CHARS`` (cut after normalising, which can make one character five: "㎯" is "rad∕s2")."""
        text = unicodedata.normalize("NFKD", text[:MAX_CHARS * 4]).encode("ascii", "ignore").decode()[:MAX_CHARS]
        text = _URL.sub(" ", text.lower())
        return " ".join(_NOT_LETTERS.sub(" ", text).split())

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """NLTK word tokens, contractions expanded ("can't" -> "can", "not")."""
        from nltk.tokenize import word_tokenize

        tokens = (_CONTRACTIONS.get(t, t) for t in word_tokenize(text))
        return [t.strip("'") for t in tokens if t.strip("'")]

    def remove_stopwords(self, tokens: Sequence[str]) -> list[str]:
        """Drop NLTK's English stop words, except the ones in ``KEEP_WORDS``."""
        return [t for t in tokens if t not in self.stop_words]

    def correct(self, tokens: Sequence[str]) -> list[str]:
        """Map misspelt words onto the vocabulary (edit distance, see ``max_edits``; ties: commoner word)."""
        return [self._correct_word(t) for t in tokens]

    @lru_cache(maxsize=65536)
    def _correct_word(self, word: str) -> str:
        # Dictionary words and words the training text uses often are left alone. A word seen only
        # RARE times in training may itself be a typo there (Bitext has "pasword" once, "password"
        # 37 times): unless WordNet knows it, it is corrected to a word seen 10 times as often. An
        # unseen inflection WordNet accepts ("delivered", but also "shiping" as ship+ing) only gets
        # a 1-edit correction.
        count = self.counts.get(word, 0)
        if word in self.english or count > RARE or not self.vocabulary:
            return word
        english = self.is_english(word)
        if count and english:  # a rare but real word ("cars", "feet") is not a typo of a common one
            return word
        edits = min(max_edits(word), 1) if english else max_edits(word)
        if edits == 0:
            return word
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        # Optimal string alignment: a swap of two letters ("cancle") is one edit, as people type.
        found = [m for m in process.extract(word, self.vocabulary, scorer=OSA.distance, score_cutoff=edits, limit=None)
                 if self.counts[m[0]] >= max(1, 10 * count)]
        return min(found, key=lambda m: (m[1], -self.counts[m[0]]))[0] if found else word

    def is_english(self, word: str) -> bool:
        """In NLTK's word list, or an inflection WordNet knows ("delivered", "anymore")."""
        from nltk.corpus import wordnet

        return word in self.english or wordnet.morphy(word) is not None

    def lemmatize(self, tokens: Sequence[str]) -> list[str]:
        """WordNet lemmas, as a verb when WordNet knows a verb lemma, else as a noun."""
        return [self._lemma(t) for t in tokens]

    @lru_cache(maxsize=65536)
    def _lemma(self, word: str) -> str:
        verb = self.lemmatizer.lemmatize(word, "v")
        return verb if verb != word else self.lemmatizer.lemmatize(word, "n")

    def synonyms(self, lemmas: Sequence[str]) -> list[str]:
        """Replace a lemma whose stem the model doesn't know by a WordNet synonym whose stem it does
        ("howdy" -> "hello", "farewell" -> "goodbye"); a no-op before ``features`` are set."""
        return [self._synonym(t) for t in lemmas]

    @lru_cache(maxsize=65536)
    def _synonym(self, lemma: str) -> str:
        if not self.features or self.stemmer.stem(lemma) in self.features:
            return lemma
        from nltk.corpus import wordnet

        for synset in wordnet.synsets(lemma)[:3]:
            for name in synset.lemma_names():
                if "_" not in name and self.stemmer.stem(name.lower()) in self.features:
                    return name.lower()
        return lemma

    def stem(self, tokens: Sequence[str]) -> list[str]:
        """Porter stems (so "delivery" and "deliver" meet)."""
        return [self.stemmer.stem(t) for t in tokens]

    @staticmethod
    def dedupe(tokens: Sequence[str]) -> list[str]:
        """Each token once, first occurrence order."""
        return list(dict.fromkeys(tokens))

    def language(self, text: str) -> str:
        """``'english'``, or the language with at least 2 stop words in ``text``, more than English has."""
        return self._language(self.tokenize(self.normalize(text)))

    def _language(self, tokens: Sequence[str]) -> str:
        english = sum(t in self._english_stop for t in tokens)
        scores = {lang: sum(t in words for t in tokens) for lang, words in self._foreign_stop.items()}
        best = max(scores, key=scores.get)
        return best if scores[best] >= 2 and scores[best] > english else "english"

    # ---------------------------------------------------------------- pipelines
    def surface(self, text: str) -> list[str]:
        """normalize -> tokenize -> remove_stopwords: the words spelling correction works on."""
        return self.remove_stopwords(self.tokenize(self.normalize(text)))

    def __call__(self, text: str) -> list[str]:
        """The features of a message: all the steps."""
        return self._features(self.surface(text))

    def corrected(self, text: str) -> str:
        """The message as typed, its misspelt words replaced by their corrections: what a sentence
        encoder reads ("Wher is my ORDR?" -> "where is my order?"; case and punctuation kept otherwise)."""
        def fix(match: re.Match) -> str:
            word = match.group(0)
            correction = self._correct_word(word.lower())
            return word if correction == word.lower() else correction

        return _WORD.sub(fix, text[:MAX_CHARS])

    def analyse(self, text: str) -> tuple[list[str], str]:
        """The features and the language of a message, normalising and tokenising it once."""
        tokens = self.tokenize(self.normalize(text))
        return self._features(self.remove_stopwords(tokens)), self._language(tokens)

    def _features(self, surface: Sequence[str]) -> list[str]:
        return self.dedupe(self.stem(self.synonyms(self.lemmatize(self.correct(surface)))))


#: What ``redact`` replaces besides e-mail addresses: runs of digits (spaces, dots, dashes, slashes and
#: brackets between them allowed) holding at least ``REDACT_MIN_DIGITS`` digits: phone, card and order
#: numbers. Shorter numbers ("size 9", "under 2000") are what a shopper asked for and stay.
_NUMBER = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,3}\d)+")
REDACT_MIN_DIGITS = 5


def redact(text: str) -> str:
    """``text`` as it may be kept in a log: e-mail addresses become ``[email]``, phone, card and order
    numbers ``[number]``, and lone surrogates (half an emoji from a browser) U+FFFD. Linear time."""
    text = str(text).encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = _EMAIL.sub("[email]", text)
    return _NUMBER.sub(lambda m: "[number]" if sum(c.isdigit() for c in m.group()) >= REDACT_MIN_DIGITS
                       else m.group(), text)


def clean_text(text: object) -> str:
    """Any user input as text: bytes decoded leniently, control characters dropped, ``None`` -> ''."""
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    text = str(text)
    return "".join(ch if ch.isprintable() else " " for ch in text[: MAX_CHARS * 4]).strip()
