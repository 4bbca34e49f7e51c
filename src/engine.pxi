# The compiled engine: one Engine object owns a model's buffers and runs its
# training chunks, gradients, evaluation and sampling, without the GIL.
#
# Included by each kernel variant module (build/cython/_engine_<variant>.pyx,
# written by setup.py), which compile this same source with different flags.
#
# Buffers in the flat parameter order (see layout.pxd), owned by the Engine:
#   params (P,)  weights          wt (P,)  the same, every weight matrix transposed
#   m, v (P,)    Adam's moments    (params, m and v are handed to Python as numpy arrays)
#   row space, the threads' arenas, the groups' partial gradients and the other
#   teams' transposed copies: the workspace, never seen from Python.
#
# A training step runs in phases, with barriers between them:
#   A. Documents. The B documents of the step own consecutive rows of row
#      space (document b: rows R_b .. R_b + n_b - 1). Each thread takes a run of
#      consecutive documents, balanced by token count, and computes their
#      forward pass, losses and activation gradients over all its rows at once.
#   B. Partial gradients. The rows are cut at a document boundary into two
#      gradient groups; the gradient over each group's rows of each run of one
#      matrix's blocks in a thread's share is one product, written to that
#      group's partial gradient buffer.
#   C. Adam, block by block, on the sum of the groups' partials (one fused pass).
#      With gradient clipping on, first each block's sum of squares of that sum
#      into its own slot, a barrier, and every thread adds the slots in block
#      order: the global norm, the same bits for any thread count.
#   D. The transposed copies of the updated weights, which the forward products read.
# Threads form teams (one per gradient group, or one team when there is one
# thread): a team runs its group's documents and products and keeps a transposed
# copy of its own. Who does what is planned in schedule.pxd. Each number is
# computed in an order fixed by the documents alone, so any thread count gives
# the same bits.
#
# A training call runs its steps in segments, one parallel region each; with
# Adaptive on, each segment on the thread count that measures fastest (fewer
# threads beside other busy processes), planned for that count.
#
# Every parallel region shares its work the same way: thread `me` of the
# `granted` threads OpenMP gives takes the shares th = me + i * granted of the
# n_threads planned (its own, or several when fewer threads are granted than
# asked), with explicit barriers between phases and no "omp for".

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from layout cimport (Dims, dims_init, NORM_RMS, NORM_LAYER, ACT_RELU, ACT_GELU,
                     ACT_RELU2, ACT_SILU)
from model cimport gpt_forward, gpt_forward_last, gpt_losses, gpt_backward
from linear cimport linear_backward_weight
from embedding cimport embedding_backward
from gain cimport gain_backward_weight
from adam cimport AdamOptions, adam_update, clip_scale, sum_of_squares
from xent cimport softmax_temperature
from simd cimport BF16_PRODUCTS, gemm, transpose, verf, weight_gemm
from activation cimport activation_forward
from timers cimport now, PROFILE, N_TIMERS, T_BACKWARD, T_ADAM, T_WEIGHT_BLOCKS
from schedule cimport (GROUPS, GAIN, PRODUCT, TIED, TOKENS, Schedule, Team, WeightBlock,
                       doc_rows_of, plan_step, schedule_blocks, schedule_init, split_docs,
                       team_of, team_share, transposed, weight_blocks)

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

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define MICROGPT_FAST_BARRIER() _Pragma("omp barrier")
    #define MICROGPT_FAST_NUM_THREADS() omp_get_num_threads()
    #ifndef MICROGPT_FAST_NO_OMP_PAUSE
    #define MICROGPT_FAST_RELEASE_IDLE() ((void)omp_pause_resource_all(omp_pause_soft))
    #else  /* an OpenMP runtime before 5.0 (setup.py): the thread spins, then sleeps */
    #define MICROGPT_FAST_RELEASE_IDLE()
    #endif
    #else
    #define MICROGPT_FAST_BARRIER()
    #define MICROGPT_FAST_NUM_THREADS() 1
    #define MICROGPT_FAST_RELEASE_IDLE()
    #endif
    """
    void barrier "MICROGPT_FAST_BARRIER"() noexcept nogil
    int num_threads "MICROGPT_FAST_NUM_THREADS"() noexcept nogil
    # Ends the calling thread's idle OpenMP threads (the next parallel region
    # with more than one starts new ones). An idle thread otherwise spins for
    # milliseconds (GOMP_SPINCOUNT) before it sleeps: on a busy machine, on the
    # core that a one-thread segment or the other program needs.
    void release_idle_threads "MICROGPT_FAST_RELEASE_IDLE"() noexcept nogil

cdef extern from "fma_peak.h" nogil:
    double mg_fma_loop_f32(long rounds)
    int MG_FMA_CHAINS
    int MG_LANES_f32

cdef extern from "denormals.h" nogil:
    unsigned int flush_denormals_begin "mg_flush_denormals_begin"()
    void flush_denormals_end "mg_flush_denormals_end"(unsigned int old)


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(MICROGPT_FAST_OPENMP)


def profiling_enabled():
    """True for the profiling variants, whose op-group timers are compiled in."""
    return bool(PROFILE)


def fma_loop(int threads, long rounds):
    """Runs fma_peak.h's loop of independent float32 FMAs, `rounds` rounds, on each
    of up to `threads` threads at once (the machine's ceiling for this variant's
    vector width; peak.py times it). Returns the FLOP done, 2 per multiply-add,
    counted over the threads OpenMP granted."""
    if threads < 1 or rounds < 0:
        raise ValueError(f"need threads >= 1 and rounds >= 0, got {threads} and {rounds}")
    cdef double[::1] sums = np.zeros(threads)
    cdef int ran = 0
    with nogil, parallel(num_threads=threads):
        sums[threadid()] = mg_fma_loop_f32(rounds)
    for i in range(sums.shape[0]):
        ran += sums[i] != 0  # each chain's sum stays near 1: a thread that ran is > 0
    return 2.0 * ran * rounds * MG_FMA_CHAINS * MG_LANES_f32


# Names of the timer slots read_timers returns (timers.pxd).
TIMER_GROUPS = ("embed+norm", "qkv+out proj", "attention", "mlp", "lm head+loss")


# ---------------------------------------------------------------------------
# Transposed weights: what the forward products read


cdef inline void _transpose_rows(floating* wt, const floating* w, int nout, int nin, int o0,
                                 int o1) noexcept nogil:
    """Rows o0..o1-1 of w (nout, nin) into columns o0..o1-1 of wt (nin, nout)."""
    transpose(wt + o0, nout, w + <Py_ssize_t>o0 * nin, nin, o1 - o0, nin)


# ---------------------------------------------------------------------------
# Phase A: the documents of one step


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


cdef inline int _product_run(const WeightBlock* blocks, int k, int end) noexcept nogil:
    """The end of the run of blocks from k (before end) that hold consecutive rows of
    one product's matrix, or k + 1. One product over the whole run gives each
    weight the same sum as block by block, and reads each input row once instead
    of once per block: at n_embd 256 a block of fc2 has 4 rows, and every one
    read all 4 MB of the hidden rows."""
    cdef int j = k + 1
    if blocks[k].kind == PRODUCT:
        while (j < end and blocks[j].kind == PRODUCT and blocks[j].matrix == blocks[k].matrix
               and blocks[j].o0 == blocks[j - 1].o1):
            j += 1
    return j


cdef inline void _block_partial(const Dims* d, const WeightBlock* b, int o1,
                                floating* partials, const floating* rows, const int* row_ints,
                                int g, int r0, int r1, double* timers) noexcept nogil:
    """Group g's part of the block's gradient, its rows r0..r1-1, into the block's
    weights in group g's partial buffer (partials + g * P); a product's weight
    rows b.o0 .. o1 - 1, which may reach past the block (_product_run)."""
    cdef double start = now() if PROFILE else 0
    cdef floating* out = partials + g * d.P + b.matrix + <Py_ssize_t>b.o0 * b.nin
    if b.kind == PRODUCT or b.kind == TIED:
        linear_backward_weight(out, rows + b.dout + <Py_ssize_t>r0 * b.nout,
                               rows + b.x + <Py_ssize_t>r0 * b.nin, r1 - r0, b.nin, b.nout,
                               b.o0, o1)
    if b.kind == TIED:  # then the embedding's rows, added in order onto the head's part
        embedding_backward(out, rows + d.d_emb + <Py_ssize_t>r0 * b.nin, row_ints + r0,
                           r1 - r0, b.nin, b.o0, b.o1, True)
    elif b.kind == GAIN:
        gain_backward_weight(out, rows + b.dout + <Py_ssize_t>r0 * b.nin,
                             rows + b.x + <Py_ssize_t>r0 * b.nin, r1 - r0, b.nin)
    elif b.kind != PRODUCT:
        embedding_backward(out, rows + b.dout + <Py_ssize_t>r0 * b.nin,
                           (row_ints if b.kind == TOKENS else row_ints + 2 * d.R) + r0,
                           r1 - r0, b.nin, b.o0, b.o1, False)
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


cdef inline void _square_block(const Dims* d, const WeightBlock* b, double* squares,
                               const floating* grads, int n_parts,
                               double* timers) noexcept nogil:
    """squares[0] = the sum of squares of the block's gradient, the sum of n_parts
    (1 or 2) buffers of P elements from grads, as _adam_block sums them."""
    cdef double start = now() if PROFILE else 0
    cdef Py_ssize_t first = b.matrix + <Py_ssize_t>b.o0 * b.nin
    squares[0] = sum_of_squares(grads + first, grads + d.P + first if n_parts == 2 else NULL,
                                <Py_ssize_t>(b.o1 - b.o0) * b.nin)
    if PROFILE:
        start = now() - start
        timers[T_ADAM] += start
        timers[T_WEIGHT_BLOCKS] += start


cdef inline void _adam_block(const Dims* d, const WeightBlock* b, floating* params, floating* m,
                             floating* v, const floating* grads, int n_parts, floating lr_t,
                             floating beta1, floating beta2, floating bias1, floating bias2,
                             floating eps, floating grad_scale, floating shrink,
                             double* timers) noexcept nogil:
    """Adam on the block's weights; their gradient is the sum of n_parts (1 or 2)
    buffers of P elements from grads (the groups' partials, or one whole gradient),
    times grad_scale; the weights shrink by `shrink` first where the block decays."""
    cdef double start = now() if PROFILE else 0
    cdef Py_ssize_t first = b.matrix + <Py_ssize_t>b.o0 * b.nin
    adam_update(params + first, m + first, v + first, grads + first,
                grads + d.P + first if n_parts == 2 else NULL,
                <Py_ssize_t>(b.o1 - b.o0) * b.nin, lr_t, beta1, beta2, bias1, bias2, eps,
                grad_scale, shrink if b.decay else 1)
    if PROFILE:
        start = now() - start
        timers[T_ADAM] += start
        timers[T_WEIGHT_BLOCKS] += start


cdef inline void _copy_block(const WeightBlock* b, floating* wt, const floating* params,
                             double* timers) noexcept nogil:
    """The block's rows of a product's matrix into their columns of wt."""
    cdef double start = now() if PROFILE else 0
    if transposed(b):
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
    cdef int t = team_of(teams, n_teams, th), g, k, end
    cdef int* share = team_share(shares, teams, t) + th - teams[t].first
    for g in range(teams[t].g0, teams[t].g1):
        k = share[0]
        while k < share[1]:
            end = _product_run(blocks, k, share[1])
            _block_partial(d, &blocks[k], blocks[end - 1].o1, partials, rows, row_ints, g,
                           doc_rows[groups[g]], doc_rows[groups[g + 1]], timers)
            k = end


cdef inline void _team_copies(const WeightBlock* blocks, const Team* teams, int n_teams,
                              int* shares, int th, floating* team_wt, const floating* params,
                              double* timers) noexcept nogil:
    """Phase D for thread th: its share of its team's blocks into the team's copy."""
    cdef int t = team_of(teams, n_teams, th), k
    cdef int* share = team_share(shares, teams, t) + th - teams[t].first
    for k in range(share[0], share[1]):
        _copy_block(&blocks[k], team_wt, params, timers)


# ---------------------------------------------------------------------------
# The adaptive thread count of a training call (Workspace.adapt).
# - Its steps run in segments of about SEGMENT_SECONDS, each planned for its
#   own thread count: results are the same bits for any count. Each segment's
#   seconds per row of documents is measured.
# - Every probe_gap segments a short one (a probe) runs on one thread fewer
#   (PROBE_SECONDS) or one more (PROBE_UP_SECONDS) than the count in use, and
#   the count whose time per row is lower is kept. A probe that confirms the
#   count in use doubles the gap (up to PROBE_GAP_MAX), so a quiet machine pays
#   for a slower millisecond in about 0.6 s.
# - A segment clearly slower than its count's figure when that count was chosen
#   (a competitor came) probes at once.
# - Beside a program that holds a core, a probe of more threads can cost tens
#   of milliseconds however short it is planned (each barrier waits for a
#   thread the kernel has not scheduled yet). So a segment stops once a step
#   ends past SEGMENT_OVERRUN times its planned time, and what a losing probe
#   cost beyond the count in use holds off the next one (hold) until that is at
#   most PROBE_BUDGET of the time.
# - A fresh engine may start on fewer threads than it has (start_threads: the
#   cores that other programs leave free when training begins).
cdef enum:
    PROBE_GAP_FIRST = 2
    PROBE_GAP_AFTER_SWITCH = 4
    PROBE_GAP_MAX = 128
    PROBE_HOLD_MAX = 400   # segments: a costly probe delays the next by at most ~2 s
    # segments before the first probe of a model started on fewer threads beside
    # busy programs: such a probe costs 10 to 50 ms, a step or two whose barriers
    # each wait for a thread the kernel has not scheduled (about 33 ms on a Zen 5
    # VM); a second of segments keeps that within PROBE_BUDGET
    BUSY_START_HOLD = 200
cdef double SEGMENT_SECONDS = 0.005
cdef double PROBE_SECONDS = 0.001
# A probe of one thread more runs longer and must win by more: beside a program
# that holds a core, a millisecond often falls between its time slices and the
# larger count looks fast; five span a time slice or two. (On a quiet machine
# the count in use is rarely below the best, so the longer probe seldom runs.)
cdef double PROBE_UP_SECONDS = 0.005
cdef double SWITCH_MARGIN = 0.95   # a probe wins when its time per row is below this share
cdef double SWITCH_MARGIN_UP = 0.9  # the same for a probe of more threads
cdef double SLOWER_ALARM = 1.3     # a segment this much slower than its count's base probes
# A segment stops after the step that ends past this many times its planned time
# (the rest of its steps go to the next segment): beside a busy program a probe of
# more threads planned for 5 ms could otherwise run 100 ms, a few ms a step.
cdef double SEGMENT_OVERRUN = 3.0
cdef double PROBE_BUDGET = 0.05    # the most of the time that losing probes may cost


cdef struct Adaptive:
    bint on                # adapt the thread count of train() (threads > 1)
    int threads            # the count in use (never more than a call's documents)
    double* per_row        # (max_threads + 1,) seconds per row of the last segment on
                           # each count, 0 before the first
    long long* steps_on    # (max_threads + 1,) steps trained on each count
    double base            # per_row of the count in use when it was chosen
    int probe_gap          # segments of the count in use between probes
    int since_probe        # segments since the last probe
    int hold               # segments from the last probe before the next, whatever
                           # the gap or an alarm says (what the last probe cost)
    bint probe_down        # the next probe tries one thread fewer (where both exist)
    int forced_steps       # tests: segments of this many steps on counts n, n - 1, .. 1, n
    int last_count         # threads of the last segment (its pool threads may spin)


cdef inline int _next_count(Adaptive* a, int n) noexcept nogil:
    """The thread count of the next segment of a call of at most n threads."""
    cdef int cur = min(a.threads, n)
    if a.forced_steps > 0:
        a.threads = cur - 1 if cur > 1 else n
        return cur
    if n == 1 or a.since_probe < a.probe_gap or a.since_probe < a.hold:
        return cur
    if cur == 1:
        return 2
    if cur == n or a.probe_down:
        return cur - 1
    return cur + 1


cdef inline double _segment_seconds(const Adaptive* a, int count, bint probe) noexcept nogil:
    """The time a segment on `count` threads is planned to take: SEGMENT_SECONDS,
    or for a probe PROBE_SECONDS (PROBE_UP_SECONDS with more threads)."""
    if probe:
        return PROBE_UP_SECONDS if count > a.threads else PROBE_SECONDS
    return SEGMENT_SECONDS


cdef inline int _segment_steps(const Adaptive* a, int count, double seconds,
                               double rows_per_step, int left) noexcept nogil:
    """Steps of the next segment on `count` threads: about `seconds` of work."""
    cdef double guess
    cdef double per_row = a.per_row[count] if a.per_row[count] > 0 else a.per_row[a.threads]
    if a.forced_steps > 0:
        return min(a.forced_steps, left)
    if per_row <= 0:
        return 1  # the first segment measures a step
    guess = seconds / (per_row * rows_per_step)
    return <int>max(1.0, min(<double>left, guess))


cdef inline void _after_segment(Adaptive* a, int count, int n, double seconds,
                                long long rows, int steps) noexcept nogil:
    """Record a segment on `count` threads of a call of at most n, and choose the
    count from here on."""
    cdef double per_row = seconds / max(rows, 1)
    cdef int cur = min(a.threads, n)
    a.steps_on[count] += steps
    if a.forced_steps > 0:
        return
    a.per_row[count] = per_row
    if count == cur:
        a.since_probe += 1
        if a.base <= 0:
            a.base = per_row
        elif per_row > SLOWER_ALARM * a.base:
            a.since_probe = a.probe_gap  # probe next
        return
    # a probe: keep the faster count; probe the same way again after a move
    a.since_probe = 0
    cdef double excess = seconds - rows * a.per_row[cur]  # beyond the count in use
    a.hold = <int>min(excess / (PROBE_BUDGET * SEGMENT_SECONDS), <double>PROBE_HOLD_MAX)
    if per_row < (SWITCH_MARGIN_UP if count > cur else SWITCH_MARGIN) * a.per_row[cur]:
        a.threads = count
        a.probe_down = count < cur
        a.probe_gap = PROBE_GAP_AFTER_SWITCH
    else:
        a.probe_down = not a.probe_down
        a.probe_gap = min(2 * a.probe_gap, <int>PROBE_GAP_MAX)
    a.base = a.per_row[a.threads]


cdef inline long long _segment_rows(const int* doc_rows, int B, int s0,
                                    int s1) noexcept nogil:
    """Rows of documents of steps s0..s1-1 (each step's plan is B + 1 entries)."""
    cdef long long total = 0
    cdef int s
    for s in range(s0, s1):
        total += doc_rows[s * (B + 1) + B]
    return total


# ---------------------------------------------------------------------------
# The workspace and the calls that run on it


cdef struct Workspace:
    Dims d
    WeightBlock* blocks    # (n_blocks,) in flat parameter order (schedule.pxd)
    int n_blocks
    int max_threads        # threads of a call: never more than this, nor its documents
    void* rows             # row space, d.rows_size elements
    void* arena            # max_threads arenas of d.arena_size elements each
    void* partials         # (n_groups, P) the gradient groups' partial weight gradients
    void* wt_copies        # (GROUPS - 1, P) the other teams' transposed weights (threads > 1)
    int* row_ints          # (3, R) each row's token, target and position
    double* timers         # (max_threads, N_TIMERS) seconds per op group (profiling variants)
    double* block_squares  # (n_blocks,) each block's gradient sum of squares (clipping)
    int* adam_first        # (max_threads + 1,) a call's block shares (Schedule)
    int* shares            # (max_threads + GROUPS,)
    Adaptive adapt         # train()'s thread count (threads > 1)


cdef inline floating* _team_copy(floating* wt, floating* wt_copies, Py_ssize_t P,
                                 int t) noexcept nogil:
    """Team t's transposed weights: the engine's own wt for team 0."""
    return wt if t == 0 else wt_copies + (t - 1) * P


cdef void _transpose_all(const Workspace* ws, const floating* params,
                         floating* wt) noexcept nogil:
    """wt = params with every weight matrix the forward products read transposed (see
    schedule.transposed)."""
    cdef int k
    cdef const WeightBlock* b
    for k in range(ws.n_blocks):
        b = &ws.blocks[k]
        if transposed(b):
            _transpose_rows(wt + b.matrix, params + b.matrix, b.nout, b.nin, b.o0, b.o1)


cdef int _train_segment(Workspace* ws, Schedule* sc, floating* params, floating* wt,
                        floating* m, floating* v, const int* tokens,
                        const long long* starts, const long long* step_docs, long long step0,
                        int B, const double* learning_rates, const AdamOptions* opt,
                        const int* doc_rows, const int* groups, const int* bounds,
                        int bounds_stride, double* doc_losses, int s0, int s1,
                        bint copies_current, double deadline) noexcept nogil:
    """Steps s0..s1-1 of a call (phases A to D each) on sc's threads, in one parallel
    region: step s's plan is doc_rows + s * (B + 1), groups + s * (GROUPS + 1),
    bounds + s * bounds_stride; its documents' losses go to doc_losses + s * B.
    wt holds the transposed params on entry, and again on return; so do the
    other teams' copies when copies_current (else they are made first).
    Returns the steps run: fewer when a step ends past deadline (now()'s clock;
    0: none)."""
    cdef int n_threads = sc.n_threads, n_teams = sc.n_teams, n_groups = sc.n_groups
    cdef const Team* teams = sc.teams
    cdef int s, th, k, t, me, granted, mine, i
    cdef long long step
    cdef double lr_t, grad_scale, shrink
    cdef double beta1 = opt.beta1, beta2 = opt.beta2, eps = opt.eps
    cdef bint clipping = opt.grad_clip > 0
    cdef unsigned int fp_mode
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef floating* partials = <floating*>ws.partials
    cdef floating* wt_copies = <floating*>ws.wt_copies
    cdef const int* ts          # this step's thread bounds
    cdef const int* dr          # this step's document rows
    cdef const int* gs          # this step's gradient groups
    # shared by the threads (an element, not a variable: a parallel block makes
    # every variable it assigns private): the step thread 0 saw end past the
    # deadline, written before the barrier that ends Adam and read after phase D
    cdef int last_step[1]
    last_step[0] = s1 - 1
    with parallel(num_threads=n_threads):
        me = threadid()
        granted = num_threads()
        mine = (n_threads - me + granted - 1) // granted
        fp_mode = flush_denormals_begin()
        # the other teams' transposed copies start from the current weights
        if not copies_current:
            for i in range(mine):
                th = me + i * granted
                t = team_of(teams, n_teams, th)
                if t > 0:
                    _team_copies(ws.blocks, teams, n_teams, sc.shares, th,
                                 _team_copy(wt, wt_copies, d.P, t), params,
                                 ws.timers + th * N_TIMERS)
            if n_threads > n_teams:
                barrier()
        s = s0
        while s <= last_step[0]:
            step = step0 + s
            ts = bounds + s * bounds_stride
            dr = doc_rows + s * (B + 1)
            gs = groups + s * (GROUPS + 1)
            # A. documents, with the team's own transposed weights
            for i in range(mine):
                th = me + i * granted
                t = team_of(teams, n_teams, th)
                _run_documents(d, params, _team_copy(wt, wt_copies, d.P, t), rows,
                               arenas + th * d.arena_size, ws.row_ints, tokens, starts,
                               step_docs + s * B, dr, B, ts[th], ts[th + 1],
                               doc_losses + s * B,
                               True, ws.timers + th * N_TIMERS)
            if n_threads > n_teams:
                barrier()  # a team's products read the rows of all its threads
            # B. each team's groups' partial gradients, over their own rows
            for i in range(mine):
                th = me + i * granted
                _team_partials(d, ws.blocks, teams, n_teams, sc.shares, th, partials, rows,
                               ws.row_ints, dr, gs, ws.timers + th * N_TIMERS)
            barrier()
            # C. Adam on the sum of the partials (clipped to the global norm when asked)
            lr_t = learning_rates[s]
            grad_scale = 1
            if clipping:
                for i in range(mine):
                    th = me + i * granted
                    for k in range(sc.adam_first[th], sc.adam_first[th + 1]):
                        _square_block(d, &ws.blocks[k], ws.block_squares + k, partials,
                                      n_groups, ws.timers + th * N_TIMERS)
                barrier()
                grad_scale = clip_scale(ws.block_squares, ws.n_blocks, opt.grad_clip)
            shrink = 1 - lr_t * opt.weight_decay
            for i in range(mine):
                th = me + i * granted
                for k in range(sc.adam_first[th], sc.adam_first[th + 1]):
                    _adam_block(d, &ws.blocks[k], params, m, v, partials, n_groups,
                                <floating>lr_t, <floating>beta1, <floating>beta2,
                                <floating>(1 - beta1 ** (step + 1)),
                                <floating>(1 - beta2 ** (step + 1)), <floating>eps,
                                <floating>grad_scale, <floating>shrink,
                                ws.timers + th * N_TIMERS)
            if me == 0 and deadline > 0 and now() > deadline:
                last_step[0] = s
            barrier()
            # D. every team's transposed copy of the new weights
            for i in range(mine):
                th = me + i * granted
                _team_copies(ws.blocks, teams, n_teams, sc.shares, th,
                             _team_copy(wt, wt_copies, d.P, team_of(teams, n_teams, th)),
                             params, ws.timers + th * N_TIMERS)
            if n_threads > n_teams:
                barrier()
            s = s + 1
        flush_denormals_end(fp_mode)
    return last_step[0] + 1 - s0


cdef int _train_steps(Workspace* ws, floating* params, floating* wt, floating* m, floating* v,
                      const int* tokens, const long long* starts,
                      const long long* step_docs, long long step0, int B,
                      const double* learning_rates, const AdamOptions* opt,
                      double* losses, int nsteps) noexcept nogil:
    """Train nsteps steps from step0 (phases A to D each); -1 when out of memory.

    Step step0 + s trains the documents step_docs[s*B .. s*B + B - 1] and writes
    its loss (the mean over documents of each document's mean position loss) to
    losses[s]; Adam takes the rate learning_rates[s], the bias corrections of
    step step0 + s and opt's settings. wt holds the transposed params on entry,
    and again on return. With ws.adapt.on, the steps run in segments on as many
    threads as measures fastest (Adaptive); else in one on every thread.
    """
    cdef int n_threads = min(ws.max_threads, B)
    # each step's plan: its documents, their rows, groups and threads' runs
    cdef int* doc_rows = <int*>malloc(<size_t>nsteps * (B + 1) * sizeof(int))
    cdef int* groups = <int*>malloc(<size_t>nsteps * (GROUPS + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc(<size_t>nsteps * (n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(<size_t>nsteps * B * sizeof(double))
    if doc_rows == NULL or groups == NULL or bounds == NULL or doc_losses == NULL:
        free(doc_rows); free(groups); free(bounds); free(doc_losses)
        return -1
    cdef Schedule sc
    cdef Adaptive* a = &ws.adapt
    cdef bint adapting = n_threads > 1 and a.on
    cdef int s = 0, k, seg, count
    cdef bint copies_current = False  # the other teams' copies hold params
    cdef double started, deadline, planned = 0
    while s < nsteps:
        count = _next_count(a, n_threads) if adapting else n_threads
        if adapting:  # a probe when the count is not the one in use
            planned = _segment_seconds(a, count, count != min(a.threads, n_threads))
        # the segment's plan on `count` threads
        schedule_init(&sc, count, B, ws.adam_first, ws.shares)
        seg = nsteps - s
        k = s
        while k < s + seg:
            plan_step(&ws.d, starts, step_docs + k * B, B, sc.teams, sc.n_teams,
                      doc_rows + k * (B + 1), groups + k * (GROUPS + 1),
                      bounds + k * (count + 1))
            if k == s and adapting:  # about `planned` seconds of steps like the first
                seg = _segment_steps(a, count, planned, <double>doc_rows[s * (B + 1) + B],
                                     nsteps - s)
            k += 1
        schedule_blocks(&sc, ws.blocks, ws.n_blocks, doc_rows[s * (B + 1) + B] // sc.n_groups)
        if adapting and count == 1 and a.last_count > 1:
            release_idle_threads()  # back to one thread: none left spinning
        a.last_count = count
        started = now() if adapting else 0
        deadline = 0
        if adapting and a.forced_steps == 0 and seg > 1:
            deadline = started + SEGMENT_OVERRUN * planned
        seg = _train_segment(ws, &sc, params, wt, m, v, tokens, starts, step_docs, step0, B,
                             learning_rates, opt, doc_rows, groups, bounds, count + 1,
                             doc_losses, s, s + seg, copies_current, deadline)
        # phase D keeps every team's copy current (the copy of team 1 is the same
        # buffer for any count); nothing else writes the weights during a call
        copies_current = sc.n_teams > 1
        if adapting:
            _after_segment(a, count, n_threads, now() - started,
                           _segment_rows(doc_rows, B, s, s + seg), seg)
        s += seg
    for s in range(nsteps):
        losses[s] = _batch_loss(doc_losses + s * B, B)
    free(doc_rows); free(groups); free(bounds); free(doc_losses)
    return 0


cdef int _loss_and_grad(Workspace* ws, const floating* params, const floating* wt,
                        floating* grad, const int* tokens, const long long* starts,
                        const long long* doc_ids, int B, double* loss) noexcept nogil:
    """Phases A and B of a step on the batch doc_ids, then the groups' partials
    summed into grad (P,); -1 when out of memory."""
    cdef Schedule sc
    schedule_init(&sc, ws.max_threads, B, ws.adam_first, ws.shares)
    cdef int n_threads = sc.n_threads, n_teams = sc.n_teams, n_groups = sc.n_groups
    cdef int* doc_rows = <int*>malloc((B + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    cdef double* doc_losses = <double*>malloc(B * sizeof(double))
    cdef int groups[GROUPS + 1]
    if doc_rows == NULL or bounds == NULL or doc_losses == NULL:
        free(doc_rows); free(bounds); free(doc_losses)
        return -1
    cdef const Dims* d = &ws.d
    cdef floating* rows = <floating*>ws.rows
    cdef floating* arenas = <floating*>ws.arena
    cdef floating* partials = <floating*>ws.partials
    cdef const WeightBlock* blk
    cdef unsigned int fp_mode
    cdef int th, me, granted, mine, i, k
    plan_step(d, starts, doc_ids, B, sc.teams, n_teams, doc_rows, groups, bounds)
    schedule_blocks(&sc, ws.blocks, ws.n_blocks, doc_rows[B] // n_groups)
    with parallel(num_threads=n_threads):
        me = threadid()
        granted = num_threads()
        mine = (n_threads - me + granted - 1) // granted
        fp_mode = flush_denormals_begin()
        for i in range(mine):
            th = me + i * granted
            _run_documents(d, params, wt, rows, arenas + th * d.arena_size, ws.row_ints,
                           tokens, starts, doc_ids, doc_rows, B, bounds[th], bounds[th + 1],
                           doc_losses, True, ws.timers + th * N_TIMERS)
        barrier()
        for i in range(mine):
            th = me + i * granted
            _team_partials(d, ws.blocks, sc.teams, n_teams, sc.shares, th, partials, rows,
                           ws.row_ints, doc_rows, groups, ws.timers + th * N_TIMERS)
        barrier()
        for i in range(mine):
            th = me + i * granted
            for k in range(sc.adam_first[th], sc.adam_first[th + 1]):
                blk = &ws.blocks[k]
                _sum_groups(grad + blk.matrix + <Py_ssize_t>blk.o0 * blk.nin,
                            partials + blk.matrix + <Py_ssize_t>blk.o0 * blk.nin, n_groups,
                            d.P, <Py_ssize_t>(blk.o1 - blk.o0) * blk.nin)
        flush_denormals_end(fp_mode)
    loss[0] = _batch_loss(doc_losses, B)
    free(doc_rows); free(bounds); free(doc_losses)
    return 0


cdef inline int _pass_threads(const Workspace* ws) noexcept nogil:
    """Threads of a forward pass without training (evaluation, sampling): the
    count training last chose where it adapts (fewer beside busy programs),
    else all."""
    return ws.adapt.threads if ws.adapt.on else ws.max_threads


cdef int _evaluate(Workspace* ws, const floating* params, const floating* wt,
                   const int* tokens, const long long* starts, const long long* doc_ids, int B,
                   double* doc_losses) noexcept nogil:
    """Phase A without gradients: each document's mean loss; -1 when out of memory."""
    cdef int n_threads = min(_pass_threads(ws), B), th, me, granted, mine, i
    cdef int* doc_rows = <int*>malloc((B + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    if doc_rows == NULL or bounds == NULL:
        free(doc_rows); free(bounds)
        return -1
    cdef const Dims* d = &ws.d
    cdef unsigned int fp_mode
    doc_rows_of(d, starts, doc_ids, B, doc_rows)
    split_docs(doc_rows, 0, B, n_threads, bounds)
    with parallel(num_threads=n_threads):
        me = threadid()
        granted = num_threads()
        mine = (n_threads - me + granted - 1) // granted
        fp_mode = flush_denormals_begin()
        for i in range(mine):
            th = me + i * granted
            _run_documents(d, params, wt, <floating*>ws.rows,
                           <floating*>ws.arena + th * d.arena_size, ws.row_ints, tokens, starts,
                           doc_ids, doc_rows, B, bounds[th], bounds[th + 1], doc_losses, False,
                           ws.timers + th * N_TIMERS)
        flush_denormals_end(fp_mode)
    free(doc_rows); free(bounds)
    return 0


# ---------------------------------------------------------------------------
# Sampling many texts at once: each sample owns a document of row space
#
# The samples of a group advance in lockstep, so every draw is one call over
# all of them, the threads each taking a run of samples. A row's numbers do not
# depend on how many rows or documents share its call (every row-wise op and
# product sums a row on its own, attention runs document by document), so each
# sample gets the bits it gets alone. No denormal flushing here: the one-sample
# calls (next_probs, window_probs) run in the caller's mode, and so must these.


cdef int _feed_slots(Workspace* ws, const floating* params, const floating* wt, int n,
                     int pos, double temperature, double* probs) noexcept nogil:
    """Position pos of documents j = 0..n-1 (document j owns rows j*T .., its token
    already in row_ints, its positions < pos computed: the KV cache), then
    softmax(logits / temperature) of each into probs (n, V); -1 when out of memory."""
    cdef int n_threads = min(_pass_threads(ws), n), th, me, granted, mine, i, j
    cdef const Dims* d = &ws.d
    cdef int* doc_rows = <int*>malloc(2 * <size_t>n * sizeof(int))  # document j's: 2j, 2j + 1
    if doc_rows == NULL:
        return -1
    for j in range(n):
        doc_rows[2 * j] = j * d.T
        doc_rows[2 * j + 1] = j * d.T + pos + 1
    with parallel(num_threads=n_threads):
        me = threadid()
        granted = num_threads()
        mine = (n_threads - me + granted - 1) // granted
        for i in range(mine):
            th = me + i * granted
            for j in range(th * n // n_threads, (th + 1) * n // n_threads):
                gpt_forward(d, params, wt, <floating*>ws.rows,
                            <floating*>ws.arena + th * d.arena_size, ws.row_ints,
                            doc_rows + 2 * j, 1, j * d.T + pos, ws.timers + th * N_TIMERS)
                softmax_temperature(probs + <Py_ssize_t>j * d.V,
                                    <floating*>ws.rows + d.logits
                                    + (<Py_ssize_t>j * d.T + pos) * d.V,
                                    d.V, temperature)
    free(doc_rows)
    return 0


cdef int _windows(Workspace* ws, const floating* params, const floating* wt, int n, int m,
                  double temperature, double* probs) noexcept nogil:
    """A fresh forward pass over n windows of m positions (window j owns rows
    j*m .. j*m + m - 1, its tokens already in row_ints), and softmax(logits /
    temperature) of each window's last position into probs (n, V); -1 when out
    of memory. Only the last positions' logits are wanted, so past the last
    layer's keys and values only they are computed (gpt_forward_last): a
    fifth less work at 4 layers."""
    cdef int n_threads = min(_pass_threads(ws), n), th, me, granted, mine, i, j, b0, b1
    cdef const Dims* d = &ws.d
    cdef int* doc_rows = <int*>malloc((n + 1) * sizeof(int))
    cdef int* bounds = <int*>malloc((n_threads + 1) * sizeof(int))
    if doc_rows == NULL or bounds == NULL:
        free(doc_rows); free(bounds)
        return -1
    for j in range(n + 1):
        doc_rows[j] = j * m
    split_docs(doc_rows, 0, n, n_threads, bounds)
    with parallel(num_threads=n_threads):
        me = threadid()
        granted = num_threads()
        mine = (n_threads - me + granted - 1) // granted
        for i in range(mine):
            th = me + i * granted
            b0, b1 = bounds[th], bounds[th + 1]
            if b0 < b1:
                gpt_forward_last(d, params, wt, <floating*>ws.rows,
                                 <floating*>ws.arena + th * d.arena_size, ws.row_ints,
                                 doc_rows + b0, b1 - b0, ws.timers + th * N_TIMERS)
            for j in range(b0, b1):
                softmax_temperature(probs + <Py_ssize_t>j * d.V,
                                    <floating*>ws.rows + d.logits
                                    + <Py_ssize_t>(doc_rows[j + 1] - 1) * d.V,
                                    d.V, temperature)
    free(doc_rows); free(bounds)
    return 0


cdef void _adam_all(Workspace* ws, floating* params, floating* wt, floating* m, floating* v,
                    const floating* grad, long long step, double lr_t,
                    const AdamOptions* opt) noexcept nogil:
    """Phases C and D from a whole gradient (P,): Adam at rate lr_t with the bias
    corrections of step `step` and opt's settings on every block (the gradient
    clipped first when asked), then its transposed copy."""
    cdef Schedule sc
    schedule_init(&sc, ws.max_threads, ws.max_threads, ws.adam_first, ws.shares)
    schedule_blocks(&sc, ws.blocks, ws.n_blocks, 0)
    cdef int n_threads = sc.n_threads, th, me, granted, mine, i, k
    cdef floating bias1 = <floating>(1 - opt.beta1 ** (step + 1))
    cdef floating bias2 = <floating>(1 - opt.beta2 ** (step + 1))
    cdef floating shrink = <floating>(1 - lr_t * opt.weight_decay)
    cdef double grad_scale
    with parallel(num_threads=n_threads):
        me = threadid()
        granted = num_threads()
        mine = (n_threads - me + granted - 1) // granted
        grad_scale = 1
        if opt.grad_clip > 0:
            for i in range(mine):
                th = me + i * granted
                for k in range(sc.adam_first[th], sc.adam_first[th + 1]):
                    _square_block(&ws.d, &ws.blocks[k], ws.block_squares + k, grad, 1,
                                  ws.timers + th * N_TIMERS)
            barrier()
            grad_scale = clip_scale(ws.block_squares, ws.n_blocks, opt.grad_clip)
        for i in range(mine):
            th = me + i * granted
            for k in range(sc.adam_first[th], sc.adam_first[th + 1]):
                _adam_block(&ws.d, &ws.blocks[k], params, m, v, grad, 1, <floating>lr_t,
                            <floating>opt.beta1, <floating>opt.beta2, bias1, bias2,
                            <floating>opt.eps, <floating>grad_scale, shrink,
                            ws.timers + th * N_TIMERS)
                _copy_block(&ws.blocks[k], wt, params, ws.timers + th * N_TIMERS)


# config.GPTConfig's names of the architecture's choices, as Dims codes them
NORMS = {"rmsnorm": NORM_RMS, "layernorm": NORM_LAYER}
ACTIVATIONS = {"relu": ACT_RELU, "gelu": ACT_GELU, "relu2": ACT_RELU2, "silu": ACT_SILU}


# ---------------------------------------------------------------------------
# The activations' arithmetic on its own, for the tests


def _float_array(x):
    """A C-contiguous 1-D copy of x, float32 or float64 as given."""
    y = np.array(x, order="C", copy=True).reshape(-1)
    if y.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected a float32 or float64 array, got {y.dtype}")
    return y


def erf(x):
    """verf.h's erf of each element of a float32 or float64 array (a new 1-D array)."""
    cdef float[::1] y32
    cdef double[::1] y64
    y = _float_array(x)
    if y.size == 0:
        return y
    if y.dtype == np.float32:
        y32 = y
        verf(&y32[0], y32.shape[0])
    else:
        y64 = y
        verf(&y64[0], y64.shape[0])
    return y


cdef void _product(floating[:, ::1] out, floating[:, :] a, floating[:, :] b, bint weights):
    """out = a b through weight_gemm (weights) or gemm, a and b as strided as they come."""
    cdef Py_ssize_t sam = a.strides[0] // sizeof(floating), sak = a.strides[1] // sizeof(floating)
    cdef Py_ssize_t ldb = b.strides[0] // sizeof(floating)
    if weights:
        weight_gemm(&out[0, 0], out.shape[1], &a[0, 0], sam, sak, &b[0, 0], ldb, a.shape[0],
                    b.shape[1], a.shape[1], False)
    else:
        gemm(&out[0, 0], out.shape[1], &a[0, 0], sam, sak, &b[0, 0], ldb, a.shape[0],
             b.shape[1], a.shape[1], False)


def matmul(a, b, weights=False):
    """gemm.h's product of a (M, K) and b (K, N), float32 or float64 alike (a new
    (M, N) array); with weights, the linear layers' product instead (weight_gemm:
    bfloat16 in the avx512_bf16 variant's float32). a's rows and columns, and b's
    rows, may lie any whole number of elements apart (a transposed a, as the
    weight gradient reads it; a view of columns of a wider b, as a weight
    matrix's); b's columns must be adjacent."""
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"expected two float32 or two float64 arrays, got {a.dtype}, {b.dtype}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or 0 in a.shape + b.shape:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    if (b.strides[1] != b.itemsize or any(s <= 0 or s % a.itemsize for s in a.strides)
            or b.strides[0] <= 0 or b.strides[0] % b.itemsize):
        raise ValueError("a's and b's rows must lie whole elements apart, forward, "
                         "and b's columns be adjacent")
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    if a.dtype == np.float32:
        _product[float](out, a, b, weights)
    else:
        _product[double](out, a, b, weights)
    return out


def bf16_products():
    """Whether this variant computes the linear layers' float32 products in
    bfloat16 (gemm_bf16.h: the avx512_bf16 variant)."""
    return bool(BF16_PRODUCTS)


def activation(name, x):
    """(value, derivative) of the activation `name` (gelu, relu2 or silu) at each
    element of a float32 or float64 array, as the MLP computes them (new arrays)."""
    cdef float[::1] h32, s32
    cdef double[::1] h64, s64
    cdef int code = ACTIVATIONS[name]
    if code == ACT_RELU:
        raise ValueError("relu is fused with its product (linear.pxd)")
    h = _float_array(x)
    slope = np.empty_like(h)
    if h.size == 0:
        return h, slope
    if h.dtype == np.float32:
        h32, s32 = h, slope
        activation_forward(&h32[0], &s32[0], h32.shape[0], code)
    else:
        h64, s64 = h, slope
        activation_forward(&h64[0], &s64[0], h64.shape[0], code)
    return h, slope


def _aligned_zeros(Py_ssize_t n, dtype):
    """Zeros starting on a 64-byte boundary (numpy only promises 16): a weight
    row then starts on a cache line as often as its length allows, and the
    products' vector loads do not straddle two lines."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n * dtype.itemsize + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + n * dtype.itemsize].view(dtype)


cdef class Engine:
    """A model's weights, Adam's moments and workspace, and every call on them.

    Engine(n_embd, n_head, n_layer, block_size, vocab_size, batch_size, threads,
    dtype): batch_size bounds the documents of one call, threads the OpenMP
    threads (a call never uses more threads than it has documents); dtype is
    "float32" or "float64". params, m and v are numpy arrays (P,) on the
    engine's own 64-byte aligned memory, in config.param_layout's order; write
    weights through set_params, which also refreshes the transposed copy.
    adapt_threads: train() runs its steps on fewer threads while that measures
    faster (a busy machine; see Adaptive), with the same bits for any count.

    The arguments are the caller's to check (engine.CompiledGPT does): sizes
    here, the dataset's token ids and document starts (Dataset.check), and
    document ids in range; only the buffers' lengths are checked again.
    """

    cdef Workspace ws
    cdef readonly object params, m, v
    cdef readonly object wt    # the transposed copy the forward products read (P,)
    cdef readonly int itemsize, batch_size
    cdef void* p_params
    cdef void* p_m
    cdef void* p_v
    cdef void* p_wt

    def __cinit__(self, int n_embd, int n_head, int n_layer, int block_size, int vocab_size,
                  int batch_size, int threads, dtype, int mlp_ratio=4, norm="rmsnorm",
                  bint norm_gain=False, bint final_norm=False, activation="relu",
                  bint tie_embeddings=False, bint emb_norm=True, bint adapt_threads=True):
        memset(&self.ws, 0, sizeof(Workspace))
        dtype = np.dtype(dtype)
        if (n_embd < 1 or n_head < 1 or n_embd % n_head or n_layer < 1 or block_size < 1
                or vocab_size < 2 or batch_size < 1 or threads < 1 or mlp_ratio < 1
                or dtype not in (np.float32, np.float64)
                or norm not in NORMS or activation not in ACTIVATIONS):
            raise ValueError("invalid engine sizes, dtype or architecture")
        cdef Workspace* ws = &self.ws
        dims_init(&ws.d, n_embd, n_head, n_layer, block_size, vocab_size, batch_size, mlp_ratio,
                  NORMS[norm], norm_gain, final_norm, ACTIVATIONS[activation], tie_embeddings,
                  emb_norm)
        self.itemsize = dtype.itemsize
        self.batch_size = batch_size
        ws.max_threads = threads
        ws.adapt.on = adapt_threads
        ws.adapt.threads = threads
        ws.adapt.probe_gap = PROBE_GAP_FIRST
        cdef Py_ssize_t P = ws.d.P
        try:
            self.params = _aligned_zeros(P, dtype)
            self.m = _aligned_zeros(P, dtype)
            self.v = _aligned_zeros(P, dtype)
            self.wt = _aligned_zeros(P, dtype)
        except MemoryError:
            raise MemoryError(f"cannot allocate the weights, Adam's moments and the transposed "
                              f"copy: 4 x {P:,} {dtype} values, "
                              f"{4 * P * self.itemsize / 2**20:,.0f} MiB") from None
        self.p_params = <void*><size_t>self.params.ctypes.data
        self.p_m = <void*><size_t>self.m.ctypes.data
        self.p_v = <void*><size_t>self.v.ctypes.data
        self.p_wt = <void*><size_t>self.wt.ctypes.data
        cdef int n_groups = min(<int>GROUPS, batch_size)
        cdef size_t row_bytes = <size_t>ws.d.rows_size * self.itemsize
        cdef size_t arena_bytes = <size_t>ws.d.arena_size * self.itemsize * threads
        cdef size_t partial_bytes = <size_t>P * self.itemsize * n_groups
        cdef size_t copy_bytes = <size_t>P * self.itemsize * (GROUPS - 1 if threads > 1 else 0)
        if (posix_memalign(&ws.rows, 64, row_bytes)
                or posix_memalign(&ws.arena, 64, arena_bytes)
                or posix_memalign(&ws.partials, 64, partial_bytes)
                or posix_memalign(&ws.wt_copies, 64, max(copy_bytes, 64))):
            raise MemoryError(
                f"cannot allocate the engine's workspace: "
                f"{(row_bytes + arena_bytes + partial_bytes + copy_bytes) / 2**20:,.0f} MiB of "
                f"activations, scratch and partial gradients for {batch_size} documents of up "
                f"to {block_size} positions on {threads} threads")
        memset(ws.rows, 0, row_bytes)
        memset(ws.arena, 0, arena_bytes)
        memset(ws.partials, 0, partial_bytes)
        ws.n_blocks = weight_blocks(&ws.d, NULL)
        ws.blocks = <WeightBlock*>malloc(ws.n_blocks * sizeof(WeightBlock))
        ws.row_ints = <int*>malloc(3 * <size_t>ws.d.R * sizeof(int))
        ws.timers = <double*>calloc(<size_t>threads * N_TIMERS, sizeof(double))
        ws.block_squares = <double*>malloc(ws.n_blocks * sizeof(double))
        ws.adam_first = <int*>malloc((threads + 1) * sizeof(int))
        ws.shares = <int*>malloc((threads + GROUPS) * sizeof(int))
        ws.adapt.per_row = <double*>calloc(threads + 1, sizeof(double))
        ws.adapt.steps_on = <long long*>calloc(threads + 1, sizeof(long long))
        if (ws.blocks == NULL or ws.row_ints == NULL or ws.timers == NULL
                or ws.block_squares == NULL or ws.adam_first == NULL or ws.shares == NULL
                or ws.adapt.per_row == NULL or ws.adapt.steps_on == NULL):
            raise MemoryError("cannot allocate the engine's row and block tables")
        weight_blocks(&ws.d, ws.blocks)

    def __dealloc__(self):
        free(self.ws.rows)
        free(self.ws.arena)
        free(self.ws.partials)
        free(self.ws.wt_copies)
        free(self.ws.row_ints)
        free(self.ws.blocks)
        free(self.ws.timers)
        free(self.ws.block_squares)
        free(self.ws.adam_first)
        free(self.ws.shares)
        free(self.ws.adapt.per_row)
        free(self.ws.adapt.steps_on)

    cdef _check_length(self, Py_ssize_t n, str what):
        if n != self.ws.d.P:
            raise ValueError(f"{what} has {n} elements, expected {self.ws.d.P}")

    def set_params(self, values):
        """Copy values (P,) into the weights and refresh their transposed copy."""
        self.params[:] = values
        with nogil:
            if self.itemsize == 8:
                _transpose_all(&self.ws, <double*>self.p_params, <double*>self.p_wt)
            else:
                _transpose_all(&self.ws, <float*>self.p_params, <float*>self.p_wt)

    def train(self, const int[::1] tokens, const long long[::1] starts,
              const long long[::1] step_docs, long long step0,
              const double[::1] learning_rates, double beta1, double beta2, double eps,
              double weight_decay=0, double grad_clip=0):
        """Train steps step0 .. step0 + n - 1 in one call, without the GIL, where n =
        len(learning_rates): step step0 + s trains the documents
        step_docs[s*B .. s*B + B - 1] at rate learning_rates[s]; weight_decay and
        grad_clip as in config.Adam (0: off). Returns the step losses, float64 (n,)."""
        cdef AdamOptions opt = AdamOptions(beta1, beta2, eps, weight_decay, grad_clip)
        cdef int n = <int>learning_rates.shape[0], B = self.batch_size, status
        if n < 1 or step_docs.shape[0] != <Py_ssize_t>n * B:
            raise ValueError(f"need {B} documents for each of the {n} steps, "
                             f"got {step_docs.shape[0]}")
        losses = np.empty(n, np.float64)
        cdef double[::1] out = losses
        with nogil:
            if self.itemsize == 8:
                status = _train_steps(&self.ws, <double*>self.p_params, <double*>self.p_wt,
                                      <double*>self.p_m, <double*>self.p_v, &tokens[0],
                                      &starts[0], &step_docs[0], step0, B,
                                      &learning_rates[0], &opt, &out[0], n)
            else:
                status = _train_steps(&self.ws, <float*>self.p_params, <float*>self.p_wt,
                                      <float*>self.p_m, <float*>self.p_v, &tokens[0],
                                      &starts[0], &step_docs[0], step0, B,
                                      &learning_rates[0], &opt, &out[0], n)
        if status < 0:
            raise MemoryError(f"cannot allocate the step plans of {n} steps")
        return losses

    def loss_and_grad(self, const int[::1] tokens, const long long[::1] starts,
                      const long long[::1] doc_ids):
        """(loss, gradient (P,)) of the batch doc_ids: a training step without the update."""
        grad = np.empty(self.ws.d.P, self.params.dtype)
        cdef void* p_grad = <void*><size_t>grad.ctypes.data
        cdef int B = <int>doc_ids.shape[0], status
        cdef double loss
        with nogil:
            if self.itemsize == 8:
                status = _loss_and_grad(&self.ws, <double*>self.p_params, <double*>self.p_wt,
                                        <double*>p_grad, &tokens[0], &starts[0], &doc_ids[0], B,
                                        &loss)
            else:
                status = _loss_and_grad(&self.ws, <float*>self.p_params, <float*>self.p_wt,
                                        <float*>p_grad, &tokens[0], &starts[0], &doc_ids[0], B,
                                        &loss)
        if status < 0:
            raise MemoryError("cannot allocate the step plan")
        return loss, grad

    def evaluate(self, const int[::1] tokens, const long long[::1] starts,
                 const long long[::1] doc_ids):
        """Each document's mean position loss, float64 (len(doc_ids),); no gradient."""
        losses = np.empty(doc_ids.shape[0], np.float64)
        cdef double[::1] out = losses
        cdef int B = <int>doc_ids.shape[0], status
        with nogil:
            if self.itemsize == 8:
                status = _evaluate(&self.ws, <double*>self.p_params, <double*>self.p_wt,
                                   &tokens[0], &starts[0], &doc_ids[0], B, &out[0])
            else:
                status = _evaluate(&self.ws, <float*>self.p_params, <float*>self.p_wt,
                                   &tokens[0], &starts[0], &doc_ids[0], B, &out[0])
        if status < 0:
            raise MemoryError("cannot allocate the evaluation plan")
        return losses

    def adam_step(self, grad, long long step, double lr_t, double beta1, double beta2,
                  double eps, double weight_decay=0, double grad_clip=0):
        """One Adam update of every weight from grad (P,) at rate lr_t, with the
        bias corrections of step `step`, weight_decay and grad_clip as in
        config.Adam (0: off): phases C and D of a step, from a whole gradient."""
        cdef AdamOptions opt = AdamOptions(beta1, beta2, eps, weight_decay, grad_clip)
        grad = np.ascontiguousarray(grad, self.params.dtype)
        self._check_length(grad.shape[0], "grad")
        cdef void* p_grad = <void*><size_t>grad.ctypes.data
        with nogil:
            if self.itemsize == 8:
                _adam_all(&self.ws, <double*>self.p_params, <double*>self.p_wt,
                          <double*>self.p_m, <double*>self.p_v, <double*>p_grad, step, lr_t,
                          &opt)
            else:
                _adam_all(&self.ws, <float*>self.p_params, <float*>self.p_wt,
                          <float*>self.p_m, <float*>self.p_v, <float*>p_grad, step, lr_t,
                          &opt)

    def next_probs(self, int token, int pos, double temperature, double[::1] probs):
        """Feed token at position pos (the KV cache holds positions < pos) and write
        softmax(logits / temperature) into probs (V,), in float64."""
        cdef Workspace* ws = &self.ws
        if not (0 <= pos < ws.d.T and 0 <= token < ws.d.V and probs.shape[0] == ws.d.V):
            raise ValueError("invalid token, position or probs size")
        cdef int doc_rows[2]
        doc_rows[0] = 0
        doc_rows[1] = pos + 1
        ws.row_ints[pos] = token
        with nogil:
            if self.itemsize == 8:
                gpt_forward(&ws.d, <double*>self.p_params, <double*>self.p_wt,
                            <double*>ws.rows, <double*>ws.arena, ws.row_ints, doc_rows, 1, pos,
                            ws.timers)
                softmax_temperature(&probs[0], <double*>ws.rows + ws.d.logits + pos * ws.d.V,
                                    ws.d.V, temperature)
            else:
                gpt_forward(&ws.d, <float*>self.p_params, <float*>self.p_wt, <float*>ws.rows,
                            <float*>ws.arena, ws.row_ints, doc_rows, 1, pos, ws.timers)
                softmax_temperature(&probs[0], <float*>ws.rows + ws.d.logits + pos * ws.d.V,
                                    ws.d.V, temperature)

    def window_probs(self, const int[::1] tokens, double temperature, double[::1] probs):
        """Feed tokens at positions 0 .. n - 1, n <= block_size, in one fresh forward
        pass (the KV cache is overwritten), and write softmax(logits / temperature)
        of the last position into probs (V,), in float64: the next token's
        probabilities after a window of text."""
        cdef Workspace* ws = &self.ws
        cdef int n = <int>tokens.shape[0], p
        if not (1 <= n <= ws.d.T and probs.shape[0] == ws.d.V):
            raise ValueError("invalid window length or probs size")
        for p in range(n):
            if not 0 <= tokens[p] < ws.d.V:
                raise ValueError("invalid token")
            ws.row_ints[p] = tokens[p]
        cdef int doc_rows[2]
        doc_rows[0] = 0
        doc_rows[1] = n
        cdef Py_ssize_t last = <Py_ssize_t>(n - 1) * ws.d.V  # the last row of the logits
        with nogil:
            if self.itemsize == 8:
                gpt_forward(&ws.d, <double*>self.p_params, <double*>self.p_wt,
                            <double*>ws.rows, <double*>ws.arena, ws.row_ints, doc_rows, 1, 0,
                            ws.timers)
                softmax_temperature(&probs[0], <double*>ws.rows + ws.d.logits + last,
                                    ws.d.V, temperature)
            else:
                gpt_forward(&ws.d, <float*>self.p_params, <float*>self.p_wt, <float*>ws.rows,
                            <float*>ws.arena, ws.row_ints, doc_rows, 1, 0, ws.timers)
                softmax_temperature(&probs[0], <float*>ws.rows + ws.d.logits + last,
                                    ws.d.V, temperature)

    def feed_probs(self, const int[::1] tokens, int pos, double temperature,
                   double[:, ::1] probs):
        """For each document j < n = len(tokens) (n <= batch_size; document j owns
        rows j*block_size ..), feed tokens[j] at position pos (its KV cache holds
        positions < pos) and write softmax(logits / temperature) into probs[j]
        (n, V), in float64. Document 0 is next_probs's: the same rows and bits."""
        cdef Workspace* ws = &self.ws
        cdef int n = <int>tokens.shape[0], j, status
        if not (1 <= n <= self.batch_size and 0 <= pos < ws.d.T
                and probs.shape[0] == n and probs.shape[1] == ws.d.V):
            raise ValueError("invalid number of documents, position or probs shape")
        for j in range(n):
            if not 0 <= tokens[j] < ws.d.V:
                raise ValueError("invalid token")
        for j in range(n):
            ws.row_ints[j * ws.d.T + pos] = tokens[j]
        with nogil:
            if self.itemsize == 8:
                status = _feed_slots(ws, <double*>self.p_params, <double*>self.p_wt, n, pos,
                                     temperature, &probs[0, 0])
            else:
                status = _feed_slots(ws, <float*>self.p_params, <float*>self.p_wt, n, pos,
                                     temperature, &probs[0, 0])
        if status < 0:
            raise MemoryError("cannot allocate the documents' rows")

    def windows_probs(self, const int[:, ::1] windows, double temperature,
                      double[:, ::1] probs):
        """A fresh forward pass over each of the n windows (n, m) of m <= block_size
        tokens at positions 0 .. m - 1 (n <= batch_size; the KV caches are
        overwritten), and softmax(logits / temperature) of each window's last
        position into probs[j] (n, V), in float64: window_probs for n windows at
        once, with the same bits for each."""
        cdef Workspace* ws = &self.ws
        cdef int n = <int>windows.shape[0], m = <int>windows.shape[1], j, p, status
        if not (1 <= n <= self.batch_size and 1 <= m <= ws.d.T
                and probs.shape[0] == n and probs.shape[1] == ws.d.V):
            raise ValueError("invalid number of windows, window length or probs shape")
        for j in range(n):
            for p in range(m):
                if not 0 <= windows[j, p] < ws.d.V:
                    raise ValueError("invalid token")
                ws.row_ints[j * m + p] = windows[j, p]
        with nogil:
            if self.itemsize == 8:
                status = _windows(ws, <double*>self.p_params, <double*>self.p_wt, n, m,
                                  temperature, &probs[0, 0])
            else:
                status = _windows(ws, <float*>self.p_params, <float*>self.p_wt, n, m,
                                  temperature, &probs[0, 0])
        if status < 0:
            raise MemoryError("cannot allocate the windows' rows")

    def read_timers(self, thread=None):
        """Seconds per op group, summed over threads (or of one thread): (forward,
        backward) lists in TIMER_GROUPS order, Adam's (with the transposed
        copies), and the weight phases of the steps (the partial gradient
        products, which also count in the backward groups, Adam and the copies).
        All zero unless profiling_enabled()."""
        cdef int th, g
        total = [0.0] * N_TIMERS
        for th in range(self.ws.max_threads):
            if thread is None or th == thread:
                for g in range(N_TIMERS):
                    total[g] += self.ws.timers[th * N_TIMERS + g]
        n = len(TIMER_GROUPS)
        return (total[:n], total[T_BACKWARD:T_BACKWARD + n], total[T_ADAM],
                total[T_WEIGHT_BLOCKS])

    def thread_use(self):
        """How train() has used its threads (Adaptive): {"adaptive": whether the
        count adapts, "steps": {thread count: steps trained on it}, "now": the
        count in use}."""
        cdef Adaptive* a = &self.ws.adapt
        return {"adaptive": bool(a.on) and self.ws.max_threads > 1,
                "steps": {c: a.steps_on[c] for c in range(1, self.ws.max_threads + 1)
                          if a.steps_on[c]},
                "now": a.threads if a.on else self.ws.max_threads}

    def start_threads(self, int count):
        """Where train() has measured nothing yet, start adapting from `count`
        threads (1 .. the engine's) instead of all of them: the cores left free
        by other programs when training starts."""
        cdef Adaptive* a = &self.ws.adapt
        cdef int c
        if not 1 <= count <= self.ws.max_threads:
            raise ValueError(f"count must be 1..{self.ws.max_threads}, got {count}")
        for c in range(1, self.ws.max_threads + 1):
            if a.steps_on[c]:
                return
        if count < a.threads:
            a.threads = count
            a.probe_down = False
            a.probe_gap = PROBE_GAP_AFTER_SWITCH
            a.hold = BUSY_START_HOLD

    def force_segments(self, int steps):
        """Tests: from now on train() runs segments of `steps` steps on n, n - 1, ..
        1 threads in turn (n: the most a call may use), whatever it measures (0:
        measure again)."""
        if steps < 0:
            raise ValueError("steps must be >= 0")
        self.ws.adapt.forced_steps = steps

    def reset_timers(self):
        memset(self.ws.timers, 0, <size_t>self.ws.max_threads * N_TIMERS * sizeof(double))

    def plan(self, const long long[::1] starts, const long long[::1] doc_ids):
        """The plan of a training step on the batch doc_ids, as lists (for the tests):
        {"teams": [(first thread, threads, first group, end group)], "doc_rows",
        "groups", "bounds" (each thread's first document), "adam_first" and
        "team_shares" (each team's threads' first blocks), "blocks": [(matrix,
        nout, nin, o0, o1)], "block_decay": whether weight decay applies to each}."""
        cdef Workspace* ws = &self.ws
        cdef int B = <int>doc_ids.shape[0], t
        cdef Schedule sc
        schedule_init(&sc, ws.max_threads, B, ws.adam_first, ws.shares)
        cdef int[::1] doc_rows = np.empty(B + 1, np.intc)
        cdef int[::1] groups = np.empty(GROUPS + 1, np.intc)
        cdef int[::1] bounds = np.empty(sc.n_threads + 1, np.intc)
        plan_step(&ws.d, &starts[0], &doc_ids[0], B, sc.teams, sc.n_teams, &doc_rows[0],
                  &groups[0], &bounds[0])
        schedule_blocks(&sc, ws.blocks, ws.n_blocks, doc_rows[B] // sc.n_groups)
        return {
            "teams": [(sc.teams[t].first, sc.teams[t].size, sc.teams[t].g0, sc.teams[t].g1)
                      for t in range(sc.n_teams)],
            "doc_rows": list(doc_rows),
            "groups": list(groups[:sc.n_groups + 1]),
            "bounds": list(bounds),
            "adam_first": [sc.adam_first[t] for t in range(sc.n_threads + 1)],
            "team_shares": [[team_share(sc.shares, sc.teams, t)[k]
                             for k in range(sc.teams[t].size + 1)] for t in range(sc.n_teams)],
            "blocks": [(ws.blocks[k].matrix, ws.blocks[k].nout, ws.blocks[k].nin,
                        ws.blocks[k].o0, ws.blocks[k].o1) for k in range(ws.n_blocks)],
            "block_decay": [bool(ws.blocks[k].decay) for k in range(ws.n_blocks)],
        }
