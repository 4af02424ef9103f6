"""`make eval-all` (scripts/eval_all.py): the shared streams and their short-item
variants scored in one run, against one Redis, printed as one Markdown table."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from evaluation.streams import DEFAULT_STREAM
from evaluation.variants import split, stretch
from scripts import eval_all
from tests.scripts.decade_stream import decade_stream
from tests.scripts.evaluate_run import sent_records

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = ROOT / "tests" / "data" / "two_events.jsonl"
ROWS = ["dev", "dev, 30 words", "dev, headlines only", "dev, 30 words, stories x3 longer",
        "dev, headlines only, stories x3 longer", "feeds-dev"]
COLUMNS = ["stream", "articles", "B-cubed P", "B-cubed R", "B-cubed F1", "ARI", "AMI", "NMI", "dup P", "dup R",
           "dup F1", "seconds"]
DUPLICATE_COLUMNS = ["dup P", "dup R", "dup F1"]


def write_stream(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def small_rows() -> list[dict]:
    return [json.loads(line) for line in SMALL.read_text(encoding="utf-8").splitlines()]


def without_duplicates(rows: list[dict]) -> list[dict]:
    """The rows with no gold duplicate (the copies left as articles of their story)."""
    return [dict(r, gold=dict(r["gold"], duplicate_of=None)) for r in rows]


def table_of(stdout: str) -> list[dict[str, str]]:
    """The Markdown table in the output, as one dict per row."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(lines) >= 2, stdout
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    header, rule, body = cells[0], cells[1], cells[2:]
    assert all(set(c) == {"-"} for c in rule), lines[1]
    assert all(len(row) == len(header) for row in body), lines
    return [dict(zip(header, row)) for row in body]


@pytest.fixture
def engine_redis_url(monkeypatch, redis_url):
    """The runs use REDIS_URL when it is set (each under a throwaway prefix)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    return redis_url


@pytest.fixture
def redis_entries(monkeypatch):
    """How many times eval_all started (or connected to) its Redis."""
    entered = []
    real = eval_all.engine_redis

    @contextlib.contextmanager
    def counted():
        entered.append(1)
        with real() as url:
            yield url

    monkeypatch.setattr(eval_all, "engine_redis", counted)
    return entered


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """Every row the engine was given, in order, across the runs."""
    return sent_records(monkeypatch)


def test_one_table_of_every_variant_with_na_where_a_stream_has_no_duplicates(tmp_path, engine_redis_url,
                                                                               redis_entries, sent, capsys):
    rows = small_rows()
    assert any(r["gold"]["duplicate_of"] for r in rows)
    dev = write_stream(tmp_path / "dev.jsonl", rows)
    feeds = write_stream(tmp_path / "feeds.jsonl", without_duplicates(rows))
    out = tmp_path / "table.json"

    assert eval_all.main(["--dev", str(dev), "--feeds", str(feeds), "--out", str(out)]) == 0

    stdout = capsys.readouterr().out
    table = table_of(stdout)
    assert list(table[0]) == COLUMNS
    assert [r["stream"] for r in table] == ROWS
    by_name = {r["stream"]: r for r in table}
    for name in ROWS:
        assert by_name[name]["articles"] == str(len(rows))
        assert float(by_name[name]["seconds"]) >= 0.0
        for column in COLUMNS[2:8]:
            assert 0.0 <= float(by_name[name][column]) <= 1.0 + 1e-9, (name, column, stdout)
    for name in ROWS[:5]:  # the dev stream has gold duplicates
        assert all(by_name[name][c] != "n/a" and 0.0 <= float(by_name[name][c]) <= 1.0 for c in DUPLICATE_COLUMNS)
    assert [by_name["feeds-dev"][c] for c in DUPLICATE_COLUMNS] == ["n/a"] * 3, stdout
    # Full texts of two well separated events: the dev row is perfect.
    assert by_name["dev"]["B-cubed F1"] == "1.0000" and by_name["dev"]["dup F1"] == "1.0000", stdout

    # One Redis for the whole run, and each row got its own variant of the stream.
    assert len(redis_entries) == 1
    n = len(rows)
    assert len(sent) == 6 * n
    full, snippets, headlines, long_snippets, long_headlines, feed = (sent[i * n:(i + 1) * n] for i in range(6))
    assert [r["body"] for r in full] == [r["body"] for r in rows]
    # Stretched: each story's articles spread over three times as long, in time order, texts cut as above.
    stretched = {r["id"]: r for r in stretch(rows, 3.0)}
    assert [stretched[r["id"]]["published_at"] for r in long_snippets] == sorted(
        r["published_at"] for r in stretched.values())
    assert [r["body"] for r in long_snippets] == [" ".join(stretched[r["id"]]["body"].split()[:30])
                                                  for r in long_snippets]
    assert all(r["body"] == "" for r in long_headlines)
    assert [r["body"] for r in snippets] == [" ".join(r["body"].split()[:30]) for r in rows]
    assert all(r["body"] == "" for r in headlines) and [r["title"] for r in headlines] == [r["title"] for r in rows]
    assert [r["body"] for r in feed] == [r["body"] for r in rows]

    saved = json.loads(out.read_text())
    assert saved["columns"] == COLUMNS and saved["split"] is None
    assert [r["name"] for r in saved["rows"]] == ROWS
    assert saved["rows"][5]["scores"]["duplicate_f1"] is None
    assert saved["rows"][3]["stretch"] == saved["rows"][4]["stretch"] == 3.0
    assert saved["rows"][0]["scores"]["duplicate_f1"] == pytest.approx(1.0)
    assert saved["rows"][1]["snippet_words"] == 30 and saved["rows"][2]["headlines_only"] is True
    assert saved["markdown"] in stdout


@pytest.mark.parametrize("half", ["tune", "held-out"])
def test_split_scores_one_half_of_each_stream(tmp_path, engine_redis_url, capsys, half):
    rows = decade_stream(stories=12)
    dev = write_stream(tmp_path / "dev.jsonl", rows)
    feeds = write_stream(tmp_path / "feeds.jsonl", without_duplicates(rows))
    expected = split(rows, half)
    assert 0 < len(expected) < len(rows)
    out = tmp_path / "table.json"

    assert eval_all.main(["--dev", str(dev), "--feeds", str(feeds), "--split", half, "--out", str(out)]) == 0

    table = table_of(capsys.readouterr().out)
    assert [r["articles"] for r in table] == [str(len(expected))] * len(ROWS)
    assert json.loads(out.read_text())["split"] == half


@pytest.mark.parametrize("option", ["--dev", "--feeds"])
def test_a_missing_stream_names_the_file_and_where_shared_must_be(tmp_path, option, redis_entries):
    streams = {"--dev": str(SMALL), "--feeds": str(SMALL), option: str(tmp_path / "nowhere.jsonl")}
    with pytest.raises(SystemExit) as exit_:
        eval_all.main([arg for pair in streams.items() for arg in pair])
    message = str(exit_.value.code)
    assert str(tmp_path / "nowhere.jsonl") in message and "../shared" in message, message
    assert "beside the repository" in message, message
    assert not redis_entries  # nothing started


def test_the_default_streams_are_the_shared_ones():
    assert eval_all.DEV == ROOT.parent / "shared" / "eval" / "dev.jsonl" == DEFAULT_STREAM
    assert eval_all.FEEDS == ROOT.parent / "shared" / "eval" / "feeds-dev.jsonl"


def test_an_unlabelled_stream_is_refused_before_any_run(tmp_path, redis_entries):
    unlabelled = write_stream(tmp_path / "feeds.jsonl", [{k: v for k, v in r.items() if k != "gold"}
                                                        for r in small_rows()])
    with pytest.raises(SystemExit) as exit_:
        eval_all.main(["--dev", str(SMALL), "--feeds", str(unlabelled)])
    assert "not labelled" in str(exit_.value.code) and str(unlabelled) in str(exit_.value.code)
    assert not redis_entries
