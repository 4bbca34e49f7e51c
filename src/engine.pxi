# The compiled engine: training chunks, gradients and sampling over flat buffers.
#
# Included by each kernel variant module (_engine_generic.pyx, ...), which
# compile this same source with different compiler flags.
#
# Buffers in the flat parameter order (see layout.pxd):
#   params (P,)  weights          wt (P,)  the same, every weight matrix transposed
#   m, v (P,)    Adam's moments
#
# A training step runs in two phases, with a barrier between them:
#   A. Documents. The B documents of the step own consecutive rows of row space
#      (document b: rows R_b .. R_b + n_b - 1). Each thread takes a run of
#      consecutive documents, balanced by token count, and computes their
#      forward pass, losses and activation gradients over all its rows at once.
#   B. Weights. The weight rows are cut into blocks; each block's gradient is
#      one product over all rows of the step (the rows in order), followed at
#      once by Adam and the transposed copy of those rows.
# Each number is computed by one thread in an order fixed by the documents
# alone, so any thread count gives the same bits, and no thread needs a
# gradient buffer of its own.

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from layout cimport Dims, dims_init, block_elems
from model cimport gpt_forward, gpt_losses, gpt_backward
from linear cimport linear_backward_weight
from embedding cimport embedding_backward
from adam cimport adam_update
from xent cimport softmax_temperature
from simd cimport transpose
from timers cimport (lap, now, PROFILE, N_TIMERS, T_EMBED_NORM, T_PROJECTIONS, T_MLP,
                     T_HEAD_LOSS, T_BACKWARD, T_ADAM, T_WEIGHT_BLOCKS)

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


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(MICROGPT_FAST_OPENMP)


def profiling_enabled():
    """True for the profiling variants, whose op-group timers are compiled in."""
    return bool(PROFILE)


# Names of the timer slots read_timers returns (timers.pxd).
TIMER_GROUPS = ("embed+norm", "qkv+out proj", "attention", "mlp", "lm head+loss")


# ---------------------------------------------------------------------------
# Phase B's blocks of weight rows


cdef enum BlockKind:
    PRODUCT = 0     # dW = dout^T x over all rows
    TOKENS = 1      # wte: rows of d_emb added by token
    POSITIONS = 2   # wpe: rows of d_emb added by position


cdef struct WeightBlock:
    int kind
    int timer              # the op group its gradient belongs to (timers.pxd)
    Py_ssize_t matrix      # offset of the whole matrix in params (and in wt)
    int nout, nin          # the matrix's shape
    int o0, o1             # this block's rows
    Py_ssize_t dout, x     # row-space tensors: dout (R, nout), x (R, nin)


cdef int _add_blocks(WeightBlock* out, int count, int kind, int timer, Py_ssize_t matrix,
                     int nout, int nin, Py_ssize_t dout, Py_ssize_t x) noexcept nogil:
    """Append the blocks of one matrix (out may be NULL to count them)."""
    cdef int step = <int>(block_elems(nin) // nin), o0 = 0
    while o0 < nout:
        if out != NULL:
            out[count].kind = kind
            out[count].timer = T_BACKWARD + timer
            out[count].matrix = matrix
            out[count].nout = nout
            out[count].nin = nin
            out[count].o0 = o0
            out[count].o1 = min(nout, o0 + step)
            out[count].dout = dout
            out[count].x = x
        count += 1
        o0 += step
    return count


cdef int _weight_blocks(const Dims* d, WeightBlock* out) noexcept nogil:
    """All blocks in flat parameter order; returns how many."""
    cdef int n = 0, l, C = d.C, F = d.F
    cdef Py_ssize_t w, a
    n = _add_blocks(out, n, TOKENS, T_EMBED_NORM, d.wte, d.V, C, d.d_emb, 0)
    n = _add_blocks(out, n, POSITIONS, T_EMBED_NORM, d.wpe, d.T, C, d.d_emb, 0)
    n = _add_blocks(out, n, PRODUCT, T_HEAD_LOSS, d.lm_head, d.V, C, d.logits,
                    d.xs + <Py_ssize_t>d.L * d.R * C)
    for l in range(d.L):
        w = d.layer0 + l * d.layer_size
        a = d.act0 + l * d.act_size
        n = _add_blocks(out, n, PRODUCT, T_PROJECTIONS, w + d.qkv, 3 * C, C, a + d.d_qkv, a + d.ln1)
        n = _add_blocks(out, n, PRODUCT, T_PROJECTIONS, w + d.wo, C, C, a + d.d_mid, a + d.att_out)
        n = _add_blocks(out, n, PRODUCT, T_MLP, w + d.fc1, F, C, a + d.d_hidden, a + d.ln2)
        n = _add_blocks(out, n, PRODUCT, T_MLP, w + d.fc2, C, F, a + d.d_out, a + d.hidden)
    return n


cdef class Workspace:
    """Sizes, offsets, row space and per-thread scratch for one model shape.

    batch_size bounds the documents of one step (row space has batch_size *
    block_size rows); n_threads bounds the threads; itemsize is 4 or 8.
    """

    cdef Dims d
    cdef void* rows        # row space, d.rows_size elements
    cdef void* arena       # n_threads arenas of d.arena_size elements each
    cdef int* row_ints     # (3, R): each row's token, target and position
    cdef double* timers    # (n_threads, N_TIMERS) seconds per op group (profiling variants)
    cdef WeightBlock* blocks
    cdef int n_blocks
    cdef int n_threads
    cdef int batch_size
    cdef int itemsize

    def __cinit__(self, int n_embd, int n_head, int n_layer, int block_size,
                  int vocab_size, int batch_size, int n_threads, int itemsize):
        self.rows = self.arena = NULL
        self.row_ints = NULL
        self.blocks = NULL
        self.timers = NULL
        if (n_embd < 1 or n_head < 1 or n_embd % n_head or n_layer < 1 or block_size < 1
                or vocab_size < 2 or batch_size < 1 or n_threads < 1 or itemsize not in (4, 8)):
            raise ValueError("invalid workspace sizes")
        dims_init(&self.d, n_embd, n_head, n_layer, block_size, vocab_size, batch_size)
        self.n_threads = n_threads
        self.batch_size = batch_size
        self.itemsize = itemsize
        cdef size_t row_bytes = <size_t>self.d.rows_size * itemsize
        cdef size_t arena_bytes = <size_t>self.d.arena_size * itemsize * n_threads
        if (posix_memalign(&self.rows, 64, row_bytes)
                or posix_memalign(&self.arena, 64, arena_bytes)):
            raise MemoryError("cannot allocate the activation buffers")
        memset(self.rows, 0, row_bytes)
        memset(self.arena, 0, arena_bytes)
        self.row_ints = <int*>malloc(3 * <size_t>self.d.R * sizeof(int))
        self.timers = <double*>calloc(<size_t>n_threads * N_TIMERS, sizeof(double))
        self.n_blocks = _weight_blocks(&self.d, NULL)
        self.blocks = <WeightBlock*>malloc(self.n_blocks * sizeof(WeightBlock))
        if self.row_ints == NULL or self.blocks == NULL or self.timers == NULL:
            raise MemoryError()
        _weight_blocks(&self.d, self.blocks)

    def __dealloc__(self):
        free(self.rows)
        free(self.arena)
        free(self.row_ints)
        free(self.blocks)
        free(self.timers)

    @property
    def num_params(self):
        return self.d.P

    @property
    def threads(self):
        return self.n_threads

    def read_timers(self, thread=None):
        """Seconds per op group, summed over threads (or of one thread): (forward,
        backward) lists in TIMER_GROUPS order, Adam's, and the whole second
        phase of the steps (weight blocks: their products, which also count in
        the backward groups, Adam and the transposed copy). All zero unless
        profiling_enabled()."""
        cdef int th, g
        total = [0.0] * N_TIMERS
        for th in range(self.n_threads):
            if thread is None or th == thread:
                for g in range(N_TIMERS):
                    total[g] += self.timers[th * N_TIMERS + g]
        n = len(TIMER_GROUPS)
        return (total[:n], total[T_BACKWARD:T_BACKWARD + n], total[T_ADAM],
                total[T_WEIGHT_BLOCKS])

    def reset_timers(self):
        memset(self.timers, 0, <size_t>self.n_threads * N_TIMERS * sizeof(double))

    @property
    def nbytes(self):
        """Bytes of row space and scratch."""
        return (self.d.rows_size + self.d.arena_size * self.n_threads) * self.itemsize


cdef void _check(Workspace ws, Py_ssize_t n, int itemsize, str what) except *:
    if n != ws.d.P:
        raise ValueError(f"{what} has {n} elements, expected {ws.d.P}")
    if itemsize != ws.itemsize:
        raise ValueError(f"{what} has the wrong dtype for this workspace")


cdef void _check_data(Workspace ws, const int[::1] tokens, const long long[::1] starts) except *:
    if starts.shape[0] < 2:
        raise ValueError("the dataset has no documents")
    if starts[starts.shape[0] - 1] >= tokens.shape[0]:
        raise ValueError("the dataset's starts run past its tokens")


cdef void _check_doc_ids(Workspace ws, const long long[::1] starts,
                         const long long[::1] doc_ids) except *:
    """One batch: 1 to batch_size documents, each an index into the dataset."""
    cdef Py_ssize_t b, B = doc_ids.shape[0]
    if not 1 <= B <= ws.batch_size:
        raise ValueError(f"need 1 to {ws.batch_size} documents, got {B}")
    for b in range(B):
        if not 0 <= doc_ids[b] < starts.shape[0] - 1:
            raise ValueError(f"document index {doc_ids[b]} out of range")


cdef inline double _block_cost(const WeightBlock* b, int n_rows) noexcept nogil:
    """Rough cycles of a block: Adam's divide and square root for each weight,
    plus n_rows multiply-adds per weight (16 lanes, 2 per cycle) for a product,
    or one add per element of each row for an embedding table."""
    cdef double weights = <double>(b.o1 - b.o0) * b.nin
    if b.kind == PRODUCT:
        return weights * (5.0 + n_rows / 32.0)
    return weights * 5.0 + <double>n_rows * b.nin / 16.0


cdef void _share_blocks(const WeightBlock* blocks, int n_blocks, int n_threads, int n_rows,
                        int* first) noexcept nogil:
    """first[0..n_threads]: thread th updates blocks first[th] .. first[th + 1] - 1.

    Consecutive runs of about equal cost: a matrix mostly stays with one
    thread, which then reads its inputs' rows once, and keeps its weights and
    moments in its own cache from step to step.
    """
    cdef double total = 0, done = 0
    cdef int k, th = 1
    for k in range(n_blocks):
        total += _block_cost(&blocks[k], n_rows)
    first[0] = 0
    for k in range(n_blocks):
        # block k goes to the thread in whose share its middle falls
        while th < n_threads and (done + 0.5 * _block_cost(&blocks[k], n_rows)) * n_threads >= total * th:
            first[th] = k
            th += 1
        done += _block_cost(&blocks[k], n_rows)
    while th <= n_threads:
        first[th] = n_blocks
        th += 1


# ---------------------------------------------------------------------------
# Transposed weights: what the forward products read


cdef inline void _transpose_rows(floating* wt, const floating* w, int nout, int nin, int o0,
                                 int o1) noexcept nogil:
    """Rows o0..o1-1 of w (nout, nin) into columns o0..o1-1 of wt (nin, nout)."""
    transpose(wt + o0, nout, w + <Py_ssize_t>o0 * nin, nin, o1 - o0, nin)


def transpose_weights(Workspace ws, const floating[::1] params, floating[::1] wt):
    """wt = params with every weight matrix transposed (wte and wpe untouched)."""
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    cdef int k
    cdef WeightBlock* b
    with nogil:
        for k in range(ws.n_blocks):
            b = &ws.blocks[k]
            if b.kind == PRODUCT:
                _transpose_rows(&wt[b.matrix], &params[b.matrix], b.nout, b.nin, b.o0, b.o1)


# ---------------------------------------------------------------------------
# Phase A: the documents of one step


cdef void _plan_step(const Dims* d, const long long* starts, const long long* doc_ids, int B,
                     int n_threads, int* doc_rows, int* bounds) noexcept nogil:
    """doc_rows[0..B]: first row of each document; bounds[0..n_threads]: first
    document of each thread, consecutive runs balanced by token count."""
    cdef int b, th = 1
    cdef long long i
    doc_rows[0] = 0
    for b in range(B):
        i = doc_ids[b]
        doc_rows[b + 1] = doc_rows[b] + <int>min(<long long>d.T, starts[i + 1] - starts[i])
    cdef long long target
    bounds[0] = 0
    b = 0
    for th in range(1, n_threads):
        # the document boundary nearest to th / n_threads of the rows
        target = <long long>doc_rows[B] * th
        while b < B and <long long>doc_rows[b] * n_threads < target:
            b += 1
        if b > 0 and (target - <long long>doc_rows[b - 1] * n_threads
                      < <long long>doc_rows[b] * n_threads - target):
            b -= 1
        bounds[th] = max(bounds[th - 1] + 1, min(b, B - (n_threads - th)))
    bounds[n_threads] = B


cdef inline void _fill_rows(const Dims* d, int* row_ints, const int* tokens,
                            const long long* starts, const long long* doc_ids,
                            const int* doc_rows, int b0, int b1) noexcept nogil:
    """Token, target and position of every row of documents b0..b1-1."""
    cdef int b, p, r
    cdef const int* doc
    for b in range(b0, b1):
        doc = tokens + starts[doc_ids[b]]
        for p in range(doc_rows[b + 1] - doc_rows[b]):
            r = doc_rows[b] + p
            row_ints[r] = doc[p]
            row_ints[d.R + r] = doc[p + 1]
            row_ints[2 * d.R + r] = p


cdef inline void _run_documents(const Dims* d, const floating* params, const floating* wt,
                                floating* rows, floating* arena, int* row_ints,
                                const int* tokens, const long long* starts,
                                const long long* doc_ids, const int* doc_rows, int B, int b0,
                                int b1, double* doc_losses, bint gradients,
                                double* timers) noexcept nogil:
    """Phase A for documents b0..b1-1 of a step (one thread's run): forward pass and
    losses, then, when asked, the gradients of every activation."""
    if b0 >= b1:
        return
    _fill_rows(d, row_ints, tokens, starts, doc_ids, doc_rows, b0, b1)
    gpt_forward(d, params, wt, rows, arena, row_ints, doc_rows + b0, b1 - b0, doc_rows[b0],
                timers)
    gpt_losses(d, rows, row_ints + d.R, doc_rows + b0, b1 - b0, 1.0 if B == 1 else 1.0 / B,
               doc_losses + b0, timers)
    if gradients:
        gpt_backward(d, params, rows, arena, doc_rows + b0, b1 - b0, timers)


cdef inline double _batch_loss(const double* doc_losses, int B) noexcept nogil:
    """The step loss: one document's loss, or the mean over documents, in order."""
    cdef double total = 0
    cdef int b
    if B == 1:
        return doc_losses[0]
    for b in range(B):
        total += doc_losses[b]
    return (1.0 / B) * total


# ---------------------------------------------------------------------------
# Phase B: weight gradients, then Adam, block by block


cdef inline floating* _block_gradient(const Dims* d, const WeightBlock* b, const floating* rows,
                                      floating* scratch, const int* row_ints,
                                      int n_rows) noexcept nogil:
    """The gradient of the block's rows into scratch ((o1 - o0) * nin elements)."""
    if b.kind == PRODUCT:
        linear_backward_weight(scratch, rows + b.dout, rows + b.x, n_rows, b.nin, b.nout,
                               b.o0, b.o1)
    else:
        embedding_backward(scratch, rows + b.dout,
                           row_ints if b.kind == TOKENS else row_ints + 2 * d.R,
                           n_rows, b.nin, b.o0, b.o1)
    return scratch


cdef inline void _adam_block(const WeightBlock* b, floating* params, floating* wt,
                             floating* m, floating* v, const floating* grad, floating lr_t,
                             floating beta1, floating beta2, floating bias1, floating bias2,
                             floating eps) noexcept nogil:
    """Adam on the block's weights from grad (the block's gradient, its rows in
    order), then the transposed copy of those rows."""
    cdef Py_ssize_t first = b.matrix + <Py_ssize_t>b.o0 * b.nin
    adam_update(params + first, m + first, v + first, grad,
                <Py_ssize_t>(b.o1 - b.o0) * b.nin, lr_t, beta1, beta2, bias1, bias2, eps)
    if b.kind == PRODUCT:
        _transpose_rows(wt + b.matrix, params + b.matrix, b.nout, b.nin, b.o0, b.o1)


cdef inline void _update_block(const Dims* d, const WeightBlock* b, floating* params,
                               floating* wt, floating* m, floating* v, const floating* rows,
                               floating* scratch, const int* row_ints, int n_rows,
                               floating lr_t, floating beta1, floating beta2, floating bias1,
                               floating bias2, floating eps, double* timers) noexcept nogil:
    cdef double start = now() if PROFILE else 0
    cdef double t = start
    _block_gradient(d, b, rows, scratch, row_ints, n_rows)
    t = lap(timers, b.timer, t)
    _adam_block(b, params, wt, m, v, scratch, lr_t, beta1, beta2, bias1, bias2, eps)
    t = lap(timers, T_ADAM, t)
    if PROFILE:  # the product above also counts in its op group: this is the phase's total
        timers[T_WEIGHT_BLOCKS] += t - start


# ---------------------------------------------------------------------------
# Entry points


def train_chunk(Workspace ws, floating[::1] params, floating[::1] wt, floating[::1] m,
                floating[::1] v, const int[::1] tokens, const long long[::1] starts,
                long long step0, long long total_steps, int batch_size, double learning_rate,
                double beta1, double beta2, double eps, double[::1] losses):
    """Train len(losses) steps from step0, entirely without the GIL.

    Step s trains documents s*B .. s*B + B - 1 (mod N) and writes its loss (the
    mean over documents of each document's mean position loss) to
    losses[s - step0]. Adam uses lr_t = learning_rate * (1 - s / total_steps).
    wt must hold the transposed params on entry; it does again on return.
    """
    cdef int nsteps = <int>losses.shape[0], B = batch_size
    cdef long long N = starts.shape[0] - 1
    for buf, name in ((params, "params"), (wt, "wt"), (m, "m"), (v, "v")):
        _check(ws, buf.shape[0], sizeof(floating), name)
    _check_data(ws, tokens, starts)
    if not (1 <= B <= ws.batch_size and nsteps >= 1 and 0 <= step0
            and step0 + nsteps <= total_steps):
        raise ValueError("invalid steps or batch size")
    cdef int n_threads = min(ws.n_threads, B)
    cdef long long* doc_ids = <long long*>malloc(<size_t>nsteps * B * sizeof(long long))
    cdef int* doc_rows = <int*>malloc(<size_t>nsteps * (B + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc(<size_t>nsteps * (n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(<size_t>nsteps * B * sizeof(double))
    cdef int* block_first = <int*>malloc((n_threads + 1) * sizeof(int))
    if (doc_ids == NULL or doc_rows == NULL or bounds == NULL or doc_losses == NULL
            or block_first == NULL):
        free(doc_ids); free(doc_rows); free(bounds); free(doc_losses); free(block_first)
        raise MemoryError()
    cdef int s, b, th, k
    cdef long long step
    cdef double lr_t
    cdef unsigned int fp_mode
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef int* ts                # this step's thread bounds
    cdef int* dr                # this step's document rows
    with nogil:
        for s in range(nsteps):
            for b in range(B):
                doc_ids[s * B + b] = ((step0 + s) * B + b) % N
            _plan_step(d, &starts[0], doc_ids + s * B, B, n_threads, doc_rows + s * (B + 1),
                       bounds + s * (n_threads + 1))
        # the same blocks per thread for the whole chunk: weights stay in one cache
        _share_blocks(ws.blocks, ws.n_blocks, n_threads, doc_rows[B], block_first)
        with parallel(num_threads=n_threads):
            fp_mode = flush_denormals_begin()
            for s in range(nsteps):
                step = step0 + s
                ts = bounds + s * (n_threads + 1)
                dr = doc_rows + s * (B + 1)
                for th in prange(n_threads, schedule="static", chunksize=1):
                    _run_documents(d, &params[0], &wt[0], rows, arenas + th * d.arena_size,
                                   ws.row_ints, &tokens[0], &starts[0], doc_ids + s * B, dr, B,
                                   ts[th], ts[th + 1], doc_losses + s * B, True,
                                   ws.timers + th * N_TIMERS)
                barrier()
                lr_t = learning_rate * (1 - <double>step / total_steps)
                for th in prange(n_threads, schedule="static", chunksize=1):
                    for k in range(block_first[th], block_first[th + 1]):
                        _update_block(d, &ws.blocks[k], &params[0], &wt[0], &m[0], &v[0], rows,
                                      arenas + th * d.arena_size + d.grad_rows,
                                      ws.row_ints, dr[B], <floating>lr_t, <floating>beta1,
                                      <floating>beta2, <floating>(1 - beta1 ** (step + 1)),
                                      <floating>(1 - beta2 ** (step + 1)), <floating>eps,
                                      ws.timers + th * N_TIMERS)
                barrier()
            flush_denormals_end(fp_mode)
        for s in range(nsteps):
            losses[s] = _batch_loss(doc_losses + s * B, B)
    free(doc_ids); free(doc_rows); free(bounds); free(doc_losses); free(block_first)


def loss_and_grad(Workspace ws, const floating[::1] params, const floating[::1] wt,
                  floating[::1] grad, const int[::1] tokens, const long long[::1] starts,
                  const long long[::1] doc_ids):
    """Loss of the batch doc_ids and its gradient, written to grad (P,).

    The same code as a training step, without the update.
    """
    cdef int B = <int>doc_ids.shape[0], b, th, k
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    _check(ws, grad.shape[0], sizeof(floating), "grad")
    _check_data(ws, tokens, starts)
    _check_doc_ids(ws, starts, doc_ids)
    cdef int n_threads = min(ws.n_threads, B)
    cdef int* doc_rows = <int*>malloc((B + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(B * sizeof(double))
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef WeightBlock* blk
    cdef unsigned int fp_mode
    cdef double total = 0
    with nogil, parallel(num_threads=n_threads):
        fp_mode = flush_denormals_begin()
        if threadid() == 0:
            _plan_step(d, &starts[0], &doc_ids[0], B, n_threads, doc_rows, bounds)
        barrier()
        for th in prange(n_threads, schedule="static", chunksize=1):
            _run_documents(d, &params[0], &wt[0], rows, arenas + th * d.arena_size,
                           ws.row_ints, &tokens[0], &starts[0], &doc_ids[0], doc_rows, B,
                           bounds[th], bounds[th + 1], doc_losses, True,
                           ws.timers + th * N_TIMERS)
        barrier()
        for k in prange(ws.n_blocks, schedule="static", chunksize=1):
            blk = &ws.blocks[k]
            _block_gradient(d, blk, rows, &grad[blk.matrix + <Py_ssize_t>blk.o0 * blk.nin],
                            ws.row_ints, doc_rows[B])
        flush_denormals_end(fp_mode)
    total = _batch_loss(doc_losses, B)
    free(doc_rows); free(bounds); free(doc_losses)
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
    cdef int doc_rows[2]
    doc_rows[0] = 0
    doc_rows[1] = pos + 1
    ws.row_ints[pos] = token
    cdef floating* rows = <floating*>ws.rows
    with nogil:
        gpt_forward(&ws.d, &params[0], &wt[0], rows, <floating*>ws.arena, ws.row_ints,
                    doc_rows, 1, pos, ws.timers)
        softmax_temperature(&probs[0], rows + ws.d.logits + pos * ws.d.V, ws.d.V, temperature)


def eval_loss(Workspace ws, const floating[::1] params, const floating[::1] wt,
              const int[::1] tokens, const long long[::1] starts,
              const long long[::1] doc_ids, double[::1] doc_losses):
    """Forward pass and loss of each document of doc_ids into doc_losses; no gradient
    reaches the weights."""
    cdef int B = <int>doc_ids.shape[0], th
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    _check_data(ws, tokens, starts)
    _check_doc_ids(ws, starts, doc_ids)
    if doc_losses.shape[0] != B:
        raise ValueError("need one loss slot per document")
    cdef int n_threads = min(ws.n_threads, B)
    cdef int* doc_rows = <int*>malloc((B + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef unsigned int fp_mode
    with nogil:
        _plan_step(d, &starts[0], &doc_ids[0], B, n_threads, doc_rows, bounds)
        for th in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
            fp_mode = flush_denormals_begin()
            _run_documents(d, &params[0], &wt[0], rows, arenas + th * d.arena_size,
                           ws.row_ints, &tokens[0], &starts[0], &doc_ids[0], doc_rows, B,
                           bounds[th], bounds[th + 1], &doc_losses[0], False,
                           ws.timers + th * N_TIMERS)
            flush_denormals_end(fp_mode)
    free(doc_rows); free(bounds)


def adam_step(Workspace ws, floating[::1] params, floating[::1] wt, floating[::1] m,
              floating[::1] v, const floating[::1] grad, long long step,
              long long total_steps, double learning_rate, double beta1, double beta2,
              double eps):
    """One Adam update of every parameter from grad (P,), with the linear decay, and
    the transposed copy refreshed: phase B of a step without the products."""
    for buf, name in ((params, "params"), (wt, "wt"), (m, "m"), (v, "v"), (grad, "grad")):
        _check(ws, buf.shape[0], sizeof(floating), name)
    if not 0 <= step < total_steps:
        raise ValueError("step outside the schedule")
    cdef double lr_t = learning_rate * (1 - <double>step / total_steps)
    cdef floating bias1 = <floating>(1 - beta1 ** (step + 1))
    cdef floating bias2 = <floating>(1 - beta2 ** (step + 1))
    cdef int k, n_threads = ws.n_threads
    cdef WeightBlock* b
    with nogil:
        for k in prange(ws.n_blocks, schedule="static", chunksize=1, num_threads=n_threads):
            b = &ws.blocks[k]
            _adam_block(b, &params[0], &wt[0], &m[0], &v[0],
                        &grad[b.matrix + <Py_ssize_t>b.o0 * b.nin], <floating>lr_t,
                        <floating>beta1, <floating>beta2, bias1, bias2, <floating>eps)
