"""Items without a title: RSS allows a description alone."""
from datetime import datetime, timezone

import pytest

from storyengine.articles import DERIVED_HEADLINE_CHARS, derived_headline, new_article_record
from storyengine.errors import InvalidArticle

WHEN = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def record(title: str, body: str) -> dict:
    return new_article_record(source="example.com", url="https://example.com/x", title=title, body=body,
                              published_at=WHEN)


def test_the_headline_is_the_first_sentence():
    assert derived_headline("Rail strike ends after pay deal. Unions voted on Sunday.") == \
        "Rail strike ends after pay deal."


def test_a_first_line_without_a_full_stop_is_the_headline():
    assert derived_headline("Live: storm Ciara reaches the coast\nMore updates follow.") == \
        "Live: storm Ciara reaches the coast"


def test_a_long_sentence_is_cut_at_a_word():
    body = "The regional council said on Tuesday " + "that it would review the plans " * 10 + "again."
    headline = derived_headline(body)
    assert len(headline) <= DERIVED_HEADLINE_CHARS
    assert headline.endswith("\u2026")
    assert body.startswith(headline[:-1])
    assert body[len(headline) - 1] == " "  # cut between words, not inside one


def test_abbreviations_shorter_than_the_limit_are_kept_whole():
    assert derived_headline("U.S. stocks rose") == "U.S. stocks rose"


def test_an_untitled_record_has_a_derived_headline_and_says_so():
    r = record("", "<p>Firefighters contained a blaze at a paper mill. No one was hurt.</p>")
    assert r["title"] == "Firefighters contained a blaze at a paper mill."
    assert r["title_derived"] == "1"
    assert "title_derived" not in record("A title", "A body.")


@pytest.mark.parametrize("title,body", [("", ""), ("  ", "\n"), ("<b></b>", "<script>x()</script>")])
def test_neither_title_nor_body_is_refused(title, body):
    with pytest.raises(InvalidArticle, match="title and body"):
        record(title, body)
