"""Seed layout: every random draw of the workflow is a pure function of named integers.

Analysis samples have seeds ``first_seed + SEEDS_PER_CLASS * class + index`` below 2^31;
demo-classifier training and evaluation draw from disjoint ranges at and above 2^31,
so no training image is ever an analysis image.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .config import ANALYSIS_SEED_LIMIT, SEEDS_PER_CLASS

TRAIN_SEED_BASE = ANALYSIS_SEED_LIMIT  # 2^31 .. 2^31 + 2^30
EVAL_SEED_BASE = ANALYSIS_SEED_LIMIT + 2**30  # 2^31 + 2^30 ..
# Images exported for labelling, and the held-out ones a segmenter is scored on (critters), at the
# top of the 32-bit seed range that StyleGAN's sample_z accepts.
LABEL_SEED_BASE = 2**32 - 2**24
HELDOUT_LABEL_SEED_BASE = 2**32 - 2**23


def sample_seeds(first_seed: int, cls: int, start: int, stop: int) -> np.ndarray:
    """Seeds of samples ``start..stop-1`` of class ``cls``: distinct by construction."""
    if not 0 <= start <= stop <= SEEDS_PER_CLASS:
        raise ValueError(f"sample indices {start}..{stop} outside 0..{SEEDS_PER_CLASS}")
    return first_seed + SEEDS_PER_CLASS * cls + np.arange(start, stop, dtype=np.int64)


def derive(*parts: object) -> int:
    """A stable 63-bit seed from any labels (stage name, classifier, shard...)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def in_test_split(seeds: np.ndarray, test_fraction: float) -> np.ndarray:
    """Test membership from a hash of the seed alone: stable whatever else is sampled."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    # splitmix64 finaliser: a well-mixed hash that vectorises.
    with np.errstate(over="ignore"):
        x = seeds + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53) < test_fraction
