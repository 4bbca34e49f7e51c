# Token plus position embedding: emb[t] = wte[tokens[t]] + wpe[t].

from cython cimport floating


cdef inline void embedding_forward(floating* emb, const floating* wte, const floating* wpe,
                                   const int* tokens, int p0, int p1, int C) noexcept nogil:
    """emb rows p0..p1-1 (T, C) from the token at each position."""
    cdef int t, c
    cdef const floating* tok_row
    for t in range(p0, p1):
        tok_row = wte + <Py_ssize_t>tokens[t] * C
        for c in range(C):
            emb[t * C + c] = tok_row[c] + wpe[t * C + c]


cdef inline void embedding_backward(floating* dwte, floating* dwpe, const floating* demb,
                                    const int* tokens, int T, int C) noexcept nogil:
    """Adds each row of demb (T, C) into its token's row and its position's row."""
    cdef int t, c
    cdef floating* tok_row
    for t in range(T):
        tok_row = dwte + <Py_ssize_t>tokens[t] * C
        for c in range(C):
            tok_row[c] += demb[t * C + c]
            dwpe[t * C + c] += demb[t * C + c]
