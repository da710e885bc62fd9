"""MinHash signatures (datasketch), LSH band keys and the S-curve that picks bands x rows.

Defaults: 120 permutations in 20 bands of 6 rows. P(candidate | J=s) = 1-(1-s^6)^20:
    s = 0.50: 0.270   0.60: 0.615   0.70: 0.918   0.75: 0.980   0.80: 0.9977   0.85: 0.9999
so a pair at the 0.8 threshold becomes a candidate with probability 0.998 (>= 0.97 asked;
FineWeb's 14 x 8 gives 0.92). The extra candidates below the threshold cost one
comparison each: every candidate pair is verified by its estimated Jaccard."""

import zlib

import numpy as np
from datasketch import MinHash

DEFAULT_NUM_PERM = 120
DEFAULT_BANDS = 20
DEFAULT_ROWS = 6
DEFAULT_NGRAM = 5
DEFAULT_THRESHOLD = 0.8
SEED = 1
SCHEME = "affine32"
SIGNATURE_CHUNK = 1 << 15       # shingles per update_batch: bounds its [chunk, num_perm] matrix

# Words: runs of ASCII letters/digits/underscore or non-ASCII bytes in the UTF-8 text,
# ASCII lowercased; everything else separates. One bytes.translate + split (C speed).
_WORD_BYTES = bytes((c + 32 if 65 <= c <= 90 else c) if (chr(c).isalnum() or c == 95 or c >= 128) else 32
                    for c in range(256))


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """The LSH S-curve: probability that a pair with Jaccard `similarity` shares a band."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def check_banding(num_perm: int, bands: int, rows: int) -> None:
    if min(num_perm, bands, rows) < 1:
        raise ValueError(f"num_perm, bands and rows must be positive (got {num_perm}, {bands}, {rows})")
    if bands * rows > num_perm:
        raise ValueError(f"bands x rows = {bands} x {rows} = {bands * rows} exceeds num_perm {num_perm}")


def words(text: str) -> list[bytes]:
    return text.encode("utf-8").translate(_WORD_BYTES).split()


def shingles(text: str, ngram: int = DEFAULT_NGRAM) -> set[bytes]:
    """Word n-grams as bytes (the reference definition; signatures hash the same n-grams
    with shingle_hashes). A document shorter than n words is one shingle."""
    w = words(text)
    if len(w) <= ngram:
        return {b" ".join(w)}
    return {b" ".join(w[i:i + ngram]) for i in range(len(w) - ngram + 1)}


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)   # odd 64-bit constant (golden ratio)


def shingle_hashes(text: str, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
    """32-bit hashes of the word n-grams of `text` (the same shingles as `shingles()`),
    computed from one CRC32 per word and a vectorized polynomial over each window,
    instead of joining and SHA1-hashing every n-gram string. Duplicates may repeat;
    MinHash only takes minima."""
    w = words(text)
    if not w:
        return np.array([zlib.crc32(b"")], dtype=np.uint32)
    word_hashes = np.fromiter(map(zlib.crc32, w), dtype=np.uint64, count=len(w))
    width = min(ngram, len(w))
    count = len(w) - width + 1
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(width):                      # h = sum word_hash[i+k] * M^(width-1-k), mod 2^64
            h = h * _MULTIPLIER + word_hashes[k:k + count] + np.uint64(1)
    return ((h >> np.uint64(32)) ^ h).astype(np.uint32)


def exact_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Signer:
    """Builds datasketch MinHash signatures sharing one set of permutations (made once,
    not per document)."""

    def __init__(self, num_perm: int = DEFAULT_NUM_PERM, seed: int = SEED):
        self.num_perm = num_perm
        self._template = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)

    def minhash(self, shingle_set) -> MinHash:
        m = MinHash(num_perm=self.num_perm, permutations=self._template.permutations, scheme=SCHEME)
        m.update_batch(list(shingle_set))
        return m

    def signature(self, text: str, ngram: int = DEFAULT_NGRAM) -> np.ndarray:
        """datasketch MinHash over the document's shingle hashes (hashfunc = int: the
        values are already 32-bit hashes; datasketch's affine32 scheme pre-mixes them).
        Fed in chunks: update_batch builds a [shingles, num_perm] matrix, which for one
        50 MB document was gigabytes; the minimum over chunks is the same signature."""
        m = MinHash(num_perm=self.num_perm, permutations=self._template.permutations, scheme=SCHEME, hashfunc=int)
        hashes = shingle_hashes(text, ngram)
        for start in range(0, len(hashes), SIGNATURE_CHUNK):
            m.update_batch(hashes[start:start + SIGNATURE_CHUNK].tolist())
        return m.hashvalues


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One key per band: the band number and the bytes of its rows."""
    return [bytes([b % 256, b // 256]) + signature[b * rows:(b + 1) * rows].tobytes() for b in range(bands)]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)
