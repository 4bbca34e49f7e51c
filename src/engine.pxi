# The compiled engine: training chunks, gradients and sampling over flat buffers.
#
# Included by each kernel variant module (_engine_generic.pyx, ...), which
# compile this same source with different compiler flags.
#
# Buffers, all contiguous in the flat parameter order (see layout.pxd):
#   params (P,)      weights                  wt (P,)       every weight matrix transposed
#   m, v (P,)        Adam's moments           grads (G, P)  one gradient buffer per slot
# A batch of B documents is split into G = min(B, MAX_SLOTS) slots of
# consecutive documents. Each slot's gradient is summed in document order in
# its own buffer, and the slots are added in slot order inside Adam: the
# arithmetic never depends on how slots are shared out among threads, so any
# thread count gives the same bits.

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from layout cimport Dims, dims_init
from model cimport gpt_forward, gpt_loss_backward
from adam cimport adam_update
from xent cimport softmax_temperature

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void** memptr, size_t alignment, size_t size)

cdef extern from *:
    """
    #ifdef _OPENMP
    #define MICROGPT_FAST_OPENMP 1
    #else
    #define MICROGPT_FAST_OPENMP 0
    #endif
    """
    int MICROGPT_FAST_OPENMP

# Cython's prange inside a parallel block is an "omp for nowait": the phases
# of a step (documents, Adam, transposition) are separated by explicit barriers.
cdef extern from *:
    """
    #ifdef _OPENMP
    #define MICROGPT_FAST_BARRIER() _Pragma("omp barrier")
    #else
    #define MICROGPT_FAST_BARRIER()
    #endif
    """
    void barrier "MICROGPT_FAST_BARRIER"() noexcept nogil

cdef extern from "denormals.h" nogil:
    unsigned int flush_denormals_begin "mg_flush_denormals_begin"()
    void flush_denormals_end "mg_flush_denormals_end"(unsigned int old)

MAX_SLOTS = 16
cdef int _MAX_SLOTS = 16
# Adam runs over blocks of this many parameters, shared out among threads.
cdef Py_ssize_t _ADAM_BLOCK = 2048


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(MICROGPT_FAST_OPENMP)


def num_slots(int batch_size):
    """G: the number of gradient buffers a batch of batch_size documents uses."""
    return min(batch_size, _MAX_SLOTS)


cdef class Workspace:
    """Sizes, offsets and per-thread activation scratch for one model shape."""

    cdef Dims d
    cdef void* arena       # n_threads arenas of d.arena_size elements each
    cdef int* tokens       # (T,) the tokens fed so far while sampling
    cdef int n_threads
    cdef int itemsize

    def __cinit__(self, int n_embd, int n_head, int n_layer, int block_size,
                  int vocab_size, int n_threads, int itemsize):
        self.arena = NULL
        self.tokens = NULL
        if (n_embd < 1 or n_head < 1 or n_embd % n_head or n_layer < 1 or block_size < 1
                or vocab_size < 2 or n_threads < 1 or itemsize not in (4, 8)):
            raise ValueError("invalid workspace sizes")
        dims_init(&self.d, n_embd, n_head, n_layer, block_size, vocab_size)
        self.n_threads = n_threads
        self.itemsize = itemsize
        cdef size_t nbytes = <size_t>self.d.arena_size * itemsize * n_threads
        if posix_memalign(&self.arena, 64, nbytes):
            self.arena = NULL
            raise MemoryError("cannot allocate the activation buffers")
        memset(self.arena, 0, nbytes)
        self.tokens = <int*>malloc(block_size * sizeof(int))
        if self.tokens == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.arena)
        free(self.tokens)

    @property
    def num_params(self):
        return self.d.P

    @property
    def threads(self):
        return self.n_threads

    @property
    def arena_bytes(self):
        return self.d.arena_size * self.itemsize * self.n_threads


cdef void _check(Workspace ws, Py_ssize_t n, int itemsize, str what) except *:
    if n != ws.d.P:
        raise ValueError(f"{what} has {n} elements, expected {ws.d.P}")
    if itemsize != ws.itemsize:
        raise ValueError(f"{what} has the wrong dtype for this workspace")


# ---------------------------------------------------------------------------
# Transposed weights: what the forward linear layers read


cdef inline void _transpose_matrix(floating* wt, const floating* w, int nout,
                                   int nin) noexcept nogil:
    cdef int o, i
    for o in range(nout):
        for i in range(nin):
            wt[i * nout + o] = w[o * nin + i]


cdef inline void _transpose_one(const Dims* d, const floating* params, floating* wt,
                                int k) noexcept nogil:
    """Transpose matrix k of the 1 + 4 L that the forward pass reads transposed."""
    cdef Py_ssize_t base
    cdef int part
    if k == 0:
        _transpose_matrix(wt + d.lm_head, params + d.lm_head, d.V, d.C)
        return
    base = d.layer0 + (k - 1) // 4 * d.layer_size
    part = (k - 1) % 4
    if part == 0:
        _transpose_matrix(wt + base + d.qkv, params + base + d.qkv, 3 * d.C, d.C)
    elif part == 1:
        _transpose_matrix(wt + base + d.wo, params + base + d.wo, d.C, d.C)
    elif part == 2:
        _transpose_matrix(wt + base + d.fc1, params + base + d.fc1, d.F, d.C)
    else:
        _transpose_matrix(wt + base + d.fc2, params + base + d.fc2, d.C, d.F)


def transpose_weights(Workspace ws, const floating[::1] params, floating[::1] wt):
    """wt = params with every weight matrix transposed (wte and wpe untouched)."""
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    cdef int k
    with nogil:
        for k in range(1 + 4 * ws.d.L):
            _transpose_one(&ws.d, &params[0], &wt[0], k)


# ---------------------------------------------------------------------------
# One step's documents, shared out among threads


cdef inline double _train_doc(const Dims* d, const floating* params, const floating* wt,
                              floating* grads, floating* arena, const int* tokens, int n,
                              double batch_scale) noexcept nogil:
    """Forward and backward of one document; returns its mean position loss."""
    gpt_forward(d, params, wt, arena, tokens, 0, n)
    cdef double loss = gpt_loss_backward(d, params, grads, arena, tokens, n,
                                         <floating>((1.0 / n) * batch_scale))
    return loss * (1.0 / n)


cdef inline void _run_slots(const Dims* d, const floating* params, const floating* wt,
                            floating* grads, floating* arena, const int* tokens,
                            const long long* starts, const long long* doc_ids, int B, int G,
                            int g0, int g1, double* doc_losses) noexcept nogil:
    """Documents of slots g0..g1-1 of one step; slot g covers docs g*B/G .. (g+1)*B/G - 1."""
    cdef int g, b, n
    cdef long long i
    cdef double batch_scale = 1.0 if B == 1 else 1.0 / B
    for g in range(g0, g1):
        for b in range(g * B // G, (g + 1) * B // G):
            i = doc_ids[b]
            n = <int>min(<long long>d.T, starts[i + 1] - starts[i])
            doc_losses[b] = _train_doc(d, params, wt, grads + g * d.P, arena,
                                       tokens + starts[i], n, batch_scale)


cdef void _share_slots(const Dims* d, const long long* starts, const long long* doc_ids,
                       int B, int G, int n_threads, int* bounds) noexcept nogil:
    """bounds[0..n_threads]: consecutive slots per thread, balanced by token count.

    Thread th takes slots bounds[th] .. bounds[th + 1] - 1, at least one each
    (the caller never asks for more threads than slots).
    """
    cdef int g, b, th
    cdef long long total = 0, done = 0, i
    cdef long long* slot_tokens = <long long*>malloc(G * sizeof(long long))
    for g in range(G):
        slot_tokens[g] = 0
        for b in range(g * B // G, (g + 1) * B // G):
            i = doc_ids[b]
            slot_tokens[g] += min(<long long>d.T, starts[i + 1] - starts[i])
        total += slot_tokens[g]
    bounds[0] = 0
    g = 0
    for th in range(1, n_threads):
        while g < G and done * n_threads < total * th:
            done += slot_tokens[g]
            g += 1
        bounds[th] = max(bounds[th - 1] + 1, min(g, G - (n_threads - th)))
    bounds[n_threads] = G
    free(slot_tokens)


def train_chunk(Workspace ws, floating[::1] params, floating[::1] wt, floating[::1] m,
                floating[::1] v, floating[:, ::1] grads, const int[::1] tokens,
                const long long[::1] starts, long long step0, long long total_steps,
                int batch_size, double learning_rate, double beta1, double beta2,
                double eps, double[::1] losses):
    """Train len(losses) steps from step0, entirely without the GIL.

    Step s trains documents s*B .. s*B + B - 1 (mod N) and writes its loss (the
    mean over documents of each document's mean position loss) to
    losses[s - step0]. Adam uses lr_t = learning_rate * (1 - s / total_steps).
    wt must hold the transposed params on entry; it does again on return.
    """
    cdef Py_ssize_t P = ws.d.P
    cdef int nsteps = <int>losses.shape[0], B = batch_size, G = min(batch_size, _MAX_SLOTS)
    cdef long long N = starts.shape[0] - 1
    for buf, name in ((params, "params"), (wt, "wt"), (m, "m"), (v, "v")):
        _check(ws, buf.shape[0], sizeof(floating), name)
    _check(ws, grads.shape[1], sizeof(floating), "grads")
    if grads.shape[0] < G:
        raise ValueError(f"grads needs {G} slots for batch size {B}")
    if N < 1 or B < 1 or nsteps < 1 or step0 < 0 or step0 + nsteps > total_steps:
        raise ValueError("invalid steps, batch size or dataset")
    cdef int n_threads = min(ws.n_threads, G)
    cdef int n_mats = 1 + 4 * ws.d.L
    cdef Py_ssize_t n_blocks = (P + _ADAM_BLOCK - 1) // _ADAM_BLOCK
    cdef long long* doc_ids = <long long*>malloc(<size_t>nsteps * B * sizeof(long long))
    cdef int* bounds = <int*>malloc(<size_t>nsteps * (n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(<size_t>nsteps * B * sizeof(double))
    if doc_ids == NULL or bounds == NULL or doc_losses == NULL:
        free(doc_ids); free(bounds); free(doc_losses)
        raise MemoryError()
    cdef int s, b, th, k
    cdef Py_ssize_t blk
    cdef long long step
    cdef double lr_t, total
    cdef unsigned int fp_mode
    cdef floating* arena0 = <floating*>ws.arena
    cdef const Dims* d = &ws.d
    with nogil:
        for s in range(nsteps):
            for b in range(B):
                doc_ids[s * B + b] = ((step0 + s) * B + b) % N
            _share_slots(d, &starts[0], doc_ids + s * B, B, G, n_threads,
                         bounds + s * (n_threads + 1))
        with parallel(num_threads=n_threads):
            fp_mode = flush_denormals_begin()
            for s in range(nsteps):
                step = step0 + s
                for th in prange(n_threads, schedule="static", chunksize=1):
                    _run_slots(d, &params[0], &wt[0], &grads[0, 0], arena0 + th * d.arena_size,
                               &tokens[0], &starts[0], doc_ids + s * B, B, G,
                               bounds[s * (n_threads + 1) + th],
                               bounds[s * (n_threads + 1) + th + 1], doc_losses + s * B)
                barrier()
                lr_t = learning_rate * (1 - <double>step / total_steps)
                for blk in prange(n_blocks, schedule="static"):
                    adam_update(&params[0], &m[0], &v[0], &grads[0, 0], P, G,
                                blk * _ADAM_BLOCK, min(P, (blk + 1) * _ADAM_BLOCK),
                                <floating>lr_t, <floating>beta1, <floating>beta2,
                                <floating>(1 - beta1 ** (step + 1)),
                                <floating>(1 - beta2 ** (step + 1)), <floating>eps)
                barrier()
                for k in prange(n_mats, schedule="static"):
                    _transpose_one(d, &params[0], &wt[0], k)
                barrier()
            flush_denormals_end(fp_mode)
        for s in range(nsteps):
            if B == 1:
                losses[s] = doc_losses[s]
            else:
                total = 0
                for b in range(B):
                    total += doc_losses[s * B + b]
                losses[s] = (1.0 / B) * total
    free(doc_ids); free(bounds); free(doc_losses)


def loss_and_grad(Workspace ws, const floating[::1] params, const floating[::1] wt,
                  floating[:, ::1] grads, const int[::1] tokens,
                  const long long[::1] starts, const long long[::1] doc_ids):
    """Loss of the batch doc_ids and its gradient, summed into grads[0].

    The same document code as a training step, without the update. grads must be
    zero on entry; slots 1.. are left zero.
    """
    cdef Py_ssize_t P = ws.d.P
    cdef int B = <int>doc_ids.shape[0], G = min(B, _MAX_SLOTS), g, th
    cdef long long N = starts.shape[0] - 1
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    _check(ws, grads.shape[1], sizeof(floating), "grads")
    if B < 1 or grads.shape[0] < G:
        raise ValueError("need at least one document and one gradient slot per slot")
    for b in range(B):
        if not 0 <= doc_ids[b] < N:
            raise ValueError(f"document index {doc_ids[b]} out of range")
    cdef int n_threads = min(ws.n_threads, G)
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(B * sizeof(double))
    cdef floating* arena0 = <floating*>ws.arena
    cdef const Dims* d = &ws.d
    cdef Py_ssize_t i
    cdef double total = 0
    with nogil:
        _share_slots(d, &starts[0], &doc_ids[0], B, G, n_threads, bounds)
        for th in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
            _run_slots(d, &params[0], &wt[0], &grads[0, 0], arena0 + th * d.arena_size,
                       &tokens[0], &starts[0], &doc_ids[0], B, G, bounds[th], bounds[th + 1],
                       doc_losses)
        for g in range(1, G):
            for i in range(P):
                grads[0, i] += grads[g, i]
                grads[g, i] = 0
    if B == 1:
        total = doc_losses[0]
    else:
        for b in range(B):
            total += doc_losses[b]
        total = (1.0 / B) * total
    free(bounds); free(doc_losses)
    return total


def sample_probs(Workspace ws, const floating[::1] params, const floating[::1] wt, int token,
                 int pos, double temperature, double[::1] probs):
    """Feed token at position pos (the KV cache holds positions < pos) and write
    softmax(logits / temperature) into probs (V,), in float64."""
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    if not (0 <= pos < ws.d.T and 0 <= token < ws.d.V and probs.shape[0] == ws.d.V
            and temperature > 0):
        raise ValueError("invalid token, position, temperature or probs size")
    cdef floating* arena0 = <floating*>ws.arena
    ws.tokens[pos] = token
    with nogil:
        gpt_forward(&ws.d, &params[0], &wt[0], arena0, ws.tokens, pos, pos + 1)
        softmax_temperature(&probs[0], arena0 + ws.d.logits + pos * ws.d.V, ws.d.V,
                            temperature)
