# Compiled helpers of microgpt_fast/data.py: line scan, Python's shuffle, packing.
#
# Legend: L code points of the file, N documents (non-empty stripped lines),
# T = N + sum of document lengths + 1 packed tokens, S alphabet size (256 for
# byte input, 0x110000 for code points).
#
# Every function is one nogil loop over typed memoryviews; data.py holds the
# plain-Python versions (read_docs, tokenize, rng.shuffle) that the tests hold
# these against.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "Python.h":
    # str.strip()'s notion of whitespace (a table lookup; safe without the GIL)
    bint Py_UNICODE_ISSPACE(Py_UCS4 ch) nogil

cdef extern from *:
    # gcc and clang
    int __builtin_clzll(unsigned long long x) nogil
    void __builtin_prefetch(const void* addr) nogil

ctypedef fused code_t:
    uint8_t   # an ASCII file, read as its bytes
    uint32_t  # any other file, as UTF-32 code points


def doc_bounds(const code_t[::1] codes,   # IN  (L,) code points
               int64_t[:, ::1] bounds,    # OUT (>= lines, 2) [first, one past last] code point
               uint8_t[::1] seen):        # OUT (S,) 1 where a code point occurs in a document
    """The documents of the text: its '\\n'-separated lines, each stripped as
    str.strip() strips, empty ones dropped. Returns their number N; bounds has
    room for one more row than the number of '\\n' in codes."""
    cdef Py_ssize_t L = codes.shape[0], n = 0, a = 0, b, e, k
    with nogil:
        while a <= L:
            e = a
            while e < L and codes[e] != 10:  # '\n'
                e += 1
            b = e
            while a < b and Py_UNICODE_ISSPACE(codes[a]):
                a += 1
            while b > a and Py_UNICODE_ISSPACE(codes[b - 1]):
                b -= 1
            if b > a:
                bounds[n, 0] = a
                bounds[n, 1] = b
                n += 1
                for k in range(a, b):
                    seen[codes[k]] = 1
            a = e + 1
    return n


# MT19937 as CPython's _randommodule.c runs it: 624 words of state and the
# index of the next word to temper.
cdef enum:
    MT_N = 624
    MT_M = 397

cdef inline uint32_t mt_next(uint32_t* mt, Py_ssize_t* index) noexcept nogil:
    cdef uint32_t y
    cdef int kk
    if index[0] >= MT_N:  # generate the next 624 words at once
        for kk in range(MT_N - MT_M):
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU)
            mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ (0x9908b0dfU if y & 1 else 0U)
        for kk in range(MT_N - MT_M, MT_N - 1):
            y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU)
            mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ (0x9908b0dfU if y & 1 else 0U)
        y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7fffffffU)
        mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ (0x9908b0dfU if y & 1 else 0U)
        index[0] = 0
    y = mt[index[0]]
    index[0] += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9d2c5680U
    y ^= (y << 15) & 0xefc60000U
    y ^= y >> 18
    return y


def shuffle_permutation(uint32_t[::1] state,  # IN/OUT (625,) rng.getstate()[1]
                        int64_t[::1] perm):   # OUT (N,) N < 2**32
    """perm = arange(N) shuffled exactly as random.Random.shuffle shuffles a list
    of N items with the generator in state, which is advanced as shuffle advances it.

    shuffle: for i in N-1 .. 1: j = _randbelow(i + 1); swap x[i], x[j], where
    _randbelow(n) draws getrandbits(k), k = n.bit_length(), until it is < n, and
    getrandbits(k <= 32) is the next 32-bit output >> (32 - k).
    """
    cdef Py_ssize_t N = perm.shape[0], i, index
    cdef uint32_t* mt = &state[0]
    cdef uint64_t n
    cdef uint32_t r
    cdef int k
    cdef int64_t x
    if state.shape[0] != MT_N + 1 or state[MT_N] > MT_N:
        raise ValueError("state must be the 624 words and index of rng.getstate()")
    index = state[MT_N]
    if <uint64_t>N >= (<uint64_t>1) << 32:
        raise ValueError("shuffle_permutation draws 32 bits at most: N < 2**32")
    with nogil:
        for i in range(N):
            perm[i] = i
        for i in range(N - 1, 0, -1):
            n = <uint64_t>i + 1
            k = 64 - __builtin_clzll(n)  # n.bit_length() <= 32
            r = mt_next(mt, &index) >> (32 - k)
            while r >= n:
                r = mt_next(mt, &index) >> (32 - k)
            x = perm[i]
            perm[i] = perm[r]
            perm[r] = x
    state[MT_N] = <uint32_t>index


def pack(const code_t[::1] codes,       # IN  (L,) code points
         const int64_t[:, ::1] bounds,  # IN  (N, 2) document d is codes[bounds[d, 0]:bounds[d, 1]]
         const int64_t[::1] perm,       # IN  (N,) document i of the output is perm[i]
         const int32_t[::1] lut,        # IN  (S,) token id of each code point
         int32_t bos,
         int32_t[::1] tokens,           # OUT (T,) BOS d BOS d ... BOS
         int64_t[::1] starts):          # OUT (N + 1,) index of the BOS in front of each
    """Tokens of the documents in the order perm, packed as data.Dataset holds them."""
    cdef Py_ssize_t N = perm.shape[0], i, k, d, t = 0
    with nogil:
        for i in range(N):
            # the documents come in random order: ask for their bounds 16 ahead
            # and their text 8 ahead, so that the cache misses overlap
            if i + 16 < N:
                __builtin_prefetch(&bounds[perm[i + 16], 0])
            if i + 8 < N:
                __builtin_prefetch(&codes[bounds[perm[i + 8], 0]])
            d = perm[i]
            starts[i] = t
            tokens[t] = bos
            t += 1
            for k in range(bounds[d, 0], bounds[d, 1]):
                tokens[t] = lut[codes[k]]
                t += 1
        starts[N] = t
        tokens[t] = bos
