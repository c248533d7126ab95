/* The next token from a row of logits (template: include with T and SUF defined): generation's `sample_next`
 * (generation.py) for greedy decoding, temperature and top-k, in one native call instead of about ten tensor
 * operations. That matters at the paper's sizes, where the model's whole step costs 0.3-0.5 ms and the sampling
 * operations cost 60-100 us of it right after a step (benchmarks/sampling_overhead.py).
 *
 * The arithmetic is sample_next's, so both choose the same token from the same numbers (tests/test_sampling.py):
 *   - temperature == 0: argmax of the logits;
 *   - else the Gumbel-max draw: argmax_j (logits[j] / temperature - log_e[j]), where log_e[j] = log E_j with
 *     E_j ~ Exp(1) is drawn by the caller (torch's generator, so a seed means the same thing on every path), over
 *     the tokens kept by top_k: those whose logit is at least the k-th largest (tokens tied with it are kept).
 * argmax is torch's: the first maximum; a NaN counts as larger than any number (its first index is the answer). */

/* the k-th largest of x[j] / t over j < V (duplicates counted), 1 <= k <= V, for rows without NaN: a min-heap of
 * the k largest seen so far (O(V log k); the top of the heap rejects most entries at a glance). The scaled values,
 * as sampling_logits compares them: two logits can round to one scaled value, and then both are kept. */
static T FN(kth_largest)(int V, int k, const T *x, T t, T *heap) {
    for (int j = 0; j < k; ++j) { /* heapify the first k, sifting up */
        int c = j;
        heap[c] = x[j] / t;
        while (c > 0) {
            const int p = (c - 1) / 2;
            if (heap[p] <= heap[c]) break;
            const T swap = heap[p];
            heap[p] = heap[c];
            heap[c] = swap;
            c = p;
        }
    }
    for (int j = k; j < V; ++j) {
        const T v = x[j] / t;
        if (!(v > heap[0])) continue;
        heap[0] = v; /* replace the smallest, sift down */
        int p = 0;
        for (;;) {
            const int l = 2 * p + 1, r = l + 1;
            int s = p;
            if (l < k && heap[l] < heap[s]) s = l;
            if (r < k && heap[r] < heap[s]) s = r;
            if (s == p) break;
            const T swap = heap[p];
            heap[p] = heap[s];
            heap[s] = swap;
            p = s;
        }
    }
    return heap[0];
}

void FN(choose_tokens)(int B, int V, int top_k, double temperature, const T *logits, const T *log_e,
                       T *heap, int64_t *out) {
    const T t = (T)temperature;
    for (int b = 0; b < B; ++b) {
        const T *l = logits + (size_t)b * V;
        const T *g = log_e ? log_e + (size_t)b * V : 0;
        int64_t best = 0, nan_at = -1;
        for (int j = 0; j < V; ++j)
            if (l[j] != l[j]) {
                nan_at = j;
                break;
            }
        if (nan_at >= 0) {
            out[b] = nan_at;
            continue;
        }
        if (t == 0 || !g) {
            T m = l[0];
            for (int j = 1; j < V; ++j)
                if (l[j] > m) {
                    m = l[j];
                    best = j;
                }
            out[b] = best;
            continue;
        }
        /* the cut: tokens whose scaled logit is below the k-th largest score -inf */
        const int filter = top_k > 0 && top_k < V;
        const T kth = filter ? FN(kth_largest)(V, top_k, l, t, heap) : 0;
        T m = 0;
        int have = 0;
        for (int j = 0; j < V; ++j) {
            const T z = l[j] / t;
            const T s = (filter && z < kth) ? -(T)INFINITY : z - g[j];
            if (s != s) { /* inf - inf cannot happen (log_e is finite); a NaN score wins, as in torch */
                best = j;
                break;
            }
            if (!have || s > m) {
                m = s;
                best = j;
                have = 1;
            }
        }
        out[b] = best;
    }
}
