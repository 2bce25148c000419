/* The task samplers in C, one sequence at a time (interp_causal/tasks/task.py documents both
 * samplers; it compiles and loads this file through interp_causal/compiled.py and keeps its torch
 * ops where it cannot).
 *
 * - urn_draw (multi-parent graphs): the draws after torch's random numbers, the same arithmetic as
 *   the torch ops, so the same bits.
 * - tree_sample (single-parent graphs): the whole sampler, from its own random numbers: each
 *   sequence b has its own counter-based stream (splitmix64 from the call's seed and b), so the
 *   batch does not depend on how the sequences are split over threads. The stream is not torch's:
 *   the same seed gives other (equally distributed) draws than the torch ops.
 *
 * Shared by both, as the torch ops do it:
 * - a row's running sums are taken in double and rounded to float (torch's CPU cumsum accumulates
 *   a float tensor in double);
 * - a draw is how many of those sums lie below u * total (a float product), at most S - 1.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../vector_math.h"

/* Running sums of row[0..S) in double, rounded to float: torch's cumsum of a float row. */
static void cumsum_row(const float *row, float *out, int S) {
    double acc = 0.0;
    for (int s = 0; s < S; s++) {
        acc += (double)row[s];
        out[s] = (float)acc;
    }
}

static int draw_from(const float *cdf, float u, int S) {
    const float threshold = u * cdf[S - 1];
    int draw = 0;
    for (int s = 0; s < S; s++) draw += cdf[s] < threshold;
    return draw > S - 1 ? S - 1 : draw;
}

/* Multi-parent graphs: the Polya urn of every table row (task.py, _sample_urn). A row's weights
 * are count + alpha in float; the drawn entry's count then grows by one. Per position i: npar[i]
 * parents par[i * kmax + m] (0 for a root, whose token is given), its in-degree's count table at
 * slot[i] in a per-sequence scratch of `scratch` floats. The target's row (parents tpar, table at
 * tslot) is copied out as counts [n, S]; torch adds alpha and normalises. Same bits as torch. */
int urn_draw(int n, int T, int S, float alpha, int kmax, const int32_t *npar, const int32_t *par,
             const int32_t *slot, int scratch, int ntp, const int32_t *tpar, int tslot, const float *u,
             int64_t *tokens, float *target_counts) {
    float *counts = malloc(sizeof(float) * (size_t)scratch);
    float *cdf = malloc(sizeof(float) * (size_t)S);
    if (!counts || !cdf) {
        free(counts);
        free(cdf);
        return -1;
    }
    for (int b = 0; b < n; b++) {
        int64_t *tok = tokens + (size_t)b * T;
        const float *ub = u + (size_t)b * T;
        memset(counts, 0, sizeof(float) * (size_t)scratch);
        for (int i = 0; i < T; i++) {
            const int k = npar[i];
            if (k == 0) continue;
            int64_t start = 0;
            for (int m = 0; m < k; m++) start = start * S + tok[par[i * kmax + m]];
            float *row = counts + slot[i] + start * S;
            double acc = 0.0;
            for (int s = 0; s < S; s++) {
                acc += (double)(row[s] + alpha);
                cdf[s] = (float)acc;
            }
            const int draw = draw_from(cdf, ub[i], S);
            tok[i] = draw;
            row[draw] += 1.0f;
        }
        int64_t start = 0;
        for (int m = 0; m < ntp; m++) start = start * S + tok[tpar[m]];
        memcpy(target_counts + (size_t)b * S, counts + tslot + start * S, sizeof(float) * (size_t)S);
    }
    free(counts);
    free(cdf);
    return 0;
}

/* ---- single-parent graphs -------------------------------------------------------------------- */

/* A sequence's random stream: splitmix64 (Steele, Lea and Flood 2014), started from the call's
 * seed and the sequence's index. */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t next64(uint64_t *state) { return mix64(*state += 0x9E3779B97F4A7C15ull); }

/* Two uniforms of 24 bits from one draw, in [0, 1) (torch.rand's grid) */
static inline void uniform_pair(uint64_t *state, float *a, float *b) {
    const uint64_t z = next64(state);
    *a = (float)(z >> 40) * 0x1p-24f;
    *b = (float)((z >> 16) & 0xFFFFFF) * 0x1p-24f;
}

/* uniform on [0, S), exactly (Lemire's multiply-shift with rejection) */
static int uniform_int(uint64_t *state, int S) {
    for (;;) {
        const uint64_t m = (next64(state) >> 32) * (uint64_t)S;
        if ((uint32_t)m >= (uint32_t)(-(uint32_t)S) % (uint32_t)S) return (int)(m >> 32);
    }
}

/* 8 draws of log Gamma(alpha) + c, alpha < 1, by task.py's _log_gamma: E = -log U1 ~ Exp(1),
 * accepted when log V <= alpha (log E - E + 1), then log V / alpha + E (U1, V uniform on (0, 1]).
 * Rejected lanes (5% at alpha = 0.1) are drawn again one at a time. */
/* The proposal of each lane: E = -log(1 - u1), log V = log(1 - u2) (1 - u: (0, 1]); `draw` is
 * log V / alpha + E, returned mask: where it is accepted */
static inline v8i gamma_proposal(v8f u1, v8f u2, float alpha, v8f *draw) {
    const v8f e = -vlog(1.0f - u1), log_v = vlog(1.0f - u2);
    *draw = log_v / alpha + e;
    return log_v <= alpha * (vlog(e) - e + 1.0f);
}

static void log_gamma8(uint64_t *state, float alpha, float *out) {
    float u1[8], u2[8];
    for (int i = 0; i < 8; i++) uniform_pair(state, u1 + i, u2 + i);
    v8f draw;
    const v8i accept = gamma_proposal(VL(u1), VL(u2), alpha, &draw);
    for (int i = 0; i < 8; i++) {
        out[i] = draw[i];
        for (int ok = accept[i]; !ok;) { /* a rejected lane: draw again, alone (in lane 0) */
            float a, b;
            uniform_pair(state, &a, &b);
            v8f retry;
            ok = gamma_proposal((v8f){0} + a, (v8f){0} + b, alpha, &retry)[0];
            out[i] = retry[0];
        }
    }
}

/* one draw of log Gamma(alpha), alpha >= 1 (Marsaglia and Tsang 2000), in double */
static float log_gamma_large(uint64_t *state, double alpha) {
    const double d = alpha - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        const uint64_t z1 = next64(state), z2 = next64(state);
        const double u1 = ((double)(z1 >> 11) + 1.0) * 0x1p-53, u2 = (double)(z2 >> 11) * 0x1p-53;
        const double x = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2); /* Box-Muller */
        const double v = (1.0 + c * x) * (1.0 + c * x) * (1.0 + c * x);
        if (v <= 0.0) continue;
        const double u = ((double)(next64(state) >> 11) + 1.0) * 0x1p-53;
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return (float)(log(d) + log(v));
    }
}

/* Stationary distribution mu [S] of the chain G (rows unnormalised, their sums `sums`), by
 * Grassmann-Taksar-Heyman elimination as task.py's _stationary_gth does it; A [S * S] scratch. */
static void stationary_gth(const float *G, const float *sums, int S, float *A, float *col, float *mu) {
    const float tiny = 1.17549435e-38f;
    memcpy(A, G, sizeof(float) * S * S);
    for (int k = S - 1; k > 0; k--) {
        float out = 0.0f; /* rate from k to the states below it */
        for (int j = 0; j < k; j++) out += A[k * S + j];
        if (out < tiny) out = tiny;
        for (int i = 0; i < k; i++) col[i] = A[i * S + k] / out;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) A[i * S + j] += col[i] * A[k * S + j];
        for (int i = 0; i < k; i++) A[i * S + k] = col[i];
    }
    mu[0] = 1.0f;
    for (int k = 1; k < S; k++) {
        float t = 0.0f;
        for (int i = 0; i < k; i++) t += mu[i] * A[i * S + k];
        mu[k] = t;
    }
    float total = 0.0f;
    for (int s = 0; s < S; s++) total += (mu[s] *= sums[s]);
    for (int s = 0; s < S; s++) mu[s] /= total;
}

/* Single-parent graphs (task.py, _sample_single_parent), n sequences of T tokens from `seed`:
 * each sequence draws its table (S rows of Dirichlet(alpha), as exp of log-gamma draws, each row
 * scaled so that its largest entry is 1); its roots (nroots of them, the query excluded) from the
 * table's stationary distribution; the query's token uniform (query < 0: none); then the other
 * positions in `order`, each from its parent's row. target [n, S] is the query's row, or the
 * target parent's, normalised. On `threads` OpenMP threads (the library binds to torch's
 * libgomp); the result does not depend on their number. Returns 0, or -1 when out of memory. */
int tree_sample(int n, int T, int S, float alpha, uint64_t seed, int threads, int nroots, const int32_t *roots,
                int norder, const int32_t *order, const int32_t *parent, int query, int target_parent,
                int64_t *tokens, float *target) {
    const int SS8 = (S * S + 7) / 8 * 8, T2 = T + T % 2;
    int err = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1) reduction(| : err)
    {
        float *G = aligned_alloc(32, sizeof(float) * SS8), *cdf = malloc(sizeof(float) * S * S);
        float *A = malloc(sizeof(float) * S * S), *mu = malloc(sizeof(float) * S), *col = malloc(sizeof(float) * S);
        float *u = malloc(sizeof(float) * T2), *sums = malloc(sizeof(float) * S);
        if (!G || !cdf || !A || !mu || !col || !u || !sums) err = -1;
#pragma omp for schedule(static)
        for (int b = 0; b < n; b++) {
            if (err) continue;
            uint64_t state = mix64(seed + mix64((uint64_t)b + 1));
            int64_t *tok = tokens + (size_t)b * T;
            if (alpha < 1.0f)
                for (int i = 0; i < SS8; i += 8) log_gamma8(&state, alpha, G + i);
            else
                for (int i = 0; i < S * S; i++) G[i] = log_gamma_large(&state, alpha);
            for (int r = 0; r < S; r++) { /* each row's largest entry becomes 1 */
                float mx = G[r * S];
                for (int s = 1; s < S; s++) mx = G[r * S + s] > mx ? G[r * S + s] : mx;
                for (int s = 0; s < S; s++) G[r * S + s] -= mx;
            }
            for (int i = S * S; i < SS8; i++) G[i] = 0.0f;
            for (int i = 0; i < SS8; i += 8) VS(G + i) = vexp(VL(G + i));
            for (int r = 0; r < S; r++) {
                cumsum_row(G + r * S, cdf + r * S, S);
                sums[r] = cdf[r * S + S - 1];
            }
            for (int i = 0; i < T; i += 2) uniform_pair(&state, u + i, u + i + 1);
            if (query >= 0) tok[query] = uniform_int(&state, S);
            if (nroots) {
                stationary_gth(G, sums, S, A, col, mu);
                cumsum_row(mu, col, S); /* col: mu's running sums */
                for (int r = 0; r < nroots; r++) tok[roots[r]] = draw_from(col, u[roots[r]], S);
            }
            for (int o = 0; o < norder; o++) {
                const int i = order[o];
                tok[i] = draw_from(cdf + tok[parent[i]] * S, u[i], S);
            }
            const int64_t row = query >= 0 ? tok[query] : tok[target_parent];
            for (int s = 0; s < S; s++) target[(size_t)b * S + s] = G[row * S + s] / sums[row];
        }
        free(G), free(cdf), free(A), free(mu), free(col), free(u), free(sums);
    }
    return err;
}
