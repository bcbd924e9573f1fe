"""Counter-based random numbers: a pure function of (seed, walker id, step, stream).

A walker's next hop must not depend on which process advances it or in what order walkers
are batched, or results would change with the shard count. So there is no generator state:
every draw hashes its coordinates with the SplitMix64 finaliser (Steele et al., 2014), which is
vectorised over numpy uint64 arrays (wrap-around multiplication is intended).
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_INV32 = 1.0 / 4294967296.0


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of a uint64 array (bijective, good avalanche)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64, copy=True)
        z ^= z >> _S30
        z *= _M1
        z ^= z >> _S27
        z *= _M2
        z ^= z >> _S31
    return z


def hash_keys(seed: int, ids: np.ndarray, step: int, stream: int) -> np.ndarray:
    """uint64 hash of (seed, id, step, stream) for every id."""
    with np.errstate(over="ignore"):
        base = mix64(np.array([(int(seed) & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64)
                     ^ np.uint64(((step & 0xFFFFFFFF) << 16) | (stream & 0xFFFF)))[0]
        return mix64(np.asarray(ids).astype(np.uint64) * _GOLDEN + base)


def two_uniforms(seed: int, ids: np.ndarray, step: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent float64 uniforms in [0, 1) per id, from the two 32-bit halves of one hash.

    32 bits of resolution is ample for choosing among up to millions of neighbours (bias below
    deg / 2**32) and for restart decisions.
    """
    h = hash_keys(seed, ids, step, stream)
    hi = (h >> np.uint64(32)).astype(np.float64) * _INV32
    lo = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * _INV32
    return hi, lo


def uniforms(seed: int, ids: np.ndarray, step: int, stream: int) -> np.ndarray:
    """One float64 uniform in [0, 1) per id (53-bit resolution)."""
    h = hash_keys(seed, ids, step, stream)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
