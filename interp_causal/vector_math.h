/* Whole 8-float vectors for the package's C sources (models/paper_kernel.c, tasks/sampler.c):
 * GCC's and clang's vector extensions, AVX where -march allows, pairs of SSE registers otherwise.
 * No -ffast-math: inf and NaN propagate as in torch. interp_causal/compiled.py compiles a source
 * with the headers it includes in its cache key. */
#ifndef INTERP_CAUSAL_VECTOR_MATH_H
#define INTERP_CAUSAL_VECTOR_MATH_H

#include <stdint.h>

typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));
#define VL(p) (*(const v8f *)(p))
#define VS(p) (*(v8f *)(p))

static inline float hsum(v8f a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

static inline float hmax(v8f a) {
    float m = a[0];
    for (int i = 1; i < 8; i++) m = a[i] > m ? a[i] : m;
    return m;
}

static inline v8f blend(v8i mask, v8f yes, v8f no) {
    return (v8f)(((v8i)yes & mask) | ((v8i)no & ~mask));
}

/* exp(x) to about 2 ulp (glibc's expf is a call per element): x = i ln2 + r with |r| <= ln2 / 2
 * (Cody-Waite), e^r by its Taylor polynomial to r^7 (error < 6e-9), 2^i written into the
 * exponent bits. Exactly 0 below -87.3, where float's normal range ends (so MASKED gives 0);
 * NaN stays NaN. */
static inline v8f vexp(v8f x) {
    const v8f big = (v8f){0} + 12582912.0f; /* 1.5 * 2^23: adding and subtracting it rounds */
    const v8i under = x < -87.3f;
    v8f xc = blend(x > 88.0f, (v8f){0} + 88.0f, x);
    xc = blend(under, (v8f){0} - 87.3f, xc);
    const v8f fi = (xc * 1.44269504088896341f + big) - big;
    const v8f r = (xc - fi * 0.693359375f) + fi * 2.12194440e-4f;
    v8f p = (v8f){0} + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const v8i e = (__builtin_convertvector(fi, v8i) + 127) << 23;
    return (v8f)((v8i)(p * (v8f)e) & ~under);
}

/* log(x) for x >= 0 to about 2 ulp (Cephes' logf): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * log m by its minimax polynomial in m - 1, e ln2 added in two parts. log(0) = -inf; x must be
 * 0 or a normal positive float (the samplers' uniforms and their logs are). */
static inline v8f vlog(v8f x) {
    const v8i bits = (v8i)x;
    v8i e = ((bits >> 23) & 0xff) - 126;
    v8f m = (v8f)((bits & 0x807fffff) | 0x3f000000); /* [0.5, 1) */
    const v8i low = m < 0.707106781186547524f;
    e -= low & 1;
    m = blend(low, m + m, m) - 1.0f;
    const v8f z = m * m;
    v8f y = (v8f){0} + 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    const v8f fe = __builtin_convertvector(e, v8f);
    y += fe * -2.12194440e-4f;
    y += -0.5f * z;
    const v8f out = (m + y) + fe * 0.693359375f;
    return blend(x == 0.0f, (v8f){0} - __builtin_inff(), out);
}

#endif
