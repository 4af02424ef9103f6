"""Text handling: HTML to text, folding, tokens, entities, content terms, canonical URLs."""
from __future__ import annotations

import pytest

from storyengine.text import (ENTITY_PREFIX, canonical_url, clean_text, content_terms, entities, fold, html_to_text,
                              looks_like_html, readable_forms, words)

PAGE = """<!doctype html>
<html>
  <head><title>Page title is not body text</title>
    <style>p { color: red; } .ad { display: none }</style>
    <script>window.tracker = "do not index me";</script>
  </head>
  <body>
    <script type="text/javascript">var adSlot = "ad-slot-42";</script>
    <p>The council approved the new budget on Monday.</p>
    <p>Spending on <b>public transport</b> rises by a fifth.</p>
    <noscript>Enable JavaScript to see comments</noscript>
    <style>.hidden { display: none }</style>
  </body>
</html>"""


# ---------------------------------------------------------------- HTML
def test_html_to_text_keeps_paragraphs_one_per_line_and_drops_script_and_style():
    text = html_to_text(PAGE)
    assert text.splitlines() == [
        "The council approved the new budget on Monday.",
        "Spending on public transport rises by a fifth.",
    ]
    for hidden in ("tracker", "adSlot", "color", "display", "JavaScript", "Page title"):
        assert hidden not in text


def test_html_to_text_puts_block_elements_on_their_own_lines():
    html = "<div>Intro<br>line two</div><ul><li>one</li><li>two</li></ul><h2>Heading</h2>"
    assert html_to_text(html).splitlines() == ["Intro", "line two", "one", "two", "Heading"]


def test_clean_text_reduces_html_and_decodes_entities():
    assert clean_text("<p>Profits &amp; losses</p><p>Second&nbsp;line</p>") == "Profits & losses\nSecond line"


@pytest.mark.parametrize("plain", [
    "Inflation stayed < 3 percent for the whole year.",
    "Scores: a<b, and 4 < 5; x <= y",
    "Turnout was <50% in the north.",
])
def test_plain_text_with_a_stray_less_than_is_untouched(plain):
    assert not looks_like_html(plain)
    assert clean_text(plain) == plain


def test_clean_text_removes_control_characters_and_trims():
    assert clean_text("  first\x00second\x1bthird \n") == "first second third"


def test_plain_wire_text_with_a_ticker_in_angle_brackets_keeps_the_ticker():
    plain = "Apple Inc <AAPL.O> said on Tuesday it would buy back more shares."
    assert clean_text(plain) == plain


# ---------------------------------------------------------------- folding and words
def test_fold_folds_curly_quotes_dashes_ellipsis_and_case():
    assert fold("\u201cIt\u2019s OVER\u201d \u2014 Minister\u2026") == "\"it's over\" - minister..."


def test_fold_folds_compatibility_forms_and_sharp_s():
    # NFKC turns the "fi" ligature into two letters; casefold turns sharp s into "ss".
    assert fold("\ufb01nal Stra\u00dfe\u00a0NOW") == "final strasse now"


def test_words_are_folded_and_split_on_punctuation_and_underscores():
    assert words("Don\u2019t stop_me NOW, 3rd-place finish!") == ["don", "t", "stop", "me", "now", "3rd", "place",
                                                                "finish"]


def test_words_of_typographic_variants_are_equal():
    assert words("\u201cThe Mayor\u2019s plan\u201d \u2013 approved") == words('"the mayor\'s PLAN" - approved')


# ---------------------------------------------------------------- content terms
def test_content_terms_weight_the_title_and_drop_stopwords_digits_and_single_letters():
    terms = content_terms("Mayor Wins Vote", "The mayor said 2024 was a year of 3 votes and x won.", title_weight=2)
    assert terms == ["mayor", "win", "vote", "mayor", "win", "vote", "mayor", "vote", "won"]


def test_content_terms_count_each_word_by_its_stem_and_show_the_shortest_form():
    forms = content_terms("Trump suspends immigration", "Suspending immigrants; to suspend immigration.",
                          title_weight=1)
    assert forms == ["trump", "suspend", "immigr", "suspend", "immigr", "suspend", "immigr"]
    title, body = words("Trump suspends immigration"), words("Suspending immigrants; to suspend immigration.")
    assert readable_forms(title, body) == {"trump": "trump", "suspend": "suspends", "immigr": "immigration"}


def test_content_terms_title_weight_three_repeats_title_terms_three_times():
    terms = content_terms("Harbour strike", "Dockers walk out.", title_weight=3)
    assert terms.count("harbour") == 3
    assert terms.count("strike") == 3
    assert terms[-2:] == ["docker", "walk"]  # "out" is a stopword


def test_content_terms_keep_alphanumeric_words_but_not_pure_numbers():
    assert content_terms("", "Covid19 cases 1500 in 2021, G7 summit", title_weight=2) == [
        "covid19", "case", "g7", "summit"]


# ---------------------------------------------------------------- entities
def test_entities_skip_the_capitalised_first_word_of_every_sentence():
    text = ("Rescuers reached the village on foot. Officials in Velmora said roads were closed! "
            "Would help come? Volunteers from Arlen arrived at dawn.\nWater levels fell overnight")
    assert entities(text) == ["velmora", "arlen"]


def test_entities_find_names_of_people_places_and_organisations_mid_sentence():
    text = ("Fire chief Elena Vasquez said twelve workers from Marrow Chemicals were taken to Halden General "
            "Hospital. The blaze was watched from across the Kessel River.")
    assert entities(text) == ["elena", "vasquez", "marrow", "chemicals", "halden", "general", "hospital",
                              "kessel", "river"]


def test_entities_skip_stopwords_single_letters_digits_and_lowercase_words():
    text = "Residents said The Council and A Team met at 9 on Tuesday, after An outage in Ostbury."
    # "The", "A" and "An" are stopwords, however they are written; "9" is no word.
    assert entities(text) == ["council", "team", "ostbury"]  # weekdays name no one


def test_entities_skip_the_first_word_of_a_quotation_and_of_a_short_exclamation():
    text = '"We are ready," said Anna Kowalski of the Red Cross. Really! Berlin agreed, and so did Rome.'
    # "We" opens the quoted sentence; "Berlin" opens a sentence after "Really!".
    assert entities(text) == ["anna", "kowalski", "red", "cross", "rome"]


def test_entities_in_a_headline_are_the_capitalised_words_after_its_first():
    assert entities("Fire at Marrow Chemicals plant in Port Halden forces evacuation") == [
        "marrow", "chemicals", "port", "halden"]
    assert entities("Ostbury Rovers sack manager Declan Moyes after cup exit") == [
        "rovers", "declan", "moyes"]


def test_entities_are_folded():
    assert entities("Crowds cheered in Z\u00fcrich and STRASSE Stra\u00dfe.") == ["z\u00fcrich", "strasse", "strasse"]
    assert entities("") == []
    assert entities("all lowercase text here. nothing to see") == []


def test_entities_of_a_possessive_name_do_not_depend_on_the_apostrophe():
    straight = entities("Officials said Vasquez's crew worked through the night.")
    curly = entities("Officials said Vasquez\u2019s crew worked through the night.")
    assert straight == curly
    assert straight == entities("Officials said Vasquez and the crew worked through the night.") == ["vasquez"]


def test_content_terms_append_entities_as_prefixed_features_entity_weight_times():
    title, body = "Floods hit Velmora", "Rescuers in Velmora met Anna Kowalski. Rain fell again."
    plain = content_terms(title, body, title_weight=2)
    assert plain == ["flood", "hit", "velmora"] * 2 + ["rescuer", "velmora", "met", "anna", "kowalski", "rain",
                                                       "fell"]
    assert content_terms(title, body, title_weight=2, entity_weight=0) == plain
    weighted = content_terms(title, body, title_weight=2, entity_weight=2)
    assert weighted[:len(plain)] == plain
    # The headline's entities (after its first word) come first, then the body's, each list twice.
    names = ["velmora", "velmora", "anna", "kowalski"]
    assert weighted[len(plain):] == [ENTITY_PREFIX + n for n in names] * 2
    assert weighted.count("e:velmora") == 4
    assert ENTITY_PREFIX == "e:"


def test_content_terms_first_word_of_the_body_is_not_an_entity_even_after_the_headline():
    # The headline ends its own sentence, so the body's first word still opens one.
    terms = content_terms("Harbour strike", "Dockers in Kilbride walk out.", title_weight=1, entity_weight=1)
    assert [t for t in terms if t.startswith(ENTITY_PREFIX)] == ["e:kilbride"]


# ---------------------------------------------------------------- canonical URLs
def test_canonical_url_lowercases_host_drops_fragment_tracking_default_port_and_slash():
    url = "HTTPS://WWW.Example.COM:443/News/Story/?utm_source=tw&b=2&a=1&utm_Medium=x&fbclid=zz#comments"
    # Path case is kept: paths are case-sensitive.
    assert canonical_url(url) == "https://www.example.com/News/Story?a=1&b=2"


def test_canonical_url_copies_of_one_page_agree():
    variants = [
        "http://news.example.org/world/quake-2024",
        "http://NEWS.example.org:80/world/quake-2024/",
        "http://news.example.org/world/quake-2024#top",
        "http://news.example.org/world/quake-2024?utm_campaign=rss&utm_source=feed",
        " http://news.example.org/world/quake-2024/?gclid=abc ",
    ]
    assert {canonical_url(v) for v in variants} == {"http://news.example.org/world/quake-2024"}


def test_canonical_url_keeps_non_default_port_and_other_params_sorted():
    assert canonical_url("http://Example.com:8080/a/?z=1&id=7&page=2") == "http://example.com:8080/a?id=7&page=2&z=1"


def test_canonical_url_keeps_blank_params_and_distinguishes_different_pages():
    assert canonical_url("https://example.com/a?b=&a=1") == "https://example.com/a?a=1&b="
    assert canonical_url("https://example.com/story?id=1") != canonical_url("https://example.com/story?id=2")


def test_canonical_url_of_bare_host_is_root_path():
    assert canonical_url("https://Example.com") == "https://example.com/"
    assert canonical_url("https://example.com/") == "https://example.com/"


def test_canonical_url_keeps_ipv6_brackets():
    assert canonical_url("http://[::1]:8080/a") == "http://[::1]:8080/a"
    assert canonical_url("http://[::1]:8080/a") != canonical_url("http://[::1:8080]/a")


# ---------------------------------------------------------------- the ASCII fast paths
def test_words_and_entities_of_ascii_text_equal_the_unicode_patterns():
    # ASCII text is split by a byte table, anything else by the regexes: the
    # two must agree wherever both apply.
    import random

    from storyengine import text as T

    rng = random.Random(5)
    alphabet = list("aAbBzZ09 .!?\n\t\r'\"_-,;:()") + ["Mr. ", "U.", "Dr ", "St. ", "The ", "Paris ", "\x0b", "\x1c"]
    for _ in range(3000):
        sample = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert T.words(sample) == T._WORD.findall(T.fold(sample))
        by_regex = []
        for sentence in T._SENTENCE_BREAK.split(sample):
            by_regex += T._ENTITY_WORD.findall(sentence)[1:]
        assert T.entities(sample) == list(filter(None, map(T._NAME_OF.__getitem__, by_regex)))


def test_normalise_leaves_ascii_alone_and_folds_typography_elsewhere():
    from storyengine.text import normalise

    assert normalise("Plain 'ASCII' - text...") == "Plain 'ASCII' - text..."
    assert normalise("\u201cIt\u2019s\u201d \u2014 done\u2026\u00a0\ufb01n") == '"It\'s" - done... fin'


def test_the_address_hint_finds_www_in_any_case_without_lower_casing_the_text():
    # One pattern anchored on ".": the same texts as "www." in the lower-cased
    # text, or a "." and a top-level domain, would say may hold an address.
    import random
    import re

    from storyengine import text as T

    domain = re.compile(rf"\.(?:{T._TLDS})\b", re.IGNORECASE)
    rng = random.Random(7)
    alphabet = list("wW. x:/@") + ["www.", "WWW.", "wWw.", "ww.", ".com", ".Co", ".co.uk", ".comx", "\u0130", "\u212a"]
    for _ in range(5000):
        sample = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        expected = "://" in sample or "@" in sample or "www." in sample.lower() or domain.search(sample) is not None
        assert T._may_hold_address(sample) == expected, sample
