"""The compiled loop of ``measures.local_entropy_in_parts``: a sliding histogram per image row.

A disk window slides along each image row; each step takes one pixel off the left end of every
disk row and adds one at the right, updating the running ``S = sum_g c_g log2 c_g`` of the
entering and leaving pixel's part from a fixed-point table (``measures._entropy_tables``), so
each pixel costs ``2 (2r + 1)`` table updates and the sums are exact integers. The numpy
formulation of the same recurrence (one vectorised update per disk row and column over every row
of a chunk) spent most of its time in gathers; compiled, the loop runs 3-4 times faster on the
default world and gives the same bits. Imported only where entropy is computed, so stages
that measure nothing do not pay for numba's import.
"""

from __future__ import annotations

import numba
import numpy as np


def _compile(func):
    """``njit`` with the compiled code cached next to this file (or in the user's cache folder),
    so every job after the first loads it in about 0.2 s; where neither is writable (a read-only
    install without a home folder), it compiles once per process instead (about 1 s)."""
    try:
        return numba.njit(cache=True, nogil=True, boundscheck=False)(func)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, boundscheck=False)(func)


@_compile
def sliding_entropy(codes: np.ndarray, r: int, slots: int, half: np.ndarray, inc: np.ndarray, dec: np.ndarray,
                    table: np.ndarray, inv_n: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` [N, H, W] with each pixel's entropy over the pixels of its own part in its disk.

    ``codes`` int32 [N, H + 2r, W + 2r + 1]: ``part * 256 + grey``, the image at rows ``r ..`` and
    columns ``r + 1 ..``, the margin coded as part ``slots - 1`` (counted, never read). ``half``:
    the half-width of each of the disk's ``2r + 1`` rows. ``inc[c]`` / ``dec[c]``: the change of
    ``table`` (fixed-point ``c log2 c``) when a count goes from ``c`` up or down by one.
    """
    n_img, h, w = out.shape
    hist = np.zeros(slots * 256, np.int32)
    s = np.zeros(slots, np.int64)
    n = np.zeros(slots, np.int64)
    left = r + 1  # padded column of image column 0
    for i in range(n_img):
        for y in range(h):
            for j in range(2 * r + 1):  # the window centred on column -1
                for xx in range(left - 1 - half[j], left + half[j]):
                    code = codes[i, y + j, xx]
                    c = hist[code]
                    s[code >> 8] += inc[c]
                    n[code >> 8] += 1
                    hist[code] = c + 1
            for x in range(w):
                for j in range(2 * r + 1):
                    code = codes[i, y + j, left + x - 1 - half[j]]  # leaves the window
                    c = hist[code]
                    s[code >> 8] += dec[c]
                    n[code >> 8] -= 1
                    hist[code] = c - 1
                    code = codes[i, y + j, left + x + half[j]]  # enters it
                    c = hist[code]
                    s[code >> 8] += inc[c]
                    n[code >> 8] += 1
                    hist[code] = c + 1
                part = codes[i, y + r, left + x] >> 8
                k = n[part]  # >= 1: the centre pixel itself
                value = (table[k] - s[part]) * inv_n[k]  # H = log2 n - S / n = (n log2 n - S) / n
                out[i, y, x] = value if value > 0.0 else 0.0  # table rounding around exact zeros
            for j in range(2 * r + 1):  # empty the window centred on the last column
                for xx in range(left + w - 1 - half[j], left + w + half[j]):
                    hist[codes[i, y + j, xx]] = 0
            s[:] = 0
            n[:] = 0
    return out
