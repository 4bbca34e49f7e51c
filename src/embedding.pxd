# Token plus position embedding: emb[t] = wte[tokens[t]] + wpe[t].

from cython cimport floating


cdef inline void embedding_forward(floating* emb, const floating* wte, const floating* wpe,
                                   const int* tokens, int p0, int p1, int C) noexcept nogil:
    """emb rows p0..p1-1 (T, C) from the token at each position."""
    cdef int t, c
    cdef const floating* tok_row
    cdef const floating* pos_row
    cdef floating* emb_t
    for t in range(p0, p1):
        tok_row = wte + <Py_ssize_t>tokens[t] * C
        pos_row = wpe + <Py_ssize_t>t * C
        emb_t = emb + <Py_ssize_t>t * C
        for c in range(C):
            emb_t[c] = tok_row[c] + pos_row[c]


cdef inline void embedding_backward(floating* dw, const floating* demb, const int* row_ids,
                                    int R, int C, int i0, int i1, bint add) noexcept nogil:
    """dw (i1 - i0, C) = rows i0..i1-1 of the table's gradient; with add, dw +=
    (onto the head's part of a tied wte).

    Row r of demb (R, C) belongs to table row row_ids[r] (its token for wte, its
    position for wpe); rows are added in order r = 0, 1, ... .
    """
    cdef int r, c, i
    cdef floating* dw_i
    cdef const floating* demb_r
    if not add:
        for i in range((i1 - i0) * C):
            dw[i] = 0
    for r in range(R):
        i = row_ids[r]
        if i0 <= i < i1:
            dw_i = dw + (i - i0) * C
            demb_r = demb + <Py_ssize_t>r * C
            for c in range(C):
                dw_i[c] += demb_r[c]
