# Sizes and buffer offsets shared by every kernel.
#
# Dimension letters used in all kernel files:
#   T  positions of one document (n <= block_size rows are computed)
#   C  n_embd, width of the residual stream      H  heads, D = C / H
#   F  4 * C, width of the MLP hidden layer      V  vocab_size
#   L  layers                                    P  parameters
# Every matrix is row-major; a weight "W (nout, nin)" maps nin inputs to nout
# outputs, as in the original. Offsets are counted in elements, not bytes.

cdef struct Dims:
    int C, H, D, F, V, T, L
    Py_ssize_t P
    # parameters (flat order of the original)
    Py_ssize_t wte, wpe, lm_head   # (V, C), (T, C), (V, C)
    Py_ssize_t layer0, layer_size  # layer l starts at layer0 + l * layer_size
    Py_ssize_t qkv, wo, fc1, fc2   # inside a layer: (3C, C) = wq;wk;wv, (C, C), (F, C), (C, F)
    # one thread's activations and gradient scratch ("arena")
    Py_ssize_t emb, emb_scale      # (T, C) wte[tok] + wpe[pos], (T,) its rmsnorm scale
    Py_ssize_t xs                  # (L + 1, T, C) residual stream entering each layer, then the output
    Py_ssize_t act0, act_size      # layer l's activations start at act0 + l * act_size
    Py_ssize_t ln1, ln1_scale      # (T, C), (T,)   rmsnorm of the layer input
    Py_ssize_t qkv_out             # (T, 3C)        q, k, v of every position (the KV cache)
    Py_ssize_t kt                  # (H, D, T)      keys transposed, for dot products over keys
    Py_ssize_t att                 # (H, T, T)      softmax weights, row t uses columns <= t
    Py_ssize_t att_out             # (T, C)         heads concatenated
    Py_ssize_t x_mid               # (T, C)         after the attention residual
    Py_ssize_t ln2, ln2_scale      # (T, C), (T,)
    Py_ssize_t hidden              # (T, F)         relu(fc1 ln2)
    Py_ssize_t logits              # (T, V)
    Py_ssize_t d_x, d_ln, d_att    # (T, C) each: residual, norm output and attention output gradients
    Py_ssize_t d_qkv, d_hidden     # (T, 3C), (T, F)
    Py_ssize_t d_logits, d_row     # (T, V), (T,)
    Py_ssize_t arena_size          # elements per thread, a multiple of 16


cdef inline Py_ssize_t _take(Py_ssize_t* cursor, Py_ssize_t n) noexcept nogil:
    """Reserve n elements at the cursor, keeping every buffer 64-byte aligned."""
    cdef Py_ssize_t start = cursor[0]
    cursor[0] = start + (n + 15) // 16 * 16
    return start


cdef inline void dims_init(Dims* d, int n_embd, int n_head, int n_layer, int block_size,
                           int vocab_size) noexcept nogil:
    cdef int C = n_embd, T = block_size, V = vocab_size
    cdef Py_ssize_t cur = 0, layer_cur
    d.C = C; d.H = n_head; d.D = C // n_head; d.F = 4 * C; d.V = V; d.T = T; d.L = n_layer
    d.wte = 0
    d.wpe = d.wte + V * C
    d.lm_head = d.wpe + T * C
    d.layer0 = d.lm_head + V * C
    d.qkv = 0
    d.wo = 3 * C * C
    d.fc1 = 4 * C * C
    d.fc2 = 4 * C * C + d.F * C
    d.layer_size = 4 * C * C + 2 * d.F * C
    d.P = d.layer0 + n_layer * d.layer_size

    d.emb = _take(&cur, T * C)
    d.emb_scale = _take(&cur, T)
    d.xs = _take(&cur, (n_layer + 1) * T * C)
    d.logits = _take(&cur, T * V)
    d.d_x = _take(&cur, T * C)
    d.d_ln = _take(&cur, T * C)
    d.d_att = _take(&cur, T * C)
    d.d_qkv = _take(&cur, T * 3 * C)
    d.d_hidden = _take(&cur, T * d.F)
    d.d_logits = _take(&cur, T * V)
    d.d_row = _take(&cur, T)
    layer_cur = 0
    d.ln1 = _take(&layer_cur, T * C)
    d.ln1_scale = _take(&layer_cur, T)
    d.qkv_out = _take(&layer_cur, T * 3 * C)
    d.kt = _take(&layer_cur, C * T)
    d.att = _take(&layer_cur, n_head * T * T)
    d.att_out = _take(&layer_cur, T * C)
    d.x_mid = _take(&layer_cur, T * C)
    d.ln2 = _take(&layer_cur, T * C)
    d.ln2_scale = _take(&layer_cur, T)
    d.hidden = _take(&layer_cur, T * d.F)
    d.act_size = layer_cur
    d.act0 = _take(&cur, n_layer * layer_cur)
    d.arena_size = cur
