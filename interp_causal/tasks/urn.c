/* The Polya-urn sampler of a multi-parent task's tokens (interp_causal/tasks/task.py,
 * InContextTask._sample_urn, documents it), one sequence at a time; task.py compiles and loads
 * this file through interp_causal/compiled.py and keeps its torch version where it cannot.
 *
 * The same arithmetic as the torch version, so the same tokens to the bit: a row's weights are
 * count + alpha in float; their running sums are taken in double and rounded to float (torch's
 * CPU cumsum accumulates a float tensor in double); the draw is how many of those sums lie below
 * u * total (a float product), at most S - 1; the drawn entry's count then grows by one. The
 * uniforms u and the root tokens are drawn by torch before the call, so the random stream is
 * torch's either way.
 *
 * Per position i: npar[i] parents par[i * kmax + m] (0 for a root, whose token is given), its
 * degree's count table at slot[i] in a per-sequence scratch of `scratch` floats. The target's row
 * (parents tpar, table at tslot) is copied out as counts [n, S]; torch adds alpha and normalises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
            const float threshold = ub[i] * cdf[S - 1];
            int draw = 0;
            for (int s = 0; s < S; s++) draw += cdf[s] < threshold;
            if (draw > S - 1) draw = S - 1;
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
