# Sizes and buffer offsets shared by every kernel.
#
# Dimension letters used in all kernel files:
#   T  positions of one document (n <= block_size rows are computed)
#   C  n_embd, width of the residual stream      H  heads, D = C / H
#   F  mlp_ratio * C, the MLP hidden width       V  vocab_size
#   L  layers                                    P  parameters
#   R  rows of a step: the positions of all its documents, one after another
#   N  norms: 2 L, one more with emb_norm, one more with final_norm
# Every matrix is row-major; a weight "W (nout, nin)" maps nin inputs to nout
# outputs, as in the original. Offsets are counted in elements, not bytes.
#
# Activations live in "row space": one (R, width) tensor per quantity, where
# document b of a step owns rows R_b .. R_b + n_b - 1. The weight gradients are
# products over the rows of each gradient group of these tensors (engine.pxi,
# phase B).

# the architecture's switches (config.GPTConfig), as Dims holds them
cdef enum:
    NORM_RMS = 0
    NORM_LAYER = 1
cdef enum:
    ACT_RELU = 0
    ACT_GELU = 1
    ACT_RELU2 = 2
    ACT_SILU = 3


cdef struct Dims:
    int C, H, D, F, V, T, L
    int norm, activation           # NORM_*, ACT_*
    bint norm_gain, final_norm, tie_embeddings, emb_norm
    int Tp                         # T rounded up to 16 (floats in the widest vector): room
                                   # for any attention row, padded(m) <= Tp (attention.pxd)
    int R                          # most rows of a step: batch_size * T
    Py_ssize_t P
    # parameters (flat order of the original, then the gains)
    Py_ssize_t wte, wpe, lm_head   # (V, C), (T, C), (V, C); lm_head = wte when tied
    Py_ssize_t layer0, layer_size  # layer l starts at layer0 + l * layer_size
    Py_ssize_t qkv, wo, fc1, fc2   # inside a layer: (3C, C) = wq;wk;wv, (C, C), (F, C), (C, F)
    int n_norms                    # N
    Py_ssize_t gains               # (N, C) each norm's gain (norm_gain), in the forward's
                                   # order: after the embedding (emb_norm), each layer's
                                   # two, the final
    # row space: tensors of R rows
    Py_ssize_t emb, emb_scale      # (R, C) wte[tok] + wpe[pos], (R,) its norm's scale;
                                   # without emb_norm emb is xs[0] and has no scale
    Py_ssize_t xs                  # (L + 1, R, C) residual stream entering each layer, then the output
    Py_ssize_t logits              # (R, V) logits, then their gradient
    Py_ssize_t d_x0, d_emb         # (R, C) gradients of xs[0] and of emb (one tensor
                                   # without emb_norm)
    Py_ssize_t d_ln, d_att         # (R, C) scratch: gradient of a norm output (before its
                                   # gain), of att_out
    # A norm's normalized rows before its gain (the "hat" tensors) are kept for the
    # gain's gradient; without gains they are the norm's output itself.
    Py_ssize_t emb_hat             # (R, C) xs[0] before its gain (emb_norm)
    Py_ssize_t xf, xf_scale, xf_hat  # (R, C), (R,), (R, C) final norm of xs[L] (final_norm)
    Py_ssize_t head_in             # (R, C) the head's input: xf, or xs[L] without final_norm
    Py_ssize_t d_xf                # (R, C) gradient of xf (final_norm)
    Py_ssize_t act0, act_size      # layer l's tensors start at act0 + l * act_size:
    Py_ssize_t ln1, ln1_scale      #   (R, C), (R,)   norm of the layer input, its scale
    Py_ssize_t qkv_out             #   (R, 3C)        q, k, v of every position (the KV cache)
    Py_ssize_t att                 #   (R, H, Tp)     room for each document's attention weights (attention.pxd)
    Py_ssize_t att_out             #   (R, C)         heads concatenated
    Py_ssize_t x_mid               #   (R, C)         after the attention residual
    Py_ssize_t ln2, ln2_scale      #   (R, C), (R,)
    Py_ssize_t hidden              #   (R, F)         act(fc1 ln2)
    Py_ssize_t hidden_slope        #   (R, F)         act'(fc1 ln2); no room with relu
    Py_ssize_t d_qkv               #   (R, 3C)        gradient of qkv_out
    Py_ssize_t d_mid               #   (R, C)         gradient of x_mid
    Py_ssize_t d_hidden            #   (R, F)         gradient of fc1's output (act' applied)
    Py_ssize_t d_out               #   (R, C)         gradient of the layer's output
    Py_ssize_t ln1_hat, ln2_hat    #   (R, C)         ln1, ln2 before their gains
    Py_ssize_t d_ln1, d_ln2        #   (R, C)         gradients of ln1, ln2 (norm_gain)
    Py_ssize_t rows_size           # elements of row space
    # one thread's scratch for one document
    Py_ssize_t xt                  # (C, T) the queries (or the attention output's gradient) transposed
    Py_ssize_t d_att_w             # (T, Tp) gradient of one head's attention weights
    Py_ssize_t stats               # (2 Tp,) per-position softmax maxima and sums
    Py_ssize_t att_scratch         # attention.h's scratch (attention.small_scratch); -1
                                   # where no document takes its path
    Py_ssize_t arena_size          # elements per thread


from attention cimport small_scratch


cdef inline Py_ssize_t _take(Py_ssize_t* cursor, Py_ssize_t n) noexcept nogil:
    """Reserve n elements at the cursor, keeping every buffer 64-byte aligned."""
    cdef Py_ssize_t start = cursor[0]
    cursor[0] = start + (n + 15) // 16 * 16
    return start


cdef inline Py_ssize_t block_elems(int nin) noexcept nogil:
    """Weight rows per block of the weight phases: about 2048 weights, at least 4 rows."""
    return max(4, 2048 // nin) * nin


cdef inline void dims_init(Dims* d, int n_embd, int n_head, int n_layer, int block_size,
                           int vocab_size, int batch_size, int mlp_ratio, int norm,
                           bint norm_gain, bint final_norm, int activation,
                           bint tie_embeddings, bint emb_norm) noexcept nogil:
    # 64-bit sizes throughout: R * H * T passes 2**31 long before memory runs out
    cdef Py_ssize_t C = n_embd, T = block_size, V = vocab_size
    cdef Py_ssize_t F = <Py_ssize_t>mlp_ratio * n_embd
    cdef Py_ssize_t R = <Py_ssize_t>batch_size * block_size
    # attention rows are padded to whole vectors (attention.pxd): at most 16 floats
    cdef Py_ssize_t Tp = (T + 15) // 16 * 16
    cdef Py_ssize_t cur = 0, layer_cur = 0
    d.C = n_embd; d.H = n_head; d.D = n_embd // n_head; d.F = <int>F
    d.norm = norm; d.norm_gain = norm_gain; d.final_norm = final_norm
    d.activation = activation; d.tie_embeddings = tie_embeddings; d.emb_norm = emb_norm
    d.V = vocab_size; d.T = block_size; d.L = n_layer; d.Tp = <int>Tp
    d.R = <int>R
    d.wte = 0
    d.wpe = d.wte + V * C
    if tie_embeddings:  # no lm_head: the head's product reads wte
        d.lm_head = d.wte
        d.layer0 = d.wpe + T * C
    else:
        d.lm_head = d.wpe + T * C
        d.layer0 = d.lm_head + V * C
    d.qkv = 0
    d.wo = 3 * C * C
    d.fc1 = 4 * C * C
    d.fc2 = 4 * C * C + F * C
    d.layer_size = 4 * C * C + 2 * F * C
    d.n_norms = (1 if emb_norm else 0) + 2 * n_layer + (1 if final_norm else 0)
    d.gains = d.layer0 + n_layer * d.layer_size
    d.P = d.gains + (d.n_norms * C if norm_gain else 0)

    # without emb_norm xs[0] is emb itself: the embedding writes it, and the
    # scatter into wte and wpe reads d_x0
    d.emb = _take(&cur, R * C) if emb_norm else 0
    d.emb_scale = _take(&cur, R) if emb_norm else 0
    d.xs = _take(&cur, (n_layer + 1) * R * C)
    d.logits = _take(&cur, R * V)
    d.d_x0 = _take(&cur, R * C)
    d.d_emb = _take(&cur, R * C) if emb_norm else d.d_x0
    if not emb_norm:
        d.emb = d.xs
    d.d_ln = _take(&cur, R * C)
    d.d_att = _take(&cur, R * C)
    d.ln1 = _take(&layer_cur, R * C)
    d.ln1_scale = _take(&layer_cur, R)
    d.qkv_out = _take(&layer_cur, R * 3 * C)
    d.att = _take(&layer_cur, R * n_head * Tp)
    d.att_out = _take(&layer_cur, R * C)
    d.x_mid = _take(&layer_cur, R * C)
    d.ln2 = _take(&layer_cur, R * C)
    d.ln2_scale = _take(&layer_cur, R)
    d.hidden = _take(&layer_cur, R * F)
    # relu's derivative is read off its output (linear.pxd's relu_backward)
    d.hidden_slope = _take(&layer_cur, 0 if activation == ACT_RELU else R * F)
    d.d_qkv = _take(&layer_cur, R * 3 * C)
    d.d_mid = _take(&layer_cur, R * C)
    d.d_hidden = _take(&layer_cur, R * F)
    d.d_out = _take(&layer_cur, R * C)
    # the options' tensors come last, so that the original's keep their offsets
    d.ln1_hat = d.ln1
    d.ln2_hat = d.ln2
    d.d_ln1 = d.d_ln2 = 0
    if norm_gain:
        d.ln1_hat = _take(&layer_cur, R * C)
        d.ln2_hat = _take(&layer_cur, R * C)
        d.d_ln1 = _take(&layer_cur, R * C)
        d.d_ln2 = _take(&layer_cur, R * C)
    d.act_size = layer_cur
    d.act0 = _take(&cur, n_layer * layer_cur)
    d.emb_hat = _take(&cur, R * C) if norm_gain and emb_norm else d.xs
    d.head_in = d.xs + n_layer * R * C
    d.xf = d.xf_hat = d.head_in
    d.xf_scale = d.d_xf = 0
    if final_norm:
        d.xf = _take(&cur, R * C)
        d.xf_scale = _take(&cur, R)
        d.xf_hat = _take(&cur, R * C) if norm_gain else d.xf
        d.d_xf = _take(&cur, R * C)
        d.head_in = d.xf
    d.rows_size = cur

    cur = 0
    d.xt = _take(&cur, C * T)
    d.d_att_w = _take(&cur, T * Tp)
    d.stats = _take(&cur, 2 * Tp)
    d.att_scratch = -1
    if small_scratch(<int>T, <int>Tp, <int>C) > 0:
        d.att_scratch = _take(&cur, small_scratch(<int>T, <int>Tp, <int>C))
    d.arena_size = cur
