"""The naive reference: Storywire's job done the obvious way with the same libraries.

``make bench`` times this beside the engine on the same articles, so the
engine's speed is judged against what a first attempt would cost, not in a
vacuum. It is deliberately the straightforward build, not a straw man:

- duplicates: a datasketch ``MinHash`` (128 permutations, one ``update`` per
  5-word shingle) and datasketch's own ``MinHashLSH`` with its Redis storage
  (at the engine's LSH threshold), queried and then inserted for every article;
- stories: a hashed TF-IDF vector (scikit-learn's ``HashingVectorizer``, IDF
  from the stream seen so far) compared with scikit-learn's
  ``cosine_similarity`` against every stored vector, stacked into one scipy
  sparse matrix; the article joins the best match's story at cosine 0.16 or
  more, or opens a story of its own.

Its answers are not scored; only its speed is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import redis
import scipy.sparse as sp
from datasketch import MinHash, MinHashLSH
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from storyengine.text import words


def _tokens_as_given(tokens: list[str]) -> list[str]:
    # Documents arrive already tokenised by storyengine.text.words, the
    # engine's own tokeniser, so both sides see the same words.
    return tokens


@dataclass(frozen=True)
class NaiveDecision:
    story: str
    duplicate_of: str | None


class NaiveReference:
    """Online duplicates and stories, one article at a time, the obvious way.

    Keys live in Redis under ``basename``; :meth:`clear` deletes them.
    """

    def __init__(self, host: str, port: int, db: int = 0, basename: bytes = b"naive", *, num_perm: int = 128,
                 shingle_size: int = 5, lsh_threshold: float = 0.4, story_threshold: float = 0.16,
                 n_features: int = 1 << 18, password: str | None = None) -> None:
        self.basename = basename
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.lsh_threshold = lsh_threshold
        self.story_threshold = story_threshold
        connection = {"host": host, "port": port, "db": db}
        if password:
            connection["password"] = password
        self._redis = redis.Redis(**connection)
        # A fixed basename: without one every process gets a random private index.
        self.lsh = MinHashLSH(threshold=lsh_threshold, num_perm=num_perm,
                              storage_config={"type": "redis", "basename": basename, "redis": connection})
        self.hasher = HashingVectorizer(n_features=n_features, analyzer=_tokens_as_given, alternate_sign=False,
                                        norm=None)
        self.document_frequency = np.zeros(n_features, dtype=np.int64)
        self.documents = 0
        self.vectors: sp.csr_matrix | None = None   # one row per stored article
        self.ids: list[str] = []                     # article id of each row
        self.minhashes: dict[str, MinHash] = {}      # to rank LSH candidates
        self.story_of: dict[str, str] = {}           # article id -> story id

    def shingles(self, tokens: list[str]) -> list[str]:
        n = self.shingle_size
        if len(tokens) < n:
            return [" ".join(tokens)]
        return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]

    def add(self, article_id: str, title: str, body: str) -> NaiveDecision:
        tokens = words(f"{title}\n{body}")

        signature = MinHash(num_perm=self.num_perm)
        for shingle in self.shingles(tokens):
            signature.update(shingle.encode("utf-8"))
        candidates = self.lsh.query(signature)
        self.lsh.insert(article_id, signature)
        self.minhashes[article_id] = signature

        vector = self._tfidf(tokens)
        duplicate_of = None
        if candidates:
            best = max(candidates, key=lambda c: signature.jaccard(self.minhashes[c]))
            # Verified on the estimated Jaccard, the LSH's own target.
            if signature.jaccard(self.minhashes[best]) >= self.lsh_threshold:
                duplicate_of = best
        if duplicate_of is not None:
            story = self.story_of[duplicate_of]
        elif self.vectors is not None:
            similarities = cosine_similarity(vector, self.vectors)[0]
            best_row = int(similarities.argmax())
            story = (self.story_of[self.ids[best_row]] if similarities[best_row] >= self.story_threshold
                     else "naive_" + article_id)
        else:
            story = "naive_" + article_id
        # The naive thing: one vstack per article, a full copy each time.
        self.vectors = vector if self.vectors is None else sp.vstack([self.vectors, vector], format="csr")
        self.ids.append(article_id)
        self.story_of[article_id] = story
        return NaiveDecision(story, duplicate_of)

    def preload_vectors(self, records: list[dict]) -> None:
        """Hold these articles' TF-IDF vectors as if they had been added (not
        timed, in bulk): the cost of ``add`` that grows with the store is the
        comparison with every stored vector, so this is what a probe at scale
        needs. Their MinHashes are not inserted: an LSH query costs the same
        number of Redis round trips however many documents the index holds."""
        tokens = [words(f"{r['title']}\n{r['body']}") for r in records]
        counts = self.hasher.transform(tokens).tocsr()
        self.documents += counts.shape[0]
        self.document_frequency += np.bincount(counts.indices, minlength=len(self.document_frequency))
        idf = np.log((1 + self.documents) / (1 + self.document_frequency)) + 1.0
        counts.data = counts.data * idf[counts.indices]
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        counts = sp.diags(1.0 / norms) @ counts
        self.vectors = counts.tocsr() if self.vectors is None else sp.vstack([self.vectors, counts], format="csr")
        for record in records:
            self.ids.append(record["id"])
            self.story_of[record["id"]] = "naive_" + record["id"]

    def _tfidf(self, tokens: list[str]) -> sp.csr_matrix:
        """Smoothed IDF (scikit-learn's formula) from the articles seen so far,
        this one included, so no statistic comes from the future."""
        counts = self.hasher.transform([tokens]).tocsr()
        self.documents += 1
        self.document_frequency[counts.indices] += 1
        idf = np.log((1 + self.documents) / (1 + self.document_frequency[counts.indices])) + 1.0
        counts.data = counts.data * idf
        norm = math.sqrt(float(counts.data @ counts.data)) or 1.0
        counts.data /= norm
        return counts

    def clear(self) -> int:
        """Delete every key of this index (datasketch names them all basename + ...)."""
        deleted = 0
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self.basename + b"*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += self._redis.delete(*batch)
                batch = []
        if batch:
            deleted += self._redis.delete(*batch)
        return deleted

    def close(self) -> None:
        self._redis.close()
