"""Scores for a labelled stream, as ``shared/eval/README.md`` defines them.

- Story clustering: B-cubed precision, recall and F1 over articles (a duplicate
  belongs to its canonical's story), plus ARI, AMI and NMI.
- Dedup: pairwise precision, recall and F1 over duplicate groups (articles
  joined through ``duplicate_of``), gray pairs left out.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def bcubed(predicted: dict[str, str], gold: dict[str, str]) -> tuple[float, float, float]:
    ids = list(gold)
    pred_members: dict[str, set] = defaultdict(set)
    gold_members: dict[str, set] = defaultdict(set)
    for i in ids:
        pred_members[predicted[i]].add(i)
        gold_members[gold[i]].add(i)
    precision = recall = 0.0
    for i in ids:
        p_set, g_set = pred_members[predicted[i]], gold_members[gold[i]]
        both = len(p_set & g_set)
        precision += both / len(p_set)
        recall += both / len(g_set)
    precision /= len(ids)
    recall /= len(ids)
    return precision, recall, _f1(precision, recall)


def duplicate_groups(duplicate_of: dict[str, str | None]) -> dict[str, str]:
    """Article -> root of its duplicate group, following links to the end."""
    def root(i: str) -> str:
        seen = set()
        while duplicate_of.get(i) and i not in seen:
            seen.add(i)
            i = duplicate_of[i]
        return i
    return {i: root(i) for i in duplicate_of}


def _pairs(groups: dict[str, str], excluded: set[frozenset]) -> set[frozenset]:
    members: dict[str, list] = defaultdict(list)
    for i, g in groups.items():
        members[g].append(i)
    pairs = set()
    for group in members.values():
        for a, b in combinations(sorted(group), 2):
            pair = frozenset((a, b))
            if pair not in excluded:
                pairs.add(pair)
    return pairs


def duplicate_scores(predicted: dict[str, str | None], gold: dict[str, str | None],
                     gray_pairs: list[list[str]]) -> tuple[float, float, float]:
    excluded = {frozenset(p) for p in gray_pairs}
    pred_pairs = _pairs(duplicate_groups({i: predicted.get(i) for i in gold}), excluded)
    gold_pairs = _pairs(duplicate_groups(gold), excluded)
    hits = len(pred_pairs & gold_pairs)
    precision = hits / len(pred_pairs) if pred_pairs else 1.0
    recall = hits / len(gold_pairs) if gold_pairs else 1.0
    return precision, recall, _f1(precision, recall)


# The predicted story of an article with no prediction: a story of its own
# (the NUL keeps it apart from any id the engine gives).
_UNPREDICTED = "\0unpredicted:"


def unpredicted(predictions: list[dict], gold_rows: list[dict]) -> list[str]:
    """Ids of the gold rows with no prediction: none at all, or no story
    (an article that failed, was refused, or could not be read back)."""
    by_id = {p["id"]: p for p in predictions}
    return [r["id"] for r in gold_rows if not (by_id.get(r["id"]) or {}).get("story")]


def score(predictions: list[dict], gold_rows: list[dict], gray_pairs: list[list[str]]) -> dict[str, float]:
    """All metrics for predictions ``{"id", "story", "duplicate_of"}`` against
    gold rows ``{"id", "gold": {"story", "duplicate_of"}}``.

    An article with no prediction (missing, or its story null: it failed, was
    refused, or could not be read back) is not left out, which would score
    the run on the articles it managed: it counts as a story of its own and a
    copy of nothing, and ``unpredicted`` says how many there were."""
    by_id = {p["id"]: p for p in predictions}
    missing = set(unpredicted(predictions, gold_rows))
    ids = [r["id"] for r in gold_rows]
    gold_story = {r["id"]: r["gold"]["story"] for r in gold_rows}
    pred_story = {i: _UNPREDICTED + i if i in missing else by_id[i]["story"] for i in ids}
    p, r, f = bcubed(pred_story, gold_story)
    labels_true = [gold_story[i] for i in ids]
    labels_pred = [pred_story[i] for i in ids]
    dp, dr, df = duplicate_scores({i: None if i in missing else by_id[i].get("duplicate_of") for i in ids},
                                  {r["id"]: r["gold"]["duplicate_of"] for r in gold_rows}, gray_pairs)
    return {
        "articles": len(ids),
        "unpredicted": len(missing),
        "bcubed_precision": p, "bcubed_recall": r, "bcubed_f1": f,
        "ari": adjusted_rand_score(labels_true, labels_pred),
        "ami": adjusted_mutual_info_score(labels_true, labels_pred),
        "nmi": normalized_mutual_info_score(labels_true, labels_pred),
        "duplicate_precision": dp, "duplicate_recall": dr, "duplicate_f1": df,
    }
