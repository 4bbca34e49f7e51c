# The GPT of one document: forward over positions p0..p1-1, backward over all.
#
# params holds the weights in flat order; wt holds the same buffer with every
# weight matrix transposed (what the forward linear layers read); arena is one
# thread's activation and gradient scratch (offsets in layout.Dims).

from cython cimport floating
from libc.string cimport memset

from layout cimport Dims
from embedding cimport embedding_forward, embedding_backward
from rmsnorm cimport rmsnorm_forward, rmsnorm_backward
from linear cimport (linear_forward, linear_residual_forward, linear_relu_forward,
                     linear_backward, relu_backward)
from attention cimport attention_forward, attention_backward
from xent cimport xent_forward_backward


cdef inline void _zero(floating* buf, Py_ssize_t n) noexcept nogil:
    memset(buf, 0, n * sizeof(floating))


cdef inline void gpt_forward(const Dims* d, const floating* params, const floating* wt,
                             floating* arena, const int* tokens, int p0,
                             int p1) noexcept nogil:
    """Logits of rows p0..p1-1 into arena[logits]; rows < p0 must already be there."""
    cdef int C = d.C, T = d.T, rows = p1 - p0, l
    cdef floating inv_sqrt_d = <floating>(1.0 / (<double>d.D) ** 0.5)
    cdef const floating* lw     # this layer's weights, transposed
    cdef floating* act          # this layer's activations
    cdef floating* x_in
    cdef floating* x_out
    cdef Py_ssize_t r0 = <Py_ssize_t>p0 * C    # first row of (T, C) buffers
    embedding_forward(arena + d.emb, params + d.wte, params + d.wpe, tokens, p0, p1, C)
    rmsnorm_forward(arena + d.xs + r0, arena + d.emb_scale + p0, arena + d.emb + r0, rows, C)
    for l in range(d.L):
        lw = wt + d.layer0 + l * d.layer_size
        act = arena + d.act0 + l * d.act_size
        x_in = arena + d.xs + l * T * C
        x_out = x_in + T * C
        # x = rmsnorm(x); q, k, v = Wq x, Wk x, Wv x (one product: the three are adjacent)
        rmsnorm_forward(act + d.ln1 + r0, act + d.ln1_scale + p0, x_in + r0, rows, C)
        linear_forward(act + d.qkv_out + 3 * r0, act + d.ln1 + r0, lw + d.qkv, rows, C, 3 * C)
        attention_forward(act + d.att_out, act + d.att, act + d.kt, act + d.qkv_out,
                          p0, p1, T, C, d.H, d.D, inv_sqrt_d)
        # x = Wo x_attn + residual
        linear_residual_forward(act + d.x_mid + r0, act + d.att_out + r0, lw + d.wo,
                                x_in + r0, rows, C, C)
        # x = fc2 relu(fc1 rmsnorm(x)) + residual
        rmsnorm_forward(act + d.ln2 + r0, act + d.ln2_scale + p0, act + d.x_mid + r0, rows, C)
        linear_relu_forward(act + d.hidden + <Py_ssize_t>p0 * d.F, act + d.ln2 + r0,
                            lw + d.fc1, rows, C, d.F)
        linear_residual_forward(x_out + r0, act + d.hidden + <Py_ssize_t>p0 * d.F, lw + d.fc2,
                                act + d.x_mid + r0, rows, d.F, C)
    linear_forward(arena + d.logits + <Py_ssize_t>p0 * d.V,
                   arena + d.xs + d.L * T * C + r0, wt + d.lm_head, rows, C, d.V)


cdef inline double gpt_loss_backward(const Dims* d, const floating* params, floating* grads,
                                     floating* arena, const int* tokens, int n,
                                     floating grad_scale) noexcept nogil:
    """Sum of the n position losses; adds grad_scale * their gradient into grads.

    gpt_forward(..., 0, n) must have run on the same arena. tokens holds n + 1
    ids: position t predicts tokens[t + 1].
    """
    cdef int C = d.C, T = d.T, F = d.F, l
    cdef floating inv_sqrt_d = <floating>(1.0 / (<double>d.D) ** 0.5)
    cdef const floating* lw     # this layer's weights (not transposed)
    cdef floating* lg           # this layer's gradients
    cdef floating* act
    cdef floating* x_in
    cdef floating* dx = arena + d.d_x      # gradient of the residual stream
    cdef floating* d_ln = arena + d.d_ln
    cdef floating* d_att = arena + d.d_att
    cdef floating* d_qkv = arena + d.d_qkv
    cdef floating* d_hidden = arena + d.d_hidden
    cdef floating* d_logits = arena + d.d_logits
    cdef double loss
    loss = xent_forward_backward(d_logits, arena + d.logits, tokens + 1, n, d.V, grad_scale)
    # logits = lm_head x
    _zero(dx, n * C)
    linear_backward(dx, grads + d.lm_head, d_logits, arena + d.xs + d.L * T * C,
                    params + d.lm_head, n, C, d.V)
    for l in range(d.L - 1, -1, -1):
        lw = params + d.layer0 + l * d.layer_size
        lg = grads + d.layer0 + l * d.layer_size
        act = arena + d.act0 + l * d.act_size
        x_in = arena + d.xs + l * T * C
        # x_out = fc2 relu(fc1 ln2) + x_mid: dx flows on unchanged to x_mid
        _zero(d_hidden, n * F)
        linear_backward(d_hidden, lg + d.fc2, dx, act + d.hidden, lw + d.fc2, n, F, C)
        relu_backward(d_hidden, act + d.hidden, n * F)
        _zero(d_ln, n * C)
        linear_backward(d_ln, lg + d.fc1, d_hidden, act + d.ln2, lw + d.fc1, n, C, F)
        rmsnorm_backward(dx, d_ln, act + d.x_mid, act + d.ln2_scale, n, C)
        # x_mid = Wo att_out + x_in: dx flows on unchanged to x_in
        _zero(d_att, n * C)
        linear_backward(d_att, lg + d.wo, dx, act + d.att_out, lw + d.wo, n, C, C)
        _zero(d_qkv, n * 3 * C)
        attention_backward(d_qkv, arena + d.d_row, d_att, act + d.att, act + d.qkv_out,
                           n, T, C, d.H, d.D, inv_sqrt_d)
        _zero(d_ln, n * C)
        linear_backward(d_ln, lg + d.qkv, d_qkv, act + d.ln1, lw + d.qkv, n, C, 3 * C)
        rmsnorm_backward(dx, d_ln, x_in, act + d.ln1_scale, n, C)
    # xs[0] = rmsnorm(wte[tok] + wpe[pos])
    _zero(d_ln, n * C)
    rmsnorm_backward(d_ln, dx, arena + d.emb, arena + d.emb_scale, n, C)
    embedding_backward(grads + d.wte, grads + d.wpe, d_ln, tokens, n, C)
    return loss
