"""Evaluation at scale and without peeking: replicating a labelled stream
(evaluation.variants.replicate, scripts/replicate_stream.py), the topic split
(evaluation.variants.split), ``scripts/evaluate.py --split`` and
``scripts/tune.py`` on a small stream against the test Redis.

The small stream is cut from ../shared/eval/dev.jsonl and checked in
(tests/data/dev_smallest_stories.jsonl: whole stories, so every copy's
canonical article is in), 17 articles, so each run takes a second or two.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from evaluation.streams import gray_pairs, read_stream
from evaluation.variants import replicate, split, split_of, stretch, topic_of
from scripts import evaluate, replicate_stream, tune
from storyengine.settings import Settings
from storyengine.text import STOPWORDS, content_terms, words
from tests.scripts.evaluate_run import scores_from
from tests.shared_data import DEV_STREAM, require_shared

ROOT = Path(__file__).resolve().parent.parent.parent


def row(article_id: str, story: str, hours: float, title: str, body: str, duplicate_of: str | None = None) -> dict:
    published = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc) + timedelta(hours=hours)
    return {"id": article_id, "source": f"outlet-{article_id}", "url": f"https://news.example/{article_id}",
            "title": title, "body": body, "language": "en", "published_at": published.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "gold": {"story": story, "duplicate_of": duplicate_of}}


QUAKE = ("Earthquake shakes coastal province overnight",
         "A strong earthquake struck the coastal province of Merida late on Sunday, damaging bridges and houses. "
         "Rescue teams searched collapsed buildings while residents slept outside in the streets.")
ELECTION = ("Governing party loses its majority in parliament",
            "Voters punished the governing party in Sunday's election, leaving it without a majority. Opposition "
            "leaders began talks on a coalition while markets waited for a new government.")
ROWS = [
    row("q-1", "quake", 0, *QUAKE),
    row("e-1", "election", 1, *ELECTION),
    row("q-2", "quake", 2, "Reprint: earthquake shakes coastal province", QUAKE[1], duplicate_of="q-1"),
    row("e-2", "election", 5, "Coalition talks begin after the vote", ELECTION[1] + " Turnout was high."),
]
GRAY = [["q-1", "q-2"]]


def content_words(r: dict) -> set[str]:
    return set(content_terms(r["title"], r.get("body", ""), 2, 2))


def stopwords_of(r: dict) -> list[str]:
    return [w for w in words(f"{r['title']}\n{r.get('body', '')}") if w in STOPWORDS]


def write_stream(path: Path, rows: list[dict], gray: list | None = None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if gray is not None:
        path.with_suffix("").with_suffix(".meta.json").write_text(json.dumps({"gray_pairs": gray}))
    return path


# ============================================================ stretch
def test_stretch_spreads_each_story_from_its_first_article_and_keeps_time_order():
    stretched = stretch(ROWS, 3.0)
    hours = {r["id"]: (datetime.fromisoformat(r["published_at"].replace("Z", "+00:00"))
                       - datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)) / timedelta(hours=1) for r in stretched}
    # quake starts at 0 (q-2 at 2 h goes to 6 h); election starts at 1 h (e-2 at 5 h goes to 1 + 3 x 4 = 13 h)
    assert hours == {"q-1": 0, "e-1": 1, "q-2": 6, "e-2": 13}
    assert [r["id"] for r in stretched] == ["q-1", "e-1", "q-2", "e-2"]
    assert stretch(ROWS, 1.0) == ROWS
    with pytest.raises(ValueError):
        stretch(ROWS, 0.5)


def test_evaluate_stretch_option_refuses_a_factor_below_one(tmp_path, capsys):
    stream = write_stream(tmp_path / "s.jsonl", ROWS, GRAY)
    with pytest.raises(SystemExit):
        evaluate.main(["--stream", str(stream), "--stretch", "0.5"])
    assert "--stretch must be 1 or more" in capsys.readouterr().err


# ============================================================ replicate
def test_replicate_makes_copies_in_time_order_with_their_own_ids_and_labels():
    out, _ = replicate(ROWS, GRAY, 3, timedelta(hours=24))

    assert len(out) == 3 * len(ROWS)
    times = [datetime.fromisoformat(r["published_at"].replace("Z", "+00:00")) for r in out]
    assert times == sorted(times)
    assert len({r["id"] for r in out}) == len(out)
    assert len({r["url"] for r in out}) == len(out)
    by_id = {r["id"]: r for r in out}
    for original in ROWS:
        assert by_id[original["id"]] == original  # copy 0 is the stream itself
        for copy in (1, 2):
            new = by_id[f"{original['id']}~c{copy}"]
            assert new["gold"]["story"] == f"{original['gold']['story']}~c{copy}"
            dup = original["gold"]["duplicate_of"]
            assert new["gold"]["duplicate_of"] == (f"{dup}~c{copy}" if dup else None)
            shifted = (datetime.fromisoformat(original["published_at"].replace("Z", "+00:00"))
                       + timedelta(hours=24 * copy))
            assert new["published_at"] == shifted.strftime("%Y-%m-%dT%H:%M:%SZ")
            assert new["source"] == original["source"] and new["language"] == original["language"]
    # Each copy has the original's structure: the same story sizes and duplicate links.
    sizes = Counter(r["gold"]["story"] for r in out)
    assert sorted(sizes.values()) == sorted(list(Counter(r["gold"]["story"] for r in ROWS).values()) * 3)
    assert sum(1 for r in out if r["gold"]["duplicate_of"]) == 3


def test_replicate_copies_share_no_content_words_but_keep_the_stopwords():
    out, _ = replicate(ROWS, [], 3)
    by_id = {r["id"]: r for r in out}
    for original in ROWS:
        copies = [by_id[f"{original['id']}~c{c}"] for c in (1, 2)]
        for copy in copies:
            assert content_words(copy)
            assert not content_words(copy) & content_words(original)
            assert stopwords_of(copy) == stopwords_of(original)
            assert len(words(copy["body"])) == len(words(original["body"]))
        assert not content_words(copies[0]) & content_words(copies[1])
    # A reprint stays a reprint within its copy: the body is recoded the same way.
    assert by_id["q-2~c1"]["body"] == by_id["q-1~c1"]["body"]


def test_replicate_copies_share_no_alphanumeric_tokens_either():
    original = row("x-1", "tech", 0, "Browser update for IE6 users",
                   "The patch ships at 10am with the i7 build and costs $A195,900 for the IE6 fleet.")
    out, _ = replicate([original], [], 2)
    copy = next(r for r in out if r["id"] == "x-1~c1")
    assert content_words(copy) & content_words(original) == set()


def test_replicate_gray_pairs_are_replicated_for_every_copy():
    _, gray = replicate(ROWS, GRAY + [["e-1", "e-2"]], 3)
    assert gray == [["q-1", "q-2"], ["e-1", "e-2"],
                    ["q-1~c1", "q-2~c1"], ["e-1~c1", "e-2~c1"],
                    ["q-1~c2", "q-2~c2"], ["e-1~c2", "e-2~c2"]]


def test_replicate_stream_writes_the_stream_and_its_gray_pairs(tmp_path, capsys):
    stream = write_stream(tmp_path / "small.jsonl", ROWS, GRAY)
    out = tmp_path / "big.jsonl"

    assert replicate_stream.main(["--stream", str(stream), "--copies", "3", "--shift-hours", "12",
                                  "--out", str(out)]) == 0

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    expected, expected_gray = replicate(ROWS, GRAY, 3, timedelta(hours=12))
    assert rows == expected
    meta = json.loads((tmp_path / "big.meta.json").read_text())
    assert meta["articles"] == 12 and meta["copies"] == 3
    assert meta["gray_pairs"] == expected_gray
    # scripts/evaluate.py finds the gray pairs next to the stream.
    assert gray_pairs(out) == expected_gray
    assert "wrote 12 articles" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--copies", "0"], ["--copies", "-1"], ["--copies", "1001"],
                                  ["--copies", "2", "--shift-hours", "0"]])
def test_replicate_stream_rejects_bad_arguments_with_a_usage_error(tmp_path, capsys, args):
    stream = write_stream(tmp_path / "small.jsonl", ROWS)
    out = tmp_path / "big.jsonl"
    with pytest.raises(SystemExit) as exit_:
        replicate_stream.main(["--stream", str(stream), "--out", str(out), *args])
    assert exit_.value.code == 2
    assert "--" in capsys.readouterr().err
    assert not out.exists()


def test_replicate_stream_rejects_a_missing_stream(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        replicate_stream.main(["--stream", str(tmp_path / "nope.jsonl"), "--copies", "2",
                               "--out", str(tmp_path / "big.jsonl")])
    assert exit_.value.code == 2
    assert "does not exist" in capsys.readouterr().err


# ============================================================ the split
def test_ecb_topic_pairs_fall_on_one_side():
    assert topic_of("ecb-37ecb") == topic_of("ecb-37ecbplus") == "ecb-37"
    assert topic_of("ecb-3ecb") == "ecb-3" != topic_of("ecb-37ecb")
    assert topic_of("wcl-3") == "wcl-3"
    for n in range(1, 46):
        assert split_of(f"ecb-{n}ecb") == split_of(f"ecb-{n}ecbplus") in ("tune", "held-out")
    rows = [row(f"a{n}", story, n, "t", "b") for n, story in enumerate(["ecb-37ecb", "ecb-37ecbplus"])]
    assert split(rows, split_of("ecb-37ecb")) == rows
    assert split(rows, "held-out" if split_of("ecb-37ecb") == "tune" else "tune") == []


def test_split_of_is_fixed_by_the_topic():
    assert {split_of("wcl-3") for _ in range(3)} == {split_of("wcl-3")}
    halves = Counter(split_of(f"wcl-{n}") for n in range(200))
    assert set(halves) == {"tune", "held-out"} and min(halves.values()) > 50


def test_the_two_halves_of_the_dev_stream_partition_it_by_topic():
    rows = read_stream(require_shared(DEV_STREAM))
    tune_half, held_out = split(rows, "tune"), split(rows, "held-out")
    assert tune_half and held_out
    assert len(tune_half) + len(held_out) == len(rows)
    assert {r["id"] for r in tune_half}.isdisjoint({r["id"] for r in held_out})
    # Each half keeps stream order.
    position = {r["id"]: n for n, r in enumerate(rows)}
    for half in (tune_half, held_out):
        assert [position[r["id"]] for r in half] == sorted(position[r["id"]] for r in half)
    sides = defaultdict(set)
    for half, name in ((tune_half, "tune"), (held_out, "held-out")):
        for r in half:
            sides[topic_of(r["gold"]["story"])].add(name)
    assert all(len(s) == 1 for s in sides.values())
    # The ECB+ topics really do pair two events, and both land on one side.
    paired = [t for t in sides if t.startswith("ecb-")
              and {r["gold"]["story"] for r in rows if topic_of(r["gold"]["story"]) == t} >= {t + "ecb",
                                                                                            t + "ecbplus"}]
    assert paired


# ============================================================ evaluate --split, tune.py
@pytest.fixture
def small_dev() -> Path:
    """17 lines of dev.jsonl, checked in: the two smallest stories of each half, in stream order."""
    return ROOT / "tests" / "data" / "dev_smallest_stories.jsonl"


@pytest.fixture
def engine_redis_url(monkeypatch, redis_url):
    """scripts/evaluate.py runs against REDIS_URL when it is set (each run under a throwaway prefix)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_url


@pytest.mark.parametrize("half", ["tune", "held-out"])
def test_evaluate_scores_one_half_of_a_labelled_stream(small_dev, engine_redis_url, redis_client, tmp_path,
                                                        capsys, half):
    keys_before = set(redis_client.scan_iter(match="{sw-eval-*", count=1000))
    out = tmp_path / "pred.jsonl"

    assert evaluate.main(["--stream", str(small_dev), "--split", half, "--out", str(out),
                          "--repair-every", "5"]) == 0

    stdout = capsys.readouterr().out
    expected = split(read_stream(small_dev), half)
    assert stdout.startswith(f"{len(expected)} articles in ")
    scores = scores_from(stdout)
    assert scores["articles"] == len(expected)
    for name in ("bcubed_precision", "bcubed_recall", "bcubed_f1", "duplicate_f1"):
        assert 0.0 <= scores[name] <= 1.0
    assert scores["bcubed_f1"] > 0.5
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in predictions] == [r["id"] for r in expected]
    assert all(set(p) == {"id", "story", "duplicate_of"} and p["story"] for p in predictions)
    # Copies name their canonical article by the stream's id (the engine's own ids are scoped by outlet).
    assert {p["duplicate_of"] for p in predictions} - {None} <= {r["id"] for r in expected}
    # The run cleared its own keys.
    assert set(redis_client.scan_iter(match="{sw-eval-*", count=1000)) == keys_before


def test_evaluate_refuses_to_split_an_unlabelled_stream(tmp_path, engine_redis_url, capsys):
    unlabelled = [{k: v for k, v in r.items() if k != "gold"} for r in ROWS]
    stream = write_stream(tmp_path / "unlabelled.jsonl", unlabelled)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--stream", str(stream), "--split", "tune"])
    assert exit_.value.code == 2
    assert "labelled" in capsys.readouterr().err


def test_evaluate_rejects_an_unknown_half(tmp_path, capsys):
    stream = write_stream(tmp_path / "small.jsonl", ROWS)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--stream", str(stream), "--split", "everything"])
    assert exit_.value.code == 2


def test_tune_picks_the_best_on_one_half_and_reports_both(small_dev, engine_redis_url, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.setattr(tune, "GRID", {"story_threshold": (0.16, 0.3), "time_sigma_hours": (36.0,)})
    out = tmp_path / "results.json"

    assert tune.main(["--stream", str(small_dev), "--out", str(out)]) == 0

    results = json.loads(out.read_text())
    rows = read_stream(small_dev)
    assert results["articles"] == {"tune": len(split(rows, "tune")), "held-out": len(split(rows, "held-out"))}
    assert [r["settings"] for r in results["grid"]] == [{"story_threshold": 0.16, "time_sigma_hours": 36.0},
                                                        {"story_threshold": 0.3, "time_sigma_hours": 36.0}]
    best = max(results["grid"], key=lambda r: r["tune"]["bcubed_f1"])
    assert results["best"]["settings"] == best["settings"]
    assert results["best"]["tune"] == best["tune"]
    assert results["defaults"]["settings"] == {"story_threshold": Settings().story_threshold, "time_sigma_hours": 36.0}
    assert results["defaults"]["tune"] == results["grid"][0]["tune"]
    for name in ("best", "defaults"):
        for half in ("tune", "held-out"):
            scores = results[name][half]
            assert set(scores) == set(tune.REPORTED)
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    # Defaults and best on the held-out half are the same run when the defaults win.
    if results["best"]["settings"] == results["defaults"]["settings"]:
        assert results["best"]["held-out"] == results["defaults"]["held-out"]
    stdout = capsys.readouterr().out
    assert "held-out" in stdout and "story_threshold=0.3" in stdout


def test_tune_refuses_an_unlabelled_stream(tmp_path, capsys):
    stream = write_stream(tmp_path / "unlabelled.jsonl", [{k: v for k, v in r.items() if k != "gold"} for r in ROWS])
    with pytest.raises(SystemExit) as exit_:
        tune.main(["--stream", str(stream)])
    assert exit_.value.code == 2
    assert "labelled" in capsys.readouterr().err
