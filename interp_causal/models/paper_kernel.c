/* The paper's two-layer disentangled transformer at the last position, one sequence at a time
 * (interp_causal/models/native.py compiles and loads this file; structured.py documents the
 * function). A training step of the structured path in torch runs a dozen passes over
 * [batch, n, n] tensors, each bound by memory; here one sequence's attention rows stay in L1
 * from its forward pass through its backward pass.
 *
 * Shapes (float32, contiguous), per model k of K:
 *   A0 [m0, d0, d0]  layer 1's A blocks, d0 = S + T
 *   A1 [m1, w1, w1]  layer 2's A blocks, w1 = d0 (1 + m0)
 *   x  [B, n]        tokens (int64) in [0, S), 1 <= n <= T (the caller checks: they index memory)
 *   WU [dm, S], bU [S]  the readout
 *   final [B, dm]    the residual stream at the last position, dm = w1 (1 + m1)
 *   logits [B, S]    final @ WU + bU
 * The forward pass may store each sequence's attention rows and layer-2 values (`saved`); the
 * backward pass reads them, or recomputes them when there are none. From dlogits it adds layer 1's
 * gradient into dA0 and the readout's into dWU and dbU (double), and writes dv [B, m1, w1], layer
 * 2's value gradient, from which torch forms dA1 = h_q^T dv with one matrix product. (The readout
 * in torch cost three small matrix products a step, 0.8 ms of the chain's 4.6.)
 *
 * Rows over key positions are padded to NP (a multiple of 8) so that every loop over them runs
 * whole vectors: padded and masked scores are MASKED, whose exp is exactly 0. Non-finite weights
 * give NaN wherever they are used, as in torch (no -ffast-math).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../vector_math.h"

#define MASKED (-1e30f)

typedef struct {
    int S, T, n, m0, m1, d0, w1, dm, NP, SP, P0, W1P, DMP;
} dims_t;

#define ROUND8(v) (((v) + 7) / 8 * 8)

static dims_t make_dims(int S, int T, int n, int m0, int m1) {
    dims_t d = {S, T, n, m0, m1, S + T, 0, 0, ROUND8(n), ROUND8(S), 0, 0, 0};
    d.w1 = d.d0 * (1 + m0);
    d.dm = d.w1 * (1 + m1);
    d.P0 = ROUND8(S + d.NP);
    d.W1P = ROUND8(d.w1);
    d.DMP = ROUND8(d.dm);
    return d;
}

/* sum a[i] b[i] over `chunks` vectors */
static inline float vdot(const float *a, const float *b, int chunks) {
    v8f acc = VL(a) * VL(b);
    for (int c = 1; c < chunks; c++) acc += VL(a + 8 * c) * VL(b + 8 * c);
    return hsum(acc);
}

static inline void vaxpy(float *y, float alpha, const float *x, int chunks) {
    for (int c = 0; c < chunks; c++) VS(y + 8 * c) += alpha * VL(x + 8 * c);
}

/* softmax over row[0..8 chunks) in place, as torch computes it: exp(s - max) / sum; the
 * chunks from `chunks` to `all` are set to 0 */
static inline void softmax(float *row, int chunks, int all) {
    v8f mx = VL(row);
    for (int c = 1; c < chunks; c++) {
        const v8f t = VL(row + 8 * c);
        mx = blend(t > mx, t, mx);
    }
    const float m = hmax(mx);
    v8f z = (v8f){0};
    for (int c = 0; c < chunks; c++) {
        const v8f t = vexp(VL(row + 8 * c) - m);
        VS(row + 8 * c) = t;
        z += t;
    }
    const float inv = 1.0f / hsum(z);
    for (int c = 0; c < chunks; c++) VS(row + 8 * c) *= inv;
    for (int c = chunks; c < all; c++) VS(row + 8 * c) = (v8f){0};
}

/* y = sum_r coef[r] A[idx[r]] over rows of `chunks` vectors, four vectors at a time held in
 * registers (an axpy per row would store and reload y for every row) */
static void combine_rows(float *y, const float *A, int chunks, const int *idx, const float *coef, int rows) {
    const size_t stride = (size_t)chunks * 8;
    for (int c = 0; c < chunks; c += 4) {
        const int left = chunks - c;
        v8f y0 = {0}, y1 = {0}, y2 = {0}, y3 = {0};
        for (int r = 0; r < rows; r++) {
            const float *row = A + idx[r] * stride + 8 * c, cf = coef[r];
            y0 += cf * VL(row);
            if (left > 1) y1 += cf * VL(row + 8);
            if (left > 2) y2 += cf * VL(row + 16);
            if (left > 3) y3 += cf * VL(row + 24);
        }
        VS(y + 8 * c) = y0;
        if (left > 1) VS(y + 8 * c + 8) = y1;
        if (left > 2) VS(y + 8 * c + 16) = y2;
        if (left > 3) VS(y + 8 * c + 24) = y3;
    }
}

/* One model's weights, rows zero-padded so that whole vectors can be read from them:
 * A0p [m0, d0, P0] (a row's token part is its first SP columns, its position part the NP columns
 * from S), A1p [m1, w1, W1P], and the readout transposed, WUt [S, DMP]. */
typedef struct {
    float *A0p, *A1p, *WUt;
    const float *bU;
} padded_t;

static void pad_weights(const dims_t *d, const float *A0, const float *A1, const float *WU, const float *bU,
                        padded_t *w) {
    const int d0 = d->d0, cols = d->P0 < d0 ? d->P0 : d0;
    for (size_t r = 0; r < (size_t)d->m0 * d0; r++) memcpy(w->A0p + r * d->P0, A0 + r * d0, sizeof(float) * cols);
    for (size_t r = 0; r < (size_t)d->m1 * d->w1; r++)
        memcpy(w->A1p + r * d->W1P, A1 + r * d->w1, sizeof(float) * d->w1);
    for (int i = 0; i < d->dm; i++)
        for (int t = 0; t < d->S; t++) w->WUt[(size_t)t * d->DMP + i] = WU[(size_t)i * d->S + t];
    w->bU = bU;
}

/* One sequence's forward state; every array zero-padded to whole vectors. */
typedef struct {
    int64_t *x; /* [NP] tokens, 0 in the padding */
    float *a;   /* [m0, n, NP] layer 1's patterns, 0 right of the diagonal */
    float *v;   /* [m1, W1P] h_q A_g */
    float *c;   /* [m1, m0, NP] c_hk = v[off_h + s_k] + v[off_h + S + k] */
    float *p;   /* [m1, NP] the query's layer-2 attention */
    float *u;   /* [SP] a row's token part of the scores */
    int *idx;   /* [2 + m0 (S + n)] the rows of A_g that h_q combines, */
    float *coef; /* and their weights */
    float *fp;   /* [DMP] a row of final, zero-padded */
    padded_t w;
} scratch_t;

static void *zalloc(size_t floats) { /* zeroed, 32-byte aligned, at least one vector */
    const size_t bytes = ROUND8(floats > 0 ? floats : 1) * sizeof(float);
    void *p = aligned_alloc(32, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

static int scratch_alloc(scratch_t *s, const dims_t *d) {
    const size_t NP = (size_t)d->NP;
    s->x = zalloc(2 * NP); /* int64 */
    s->a = zalloc(d->m0 * d->n * NP);
    s->v = zalloc((size_t)d->m1 * d->W1P);
    s->c = zalloc((size_t)d->m1 * d->m0 * NP);
    s->p = zalloc((size_t)d->m1 * NP);
    s->u = zalloc(d->SP);
    s->idx = malloc(sizeof(int) * (2 + d->m0 * (d->S + d->n)));
    s->coef = zalloc(2 + d->m0 * (d->S + d->n));
    s->w.A0p = zalloc((size_t)d->m0 * d->d0 * d->P0);
    s->w.A1p = zalloc((size_t)d->m1 * d->w1 * d->W1P);
    s->w.WUt = zalloc((size_t)d->S * d->DMP);
    s->fp = zalloc(d->DMP);
    return s->x && s->a && s->v && s->c && s->p && s->u && s->idx && s->coef && s->w.A0p && s->w.A1p && s->w.WUt &&
           s->fp;
}

static void scratch_free(scratch_t *s) {
    free(s->x);
    free(s->a);
    free(s->v);
    free(s->c);
    free(s->p);
    free(s->u);
    free(s->idx);
    free(s->coef);
    free(s->w.A0p);
    free(s->w.A1p);
    free(s->w.WUt);
    free(s->fp);
}

/* One sequence's forward pass from the padded weights in s->w: fills `final` [dm] and the scratch. */
static void seq_forward(const dims_t *d, const int64_t *tokens, float *final, scratch_t *s) {
    const int S = d->S, n = d->n, NP = d->NP, d0 = d->d0, w1 = d->w1, q = n - 1, P0 = d->P0, W1P = d->W1P;
    int64_t *x = s->x;
    float *u = s->u;
    memcpy(x, tokens, sizeof(int64_t) * n);
    memset(final, 0, sizeof(float) * d->dm);
    /* layer 1: score(j, k) = (A[s_j, s_k] + A[S + j, s_k]) + (A[s_j, S + k] + A[S + j, S + k]), k <= j */
    for (int h = 0; h < d->m0; h++) {
        const float *A = s->w.A0p + (size_t)h * d0 * P0;
        for (int j = 0; j < n; j++) {
            const float *rt = A + (size_t)x[j] * P0, *rp = A + (size_t)(S + j) * P0;
            float *row = s->a + ((size_t)h * n + j) * NP;
            for (int c = 0; c < d->SP / 8; c++) VS(u + 8 * c) = VL(rt + 8 * c) + VL(rp + 8 * c);
            const int chunks = j / 8 + 1;
            for (int c = 0; c < chunks; c++) {
                const int64_t *xc = x + 8 * c;
                const v8f tok = {u[xc[0]], u[xc[1]], u[xc[2]], u[xc[3]], u[xc[4]], u[xc[5]], u[xc[6]], u[xc[7]]};
                v8f score = tok + (VL(rt + S + 8 * c) + VL(rp + S + 8 * c));
                if (c == chunks - 1) {
                    const v8i key = (v8i){0, 1, 2, 3, 4, 5, 6, 7} + 8 * c;
                    score = blend(key > j, (v8f){0} + MASKED, score);
                }
                VS(row + 8 * c) = score;
            }
            softmax(row, chunks, NP / 8);
        }
    }
    /* h_q = [onehot(s_q); onehot(q); hist^h_q; a^h_q ...] */
    float *hq = final;
    hq[x[q]] = 1.0f;
    hq[S + q] = 1.0f;
    for (int h = 0; h < d->m0; h++) {
        const int off = d0 * (1 + h);
        const float *aq = s->a + ((size_t)h * n + q) * NP;
        for (int k = 0; k < n; k++) {
            hq[off + x[k]] += aq[k];
            hq[off + S + k] = aq[k];
        }
    }
    /* layer 2 at the query */
    for (int g = 0; g < d->m1; g++) {
        const float *A = s->w.A1p + (size_t)g * w1 * W1P;
        float *v = s->v + (size_t)g * W1P, *c = s->c + (size_t)g * d->m0 * NP, *p = s->p + (size_t)g * NP;
        /* v = h_q A over h_q's only nonzero rows: its token and position, and each head's block */
        int rows = 0;
        s->idx[rows] = (int)x[q], s->coef[rows++] = 1.0f;
        s->idx[rows] = S + q, s->coef[rows++] = 1.0f;
        for (int h = 0; h < d->m0; h++) {
            const int off = d0 * (1 + h);
            for (int i = off; i < off + S + n; i++) s->idx[rows] = i, s->coef[rows++] = hq[i];
        }
        combine_rows(v, A, W1P / 8, s->idx, s->coef, rows);
        for (int h = 0; h < d->m0; h++) {
            const int off = d0 * (1 + h);
            for (int k = 0; k < n; k++) c[h * NP + k] = v[off + x[k]] + v[off + S + k];
            for (int k = n; k < NP; k++) c[h * NP + k] = 0.0f;
        }
        for (int j = 0; j < n; j++) {
            float score = v[x[j]] + v[S + j];
            for (int h = 0; h < d->m0; h++) score += vdot(s->a + ((size_t)h * n + j) * NP, c + h * NP, j / 8 + 1);
            p[j] = score;
        }
        for (int j = n; j < NP; j++) p[j] = MASKED;
        softmax(p, NP / 8, NP / 8);
        /* the head's output p H = [scatter(p); p; scatter(p a^h); p a^h ...] */
        float *out = final + (size_t)w1 * (1 + g);
        for (int j = 0; j < n; j++) {
            out[x[j]] += p[j];
            out[S + j] = p[j];
        }
        for (int h = 0; h < d->m0; h++) {
            const int off = d0 * (1 + h);
            float r[NP];
            memset(r, 0, sizeof(r));
            for (int j = 0; j < n; j++) vaxpy(r, p[j], s->a + ((size_t)h * n + j) * NP, j / 8 + 1);
            for (int k = 0; k < n; k++) {
                out[off + S + k] = r[k];
                out[off + x[k]] += r[k];
            }
        }
    }
}

#define MODEL_WEIGHTS(k)                                                                                       \
    pad_weights(&d, A0 + (size_t)(k) * d.m0 * d.d0 * d.d0, A1 + (size_t)(k) * d.m1 * d.w1 * d.w1,                 \
                WU + (size_t)(k) * d.dm * d.S, bU + (size_t)(k) * d.S, &s.w);

/* logits [S] = final @ WU + bU; leaves final's row zero-padded in s->fp for the backward pass */
static void readout(const dims_t *d, scratch_t *s, const float *final, float *logits) {
    memcpy(s->fp, final, sizeof(float) * d->dm);
    for (int t = 0; t < d->S; t++) logits[t] = s->w.bU[t] + vdot(s->w.WUt + (size_t)t * d->DMP, s->fp, d->DMP / 8);
}

/* Floats of one sequence's state that the backward pass reads: a, c, p. */
static size_t saved_size(const dims_t *d) {
    return (size_t)d->m0 * d->n * d->NP + (size_t)d->m1 * d->m0 * d->NP + (size_t)d->m1 * d->NP;
}

/* Point the scratch's a, c, p at one sequence's slot of `saved` [K, B, saved_size]. */
static void use_saved(const dims_t *d, scratch_t *s, float *slot) {
    s->a = slot;
    s->c = slot + (size_t)d->m0 * d->n * d->NP;
    s->p = s->c + (size_t)d->m1 * d->m0 * d->NP;
}

int paper_saved_size(int S, int T, int n, int m0, int m1) {
    const dims_t d = make_dims(S, T, n, m0, m1);
    return (int)saved_size(&d);
}

/* final [K, B, dm] and logits [K, B, S] for rows b in [b0, b1) of every model, and, where `saved`
 * is not NULL, each sequence's a, c, p for the backward pass. Returns 0, or -1 when out of memory. */
int paper_forward(int K, int B, int b0, int b1, int S, int T, int n, int m0, int m1, const float *A0,
                  const float *A1, const float *WU, const float *bU, const int64_t *x, float *final, float *logits,
                  float *saved) {
    const dims_t d = make_dims(S, T, n, m0, m1);
    scratch_t s;
    int ok = scratch_alloc(&s, &d);
    scratch_t own = s;
    for (int k = 0; ok && k < K; k++) {
        MODEL_WEIGHTS(k)
        for (int b = b0; b < b1; b++) {
            const size_t row = (size_t)k * B + b;
            if (saved) use_saved(&d, &s, saved + row * saved_size(&d));
            seq_forward(&d, x + row * n, final + row * d.dm, &s);
            readout(&d, &s, final + row * d.dm, logits + row * S);
        }
    }
    s.a = own.a, s.c = own.c, s.p = own.p;
    scratch_free(&s);
    return ok ? 0 : -1;
}

/* Layer 1's gradient of a few sequences in float, by the blocks of A it lands in (so that every
 * add is a whole vector); flushed into the double dA0 every FLUSH sequences. */
#define FLUSH 32
#define BANKS 4
typedef struct {
    float *pp; /* [m0, n, NP]  A[S + j, S + k] */
    float *tp; /* [m0, S, NP]  A[t, S + k] */
    float *pt; /* [BANKS, m0, n, SP]  A[S + j, t] */
    float *tt; /* [BANKS, m0, S, SP]  A[t, t'] */
    float *wu; /* [S, DMP]  the readout's WU, transposed */
    float *bu; /* [SP]  and bU */
} grad1_t;

static void flush(const dims_t *d, grad1_t *g, double *dA0, double *dWU, double *dbU) {
    const int S = d->S, n = d->n, NP = d->NP, SP = d->SP, d0 = d->d0;
    for (int h = 0; h < d->m0; h++) {
        double *G = dA0 + (size_t)h * d0 * d0;
        for (int j = 0; j < n; j++)
            for (int k = 0; k < n; k++) G[(size_t)(S + j) * d0 + S + k] += g->pp[((size_t)h * n + j) * NP + k];
        for (int t = 0; t < S; t++)
            for (int k = 0; k < n; k++) G[(size_t)t * d0 + S + k] += g->tp[((size_t)h * S + t) * NP + k];
        for (int bank = 0; bank < BANKS; bank++) {
            const float *pt = g->pt + (size_t)bank * d->m0 * n * SP, *tt = g->tt + (size_t)bank * d->m0 * S * SP;
            for (int j = 0; j < n; j++)
                for (int t = 0; t < S; t++) G[(size_t)(S + j) * d0 + t] += pt[((size_t)h * n + j) * SP + t];
            for (int t = 0; t < S; t++)
                for (int t2 = 0; t2 < S; t2++) G[(size_t)t * d0 + t2] += tt[((size_t)h * S + t) * SP + t2];
        }
    }
    for (int i = 0; i < d->dm; i++)
        for (int t = 0; t < S; t++) dWU[(size_t)i * S + t] += g->wu[(size_t)t * d->DMP + i];
    for (int t = 0; t < S; t++) dbU[t] += g->bu[t];
    memset(g->wu, 0, sizeof(float) * S * d->DMP);
    memset(g->bu, 0, sizeof(float) * SP);
    memset(g->pp, 0, sizeof(float) * d->m0 * n * NP);
    memset(g->tp, 0, sizeof(float) * d->m0 * S * NP);
    memset(g->pt, 0, sizeof(float) * BANKS * d->m0 * n * SP);
    memset(g->tt, 0, sizeof(float) * BANKS * d->m0 * S * SP);
}

/* The backward pass for rows [b0, b1): from dlogits [K, B, S], adds layer 1's gradient into
 * dA0 [K, m0, d0, d0] and the readout's into dWU [K, dm, S] and dbU [K, S] (double), and writes
 * dv [K, B, m1, w1]. `final` is the forward's (read where `saved` is, else recomputed). */
int paper_backward(int K, int B, int b0, int b1, int S, int T, int n, int m0, int m1, const float *A0,
                   const float *A1, const float *WU, const float *bU, const int64_t *x, const float *final,
                   const float *dlogits, float *saved, double *dA0, double *dWU, double *dbU, float *dv_out) {
    const dims_t d = make_dims(S, T, n, m0, m1);
    const int d0 = d.d0, w1 = d.w1, q = n - 1, NP = d.NP, SP = d.SP, W1P = d.W1P;
    scratch_t s;
    grad1_t g1 = {zalloc((size_t)m0 * n * NP), zalloc((size_t)m0 * S * NP), zalloc((size_t)BANKS * m0 * n * SP),
                  zalloc((size_t)BANKS * m0 * S * SP), zalloc((size_t)S * d.DMP), zalloc(SP)};
    float *fin = zalloc(d.dm), *dhq = zalloc(w1), *da = zalloc((size_t)m0 * n * NP), *e = zalloc((size_t)m0 * NP);
    float *dp = zalloc(NP), *dc = zalloc(NP), *gs = zalloc(NP), *dv = zalloc(W1P), *df = zalloc(d.DMP), *dl = zalloc(SP);
    int ok = scratch_alloc(&s, &d);
    scratch_t own = s;
    ok = ok && g1.pp && g1.tp && g1.pt && g1.tt && g1.wu && g1.bu && fin && dhq && da && e && dp && dc && gs && dv && df &&
         dl;
    for (int k = 0; ok && k < K; k++) {
        MODEL_WEIGHTS(k)
        double *dA0k = dA0 + (size_t)k * m0 * d0 * d0, *dWUk = dWU + (size_t)k * d.dm * S, *dbUk = dbU + (size_t)k * S;
        for (int b = b0; b < b1; b++) {
            const size_t row = (size_t)k * B + b;
            if (saved) { /* the forward's state, else recompute it */
                use_saved(&d, &s, saved + row * saved_size(&d));
                memcpy(s.x, x + row * n, sizeof(int64_t) * n);
                memcpy(s.fp, final + row * d.dm, sizeof(float) * d.dm);
            } else {
                seq_forward(&d, x + row * n, fin, &s);
                memcpy(s.fp, fin, sizeof(float) * d.dm);
            }
            /* the readout: df = WU dlogits, dWU += final^T dlogits, dbU += dlogits */
            memcpy(dl, dlogits + row * S, sizeof(float) * S);
            memset(df, 0, sizeof(float) * d.DMP);
            for (int t = 0; t < S; t++) {
                vaxpy(df, dl[t], s.w.WUt + (size_t)t * d.DMP, d.DMP / 8);
                vaxpy(g1.wu + (size_t)t * d.DMP, dl[t], s.fp, d.DMP / 8);
            }
            vaxpy(g1.bu, 1.0f, dl, SP / 8);
            const int64_t *xs = s.x;
            memcpy(dhq, df, sizeof(float) * w1);
            memset(da, 0, sizeof(float) * m0 * n * NP);
            for (int g = 0; g < m1; g++) {
                const float *dout = df + (size_t)w1 * (1 + g), *c = s.c + (size_t)g * m0 * NP, *p = s.p + (size_t)g * NP;
                const float *A = s.w.A1p + (size_t)g * w1 * W1P;
                /* through the output p H: dp_j = dout . h_j, and da^h_j += p_j e^h */
                for (int h = 0; h < m0; h++) {
                    const int off = d0 * (1 + h);
                    for (int kk = 0; kk < n; kk++) e[h * NP + kk] = dout[off + xs[kk]] + dout[off + S + kk];
                }
                float sdp = 0.0f;
                for (int j = 0; j < n; j++) {
                    float t = dout[xs[j]] + dout[S + j];
                    for (int h = 0; h < m0; h++) {
                        t += vdot(s.a + ((size_t)h * n + j) * NP, e + h * NP, j / 8 + 1);
                        vaxpy(da + ((size_t)h * n + j) * NP, p[j], e + h * NP, j / 8 + 1);
                    }
                    dp[j] = t;
                    sdp += p[j] * t;
                }
                /* through the softmax to the scores, then to v and to layer 1's patterns */
                memset(dv, 0, sizeof(float) * W1P);
                for (int j = 0; j < n; j++) {
                    gs[j] = p[j] * (dp[j] - sdp);
                    dv[xs[j]] += gs[j];
                    dv[S + j] += gs[j];
                }
                for (int h = 0; h < m0; h++) {
                    const int off = d0 * (1 + h);
                    memset(dc, 0, sizeof(float) * NP);
                    for (int j = 0; j < n; j++) {
                        vaxpy(dc, gs[j], s.a + ((size_t)h * n + j) * NP, j / 8 + 1);
                        vaxpy(da + ((size_t)h * n + j) * NP, gs[j], c + h * NP, j / 8 + 1);
                    }
                    for (int kk = 0; kk < n; kk++) {
                        dv[off + xs[kk]] += dc[kk];
                        dv[off + S + kk] += dc[kk];
                    }
                }
                memcpy(dv_out + (row * m1 + g) * w1, dv, sizeof(float) * w1);
                /* dh_q += A_g dv, at the rows of h_q that depend on layer 1: each head's block */
                for (int h = 0; h < m0; h++) {
                    const int off = d0 * (1 + h);
                    for (int i = off; i < off + S + n; i++) dhq[i] += vdot(A + (size_t)i * W1P, dv, W1P / 8);
                }
            }
            /* the query's layer-1 rows feed h_q */
            for (int h = 0; h < m0; h++) {
                const int off = d0 * (1 + h);
                float *darow = da + ((size_t)h * n + q) * NP;
                for (int kk = 0; kk < n; kk++) darow[kk] += dhq[off + xs[kk]] + dhq[off + S + kk];
            }
            /* layer 1's softmax backward; a score's gradient goes to the four blocks of A it sums:
             * A[S + j, S + k] and A[s_j, S + k] take the row as it is, A[S + j, t] and A[s_j, t]
             * take it summed per key token t */
            for (int h = 0; h < m0; h++) {
                for (int j = 1; j < n; j++) { /* row 0 attends to itself alone: zero gradient */
                    const float *arow = s.a + ((size_t)h * n + j) * NP;
                    const float *darow = da + ((size_t)h * n + j) * NP;
                    const int chunks = j / 8 + 1;
                    const float inner = vdot(arow, darow, chunks);
                    float *pp = g1.pp + ((size_t)h * n + j) * NP, *tp = g1.tp + ((size_t)h * S + xs[j]) * NP;
                    for (int c = 0; c < chunks; c++) {
                        const v8f t = VL(arow + 8 * c) * (VL(darow + 8 * c) - inner);
                        VS(gs + 8 * c) = t;
                        VS(pp + 8 * c) += t;
                        VS(tp + 8 * c) += t;
                    }
                    /* scalar adds straight into the accumulators (a buffer added as vectors would
                     * stall each vector load on the scalar stores before it), spread over BANKS
                     * copies by key position, so that repeated tokens do not chain the adds */
                    float *pt = g1.pt + ((size_t)h * n + j) * SP, *tt = g1.tt + ((size_t)h * S + xs[j]) * SP;
                    const size_t ptb = (size_t)m0 * n * SP, ttb = (size_t)m0 * S * SP;
                    for (int kk = 0; kk <= j; kk++) {
                        const int bank = kk % BANKS;
                        pt[bank * ptb + xs[kk]] += gs[kk];
                        tt[bank * ttb + xs[kk]] += gs[kk];
                    }
                }
            }
            if ((b - b0) % FLUSH == FLUSH - 1 || b == b1 - 1) flush(&d, &g1, dA0k, dWUk, dbUk);
        }
    }
    s.a = own.a, s.c = own.c, s.p = own.p;
    scratch_free(&s);
    free(g1.pp);
    free(g1.tp);
    free(g1.pt);
    free(g1.tt);
    free(g1.wu);
    free(g1.bu);
    free(fin);
    free(dhq);
    free(da);
    free(e);
    free(dp);
    free(dc);
    free(gs);
    free(dv);
    free(df);
    free(dl);
    return ok ? 0 : -1;
}

/* The row ranges [bounds[i], bounds[i + 1]) of `parts` parts at once, on OpenMP threads. Built
 * with -fopenmp, the library binds to the libgomp that torch has already loaded (same soname), so
 * these are torch's own threads: they are spinning after torch's last parallel op and take the
 * work at once, where threads of our own would share the cores with them. Without OpenMP the parts
 * run one after another (native.py then splits them over Python threads instead). dA0, dWU and
 * dbU hold one block per part. */
int paper_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int paper_forward_parts(int parts, const int *bounds, int K, int B, int S, int T, int n, int m0, int m1,
                        const float *A0, const float *A1, const float *WU, const float *bU, const int64_t *x,
                        float *final, float *logits, float *saved) {
    int err = 0;
#pragma omp parallel for num_threads(parts) schedule(static, 1) reduction(| : err)
    for (int i = 0; i < parts; i++)
        err |= paper_forward(K, B, bounds[i], bounds[i + 1], S, T, n, m0, m1, A0, A1, WU, bU, x, final, logits, saved);
    return err;
}

int paper_backward_parts(int parts, const int *bounds, int K, int B, int S, int T, int n, int m0, int m1,
                         const float *A0, const float *A1, const float *WU, const float *bU, const int64_t *x,
                         const float *final, const float *dlogits, float *saved, double *dA0, double *dWU,
                         double *dbU, float *dv_out) {
    const dims_t d = make_dims(S, T, n, m0, m1);
    const size_t block = (size_t)K * m0 * d.d0 * d.d0, wblock = (size_t)K * d.dm * S, bblock = (size_t)K * S;
    int err = 0;
#pragma omp parallel for num_threads(parts) schedule(static, 1) reduction(| : err)
    for (int i = 0; i < parts; i++)
        err |= paper_backward(K, B, bounds[i], bounds[i + 1], S, T, n, m0, m1, A0, A1, WU, bU, x, final, dlogits, saved,
                              dA0 + i * block, dWU + i * wblock, dbU + i * bblock, dv_out);
    return err;
}
