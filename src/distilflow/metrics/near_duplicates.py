"""Near-duplicate texts: Jaccard similarity of character 5-gram shingles of normalised text, estimated with
MinHash and found with locality-sensitive hashing (datasketch), then confirmed exactly.

One index serves every near-duplicate check of a job (training inputs against validation and test inputs,
written inputs against each other and the given ones), so one threshold means the same thing everywhere.
Character shingles rather than word shingles: short chat messages ("my card hasn't arrived yet") have too few
words for word n-grams to say anything, and typo variants still share most of their character 5-grams.
"""

from __future__ import annotations

import zlib

from datasketch import MinHash, MinHashLSH

SHINGLE_CHARS = 5
_NUM_PERM = 128
# The LSH bands are tuned below the threshold asked for, so that pairs just above it are not lost to the
# estimate's noise (recall); every candidate is then confirmed with the exact similarity (precision).
_CANDIDATE_SLACK = 0.15


def normalise(text: str) -> str:
    """Lower case, runs of whitespace collapsed to one space, ends stripped."""
    return " ".join(text.lower().split())


def shingles(text: str) -> frozenset[str]:
    """Character 5-grams of the normalised text; a text shorter than that is its own single shingle (so that
    "hi" matches "Hi " and nothing else)."""
    norm = normalise(text)
    if len(norm) <= SHINGLE_CHARS:
        return frozenset([norm])
    return frozenset(norm[i:i + SHINGLE_CHARS] for i in range(len(norm) - SHINGLE_CHARS + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b| of two shingle sets (1.0 for two empty ones); the teacher stage's sample check uses it too."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def similarity(a: str, b: str) -> float:
    """Exact Jaccard similarity of the two texts' character 5-gram shingles (1.0 for equal normalised texts)."""
    return jaccard(shingles(a), shingles(b))


class NearDuplicateIndex:
    """Texts added under a key; `matches(text)` returns the keys of added texts whose similarity to it is at
    least `threshold`. Exact duplicates (after normalisation) always match, whatever their length."""

    def __init__(self, threshold: float = 0.8) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        # permutations drawn once, shared by every text; shingles hashed with CRC-32 (C speed; measured on Banking77:
        # 137 us a text against 317 us with datasketch's default SHA-1, and as many rows found, 192 against 188 in
        # bench/data_checks.py: the affine permutations on top make the hash family, every match is confirmed)
        self._template = MinHash(num_perm=_NUM_PERM, hashfunc=zlib.crc32)
        self._lsh = MinHashLSH(threshold=max(0.05, threshold - _CANDIDATE_SLACK), num_perm=_NUM_PERM)
        self._shingles: dict[str, frozenset[str]] = {}
        self._exact: dict[str, list[str]] = {}  # normalised text -> keys

    def __len__(self) -> int:
        return len(self._shingles)

    def _minhash(self, grams: frozenset[str]) -> MinHash:
        sketch = MinHash(num_perm=_NUM_PERM, permutations=self._template.permutations,
                         scheme=self._template.scheme, hashfunc=zlib.crc32)
        sketch.update_batch([g.encode("utf-8") for g in grams])
        return sketch

    def add(self, key: str, text: str) -> None:
        """Add one text; a key may be added once only (ValueError otherwise)."""
        if key in self._shingles:
            raise ValueError(f"key {key!r} is already in the near-duplicate index")
        grams = shingles(text)
        self._shingles[key] = grams
        self._exact.setdefault(normalise(text), []).append(key)
        self._lsh.insert(key, self._minhash(grams))

    def matches(self, text: str) -> list[str]:
        """Keys of added texts at least `threshold` similar to `text` (exact duplicates first, in insertion
        order; then the others by decreasing similarity)."""
        exact = list(self._exact.get(normalise(text), []))
        if not self._shingles:
            return exact
        grams = shingles(text)
        found = set(exact)
        scored = []
        for key in self._lsh.query(self._minhash(grams)):
            if key in found:
                continue
            score = jaccard(grams, self._shingles[key])
            if score >= self.threshold:
                scored.append((-score, key))
        return exact + [key for _, key in sorted(scored)]
