"""Assigning identities to splits, so that no person appears in two of them."""

from __future__ import annotations

import hashlib
from typing import Iterable

__all__ = ["split_by_identity"]


def _allocate(n: int, splits: dict[str, float]) -> dict[str, int]:
    """How many of n identities each split gets: largest remainder, then one for every split that can have one."""
    total = sum(splits.values())
    exact = {s: n * f / total for s, f in splits.items()}
    counts = {s: int(exact[s]) for s in splits}
    by_remainder = sorted(splits, key=lambda s: -(exact[s] - counts[s]))  # stable: ties keep dict order
    for s in by_remainder[: n - sum(counts.values())]:
        counts[s] += 1
    # An empty split is useless (no validation, no test): move identities from the largest split
    # while it can spare one, biggest fractions first.
    used = sorted((s for s, f in splits.items() if f > 0), key=lambda s: -splits[s])
    for s in used:
        donor = max(used, key=lambda d: counts[d])
        if counts[s] == 0 and counts[donor] >= 2:
            counts[donor] -= 1
            counts[s] += 1
    return counts


def split_by_identity(identities: Iterable[str], splits: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each identity to one split, so no person appears in two splits.

    Deterministic in (set of identities, splits, seed) and independent of input order: identities
    are ordered by a seeded hash and cut into consecutive blocks sized by the split fractions.
    Every split with a fraction > 0 gets at least one identity when there are enough identities.
    """
    if not splits or any(f < 0 for f in splits.values()) or sum(splits.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive sum, got {splits}")
    unique = sorted(set(identities))
    order = sorted(unique, key=lambda ident: hashlib.sha256(f"{seed}\0{ident}".encode()).hexdigest())
    assignment: dict[str, str] = {}
    start = 0
    for split, count in _allocate(len(order), splits).items():
        for ident in order[start : start + count]:
            assignment[ident] = split
        start += count
    return assignment
