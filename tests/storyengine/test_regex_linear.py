"""Every regular expression in storyengine/ and service/ runs in linear time.

Python's ``re`` backtracks: two quantifiers next to each other that accept the
same characters try every split of a run between them, and a pattern that
fails at the end of a long run tries again from each of its characters. A
body may hold 200,000 characters (the API's limit), so one such pattern turns
a request into minutes of CPU.

Each pattern is run on the worst inputs known for it (long runs of what
overlapping quantifiers both accept, terminators missing) at 1k to 256k
characters. Time may grow with the size (4x for 4x the characters) but not
with its square (16x), and no run may take a second. The sizes grow 4x at a
time and stop at the first run over the budget, so a quadratic pattern fails
in seconds, not minutes. A last test checks that every pattern of the two
packages is listed here, so a new one comes with its worst case.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pydantic
import pytest

import service
import storyengine
from service import config, logs, openapi, schemas, stories
from evaluation import variants
from storyengine import articles, text
from storyengine.boilerplate import Edges, sentence_digest

ROOT = Path(__file__).resolve().parent.parent.parent
SIZES = (1_000, 4_000, 16_000, 64_000, 256_000)
BUDGET = 1.0          # seconds for one run at any size; linear patterns take under 0.2 s at 256k
MAX_GROWTH = 8.0      # time at 4n over time at n: 4 when linear, 16 when quadratic
MEASURABLE = 0.002    # seconds; shorter times are too noisy to compare


def seconds(run: Callable[[str], object], text_: str) -> float:
    """CPU seconds of the best of three runs (one, when it already took longer
    than the budget). CPU time, not wall time: on a busy machine a long run is
    preempted more often than a short one, and wall time would call that growth."""
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        run(text_)
        best = min(best, time.thread_time() - start)
        if best > BUDGET:
            break
    return best


def assert_linear(run: Callable[[str], object], make: Callable[[int], str]) -> None:
    times: list[tuple[int, float]] = []
    for n in SIZES:
        text_ = make(n)
        times.append((len(text_), seconds(run, text_)))
        shown = ", ".join(f"{size:,} chars {t * 1000:.1f} ms" for size, t in times)
        assert times[-1][1] <= BUDGET, f"over {BUDGET} s: {shown}"
        if len(times) > 1 and times[-2][1] >= MEASURABLE:
            growth = times[-1][1] / times[-2][1]
            assert growth <= MAX_GROWTH, f"{growth:.1f}x the time for 4x the characters (quadratic?): {shown}"
    assert times[-1][0] >= 200_000, "the largest input must be at least the API's 200,000 characters"


def repeat(unit: str, prefix: str = "", suffix: str = "") -> Callable[[int], str]:
    """An input of about n characters: prefix, unit repeated, suffix."""
    return lambda n: prefix + unit * max(1, (n - len(prefix) - len(suffix)) // len(unit)) + suffix


def used_as(pattern: re.Pattern, method: str) -> Callable[[str], object]:
    """The pattern run as the code runs it: "sub" replaces every match (so it
    tries every start, the worst a search can meet), the others are the methods."""
    return (lambda s: pattern.sub("", s)) if method == "sub" else getattr(pattern, method)


# ---------------------------------------------------------------- worst cases
# pattern -> (the method the code calls, {what the input is: how to make it}).
WORST_CASES: dict[re.Pattern, tuple[str, dict[str, Callable[[int], str]]]] = {
    text._TAG: ("sub", {  # search in looks_like_html, sub in clean_text
        "'<a' and spaces, no '>' (the reported case)": repeat(" ", "<a"),
        "'<' and spaces, no element": repeat(" ", "<"),
        "'< /' and spaces": repeat(" ", "< /"),
        "'</' between spaces": repeat(" ", "<", "/"),
        "'<a' then ' /' pairs, no '>'": repeat(" /", "<a"),
        "'<a' then tabs and slashes": repeat("\t/\t", "<a"),
        "'<a/' and spaces": repeat(" ", "<a/"),
        "many '<a ' without '>'": repeat("<a "),
        "many '< / a' without '>'": repeat("< / a "),
        "many '<br/' without '>'": repeat("<br/"),
        "'<!doctyp' repeated": repeat("<!doctyp"),
        "'<!-' repeated": repeat("<!-"),
        "'<' repeated": repeat("<"),
    }),
    text._TYPOGRAPHIC: ("sub", {"curly quotes": repeat("\u2019"), "no typography": repeat("x")}),
    text._WORD: ("findall", {"one long word": repeat("é"), "words and underscores": repeat("é_")}),
    text._CONTROL: ("sub", {"control characters": repeat("\x00"), "none": repeat("a")}),
    text._DOMAIN: ("fullmatch", {  # one white-space token, as _address checks it
        "'a.' repeated, no TLD": repeat("a."),
        "'co.' repeated, then no TLD": repeat("co.", suffix="x"),
        "'com.' repeated, then a bad path": repeat("com.", suffix="comx"),
        "letters, no dot": repeat("a"),
        "hyphens and dots": repeat("-.-"),
        "a domain and a long path": repeat("a", "example.com/"),
    }),
    text._ADDRESS_LIKE: ("findall", {"one long token": repeat("a"), "'.co' repeated": repeat(".co"),
                                     "'w' repeated": repeat("w"), "short tokens": repeat("a.b "),
                                     "'ww.' repeated": repeat("ww."), "':/' repeated": repeat(":/")}),
    text._DOMAIN_HINT: ("sub", {"'.co' repeated": repeat(".co"), "'.comx' repeated": repeat(".comx"),
                                      "dots": repeat(".")}),
    text._SENTENCE_BREAK: ("split", {
        "titles": repeat("Mr. "), "initials": repeat("A. "), "full stops": repeat("."),
        "line breaks": repeat("\n"), "no break": repeat("x"), "'!?' and spaces": repeat("!? "),
    }),
    text._HEADLINE_BREAK: ("split", {
        "colons": repeat(":"), "' - ' repeated": repeat(" - "), "spaces": repeat(" "), "': ' repeated": repeat(": "),
    }),
    text._ENTITY_WORD: ("findall", {"one long word": repeat("É"), "digits": repeat("1")}),
    variants._LATIN_WORD: ("sub", {
        "digits only": repeat("1"), "digits, then a letter": repeat("1", suffix="a"), "letters": repeat("a"),
    }),
    articles.CLIENT_ID: ("match", {"too long": repeat("a"), "a bad character after 127": repeat("a", "a" * 127, "!")}),
    config._TOKEN: ("match", {"letters then '!'": repeat("a", suffix="!"),
                                        "'=' padding then '!'": repeat("=", "a" * 16, "!"),
                                        "'=' and letters alternating": repeat("=a", "a" * 16)}),
    schemas._LANGUAGE: ("match", {"subtags then '!'": repeat("-abcdefgh", "en", "!"),
                                            "short subtags then '!'": repeat("-a1", "en", "!"),
                                            "one long subtag": repeat("a", "en-")}),
    schemas._CONTROL: ("search", {"no control character": repeat("a")}),
    schemas._WHITESPACE_OR_CONTROL: ("search", {"no white space": repeat("a")}),
    stories._STORY_ID: ("match", {"too many hex digits": repeat("0", "st_")}),
    openapi._RULE_ARGUMENT: ("sub", {"'<' and 'a:' without '>'": repeat("a:", "<"),
                                           "many '<a'": repeat("<a"), "'<' and letters": repeat("a", "<"),
                                           "'<' repeated": repeat("<")}),
    logs._REQUEST_ID: ("match", {"too long": repeat("a", suffix="!")}),
}

# Patterns known to be quadratic on one of their inputs, with the reason and
# the fix: each is an expected failure until fixed (none now).
OPEN: dict[tuple[re.Pattern, str], str] = {}

# Every module of the two packages: where patterns are looked for.
MODULES = [importlib.import_module(info.name) for package in (storyengine, service)
           for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def pattern_name(pattern: re.Pattern) -> str:
    for module in MODULES:
        for name, value in vars(module).items():
            if value is pattern:
                return f"{module.__name__}.{name}"
    return pattern.pattern


def case(pattern: re.Pattern, method: str, label: str, make: Callable[[int], str]):
    known = OPEN.get((pattern, label))
    return pytest.param(used_as(pattern, method), make, id=f"{pattern_name(pattern)}: {label}",
                        marks=[pytest.mark.xfail(strict=True, reason=known)] if known else [])


CASES = [case(pattern, method, label, make)
         for pattern, (method, inputs) in WORST_CASES.items() for label, make in inputs.items()]


@pytest.mark.parametrize("run,make", CASES)
def test_pattern_is_linear_on_its_worst_input(run, make):
    assert_linear(run, make)


# ---------------------------------------------------------------- the functions that use them
BODIES = {
    "'<a' and spaces": repeat(" ", "<a"),
    "'<' and spaces": repeat(" ", "<"),
    "unclosed tags": repeat("<a <b "),
    "escaped markup": repeat("&lt;a&gt;"),
    "titles": repeat("Mr. Smith "),
    "'a.' as one token": repeat("a."),
    "domains": repeat("see a.co.uk x "),
}


@pytest.mark.parametrize("name,function", [
    ("clean_text", text.clean_text), ("looks_like_html", text.looks_like_html),
    ("addresses_in", text.addresses_in), ("without_addresses", text.without_addresses),
    ("sentences", text.sentences), ("first_sentence", text.first_sentence), ("entities", text.entities),
    ("words", text.words), ("sentence_digest", sentence_digest), ("Edges", lambda s: Edges(s, 3, 40)),
])
@pytest.mark.parametrize("body", BODIES)
def test_text_functions_are_linear_on_hostile_bodies(name, function, body):
    assert_linear(function, BODIES[body])


ARTICLE = {"source": "example.com", "url": "https://example.com/a", "title": "A title", "body": "A body."}
HOSTILE_FIELDS = {
    "source": repeat("a"), "title": repeat("<a "), "body": repeat(" ", "<a"), "url": repeat("a", "https://a.com/"),
    "published_at": repeat("0", "2026-03-02T11:27:47"), "id": repeat("a", suffix="!"),
    "language": repeat("-abcdefgh", "en", "!"),
}


def validated(model: type[pydantic.BaseModel], data: dict) -> None:
    try:
        model.model_validate(data, context={"max_body_chars": 200_000})
    except pydantic.ValidationError:
        pass  # refused is an answer too; only the time counts here


@pytest.mark.parametrize("field", HOSTILE_FIELDS)
def test_article_validators_are_linear(field):
    assert_linear(lambda value: validated(schemas.ArticleIn, dict(ARTICLE, **{field: value})), HOSTILE_FIELDS[field])


@pytest.mark.parametrize("field", ["since", "until"])
def test_stories_query_validators_are_linear(field):
    assert_linear(lambda value: validated(schemas.StoriesQuery, {field: value}), repeat("0", "2026-03-02T11:27:47"))


# ---------------------------------------------------------------- every pattern has its worst case
def test_every_pattern_in_storyengine_and_service_has_a_worst_case_here():
    compiled = {id(v): f"{m.__name__}.{n}" for m in MODULES for n, v in vars(m).items() if isinstance(v, re.Pattern)}
    listed = {id(p) for p in WORST_CASES}
    missing = sorted(name for key, name in compiled.items() if key not in listed)
    assert not missing, f"add the worst input of each to WORST_CASES: {missing}"


RE_CALLS = {"compile", "sub", "subn", "search", "match", "fullmatch", "findall", "finditer", "split"}


def test_no_pattern_is_compiled_or_used_outside_a_module_level_name():
    """re.search(r"...", s) inside a function would escape the list above: every
    pattern is a module-level re.compile, named, and has its worst case here."""
    found = []
    for package in ("storyengine", "service"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            module_level = {id(node.value) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))}
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                        and node.func.attr in RE_CALLS
                        and not (node.func.attr == "compile" and id(node) in module_level)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} re.{node.func.attr}")
    assert not found, f"compile these once, at module level, and list their worst inputs here: {found}"


# ---------------------------------------------------------------- the HTML check, rewritten, means what it meant
# The tag pattern as it was before it was made linear: the rewrite must match
# exactly the same spans on every input (only slowly on long runs of spaces).
_TAG_BEFORE = re.compile(rf"<\s*/?\s*(?:{text._HTML_ELEMENTS})(?:\s[^<>]*)?/?\s*>|<!--|<!doctype", re.IGNORECASE)


def test_tag_pattern_matches_what_it_matched_before():
    pieces = ["<", ">", "/", " ", "\t", "\n", "a", "b", "br", "h1", "h7", "P", "DIV", "x", "=", '"', "!", "--",
              "!--", "!doctype", "!DOCTYPE", "abbr", "img", "<a", "</", "/>"]
    rng = random.Random(20261205)
    samples = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(100_000)]
    samples += ["<a>", "<a >", "<a/>", "<a />", "< a>", "</ a>", "< / a >", "<a href='x'>", "<a\nhref=x\n>",
                "<br/ >", "<br / >", "<a/x>", "<ax>", "x<y and y>z", "Apple Inc <AAPL.O>", "<!-- c -->",
                "<!DocType html>"]
    for sample in samples:
        assert ([m.span() for m in text._TAG.finditer(sample)]
                == [m.span() for m in _TAG_BEFORE.finditer(sample)]), repr(sample)
