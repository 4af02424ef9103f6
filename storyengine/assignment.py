"""Story assignment, inside a batch: a copy follows its canonical article's
story; an original joins the best story that reaches its threshold
(storyengine.stories.choose_story) or opens a new one.
"""
from __future__ import annotations

import hashlib

from . import records
from .batch import Batch, Story
from .batch_reads import BatchReads
from .decisions import Decision, received_ts, with_text_report
from .features import Features
from .settings import Settings
from .buckets import Bucket, bucket_index
from .stories import StoryScore, base_threshold, choose_story, threshold_for, updated_centroid
from .text import ENTITY_PREFIX
from .vectors import SparseVector

# The representative's heaviest terms kept with its story, to compare newcomers with.
REPRESENTATIVE_TERMS = 64


def story_id_for(article_id: str) -> str:
    # Derived from the founding article, so a retried task re-creates the same id.
    return "st_" + hashlib.blake2b(article_id.encode("utf-8"), digest_size=8).hexdigest()


def readable_terms(terms: list[str], limit: int) -> list[str]:
    """A story's top terms for people: entity features shown as the word
    they count, each word once."""
    out: list[str] = []
    for term in terms:
        if len(out) >= limit:
            break
        word = term[len(ENTITY_PREFIX):] if term.startswith(ENTITY_PREFIX) else term
        if word not in out:
            out.append(word)
    return out


class StoryAssigner:
    """Puts decided articles into stories, in a batch's view (written at its commit)."""

    def __init__(self, reads: BatchReads, settings: Settings) -> None:
        self.reads, self.settings = reads, settings

    def follow_canonical(self, batch: Batch, article_id: str, record: dict, f: Features, match: dict,
                         dup_report: dict) -> Decision:
        """A copy of ``match`` (a verified candidate record) joins its story."""
        story_id = match["story"]
        self.reads.fetch(batch, [story_id], ())
        story = batch.stories[story_id]
        decision = with_text_report({"duplicate": dup_report,
                                     "story": {"action": "followed_canonical", "story": story_id,
                                               "reason": "a copy shares the story of its canonical article "
                                                         f"{match['article']}"}}, f)
        batch.count_sentences(record["source"], f.sentences)
        if abs(f.published - match["published"]) <= self.settings.story_window_hours * 3600.0:
            story.first_seen = min(story.first_seen, f.published)
            story.last_updated = max(story.last_updated, f.published)
        # else: a reprint long after the original is still its copy, but it does
        # not make an old story current again (its times stay as they were).
        story.article_count += 1
        batch.touch(story)
        batch.article_writes.append((article_id, records.decided_article_fields(f, story_id, match["article"],
                                                                                match["containment"], decision),
                                     story_id, record["source"], f.published))
        batch.articles[article_id] = {"story": story_id, "duplicate_of": match["article"],
                                      "published": f.published, "shingles": None}
        batch.decided.append((received_ts(record), True, False))
        return Decision("copy", article_id, story_id, duplicate_of=match["article"])

    def assign(self, batch: Batch, article_id: str, record: dict, f: Features, vector: SparseVector,
               stories: dict[str, Story], scores: list[StoryScore], dup_report: dict,
               canonical: dict | None = None) -> Decision:
        """An original joins the story ``choose_story`` picks from ``scores``, or opens one
        (``canonical``: its records.canonical_article_fields, if made already)."""
        s = self.settings
        chosen = choose_story(scores, s, f.distinct_words)
        story_report = {"candidates": [sc.as_dict() for sc in scores[:3]]}
        # The rule each candidate was held to (storyengine.stories.choose_story):
        # the threshold for this article's length and the story's size, and the
        # shared words needed, so a join or a new story can be read off the record.
        floor = base_threshold(s, f.distinct_words)
        for report, sc in zip(story_report["candidates"], scores[:3]):
            report["threshold"] = round(threshold_for(sc.members, floor, s, f.distinct_words), 4)
        story_report["article_words"] = f.distinct_words
        # The threshold the joined story (or, for a new story, the best one) was held to.
        story_report["threshold"] = (story_report["candidates"][scores.index(chosen)]["threshold"]
                                     if chosen is not None and scores.index(chosen) < 3 else
                                     round(threshold_for(chosen.members if chosen else
                                                         (scores[0].members if scores else 1),
                                                         floor, s, f.distinct_words), 4))
        if chosen is not None and chosen is not scores[0]:
            story_report["passed_over"] = (f"{scores[0].story_id} scored higher but did not reach its threshold "
                                           f"or shared fewer than {s.min_shared_words} words")
        day = bucket_index(f.published, s)
        if chosen is None:
            story_id = story_id_for(article_id)
            story = Story(story_id, f.published, f.published, 0, 0, {})
            story.details = {"centroid": vector, "rep_vec": vector, "names": {}, "headline": record["title"],
                             "representative": article_id}
            batch.stories[story_id] = story
            centroid = vector
            story.buckets[day] = Bucket.of(vector, f.published)
            story_report.update(action="opened", story=story_id)
            similarity = None  # it was compared with no story: no score to report
        else:
            story_id = chosen.story_id
            story = stories[story_id]
            details = story.load_details()
            centroid = updated_centroid(details["centroid"], vector, s)
            current = story.buckets.get(day)
            story.buckets[day] = (current.add(vector, f.published, s.bucket_terms) if current
                                  else Bucket.of(vector, f.published))
            story.first_seen = min(story.first_seen, f.published)
            story.last_updated = max(story.last_updated, f.published)
            details["centroid"] = centroid
            # The representative is the original closest to the story's centre,
            # the earlier one unless a newcomer is clearly closer: the headline
            # follows what the story is about as a whole, not its latest
            # write-up. Both are compared as stored (their heaviest terms), and
            # a headline made from a body never replaces one an outlet wrote.
            rep_vec = vector.top(REPRESENTATIVE_TERMS).stored()
            if record.get("title_derived") != "1" and rep_vec.cosine(centroid) > \
                    details["rep_vec"].cosine(centroid) + s.representative_margin:
                details.update(headline=record["title"], representative=article_id, rep_vec=rep_vec)
            story_report.update(action="joined", story=story_id)
            similarity = chosen.score
        details = story.details
        # What later articles of this batch see is exactly what they would read
        # back from Redis: vectors at stored precision, the representative's cut to its stored terms.
        story.buckets[day] = story.buckets[day].stored()
        centroid = details["centroid"] = centroid.stored()
        details["rep_vec"] = details["rep_vec"].top(REPRESENTATIVE_TERMS).stored()
        story.dirty_buckets.add(day)
        story.article_count += 1
        story.originals += 1
        story.canonicals = (story.canonicals + [article_id])[-s.story_duplicate_candidates:]
        heaviest = centroid.heaviest(s.index_terms).tolist()
        # The names of the indexed terms: this article's, else those the story kept.
        mine, kept = f.term_names, details["names"]
        details["names"] = {feature: mine[feature] if feature in mine else kept[feature] for feature in heaviest
                            if feature in mine or feature in kept}
        story.indexed = heaviest
        batch.touch(story)
        details["top_terms"] = readable_terms([details["names"][x] for x in heaviest if x in details["names"]],
                                              s.top_terms)
        story.details_changed = True  # written once per batch, however many articles joined
        decision = with_text_report({"duplicate": dup_report, "story": story_report}, f)
        batch.count_sentences(record["source"], f.sentences)
        batch.article_writes.append((article_id, records.decided_article_fields(f, story_id, None, similarity,
                                                                                decision, canonical),
                                     story_id, record["source"], f.published))
        batch.articles[article_id] = {"story": story_id, "duplicate_of": None, "published": f.published,
                                      "shingles": f.shingle_set}
        batch.new_canonicals.append((article_id, f.shingle_set, f.published))  # cached once committed
        batch.index_canonical(article_id, f.fingerprint, f.slots)
        batch.count_terms(f.term_indices, 1)
        self.reads.df.counts[f.term_indices] += 1  # later articles of this batch weigh against it already
        self.reads.df.docs += 1
        batch.decided.append((received_ts(record), False, chosen is None))
        return Decision("opened" if chosen is None else "joined", article_id, story_id)
