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


def test_an_untitled_item_joins_its_story_and_never_names_it(store):
    # Real coverage of one earthquake (tests/data/two_events.jsonl): one titled write-up, then another
    # outlet's item that came with a description alone.
    import json
    from pathlib import Path

    from storyengine.decider import Decider

    rows = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "two_events.jsonl").open()]
    originals = [r for r in rows if not r["gold"]["duplicate_of"]]
    first = originals[0]
    second = next(r for r in originals[1:] if r["gold"]["story"] == first["gold"]["story"])
    records = [new_article_record(source=r["source"], url=r["url"], title=r["title"], body=r["body"],
                                  published_at=datetime.fromisoformat(r["published_at"].replace("Z", "+00:00")),
                                  article_id=f"a{n}")
               for n, r in enumerate(originals) if r is not second]
    when = datetime.fromisoformat(second["published_at"].replace("Z", "+00:00"))
    untitled = new_article_record(source="b.example", url="https://b.example/2", title="",
                                  body=" ".join(second["body"].split()[:40]), published_at=when, article_id="untitled")
    store.accept_articles(records + [untitled])
    outcomes = Decider(store).process_many([r["id"] for r in records] + ["untitled"])
    assert outcomes[-1].story_id == outcomes[0].story_id
    assert store.get_story(outcomes[0].story_id)["headline"] != untitled["title"]
