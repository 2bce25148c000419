/* The task samplers' draws after their random numbers, one sequence at a time
 * (interp_causal/tasks/task.py documents both samplers; it compiles and loads this file through
 * interp_causal/compiled.py and keeps its torch ops where it cannot). The uniforms, the gamma
 * draws and the root or query tokens are drawn by torch before the call, so the random stream is
 * torch's either way, and a sequence's draws are the same arithmetic as the torch ops':
 *
 * - a row's running sums are taken in double and rounded to float (torch's CPU cumsum accumulates
 *   a float tensor in double);
 * - a draw is how many of those sums lie below u * total (a float product), at most S - 1.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* Single-parent graphs (task.py, _sample_single_parent): G [n, S, S] holds each sequence's table
 * rows, unnormalised (exp of log-gamma draws, each row's largest entry 1). Roots (nroots of them,
 * the query excluded) follow the table's stationary distribution, by Grassmann-Taksar-Heyman
 * elimination as task.py's _stationary_gth does it, in float (its sums in the same order as torch's
 * for rows this short, so the same bits in all but rare last-ulp cases, where a root's draw can
 * differ only when its uniform falls within an ulp of a boundary); then the other positions in
 * `order`, each from its parent's row. The query's token is given (query < 0: none). The target
 * row, unnormalised, is the query's row, or the target parent's; torch normalises it. */
int tree_draw(int n, int T, int S, const float *G, const float *u, int64_t *tokens, int nroots,
              const int32_t *roots, int norder, const int32_t *order, const int32_t *parent, int query,
              int target_parent, float *target) {
    float *cdf = malloc(sizeof(float) * (size_t)S * S), *A = malloc(sizeof(float) * (size_t)S * S);
    float *nu = malloc(sizeof(float) * (size_t)S), *mu = malloc(sizeof(float) * (size_t)S);
    float *col = malloc(sizeof(float) * (size_t)S);
    if (!cdf || !A || !nu || !mu || !col) {
        free(cdf), free(A), free(nu), free(mu), free(col);
        return -1;
    }
    const float tiny = 1.17549435e-38f;
    for (int b = 0; b < n; b++) {
        const float *Gb = G + (size_t)b * S * S, *ub = u + (size_t)b * T;
        int64_t *tok = tokens + (size_t)b * T;
        for (int r = 0; r < S; r++) cumsum_row(Gb + r * S, cdf + r * S, S);
        if (nroots) {
            memcpy(A, Gb, sizeof(float) * S * S);
            for (int k = S - 1; k > 0; k--) {
                float out = 0.0f; /* rate from k to the states below it */
                for (int j = 0; j < k; j++) out += A[k * S + j];
                if (out < tiny) out = tiny;
                for (int i = 0; i < k; i++) col[i] = A[i * S + k] / out;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) A[i * S + j] += col[i] * A[k * S + j];
                for (int i = 0; i < k; i++) A[i * S + k] = col[i];
            }
            nu[0] = 1.0f;
            for (int k = 1; k < S; k++) {
                float t = 0.0f;
                for (int i = 0; i < k; i++) t += nu[i] * A[i * S + k];
                nu[k] = t;
            }
            float total = 0.0f;
            for (int s = 0; s < S; s++) {
                mu[s] = nu[s] * cdf[s * S + S - 1];
                total += mu[s];
            }
            for (int s = 0; s < S; s++) mu[s] = mu[s] / total;
            cumsum_row(mu, nu, S); /* nu: mu's running sums */
            for (int r = 0; r < nroots; r++) tok[roots[r]] = draw_from(nu, ub[roots[r]], S);
        }
        for (int o = 0; o < norder; o++) {
            const int i = order[o];
            tok[i] = draw_from(cdf + tok[parent[i]] * S, ub[i], S);
        }
        const int64_t row = query >= 0 ? tok[query] : tok[target_parent];
        memcpy(target + (size_t)b * S, Gb + row * S, sizeof(float) * S);
    }
    free(cdf), free(A), free(nu), free(mu), free(col);
    return 0;
}
