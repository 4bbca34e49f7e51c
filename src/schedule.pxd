# How a step's work is shared among threads: the weight blocks of phases B to D,
# the gradient groups and the thread teams, and each step's document split.
#
# Everything here depends on the sizes, the documents and the thread count only,
# never on timing, and every number the engine computes is summed in an order
# fixed by the documents alone (the gradient groups), so any thread count gives
# the same bits. engine.pxi's plan() shows a step's plan to the tests.
#
# Legend: B documents in a step, n_threads threads, GROUPS gradient groups,
# rows: the positions of a step's documents, document b on rows
# doc_rows[b] .. doc_rows[b + 1] - 1.

from layout cimport Dims, block_elems
from timers cimport T_BACKWARD, T_EMBED_NORM, T_PROJECTIONS, T_MLP, T_HEAD_LOSS


# ---------------------------------------------------------------------------
# The blocks of weight rows of phases B to D


cdef enum BlockKind:
    PRODUCT = 0     # dW = dout^T x over all rows
    TOKENS = 1      # wte: rows of d_emb added by token
    POSITIONS = 2   # wpe: rows of d_emb added by position
    TIED = 3        # wte read by the head too (tie_embeddings): dout^T x, then TOKENS' rows
    GAIN = 4        # a norm's gain: dg = sum over rows of dout * x, x the normalized rows


cdef struct WeightBlock:
    int kind
    int timer              # the op group its gradient belongs to (timers.pxd)
    bint decay             # weight decay applies: a weight matrix's rows, never a norm gain
    Py_ssize_t matrix      # offset of the whole matrix in params (and in wt)
    int nout, nin          # the matrix's shape
    int o0, o1             # this block's rows
    Py_ssize_t dout, x     # row-space tensors: dout (R, nout), x (R, nin)


cdef inline int add_blocks(WeightBlock* out, int count, int kind, int timer, bint decay,
                           Py_ssize_t matrix, int nout, int nin, Py_ssize_t dout,
                           Py_ssize_t x) noexcept nogil:
    """Append the blocks of one matrix (out may be NULL to count them); decay:
    whether weight decay applies to it (config.decays)."""
    cdef int step = <int>(block_elems(nin) // nin), o0 = 0
    while o0 < nout:
        if out != NULL:
            out[count].kind = kind
            out[count].timer = T_BACKWARD + timer
            out[count].decay = decay
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


cdef inline int weight_blocks(const Dims* d, WeightBlock* out) noexcept nogil:
    """All blocks in flat parameter order; returns how many."""
    cdef int n = 0, l, C = d.C, F = d.F
    cdef Py_ssize_t w, a
    if d.tie_embeddings:  # the scatter's d_emb is implied (engine.pxi, _block_partial)
        n = add_blocks(out, n, TIED, T_HEAD_LOSS, True, d.wte, d.V, C, d.logits, d.head_in)
    else:
        n = add_blocks(out, n, TOKENS, T_EMBED_NORM, True, d.wte, d.V, C, d.d_emb, 0)
    n = add_blocks(out, n, POSITIONS, T_EMBED_NORM, True, d.wpe, d.T, C, d.d_emb, 0)
    if not d.tie_embeddings:
        n = add_blocks(out, n, PRODUCT, T_HEAD_LOSS, True, d.lm_head, d.V, C, d.logits,
                       d.head_in)
    for l in range(d.L):
        w = d.layer0 + l * d.layer_size
        a = d.act0 + l * d.act_size
        n = add_blocks(out, n, PRODUCT, T_PROJECTIONS, True, w + d.qkv, 3 * C, C, a + d.d_qkv,
                       a + d.ln1)
        n = add_blocks(out, n, PRODUCT, T_PROJECTIONS, True, w + d.wo, C, C, a + d.d_mid,
                       a + d.att_out)
        n = add_blocks(out, n, PRODUCT, T_MLP, True, w + d.fc1, F, C, a + d.d_hidden, a + d.ln2)
        n = add_blocks(out, n, PRODUCT, T_MLP, True, w + d.fc2, C, F, a + d.d_out, a + d.hidden)
    if d.norm_gain:  # one (1, C) block per norm, in the forward's order; gains never decay
        if d.emb_norm:
            n = add_blocks(out, n, GAIN, T_EMBED_NORM, False, d.gains, 1, C, d.d_x0, d.emb_hat)
        for l in range(d.L):
            a = d.act0 + l * d.act_size
            w = d.gains + (d.emb_norm + 2 * l) * C  # this layer's first gain
            n = add_blocks(out, n, GAIN, T_EMBED_NORM, False, w, 1, C, a + d.d_ln1,
                           a + d.ln1_hat)
            n = add_blocks(out, n, GAIN, T_EMBED_NORM, False, w + C, 1, C, a + d.d_ln2,
                           a + d.ln2_hat)
        if d.final_norm:
            n = add_blocks(out, n, GAIN, T_EMBED_NORM, False, d.gains + (d.n_norms - 1) * C,
                           1, C, d.d_xf, d.xf_hat)
    return n


cdef inline bint transposed(const WeightBlock* b) noexcept nogil:
    """Whether the forward pass reads the block's matrix from the transposed copy
    (the products' matrices; the embedding tables and gains are read as stored)."""
    return b.kind == PRODUCT or b.kind == TIED


cdef inline double block_cost(const WeightBlock* b, int n_rows) noexcept nogil:
    """Rough cost of a block's gradient over n_rows rows and its transposed copy:
    n_rows multiply-adds per weight (16 lanes, 2 per cycle) for a product, or
    one add per element of each row for an embedding table. With n_rows = 0,
    the cost of Adam: the same for every weight."""
    cdef double weights = <double>(b.o1 - b.o0) * b.nin
    if n_rows == 0:
        return weights
    if b.kind == PRODUCT:
        return weights * (1.0 + n_rows / 32.0)
    if b.kind == TIED:
        return weights * (1.0 + n_rows / 32.0) + <double>n_rows * b.nin / 16.0
    return weights + <double>n_rows * b.nin / 16.0


cdef inline void share_blocks(const WeightBlock* blocks, int n_blocks, int n_threads,
                              int n_rows, int* first) noexcept nogil:
    """first[0..n_threads]: thread th takes blocks first[th] .. first[th + 1] - 1.

    Consecutive runs of about equal cost: a matrix mostly stays with one
    thread, which then reads its inputs' rows once, and keeps its weights and
    moments in its own cache from step to step.
    """
    cdef double total = 0, done = 0, cost
    cdef int k, th = 1
    for k in range(n_blocks):
        total += block_cost(&blocks[k], n_rows)
    first[0] = 0
    for k in range(n_blocks):
        # block k goes to the thread in whose share its middle falls
        cost = block_cost(&blocks[k], n_rows)
        while th < n_threads and (done + 0.5 * cost) * n_threads >= total * th:
            first[th] = k
            th += 1
        done += cost
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


cdef inline int make_teams(int n_threads, int n_groups, Team* teams) noexcept nogil:
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


cdef inline int team_of(const Team* teams, int n_teams, int th) noexcept nogil:
    cdef int t = n_teams - 1
    while teams[t].first > th:
        t -= 1
    return t


cdef inline int* team_share(int* shares, const Team* teams, int t) noexcept nogil:
    """Team t's row of shares: its threads' first blocks (team.size + 1 entries)."""
    return shares + teams[t].first + t




# ---------------------------------------------------------------------------
# The documents of one step


cdef inline void doc_rows_of(const Dims* d, const long long* starts, const long long* doc_ids,
                             int B, int* doc_rows) noexcept nogil:
    """doc_rows[0..B]: the first row of each document (at most T rows each)."""
    cdef int b
    cdef long long i
    doc_rows[0] = 0
    for b in range(B):
        i = doc_ids[b]
        doc_rows[b + 1] = doc_rows[b] + <int>min(<long long>d.T, starts[i + 1] - starts[i])


cdef inline void split_docs(const int* doc_rows, int b0, int b1, int parts,
                            int* out) noexcept nogil:
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


cdef inline void plan_step(const Dims* d, const long long* starts, const long long* doc_ids,
                           int B, const Team* teams, int n_teams, int* doc_rows, int* groups,
                           int* bounds) noexcept nogil:
    """doc_rows[0..B]: first row of each document; groups[0..n_groups]: first
    document of each gradient group; bounds[0..n_threads]: first document of each
    thread, its team's documents shared out in runs balanced by rows."""
    cdef int t
    doc_rows_of(d, starts, doc_ids, B, doc_rows)
    split_docs(doc_rows, 0, B, min(<int>GROUPS, B), groups)
    for t in range(n_teams):
        split_docs(doc_rows, groups[teams[t].g0], groups[teams[t].g1], teams[t].size,
                   bounds + teams[t].first)


# ---------------------------------------------------------------------------
# The plan of a call: its threads, teams and block shares


cdef struct Schedule:
    int n_threads          # threads of the call: never more than its documents
    int n_groups           # gradient groups, min(GROUPS, B)
    int n_teams
    Team teams[GROUPS]
    int* adam_first        # (n_threads + 1,) each thread's first block of Adam's phase
    int* shares            # (n_threads + n_teams,) per team, its threads' first blocks
                           # of phases B and D (team_share)


cdef inline void schedule_init(Schedule* s, int threads, int B, int* adam_first,
                               int* shares) noexcept nogil:
    """The threads and teams of a call of B documents on at most `threads` threads;
    adam_first and shares are the caller's arrays for schedule_blocks."""
    s.n_threads = min(threads, B)
    s.n_groups = min(<int>GROUPS, B)
    s.n_teams = make_teams(s.n_threads, s.n_groups, s.teams)
    s.adam_first = adam_first
    s.shares = shares


cdef inline void schedule_blocks(Schedule* s, const WeightBlock* blocks, int n_blocks,
                                 int rows_per_group) noexcept nogil:
    """Each thread's blocks, the same for a whole chunk so that its weights stay in
    one cache: of Adam's phase over all threads, and of phases B and D within its
    team, sized for rows_per_group rows per gradient group (the products' cost
    grows with their rows; Adam's and the copies' do not)."""
    cdef int t
    share_blocks(blocks, n_blocks, s.n_threads, 0, s.adam_first)
    for t in range(s.n_teams):
        share_blocks(blocks, n_blocks, s.teams[t].size, rows_per_group,
                     team_share(s.shares, s.teams, t))
