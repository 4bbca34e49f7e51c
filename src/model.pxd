# The GPT over consecutive documents that share one run of rows.
#
# Documents j = 0 .. ndocs-1 own rows doc_rows[j] .. doc_rows[j + 1] - 1 of row
# space (layout.pxd); row r of a document is its position r - doc_rows[j]. Row-wise
# ops (norms, linear layers) run over all those rows at once, so each product
# has as many rows as the documents have positions; attention runs document
# by document. The backward pass computes the gradients of the activations
# only; the weight gradients are products over all rows of the step, taken
# later (engine.pxi, phase B) from the tensors left here.
#
# Every norm (after the embedding when emb_norm, two per layer, the final one
# when final_norm) is the config's rmsnorm or layernorm, times its gain when
# norm_gain: _norm_forward and _norm_backward choose, once per call. Without
# emb_norm, xs[0] is the embedding's own rows (layout.pxd): nothing to copy.
#
# params holds the weights in flat order; wt the same buffer with every weight
# matrix transposed (what the forward products read); rows is row space;
# arena one thread's scratch; timers this thread's op-group timers (timers.pxd),
# touched only by the profiling variants.

from cython cimport floating
from libc.string cimport memcpy, memset

from layout cimport Dims, NORM_RMS
from embedding cimport embedding_forward
from rmsnorm cimport rmsnorm_forward, rmsnorm_backward
from layernorm cimport layernorm_forward, layernorm_backward
from gain cimport gain_forward, gain_backward_input
from linear cimport (linear_forward, linear_residual_forward, linear_relu_forward,
                     linear_backward_input, relu_backward)
from activation cimport activation_forward, activation_backward
from layout cimport ACT_RELU
from attention cimport attention_forward, attention_backward
from xent cimport xent_forward_backward
from timers cimport (lap, now, PROFILE, T_EMBED_NORM, T_PROJECTIONS, T_ATTENTION, T_MLP,
                     T_HEAD_LOSS, T_BACKWARD)


cdef inline void _zero(floating* buf, Py_ssize_t n) noexcept nogil:
    memset(buf, 0, n * sizeof(floating))


cdef inline void _copy(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    memcpy(dst, src, n * sizeof(floating))


cdef inline void _norm_forward(const Dims* d, floating* out, floating* hat, floating* scale,
                               const floating* x, const floating* gain, int n,
                               int C) noexcept nogil:
    """out (n, C) = norm(x) * gain, keeping norm(x) in hat and each row's scale in
    scale (n,); without gains hat is out and gain is not read."""
    if d.norm == NORM_RMS:
        rmsnorm_forward(hat, scale, x, n, C)
    else:
        layernorm_forward(hat, scale, x, n, C)
    if d.norm_gain:
        gain_forward(out, hat, gain, n, C)


cdef inline void _norm_backward(const Dims* d, floating* dx, const floating* dout,
                                floating* scratch, const floating* x, const floating* hat,
                                const floating* scale, const floating* gain, int n,
                                int C) noexcept nogil:
    """Adds into dx (n, C) the gradient through out = norm(x) * gain from dout, the
    gradient of out, with x, hat and scale as _norm_forward left them; with
    gains, scratch (n, C) takes the gradient of hat (dout itself is kept: the
    gain's gradient reads it in phase B)."""
    cdef const floating* d_hat = dout
    if d.norm_gain:
        gain_backward_input(scratch, dout, gain, n, C)
        d_hat = scratch
    if d.norm == NORM_RMS:
        rmsnorm_backward(dx, d_hat, x, scale, n, C)
    else:
        layernorm_backward(dx, d_hat, hat, scale, n, C)


cdef inline const floating* _gain(const Dims* d, const floating* params, int k) noexcept nogil:
    """Norm k's gain (C,), k in the forward's order (layout.pxd): layer l's two are
    k = d.emb_norm + 2 l and the one after it."""
    return params + d.gains + <Py_ssize_t>k * d.C


cdef inline void _forward(const Dims* d, const floating* params, const floating* wt,
                          floating* rows, floating* arena, const int* row_tok,
                          const int* doc_rows, int ndocs, int r0, bint last_only,
                          double* timers) noexcept nogil:
    """gpt_forward, or with last_only gpt_forward_last (a constant either way once
    inlined, so training's path keeps no test of it)."""
    cdef int C = d.C, F = d.F, H = d.H, T = d.T, R = d.R, l, j, s, e, k, passes
    cdef int n = doc_rows[ndocs] - r0
    cdef floating inv_sqrt_d = <floating>(1.0 / (<double>d.D) ** 0.5)
    cdef const floating* lw     # this layer's weights, transposed
    cdef floating* act          # this layer's tensors
    cdef floating* x_in
    cdef floating* x_out
    cdef Py_ssize_t rc = <Py_ssize_t>r0 * C    # first row of (R, C) tensors
    # past the keys and values, a layer computes rows q0 .. q0 + qn - 1 of the
    # documents dr[0 .. nd - 1]: all of them, but in the last layer of last_only
    # one pass per document over its last row
    cdef const int* dr = doc_rows
    cdef int nd = ndocs, q0 = r0, qn = n
    cdef Py_ssize_t qc = rc
    cdef floating* att_scratch = arena + d.att_scratch if d.att_scratch >= 0 else NULL
    cdef double t = now() if PROFILE else 0
    for j in range(ndocs):
        s = doc_rows[j]
        embedding_forward(rows + d.emb + <Py_ssize_t>s * C, params + d.wte, params + d.wpe,
                          row_tok + s, max(r0, s) - s, doc_rows[j + 1] - s, C)
    if d.emb_norm:  # xs[0] = norm(emb); otherwise the embedding wrote xs[0]
        _norm_forward(d, rows + d.xs + rc, rows + d.emb_hat + rc, rows + d.emb_scale + r0,
                      rows + d.emb + rc, _gain(d, params, 0), n, C)
    t = lap(timers, T_EMBED_NORM, t)
    for l in range(d.L):
        lw = wt + d.layer0 + l * d.layer_size
        act = rows + d.act0 + l * d.act_size
        x_in = rows + d.xs + <Py_ssize_t>l * R * C
        x_out = x_in + <Py_ssize_t>R * C
        # x = norm(x); q, k, v = Wq x, Wk x, Wv x (one product: the three are adjacent)
        _norm_forward(d, act + d.ln1 + rc, act + d.ln1_hat + rc, act + d.ln1_scale + r0,
                      x_in + rc, _gain(d, params, d.emb_norm + 2 * l), n, C)
        t = lap(timers, T_EMBED_NORM, t)
        linear_forward(act + d.qkv_out + 3 * rc, act + d.ln1 + rc, lw + d.qkv, n, C, 3 * C)
        t = lap(timers, T_PROJECTIONS, t)
        passes = ndocs if last_only and l == d.L - 1 else 1
        for k in range(passes):
            if last_only and l == d.L - 1:
                dr = doc_rows + k
                nd = 1
                q0 = doc_rows[k + 1] - 1
                qn = 1
                qc = <Py_ssize_t>q0 * C
            for j in range(nd):
                s, e = dr[j], dr[j + 1]
                attention_forward(act + d.att_out + <Py_ssize_t>s * C,
                                  act + d.att + <Py_ssize_t>s * H * d.Tp, arena + d.xt,
                                  arena + d.stats, att_scratch,
                                  act + d.qkv_out + <Py_ssize_t>s * 3 * C,
                                  max(q0, s) - s, e - s, C, H, d.D, inv_sqrt_d)
            t = lap(timers, T_ATTENTION, t)
            # x = Wo x_attn + residual
            linear_residual_forward(act + d.x_mid + qc, act + d.att_out + qc, lw + d.wo,
                                    x_in + qc, qn, C, C)
            t = lap(timers, T_PROJECTIONS, t)
            # x = fc2 relu(fc1 norm(x)) + residual
            _norm_forward(d, act + d.ln2 + qc, act + d.ln2_hat + qc, act + d.ln2_scale + q0,
                          act + d.x_mid + qc, _gain(d, params, d.emb_norm + 1 + 2 * l), qn, C)
            t = lap(timers, T_EMBED_NORM, t)
            if d.activation == ACT_RELU:
                linear_relu_forward(act + d.hidden + <Py_ssize_t>q0 * F, act + d.ln2 + qc,
                                    lw + d.fc1, qn, C, F)
            else:  # gelu, relu2 or silu in relu's place, its slope kept for the backward pass
                linear_forward(act + d.hidden + <Py_ssize_t>q0 * F, act + d.ln2 + qc,
                               lw + d.fc1, qn, C, F)
                activation_forward(act + d.hidden + <Py_ssize_t>q0 * F,
                                   act + d.hidden_slope + <Py_ssize_t>q0 * F,
                                   <Py_ssize_t>qn * F, d.activation)
            linear_residual_forward(x_out + qc, act + d.hidden + <Py_ssize_t>q0 * F, lw + d.fc2,
                                    act + d.x_mid + qc, qn, F, C)
            t = lap(timers, T_MLP, t)
            if l < d.L - 1:
                continue
            # x = norm(x) when final_norm (the head's input, head_in)
            if d.final_norm:
                _norm_forward(d, rows + d.xf + qc, rows + d.xf_hat + qc, rows + d.xf_scale + q0,
                              rows + d.xs + <Py_ssize_t>d.L * R * C + qc,
                              _gain(d, params, d.n_norms - 1), qn, C)
                t = lap(timers, T_EMBED_NORM, t)
            # logits = lm_head x (lm_head is wte when tied)
            linear_forward(rows + d.logits + <Py_ssize_t>q0 * d.V, rows + d.head_in + qc,
                           wt + d.lm_head, qn, C, d.V)
            t = lap(timers, T_HEAD_LOSS, t)


cdef inline void gpt_forward(const Dims* d, const floating* params, const floating* wt,
                             floating* rows, floating* arena, const int* row_tok,
                             const int* doc_rows, int ndocs, int r0,
                             double* timers) noexcept nogil:
    """Logits of rows r0 .. doc_rows[ndocs] - 1 into rows[logits].

    Rows before r0 of a document must already be computed (the KV cache of
    sampling); training passes r0 = doc_rows[0].
    """
    _forward(d, params, wt, rows, arena, row_tok, doc_rows, ndocs, r0, False, timers)


cdef inline void gpt_forward_last(const Dims* d, const floating* params, const floating* wt,
                                  floating* rows, floating* arena, const int* row_tok,
                                  const int* doc_rows, int ndocs,
                                  double* timers) noexcept nogil:
    """The logits of each document's last row into rows[logits], the same bits as
    gpt_forward gives it: the last layer computes the keys and values of every
    row, and the rest (attention, MLP, head) only for the last rows, as
    gpt_forward does for a row with the rows before it in the cache."""
    _forward(d, params, wt, rows, arena, row_tok, doc_rows, ndocs, doc_rows[0], True, timers)


cdef inline void gpt_losses(const Dims* d, floating* rows, const int* row_tgt,
                            const int* doc_rows, int ndocs, double batch_scale,
                            double* doc_losses, double* timers) noexcept nogil:
    """Each document's mean position loss into doc_losses[j]; the logits of its rows
    become the gradient of sum_j batch_scale * doc_loss_j with respect to them.

    gpt_forward must have run over the same documents. Row r's target is row_tgt[r].
    """
    cdef int V = d.V, j, s, nj
    cdef double t = now() if PROFILE else 0
    for j in range(ndocs):
        s, nj = doc_rows[j], doc_rows[j + 1] - doc_rows[j]
        doc_losses[j] = (1.0 / nj) * xent_forward_backward(
            rows + d.logits + <Py_ssize_t>s * V, rows + d.logits + <Py_ssize_t>s * V,
            row_tgt + s, nj, V, <floating>((1.0 / nj) * batch_scale))
    lap(timers, T_BACKWARD + T_HEAD_LOSS, t)


cdef inline void gpt_backward(const Dims* d, const floating* params, floating* rows,
                              floating* arena, const int* doc_rows, int ndocs,
                              double* timers) noexcept nogil:
    """The gradients of every activation of the documents' rows, from the logits'
    gradient that gpt_losses left in rows[logits]."""
    cdef int C = d.C, F = d.F, H = d.H, T = d.T, R = d.R, V = d.V, l, j, s, nj
    cdef int r0 = doc_rows[0], n = doc_rows[ndocs] - doc_rows[0]
    cdef floating inv_sqrt_d = <floating>(1.0 / (<double>d.D) ** 0.5)
    cdef const floating* lw     # this layer's weights, as stored
    cdef floating* act
    cdef floating* x_in
    cdef floating* d_top        # gradient of this layer's output
    cdef floating* d_in         # gradient of this layer's input
    cdef floating* d_head       # gradient of the head's input
    cdef floating* d_norm       # gradient of a norm's output
    cdef floating* d_ln = rows + d.d_ln + <Py_ssize_t>r0 * C
    cdef floating* d_att = rows + d.d_att + <Py_ssize_t>r0 * C
    cdef Py_ssize_t rc = <Py_ssize_t>r0 * C
    cdef floating* att_scratch = arena + d.att_scratch if d.att_scratch >= 0 else NULL
    cdef double t = now() if PROFILE else 0
    # logits = lm_head x
    d_top = rows + d.act0 + (d.L - 1) * d.act_size + d.d_out + rc
    d_head = rows + d.d_xf + rc if d.final_norm else d_top
    linear_backward_input(d_head, rows + d.logits + <Py_ssize_t>r0 * V, params + d.lm_head,
                          n, C, V)
    t = lap(timers, T_BACKWARD + T_HEAD_LOSS, t)
    # x = norm(x), the final norm
    if d.final_norm:
        _zero(d_top, <Py_ssize_t>n * C)
        _norm_backward(d, d_top, d_head, d_ln, rows + d.xs + <Py_ssize_t>d.L * R * C + rc,
                       rows + d.xf_hat + rc, rows + d.xf_scale + r0,
                       _gain(d, params, d.n_norms - 1), n, C)
        t = lap(timers, T_BACKWARD + T_EMBED_NORM, t)
    for l in range(d.L - 1, -1, -1):
        lw = params + d.layer0 + l * d.layer_size
        act = rows + d.act0 + l * d.act_size
        x_in = rows + d.xs + <Py_ssize_t>l * R * C + rc
        d_top = act + d.d_out + rc
        # x_out = fc2 act(fc1 ln2) + x_mid
        linear_backward_input(act + d.d_hidden + <Py_ssize_t>r0 * F, d_top, lw + d.fc2, n, F, C)
        if d.activation == ACT_RELU:
            relu_backward(act + d.d_hidden + <Py_ssize_t>r0 * F,
                          act + d.hidden + <Py_ssize_t>r0 * F, <Py_ssize_t>n * F)
        else:
            activation_backward(act + d.d_hidden + <Py_ssize_t>r0 * F,
                                 act + d.hidden_slope + <Py_ssize_t>r0 * F, <Py_ssize_t>n * F)
        # with gains, ln2's gradient is kept for its gain's
        d_norm = act + d.d_ln2 + rc if d.norm_gain else d_ln
        linear_backward_input(d_norm, act + d.d_hidden + <Py_ssize_t>r0 * F, lw + d.fc1, n, C, F)
        t = lap(timers, T_BACKWARD + T_MLP, t)
        # d x_mid = d x_out (residual) + the path through ln2
        _copy(act + d.d_mid + rc, d_top, <Py_ssize_t>n * C)
        _norm_backward(d, act + d.d_mid + rc, d_norm, d_ln, act + d.x_mid + rc,
                       act + d.ln2_hat + rc, act + d.ln2_scale + r0,
                       _gain(d, params, d.emb_norm + 1 + 2 * l), n, C)
        t = lap(timers, T_BACKWARD + T_EMBED_NORM, t)
        # x_mid = Wo att_out + x_in
        linear_backward_input(d_att, act + d.d_mid + rc, lw + d.wo, n, C, C)
        t = lap(timers, T_BACKWARD + T_PROJECTIONS, t)
        _zero(act + d.d_qkv + 3 * rc, <Py_ssize_t>n * 3 * C)
        for j in range(ndocs):
            s, nj = doc_rows[j], doc_rows[j + 1] - doc_rows[j]
            attention_backward(act + d.d_qkv + <Py_ssize_t>s * 3 * C, arena + d.xt,
                               arena + d.d_att_w, arena + d.stats, att_scratch,
                               rows + d.d_att + <Py_ssize_t>s * C,
                               act + d.att + <Py_ssize_t>s * H * d.Tp,
                               act + d.qkv_out + <Py_ssize_t>s * 3 * C,
                               nj, C, H, d.D, inv_sqrt_d)
        t = lap(timers, T_BACKWARD + T_ATTENTION, t)
        d_norm = act + d.d_ln1 + rc if d.norm_gain else d_ln
        linear_backward_input(d_norm, act + d.d_qkv + 3 * rc, lw + d.qkv, n, C, 3 * C)
        t = lap(timers, T_BACKWARD + T_PROJECTIONS, t)
        # d x_in = d x_mid (residual) + the path through ln1
        if l > 0:
            d_in = rows + d.act0 + (l - 1) * d.act_size + d.d_out + rc
        else:
            d_in = rows + d.d_x0 + rc
        _copy(d_in, act + d.d_mid + rc, <Py_ssize_t>n * C)
        _norm_backward(d, d_in, d_norm, d_ln, x_in, act + d.ln1_hat + rc,
                       act + d.ln1_scale + r0, _gain(d, params, d.emb_norm + 2 * l), n, C)
        t = lap(timers, T_BACKWARD + T_EMBED_NORM, t)
    # xs[0] = norm(emb): the embedding rows' gradient, scattered into wte and wpe later
    # (without emb_norm d_emb is d_x0 itself)
    if d.emb_norm:
        _zero(rows + d.d_emb + rc, <Py_ssize_t>n * C)
        _norm_backward(d, rows + d.d_emb + rc, rows + d.d_x0 + rc, d_ln, rows + d.emb + rc,
                       rows + d.emb_hat + rc, rows + d.emb_scale + r0, _gain(d, params, 0),
                       n, C)
    lap(timers, T_BACKWARD + T_EMBED_NORM, t)
