# The compiled engine: training chunks, gradients and sampling over flat buffers.
#
# Included by each kernel variant module (build/cython/_engine_<variant>.pyx,
# written by setup.py), which compile this same source with different flags.
#
# Buffers in the flat parameter order (see layout.pxd):
#   params (P,)  weights          wt (P,)  the same, every weight matrix transposed
#   m, v (P,)    Adam's moments
#
# A training step runs in phases, with barriers between them:
#   A. Documents. The B documents of the step own consecutive rows of row
#      space (document b: rows R_b .. R_b + n_b - 1). Each thread takes a run of
#      consecutive documents, balanced by token count, and computes their
#      forward pass, losses and activation gradients over all its rows at once.
#   B. Partial gradients. The rows are cut at a document boundary into two
#      gradient groups; each weight block's gradient over each group's rows is
#      one product, written to that group's partial gradient buffer.
#   C. Adam, block by block, on the sum of the groups' partials (one fused pass).
#   D. The transposed copies of the updated weights, which the forward products read.
# Threads form teams (one per gradient group, or one team when there is one
# thread): a team runs its group's documents and products and keeps a transposed
# copy of its own (see _make_teams). Each number is computed in an order fixed
# by the documents alone, so any thread count gives the same bits.

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

# Inside the parallel region of a chunk, each thread takes its own share of
# every phase: share th = me + i * granted for i < mine (its own, or several
# when OpenMP grants fewer threads than asked), with no "omp for" and its
# bookkeeping of shared variables; the phases are separated by explicit barriers.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define MICROGPT_FAST_BARRIER() _Pragma("omp barrier")
    #define MICROGPT_FAST_NUM_THREADS() omp_get_num_threads()
    #else
    #define MICROGPT_FAST_BARRIER()
    #define MICROGPT_FAST_NUM_THREADS() 1
    #endif
    """
    void barrier "MICROGPT_FAST_BARRIER"() noexcept nogil
    int num_threads "MICROGPT_FAST_NUM_THREADS"() noexcept nogil

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
# The blocks of weight rows of phases B to D


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
    cdef void* partials    # (n_groups, P) the gradient groups' partial weight gradients
    cdef void* wt_copies   # (GROUPS - 1, P) the other teams' transposed weights (threads > 1)
    cdef int n_groups
    cdef int* row_ints     # (3, R): each row's token, target and position
    cdef double* timers    # (n_threads, N_TIMERS) seconds per op group (profiling variants)
    cdef WeightBlock* blocks
    cdef int n_blocks
    cdef int n_threads
    cdef int batch_size
    cdef int itemsize

    def __cinit__(self, int n_embd, int n_head, int n_layer, int block_size,
                  int vocab_size, int batch_size, int n_threads, int itemsize):
        self.rows = self.arena = self.partials = self.wt_copies = NULL
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
        self.n_groups = min(<int>GROUPS, batch_size)
        cdef size_t row_bytes = <size_t>self.d.rows_size * itemsize
        cdef size_t arena_bytes = <size_t>self.d.arena_size * itemsize * n_threads
        cdef size_t partial_bytes = <size_t>self.d.P * itemsize * self.n_groups
        cdef size_t copy_bytes = <size_t>self.d.P * itemsize * (GROUPS - 1 if n_threads > 1 else 0)
        if (posix_memalign(&self.rows, 64, row_bytes)
                or posix_memalign(&self.arena, 64, arena_bytes)
                or posix_memalign(&self.partials, 64, partial_bytes)
                or posix_memalign(&self.wt_copies, 64, max(copy_bytes, 64))):
            raise MemoryError(
                f"cannot allocate the engine's workspace: "
                f"{(row_bytes + arena_bytes + partial_bytes + copy_bytes) / 2**20:,.0f} MiB of "
                f"activations, scratch and partial gradients for {batch_size} documents of up "
                f"to {block_size} positions on {n_threads} threads")
        memset(self.rows, 0, row_bytes)
        memset(self.arena, 0, arena_bytes)
        memset(self.partials, 0, partial_bytes)
        self.row_ints = <int*>malloc(3 * <size_t>self.d.R * sizeof(int))
        self.timers = <double*>calloc(<size_t>n_threads * N_TIMERS, sizeof(double))
        self.n_blocks = _weight_blocks(&self.d, NULL)
        self.blocks = <WeightBlock*>malloc(self.n_blocks * sizeof(WeightBlock))
        if self.row_ints == NULL or self.blocks == NULL or self.timers == NULL:
            raise MemoryError("cannot allocate the engine's row and block tables")
        _weight_blocks(&self.d, self.blocks)

    def __dealloc__(self):
        free(self.rows)
        free(self.arena)
        free(self.partials)
        free(self.wt_copies)
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
        backward) lists in TIMER_GROUPS order, Adam's (with the transposed
        copies), and the weight phases of the steps (the partial gradient
        products, which also count in the backward groups, Adam and the copies).
        All zero unless profiling_enabled()."""
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
        """Bytes of row space, scratch, partial gradients and transposed copies."""
        cdef Py_ssize_t copies = GROUPS - 1 if self.n_threads > 1 else 0
        return (self.d.rows_size + self.d.arena_size * self.n_threads
                + self.d.P * (self.n_groups + copies)) * self.itemsize


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
    """Rough cost of a block's gradient over n_rows rows and its transposed copy:
    n_rows multiply-adds per weight (16 lanes, 2 per cycle) for a product, or
    one add per element of each row for an embedding table. With n_rows = 0,
    the cost of Adam: the same for every weight."""
    cdef double weights = <double>(b.o1 - b.o0) * b.nin
    if n_rows == 0:
        return weights
    if b.kind == PRODUCT:
        return weights * (1.0 + n_rows / 32.0)
    return weights + <double>n_rows * b.nin / 16.0


cdef void _share_blocks(const WeightBlock* blocks, int n_blocks, int n_threads, int n_rows,
                        int* first) noexcept nogil:
    """first[0..n_threads]: thread th takes blocks first[th] .. first[th + 1] - 1.

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
# Gradient groups and thread teams


cdef enum:
    # The rows of a step are cut at a document boundary into GROUPS gradient
    # groups (one for a one-document step). Each weight gradient is the sum of
    # the groups' products over their own rows, added in group order; the cut
    # depends on the documents alone, so every thread count gives the same bits.
    # (adam_update sums at most two.)
    GROUPS = 2


cdef struct Team:
    int first, size     # threads first .. first + size - 1
    int g0, g1          # gradient groups g0 .. g1 - 1


cdef int _make_teams(int n_threads, int n_groups, Team* teams) noexcept nogil:
    """One team of all threads over every group or, with two threads or more, one
    team per group, the threads shared out evenly. Returns the number of teams.

    A team computes its groups' documents, their partial weight gradients and a
    transposed copy of the weights of its own. On two cores each core then reads
    back only rows it wrote; what crosses between the cores each step is the
    other group's partial gradient of the weights a core updates, and those
    weights once updated. (On the 2-core machine of the README's figures a cache
    line written on one core and then read on the other costs about 5 ns, one
    read there and then written again about 10 ns: more than the arithmetic
    done on it.)
    """
    cdef int t
    if n_threads == 1 or n_groups == 1:
        teams[0].first = 0
        teams[0].size = n_threads
        teams[0].g0 = 0
        teams[0].g1 = n_groups
        return 1
    for t in range(n_groups):
        teams[t].first = n_threads * t // n_groups
        teams[t].size = n_threads * (t + 1) // n_groups - teams[t].first
        teams[t].g0 = t
        teams[t].g1 = t + 1
    return n_groups


cdef inline int _team_of(const Team* teams, int n_teams, int th) noexcept nogil:
    cdef int t = n_teams - 1
    while teams[t].first > th:
        t -= 1
    return t


cdef inline int* _team_share(int* shares, const Team* teams, int t) noexcept nogil:
    """Team t's row of shares: its threads' first blocks (team.size + 1 entries)."""
    return shares + teams[t].first + t


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


cdef void _doc_rows(const Dims* d, const long long* starts, const long long* doc_ids, int B,
                    int* doc_rows) noexcept nogil:
    """doc_rows[0..B]: the first row of each document (at most T rows each)."""
    cdef int b
    cdef long long i
    doc_rows[0] = 0
    for b in range(B):
        i = doc_ids[b]
        doc_rows[b + 1] = doc_rows[b] + <int>min(<long long>d.T, starts[i + 1] - starts[i])


cdef void _split_docs(const int* doc_rows, int b0, int b1, int parts, int* out) noexcept nogil:
    """out[0..parts]: documents b0..b1-1 in consecutive runs, each ending at the
    document boundary nearest its share of their rows; no run is empty while
    there are documents enough."""
    cdef int p, b = b0, lo, hi
    cdef long long r0 = doc_rows[b0], total = doc_rows[b1] - doc_rows[b0], target
    cdef bint enough = b1 - b0 >= parts
    out[0] = b0
    for p in range(1, parts):
        target = total * p  # rows times parts, to stay in integers
        while b < b1 and (doc_rows[b] - r0) * parts < target:
            b += 1
        if b > b0 and (target - (doc_rows[b - 1] - r0) * parts
                       < (doc_rows[b] - r0) * parts - target):
            b -= 1
        lo = out[p - 1] + 1 if enough else out[p - 1]
        hi = b1 - (parts - p) if enough else b1
        out[p] = max(lo, min(b, hi))
    out[parts] = b1


cdef void _plan_step(const Dims* d, const long long* starts, const long long* doc_ids, int B,
                     const Team* teams, int n_teams, int* doc_rows, int* groups,
                     int* bounds) noexcept nogil:
    """doc_rows[0..B]: first row of each document; groups[0..n_groups]: first
    document of each gradient group; bounds[0..n_threads]: first document of each
    thread, its team's documents shared out in runs balanced by rows."""
    cdef int t
    _doc_rows(d, starts, doc_ids, B, doc_rows)
    _split_docs(doc_rows, 0, B, min(<int>GROUPS, B), groups)
    for t in range(n_teams):
        _split_docs(doc_rows, groups[teams[t].g0], groups[teams[t].g1], teams[t].size,
                    bounds + teams[t].first)


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
# Phases B to D: partial weight gradients, Adam on their sum, the transposed copies


cdef inline void _block_partial(const Dims* d, const WeightBlock* b, floating* partials,
                                const floating* rows, const int* row_ints, int g, int r0,
                                int r1, double* timers) noexcept nogil:
    """Group g's part of the block's gradient, its rows r0..r1-1, into the block's
    weights in group g's partial buffer (partials + g * P)."""
    cdef double start = now() if PROFILE else 0
    cdef floating* out = partials + g * d.P + b.matrix + <Py_ssize_t>b.o0 * b.nin
    if b.kind == PRODUCT:
        linear_backward_weight(out, rows + b.dout + <Py_ssize_t>r0 * b.nout,
                               rows + b.x + <Py_ssize_t>r0 * b.nin, r1 - r0, b.nin, b.nout,
                               b.o0, b.o1)
    else:
        embedding_backward(out, rows + b.dout + <Py_ssize_t>r0 * b.nin,
                           (row_ints if b.kind == TOKENS else row_ints + 2 * d.R) + r0,
                           r1 - r0, b.nin, b.o0, b.o1)
    if PROFILE:
        start = now() - start
        timers[b.timer] += start
        timers[T_WEIGHT_BLOCKS] += start


cdef inline void _sum_groups(floating* grad, const floating* partials, int n_groups,
                             Py_ssize_t stride, Py_ssize_t n) noexcept nogil:
    """grad[:n] = partials[:n] + partials[stride:][:n] + ..., in group order."""
    cdef Py_ssize_t i
    cdef int g
    cdef floating total
    for i in range(n):
        total = partials[i]
        for g in range(1, n_groups):
            total = total + partials[g * stride + i]
        grad[i] = total


cdef inline void _adam_block(const Dims* d, const WeightBlock* b, floating* params, floating* m,
                             floating* v, const floating* grads, int n_parts, floating lr_t,
                             floating beta1, floating beta2, floating bias1, floating bias2,
                             floating eps, double* timers) noexcept nogil:
    """Adam on the block's weights; their gradient is the sum of n_parts (1 or 2)
    buffers of P elements from grads (the groups' partials, or one whole gradient)."""
    cdef double start = now() if PROFILE else 0
    cdef Py_ssize_t first = b.matrix + <Py_ssize_t>b.o0 * b.nin
    adam_update(params + first, m + first, v + first, grads + first,
                grads + d.P + first if n_parts == 2 else NULL,
                <Py_ssize_t>(b.o1 - b.o0) * b.nin, lr_t, beta1, beta2, bias1, bias2, eps)
    if PROFILE:
        start = now() - start
        timers[T_ADAM] += start
        timers[T_WEIGHT_BLOCKS] += start


cdef inline void _copy_block(const WeightBlock* b, floating* wt, const floating* params,
                             double* timers) noexcept nogil:
    """The block's rows of a product's matrix into their columns of wt."""
    cdef double start = now() if PROFILE else 0
    if b.kind == PRODUCT:
        _transpose_rows(wt + b.matrix, params + b.matrix, b.nout, b.nin, b.o0, b.o1)
    if PROFILE:
        start = now() - start
        timers[T_ADAM] += start
        timers[T_WEIGHT_BLOCKS] += start


cdef inline void _team_partials(const Dims* d, const WeightBlock* blocks, const Team* teams,
                                int n_teams, int* shares, int th, floating* partials,
                                const floating* rows, const int* row_ints, const int* doc_rows,
                                const int* groups, double* timers) noexcept nogil:
    """Phase B for thread th: its share of its team's blocks, over each of the team's
    gradient groups' rows."""
    cdef int t = _team_of(teams, n_teams, th), g, k
    cdef int* share = _team_share(shares, teams, t) + th - teams[t].first
    for g in range(teams[t].g0, teams[t].g1):
        for k in range(share[0], share[1]):
            _block_partial(d, &blocks[k], partials, rows, row_ints, g, doc_rows[groups[g]],
                           doc_rows[groups[g + 1]], timers)


cdef inline void _team_copies(const WeightBlock* blocks, const Team* teams, int n_teams,
                              int* shares, int th, floating* team_wt, const floating* params,
                              double* timers) noexcept nogil:
    """Phase D for thread th: its share of its team's blocks into the team's copy."""
    cdef int t = _team_of(teams, n_teams, th), k
    cdef int* share = _team_share(shares, teams, t) + th - teams[t].first
    for k in range(share[0], share[1]):
        _copy_block(&blocks[k], team_wt, params, timers)


# ---------------------------------------------------------------------------
# Entry points


cdef inline floating* _team_copy(floating* wt, floating* wt_copies, Py_ssize_t P,
                                 int t) noexcept nogil:
    """Team t's transposed weights: the caller's wt for team 0."""
    return wt if t == 0 else wt_copies + (t - 1) * P


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
    cdef int n_threads = min(ws.n_threads, B), n_groups = min(<int>GROUPS, B)
    cdef Team teams[GROUPS]
    cdef int n_teams = _make_teams(n_threads, n_groups, teams)
    cdef long long* doc_ids = <long long*>malloc(<size_t>nsteps * B * sizeof(long long))
    cdef int* doc_rows = <int*>malloc(<size_t>nsteps * (B + 1) * sizeof(int))
    cdef int* groups = <int*>malloc(<size_t>nsteps * (GROUPS + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc(<size_t>nsteps * (n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(<size_t>nsteps * B * sizeof(double))
    cdef int* adam_first = <int*>malloc((n_threads + 1) * sizeof(int))
    cdef int* shares = <int*>malloc((n_threads + n_teams) * sizeof(int))
    if (doc_ids == NULL or doc_rows == NULL or groups == NULL or bounds == NULL
            or doc_losses == NULL or adam_first == NULL or shares == NULL):
        free(doc_ids); free(doc_rows); free(groups); free(bounds); free(doc_losses)
        free(adam_first); free(shares)
        raise MemoryError(f"cannot allocate the step plans of {nsteps} steps")
    cdef int s, b, th, k, t, me, granted, mine, i
    cdef long long step
    cdef double lr_t
    cdef unsigned int fp_mode
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef floating* partials = <floating*>ws.partials
    cdef floating* wt_copies = <floating*>ws.wt_copies
    cdef int* ts                # this step's thread bounds
    cdef int* dr                # this step's document rows
    cdef int* gs                # this step's gradient groups
    with nogil:
        for s in range(nsteps):
            for b in range(B):
                doc_ids[s * B + b] = ((step0 + s) * B + b) % N
            _plan_step(d, &starts[0], doc_ids + s * B, B, teams, n_teams, doc_rows + s * (B + 1),
                       groups + s * (GROUPS + 1), bounds + s * (n_threads + 1))
        # the same blocks per thread for the whole chunk: weights stay in one cache
        _share_blocks(ws.blocks, ws.n_blocks, n_threads, 0, adam_first)
        for t in range(n_teams):
            _share_blocks(ws.blocks, ws.n_blocks, teams[t].size, doc_rows[B] // n_groups,
                          _team_share(shares, teams, t))
        with parallel(num_threads=n_threads):
            me = threadid()
            granted = num_threads()
            mine = (n_threads - me + granted - 1) // granted
            fp_mode = flush_denormals_begin()
            # the other teams' transposed copies start from the current weights
            for i in range(mine):
                th = me + i * granted
                t = _team_of(teams, n_teams, th)
                if t > 0:
                    _team_copies(ws.blocks, teams, n_teams, shares, th,
                                 _team_copy(&wt[0], wt_copies, d.P, t), &params[0],
                                 ws.timers + th * N_TIMERS)
            if n_threads > n_teams:
                barrier()
            for s in range(nsteps):
                step = step0 + s
                ts = bounds + s * (n_threads + 1)
                dr = doc_rows + s * (B + 1)
                gs = groups + s * (GROUPS + 1)
                # A. documents, with the team's own transposed weights
                for i in range(mine):
                    th = me + i * granted
                    t = _team_of(teams, n_teams, th)
                    _run_documents(d, &params[0], _team_copy(&wt[0], wt_copies, d.P, t), rows,
                                   arenas + th * d.arena_size, ws.row_ints, &tokens[0],
                                   &starts[0], doc_ids + s * B, dr, B, ts[th], ts[th + 1],
                                   doc_losses + s * B, True, ws.timers + th * N_TIMERS)
                if n_threads > n_teams:
                    barrier()  # a team's products read the rows of all its threads
                # B. each team's groups' partial gradients, over their own rows
                for i in range(mine):
                    th = me + i * granted
                    _team_partials(d, ws.blocks, teams, n_teams, shares, th, partials, rows,
                                   ws.row_ints, dr, gs, ws.timers + th * N_TIMERS)
                barrier()
                # C. Adam on the sum of the partials
                lr_t = learning_rate * (1 - <double>step / total_steps)
                for i in range(mine):
                    th = me + i * granted
                    for k in range(adam_first[th], adam_first[th + 1]):
                        _adam_block(d, &ws.blocks[k], &params[0], &m[0], &v[0], partials,
                                    n_groups, <floating>lr_t, <floating>beta1, <floating>beta2,
                                    <floating>(1 - beta1 ** (step + 1)),
                                    <floating>(1 - beta2 ** (step + 1)), <floating>eps,
                                    ws.timers + th * N_TIMERS)
                barrier()
                # D. every team's transposed copy of the new weights
                for i in range(mine):
                    th = me + i * granted
                    _team_copies(ws.blocks, teams, n_teams, shares, th,
                                 _team_copy(&wt[0], wt_copies, d.P, _team_of(teams, n_teams, th)),
                                 &params[0], ws.timers + th * N_TIMERS)
                if n_threads > n_teams:
                    barrier()
            flush_denormals_end(fp_mode)
        for s in range(nsteps):
            losses[s] = _batch_loss(doc_losses + s * B, B)
    free(doc_ids); free(doc_rows); free(groups); free(bounds); free(doc_losses)
    free(adam_first); free(shares)


def loss_and_grad(Workspace ws, const floating[::1] params, const floating[::1] wt,
                  floating[::1] grad, const int[::1] tokens, const long long[::1] starts,
                  const long long[::1] doc_ids):
    """Loss of the batch doc_ids and its gradient, written to grad (P,).

    The same code as a training step, without the update.
    """
    cdef int B = <int>doc_ids.shape[0], th, t, me, granted, mine, i
    _check(ws, params.shape[0], sizeof(floating), "params")
    _check(ws, wt.shape[0], sizeof(floating), "wt")
    _check(ws, grad.shape[0], sizeof(floating), "grad")
    _check_data(ws, tokens, starts)
    _check_doc_ids(ws, starts, doc_ids)
    cdef int n_threads = min(ws.n_threads, B), n_groups = min(<int>GROUPS, B)
    cdef Team teams[GROUPS]
    cdef int n_teams = _make_teams(n_threads, n_groups, teams)
    cdef int* doc_rows = <int*>malloc((B + 1) * sizeof(int))
    cdef int groups[GROUPS + 1]
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    cdef int* shares = <int*>malloc((n_threads + n_teams) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(B * sizeof(double))
    if doc_rows == NULL or bounds == NULL or shares == NULL or doc_losses == NULL:
        free(doc_rows); free(bounds); free(shares); free(doc_losses)
        raise MemoryError("cannot allocate the step plan")
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef floating* partials = <floating*>ws.partials
    cdef WeightBlock* blk
    cdef unsigned int fp_mode
    cdef double total = 0
    with nogil:
        _plan_step(d, &starts[0], &doc_ids[0], B, teams, n_teams, doc_rows, groups, bounds)
        for t in range(n_teams):
            _share_blocks(ws.blocks, ws.n_blocks, teams[t].size, doc_rows[B] // n_groups,
                          _team_share(shares, teams, t))
        with parallel(num_threads=n_threads):
            me = threadid()
            granted = num_threads()
            mine = (n_threads - me + granted - 1) // granted
            fp_mode = flush_denormals_begin()
            for i in range(mine):
                th = me + i * granted
                _run_documents(d, &params[0], &wt[0], rows, arenas + th * d.arena_size,
                               ws.row_ints, &tokens[0], &starts[0], &doc_ids[0], doc_rows, B,
                               bounds[th], bounds[th + 1], doc_losses, True,
                               ws.timers + th * N_TIMERS)
            barrier()
            for i in range(mine):
                th = me + i * granted
                _team_partials(d, ws.blocks, teams, n_teams, shares, th, partials, rows,
                               ws.row_ints, doc_rows, groups, ws.timers + th * N_TIMERS)
            barrier()
            for i in range((ws.n_blocks - me + granted - 1) // granted):
                blk = &ws.blocks[me + i * granted]
                _sum_groups(&grad[blk.matrix + <Py_ssize_t>blk.o0 * blk.nin],
                            partials + blk.matrix + <Py_ssize_t>blk.o0 * blk.nin, n_groups,
                            d.P, <Py_ssize_t>(blk.o1 - blk.o0) * blk.nin)
            flush_denormals_end(fp_mode)
    total = _batch_loss(doc_losses, B)
    free(doc_rows); free(bounds); free(shares); free(doc_losses)
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
    if doc_rows == NULL or bounds == NULL:
        free(doc_rows); free(bounds)
        raise MemoryError("cannot allocate the evaluation plan")
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef unsigned int fp_mode
    with nogil:
        _doc_rows(d, &starts[0], &doc_ids[0], B, doc_rows)
        _split_docs(doc_rows, 0, B, n_threads, bounds)
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
    the transposed copy refreshed: phases C and D of a step, from a whole gradient."""
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
            _adam_block(&ws.d, b, &params[0], &m[0], &v[0], &grad[0], 1, <floating>lr_t,
                        <floating>beta1, <floating>beta2, bias1, bias2, <floating>eps,
                        ws.timers + threadid() * N_TIMERS)
            _copy_block(b, &wt[0], &params[0], ws.timers + threadid() * N_TIMERS)
