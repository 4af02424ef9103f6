"""Section 4, the naive reference (bench/naive_reference.py) beside the
engine: at scale on the run's last articles, and from an empty store."""
from __future__ import annotations

import time

import redis

from evaluation.progress import Progress
from storyengine.settings import Settings
from storyengine.store import RedisStore, connect

from .console import log
from .ingest import IngestRun, ingest
from .naive_reference import NaiveReference
from .stats import median


def naive_reference(redis_url: str, settings: Settings, basename: str) -> NaiveReference:
    """The naive reference on the bench's Redis, with the engine's own settings."""
    options = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    return NaiveReference(options.get("host", "127.0.0.1"), int(options.get("port", 6379)), int(options.get("db", 0)),
                          basename=basename.encode(), password=options.get("password"),
                          num_perm=settings.num_perm, shingle_size=settings.shingle_size,
                          lsh_threshold=settings.lsh_threshold, story_threshold=settings.story_threshold)


def time_naive(naive: NaiveReference, records: list[dict], label: str,
               preload: list[dict] | None = None) -> list[float]:
    """Seconds per article through the naive reference, after loading the
    vectors of ``preload`` (not timed); its keys are deleted afterwards."""
    naive.clear()
    per_article: list[float] = []
    try:
        if preload:
            naive.preload_vectors(preload)
        progress = Progress(len(records), label)
        for n, record in enumerate(records, 1):
            began = time.perf_counter()
            naive.add(record["id"], record["title"], record["body"])
            per_article.append(time.perf_counter() - began)
            progress.update(n)
    finally:
        naive.clear()
        naive.close()
    return per_article


def naive_vs_engine(records: list[dict], redis_url: str, settings: Settings, batch: int, tag: str) -> dict:
    """The engine and the naive reference on exactly the same articles, in
    the same run, so their ratio compares like with like."""
    store = RedisStore(connect(redis_url), settings)
    store.clear()
    try:
        engine = ingest(store, records, batch, f"engine on the first {len(records)}")
    finally:
        store.clear()

    per_article = time_naive(naive_reference(redis_url, settings, f"naive-{tag}"), records, "naive reference")
    naive_rate = len(records) / sum(per_article)
    return {"naive_prefix_articles": len(records), "naive_prefix_articles_per_s": naive_rate,
            "naive_prefix_article_p50_ms": 1000 * median(per_article),
            "engine_prefix_articles_per_s": engine.articles_per_s,
            "engine_vs_naive_prefix": engine.articles_per_s / naive_rate}


def naive_at_scale(records: list[dict], redis_url: str, settings: Settings, run: IngestRun, probe: int,
                   tag: str) -> dict:
    """The naive reference's per-article cost with as many articles stored
    as the engine had, on the same last ``probe`` articles the engine
    processed at the end of its run: the comparison that matters, since the
    naive path compares every article with every stored vector. The stored
    vectors are loaded in bulk first (not timed)."""
    stored, probed = records[:-probe], records[-probe:]
    log(f"   loading {len(stored)} stored vectors into the naive reference (not timed)")
    per_article = time_naive(naive_reference(redis_url, settings, f"naive-scale-{tag}"), probed,
                             f"naive reference at {len(stored)} stored", preload=stored)
    naive_ms = 1000 * sum(per_article) / len(per_article)
    # The engine's cost for the same articles: the chunks that held them.
    engine = [(s, n) for s, n, before in zip(run.seconds, run.sizes, run.stored_before) if before + n > len(stored)]
    engine_ms = 1000 * sum(s for s, _ in engine) / max(sum(n for _, n in engine), 1)
    return {"naive_probe_articles": len(probed), "naive_probe_stored": len(stored),
            "naive_articles_per_s": 1000 / naive_ms, "naive_ms_per_article_at_scale": naive_ms,
            "engine_ms_per_article_at_scale": engine_ms, "engine_vs_naive": naive_ms / engine_ms}
