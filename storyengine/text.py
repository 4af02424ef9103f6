"""Text handling: HTML to text, normalisation, tokens, canonical URLs.

Two token streams come out of one article:
- ``dedup_tokens``: every word of the body, case- and typography-folded, in order.
  Copies are compared on these, so a changed headline cannot hide a reprint.
- ``content_terms``: the words that say what an article is about (stopwords and
  numbers dropped, each word by its stem), headline weighted, for TF-IDF.
"""
from __future__ import annotations

import itertools
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import Stemmer
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from .sentence_scan import Scan

# A body is treated as HTML only when it holds something tag-shaped; plain text
# with a stray "<" goes through untouched.
_HTML_ELEMENTS = (
    "a|abbr|article|aside|audio|b|blockquote|body|br|button|caption|center|code|dd|div|dl|dt|em|figcaption|"
    "figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|label|li|link|main|meta|nav|"
    "noscript|ol|option|p|picture|pre|s|script|section|select|small|source|span|strong|style|sub|sup|svg|"
    "table|tbody|td|template|textarea|tfoot|th|thead|time|title|tr|u|ul|video")
# HTML only when a real element, a comment or a doctype appears: wire text such
# as "Apple Inc <AAPL.O>" or "x<y and y>z" stays plain text. Linear time on
# any body: no two quantifiers in a row accept the same character, and each
# is possessive (*+, Python 3.11), so "<a" and 200,000 spaces without a ">"
# is one pass, not every split of the spaces between two of them (worst
# inputs of every pattern: tests/storyengine/test_regex_linear.py).
_TAG = re.compile(rf"<\s*+(?:/\s*+)?(?:{_HTML_ELEMENTS})(?:\s[^<>]*+|/\s*+)?>|<!--|<!doctype", re.IGNORECASE)
_MAX_HTML_PASSES = 4
_NON_CONTENT_TAGS = ["script", "style", "noscript", "template", "iframe", "svg", "head"]
_BLOCK_TAGS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "blockquote")

# Typographic variants that reprints introduce: curly quotes, dashes, ellipses.
_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ",
})
_TYPOGRAPHIC = re.compile("[" + "".join(map(chr, _TYPOGRAPHY)) + "]")


def _typographic_plain(match: re.Match) -> str:
    return _TYPOGRAPHY[ord(match.group())]


_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Words that say nothing of an event; public: the evaluation keeps them when it recodes a copy of a stream.
STOPWORDS = frozenset(ENGLISH_STOP_WORDS) | {"said", "says", "new", "year", "years", "just", "like", "told", "according", "including", "reuters", "ap", "update", "breaking"}
_TRACKING_PARAMS = frozenset({"fbclid", "gclid", "mc_cid", "mc_eid", "cmpid", "ocid"})
# Web and mail addresses, handles and bare domains are where to find an
# outlet, not what an article is about: they never become words. A token is
# a run without white space; it is judged whole, so the check is linear.
_TLDS = "com|org|net|gov|edu|int|mil|info|news|io|co|tv|uk|us|au|ca|in|eu|de|fr|ie|nz|za"
_DOMAIN = re.compile(rf"(?:[a-z0-9-]+\.)+(?:{_TLDS})(?:/\S*)?", re.ASCII)
# Where "www." or a bare domain may be: a pattern that starts with a literal
# "." is searched for that character first (four times faster than one
# alternation), and a look-behind for "www" spares a lower-cased copy of the text.
_DOMAIN_HINT = re.compile(rf"\.(?:(?<=www\.)|(?:{_TLDS})\b)", re.IGNORECASE)


def _may_hold_address(text: str) -> bool:
    """Most texts hold no address, and a few scans say so."""
    return "://" in text or "@" in text or _DOMAIN_HINT.search(text) is not None


def _address(token: str) -> bool:
    token = token.strip("()[]<>{}\"'.,;:!?").casefold()
    return "://" in token or "@" in token or token.startswith("www.") or _DOMAIN.fullmatch(token) is not None


def addresses_in(text: str) -> tuple[int, int]:
    """(addresses, other tokens) among the white-space tokens of ``text``."""
    tokens = text.split()
    found = sum(map(_address, tokens)) if _may_hold_address(text) else 0
    return found, len(tokens) - found


# The tokens of an ASCII text that may be addresses, whole: every token
# _address takes holds one of these (it strips and lower-cases, no more).
# Only a token's start can begin a match, so the search is linear.
_ADDRESS_LIKE = re.compile(rf"(?<!\S)\S*?(?:://|@|www\.|\.(?:{_TLDS})\b)\S*+", re.IGNORECASE)


def without_addresses(text: str) -> str:
    """The text with URLs, e-mail addresses, @handles and bare domains
    (``aljazeera.com``) taken out, line breaks kept."""
    if not _may_hold_address(text):
        return text
    if text.isascii():  # the few tokens that may be addresses judged, not every token
        dropped = set(filter(_address, _ADDRESS_LIKE.findall(text))).__contains__
        return "\n".join(" ".join(itertools.filterfalse(dropped, line.split())) for line in text.split("\n"))
    return "\n".join(" ".join(t for t in line.split() if not _address(t)) for line in text.split("\n"))


def looks_like_html(text: str) -> bool:
    return _TAG.search(text) is not None


def html_to_text(html: str) -> str:
    """Reduce an HTML fragment or page to its readable text with a real parser:
    scripts, styles and the like are dropped, block elements become line breaks."""
    tree = HTMLParser(html)
    tree.strip_tags(_NON_CONTENT_TAGS)
    for tag in _BLOCK_TAGS:
        for node in tree.css(tag):
            node.insert_before("\n")
    root = tree.body or tree.root
    if root is None:
        return ""
    text = root.text(separator="", deep=True)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def clean_text(text: str) -> str:
    """Plain text as stored: control characters removed, HTML reduced to its
    text, trimmed. Control characters go first, so none can hide a tag from
    the HTML check ("<script\\x00>"). The reduction repeats while the result
    still holds markup: the text of a <textarea> or <xmp>, or escaped markup
    (&lt;script&gt;) that a parser decodes, is itself markup."""
    text = _CONTROL.sub(" ", text)
    for _ in range(_MAX_HTML_PASSES):
        if not looks_like_html(text):
            break
        text = _CONTROL.sub(" ", html_to_text(text))
    else:
        if looks_like_html(text):
            text = _TAG.sub(" ", text)  # still markup after every pass: drop what is left of the tags
    return text.strip()


def normalise(text: str) -> str:
    """Unicode compatibility forms and typography folded away (case kept).
    Idempotent, so folding normalised text again changes nothing."""
    if text.isascii():
        return text  # NFKC leaves ASCII as it is, and every typographic variant is outside it
    # A regex finds the few typographic characters far faster than
    # str.translate looks up every character of the text in a dict.
    return _TYPOGRAPHIC.sub(_typographic_plain, unicodedata.normalize("NFKC", text))


def fold(text: str) -> str:
    """Case, Unicode compatibility forms and typography folded away."""
    return normalise(text).casefold()


# ASCII text (most news) is split without a regex: every byte that is not a
# letter or digit becomes a space, then str.split. For ASCII this gives what
# the Unicode patterns give (letters and digits are [A-Za-z0-9] there), at a
# third of the cost.
_ASCII_ALNUM = bytes(c if chr(c).isalnum() else 32 for c in range(128)) + b" " * 128


def words(text: str, normalised: bool = False) -> list[str]:
    folded = text.casefold() if normalised else fold(text)
    if folded.isascii():
        return folded.encode("ascii").translate(_ASCII_ALNUM).decode("ascii").split()
    return _WORD.findall(folded)


class WordTest(dict):
    """A per-word yes/no, remembered: vocabulary repeats, and ``filter`` over a
    dict lookup keeps the loop in C."""

    def __init__(self, test) -> None:
        super().__init__()
        self.test = test

    def __missing__(self, word: str) -> bool:
        if len(self) > 500_000:
            self.clear()
        value = self[word] = self.test(word)
        return value


def _content_word(w: str) -> bool:
    return len(w) > 1 and w not in STOPWORDS and not w.isdigit()


# Two write-ups of one event word it differently ("suspends", "suspending",
# "to suspend"): content words are counted by their Snowball stem, so one
# word is one term whatever its form. In a headline of eight words that is
# the difference between sharing two terms and sharing none.
# PyStemmer: Snowball's own C code, 1 us a word; its own cache off (2 us a
# word with it, on new words), as its callers remember what they need.
_STEMMER = Stemmer.Stemmer("english", 0)


_STEMS = WordTest(_STEMMER.stemWord)


def stem(word: str) -> str:
    return _STEMS[word]


def word_stems(ws: list[str]) -> list[str]:
    """Each word's stem, or "" for a word that is not a content word (one
    call into Snowball for all of them; callers remember what they need)."""
    content = list(map(_content_word, ws))
    stems = iter(_STEMMER.stemWords(list(itertools.compress(ws, content))))
    return [next(stems) if c else "" for c in content]


def readable_forms(*word_lists: list[str]) -> dict[str, str]:
    """For each stem among these words, the first of their words with it (the
    headline's, when it has one): what a term is shown as ("suspends" for
    "suspends", "suspending" and "suspend")."""
    every = list(itertools.chain.from_iterable(word_lists))
    stems = word_stems(every)
    every.reverse()  # later pairs overwrite earlier ones in a dict: the first word is written last
    stems.reverse()
    forms = dict(zip(stems, every))
    forms.pop("", None)  # the words that are not content words
    return forms


# Sentences end at . ! ? followed by white space, or at a line break; a word
# right after that is capitalised by grammar, not because it names something.
# A full stop right after a title or an initial ("Mr. Smith", "U.S. Navy")
# ends no sentence.
_TITLES = frozenset(("Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Gen", "Sen", "Rep", "Gov", "Lt", "Col", "Sgt",
                     "Prof"))
# Sentence breaks: a line break, or . ! ? before white space, unless the full
# stop follows a title or a lone initial. The pattern starts at the
# punctuation, so the look-behinds only run there.
_SENTENCE_BREAK = re.compile(
    r"\n|[.!?]" + "".join(rf"(?<!\b{t}\.)" for t in sorted(_TITLES)) + r"(?<!\b[A-Z]\.)(?=\s)")


def sentences(text: str) -> list[str]:
    """The text's sentences and lines, trimmed, empty ones left out (the
    break itself, a full stop or a line break, is not kept)."""
    return texts_sentences([text])[0]


def _scanned_together(texts: list[str], what) -> list:
    """``what`` (a method of storyengine.sentence_scan.Scan) of each text
    scanned together, None for the rest: the ASCII ones, when there is
    enough of them to outweigh the scan's fixed cost."""
    out = [None] * len(texts)
    plain = [i for i, t in enumerate(texts) if t.isascii()]
    if plain and sum(len(texts[i]) for i in plain) >= _SCAN_FROM:
        for i, result in zip(plain, what(Scan([texts[i] for i in plain], _TITLES))):
            out[i] = result
    return out


_SCAN_FROM = 8192  # characters: about where a scan of texts costs less than the pattern run on each


def texts_sentences(texts: list[str]) -> list[list[str]]:
    """:func:`sentences` of each text; the ASCII ones scanned together (storyengine.sentence_scan)."""
    parts = _scanned_together(texts, Scan.sentences)
    for i, text in enumerate(texts):
        if parts[i] is None:
            parts[i] = _SENTENCE_BREAK.split(text)
    return [[part for part in map(str.strip, split) if part] for split in parts]


def first_sentence(text: str) -> str:
    """The text's first sentence (up to its full stop), by the same breaks
    :func:`entities` uses: "Mr. Smith" and "U.S. Navy" end no sentence."""
    text = text.strip()
    match = _SENTENCE_BREAK.search(text)
    return (text[:match.end()] if match else text).strip()


# Where a headline's parts meet: a colon or bar before a space ("Coronavirus:
# …", "…: Live Updates"), or a dash between spaces ("… - BBC Sport"). No
# quantifier, so it runs in linear time; "10:30" and "COVID-19" are not breaks.
_HEADLINE_BREAK = re.compile(r"[:|](?=\s)|\s[-\u2013\u2014|](?=\s)")


def headline_segments(title: str) -> list[str]:
    """A headline's parts, trimmed, empty ones left out: "The Papers: Tests
    'failure'" gives ["The Papers", "Tests 'failure'"]."""
    return [part.strip() for part in _HEADLINE_BREAK.split(title) if part.strip()]


_ENTITY_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# Capitalised by convention, not because they name who or where.
_NOT_NAMES = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday january february march april may june july "
    "august september october november december mr mrs ms dr st jr sr".split())
ENTITY_PREFIX = "e:"


def _name_of(word: str) -> str:
    if len(word) > 1 and word[0].isupper():
        name = word.casefold()
        if name not in STOPWORDS and name not in _NOT_NAMES:
            return name
    return ""


_NAME_OF = WordTest(_name_of)  # a word as written -> the name it gives ("" for none)


def entities(text: str, normalised: bool = False) -> list[str]:
    """Capitalised words that do not start a sentence: names of people,
    places and organisations, cheaply. Two outlets covering one event name
    the same ones; two similar events (two earthquakes) mostly do not."""
    # Typography first, so "Vasquez’s" and "Vasquez's" both give "vasquez".
    return texts_entities([text if normalised else normalise(text)])[0]


def texts_entities(texts: list[str]) -> list[list[str]]:
    """:func:`entities` of each of several normalised texts; the ASCII ones
    (most news) scanned together (storyengine.sentence_scan)."""
    found = _scanned_together(texts, Scan.later_capitalised)
    for i, text in enumerate(texts):
        if found[i] is None:
            found[i] = later = []
            for sentence in _SENTENCE_BREAK.split(text):
                later += _ENTITY_WORD.findall(sentence)[1:]
    return [list(filter(None, map(_NAME_OF.__getitem__, later))) for later in found]


def content_terms(title: str, body: str, title_weight: int, entity_weight: int = 0,
                  title_words: list[str] | None = None, body_words: list[str] | None = None,
                  normalised: bool = False) -> list[str]:
    """Terms for TF-IDF: headline words count ``title_weight`` times; each
    entity (see :func:`entities`) also counts ``entity_weight`` times as a
    feature of its own, prefixed ``e:``. ``title_words`` and ``body_words``
    are :func:`words` of the two, when the caller has them already;
    ``normalised`` says the title and body went through :func:`normalise`.
    One article's, as defined; storyengine.batch_terms counts a batch's."""
    title_words = words(title) if title_words is None else title_words
    body_words = words(body) if body_words is None else body_words
    terms = list(filter(None, word_stems(title_words))) * title_weight + list(filter(None, word_stems(body_words)))
    if entity_weight:
        names = [ENTITY_PREFIX + e for e in entities(f"{title}.\n{body}", normalised)]
        terms += names * entity_weight
    return terms


def canonical_url(url: str) -> str:
    """The URL two copies of one page share: lower-case scheme and host, no
    fragment, no default port, no tracking parameters, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    if parts.port and not ((scheme == "http" and parts.port == 80) or (scheme == "https" and parts.port == 443)):
        host = f"{host}:{parts.port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not (k.lower().startswith("utm_") or k.lower() in _TRACKING_PARAMS)]
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((scheme, host, path, urlencode(sorted(query)), ""))
