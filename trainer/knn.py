"""The k-NN vote: one function for the trainer's kNN accuracy and the service's ``/classify``.

Majority vote; ``distance`` weighting gives a neighbour ``1/d`` votes, and when some voters sit at
distance 0 only those vote (one each). Ties go to the smallest summed distance, then to the label of
the nearest neighbour. Neighbours without a label do not vote. The threshold only decides whether the
item is known at all: when no labelled neighbour lies within it, the item is unknown; otherwise all
labelled neighbours vote, exactly as the trainer's kNN accuracy counts them. Pure Python (no torch,
no numpy): k is small, and the trainer's metrics call it row by row so both sides share one rule.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

Weighting = Literal["uniform", "distance"]
L = TypeVar("L", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Vote(Generic[L]):
    label: L | None
    confidence: float  # winning votes / all votes
    votes: dict[L, float]
    unknown: bool


def vote(
    labels: Sequence[L | None],
    distances: Sequence[float],
    weighting: Weighting = "uniform",
    threshold: float | None = None,
) -> Vote[L]:
    """Vote among neighbours given nearest first (labels: names in the service, codes in the trainer)."""
    voters = [(label, float(d)) for label, d in zip(labels, distances, strict=True) if label is not None]
    if not voters or (threshold is not None and voters[0][1] > threshold):
        return Vote(label=None, confidence=0.0, votes={}, unknown=True)
    exact = weighting == "distance" and any(d == 0.0 for _, d in voters)
    votes: dict[L, float] = {}
    summed: dict[L, float] = {}
    for label, d in voters:  # dicts keep first-seen order: the nearest neighbour's label comes first
        if weighting == "uniform":
            weight = 1.0
        elif exact:
            weight = 1.0 if d == 0.0 else 0.0
        else:
            weight = 1.0 / d
        votes[label] = votes.get(label, 0.0) + weight
        summed[label] = summed.get(label, 0.0) + d
    order = list(votes)
    winner = min(order, key=lambda lab: (-votes[lab], summed[lab], order.index(lab)))
    total = sum(votes.values())
    return Vote(label=winner, confidence=votes[winner] / total, votes=votes, unknown=False)
