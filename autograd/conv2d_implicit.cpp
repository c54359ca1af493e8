// The implicit-GEMM kernels of conv2d_implicit.h: the stride-1 forward, and dW.
#ifdef __AVX2__
#include "autograd/conv2d_implicit.h"

#include <immintrin.h>

namespace qf::detail {

ImplicitConv implicit_prepare(const float* w, const ConvDims& d) {
    ImplicitConv ic;
    const int64_t K = d.K(), MR = kImplicitMR;
    ic.OCp = (d.OC + MR - 1) / MR * MR;
    ic.HP = d.H + 2 * d.pad, ic.WP = d.W + 2 * d.pad;
    ic.Q = (d.OH * ic.WP + kImplicitNR - 1) / kImplicitNR * kImplicitNR;
    ic.wpk.assign(ic.OCp * K, 0.0f);
    for (int64_t oc = 0; oc < d.OC; oc++)
        for (int64_t k = 0; k < K; k++) ic.wpk[((oc / MR) * K + k) * MR + oc % MR] = w[oc * K + k];
    ic.off.resize(K);
    for (int64_t c = 0; c < d.C; c++)
        for (int64_t kh = 0; kh < d.KH; kh++)
            for (int64_t kw = 0; kw < d.KW; kw++)
                ic.off[(c * d.KH + kh) * d.KW + kw] = (int32_t)((c * ic.HP + kh) * ic.WP + kw);
    ic.xp_size = ic.off[K - 1] + ic.Q;
    return ic;
}

void implicit_kernel(const ImplicitConv& ic, int64_t K, const float* xp, float* grid) {
    const int32_t* off = ic.off.data();
    for (int64_t ob = 0; ob < ic.OCp; ob += kImplicitMR) {
        const float* a0 = ic.wpk.data() + ob * K;
        for (int64_t q = 0; q < ic.Q; q += kImplicitNR) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
            __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
            const float* b = xp + q;
            const float* a = a0;
            for (int64_t k = 0; k < K; k++, a += kImplicitMR) {
                const float* bk = b + off[k];
                const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8), b2 = _mm256_loadu_ps(bk + 16);
                __m256 av = _mm256_broadcast_ss(a);
                c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01), c02 = _mm256_fmadd_ps(av, b2, c02);
                av = _mm256_broadcast_ss(a + 1);
                c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11), c12 = _mm256_fmadd_ps(av, b2, c12);
                av = _mm256_broadcast_ss(a + 2);
                c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21), c22 = _mm256_fmadd_ps(av, b2, c22);
                av = _mm256_broadcast_ss(a + 3);
                c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31), c32 = _mm256_fmadd_ps(av, b2, c32);
            }
            float* g = grid + ob * ic.Q + q;
            _mm256_storeu_ps(g, c00), _mm256_storeu_ps(g + 8, c01), _mm256_storeu_ps(g + 16, c02);
            g += ic.Q;
            _mm256_storeu_ps(g, c10), _mm256_storeu_ps(g + 8, c11), _mm256_storeu_ps(g + 16, c12);
            g += ic.Q;
            _mm256_storeu_ps(g, c20), _mm256_storeu_ps(g + 8, c21), _mm256_storeu_ps(g + 16, c22);
            g += ic.Q;
            _mm256_storeu_ps(g, c30), _mm256_storeu_ps(g + 8, c31), _mm256_storeu_ps(g + 16, c32);
        }
    }
}

ImplicitWgrad wgrad_prepare(const ConvDims& d) {
    ImplicitWgrad wg;
    const int64_t K = d.K();
    wg.Kp = (K + kWgradKR - 1) / kWgradKR * kWgradKR;
    wg.OCp = (d.OC + kWgradOR - 1) / kWgradOR * kWgradOR;
    wg.HP = d.H + 2 * d.pad, wg.WP = d.W + 2 * d.pad;
    wg.off.assign(wg.Kp, 0);
    for (int64_t c = 0; c < d.C; c++)
        for (int64_t kh = 0; kh < d.KH; kh++)
            for (int64_t kw = 0; kw < d.KW; kw++)
                wg.off[(c * d.KH + kh) * d.KW + kw] = (int32_t)((c * wg.HP + kh) * wg.WP + kw);
    return wg;
}

void wgrad_kernel(const ImplicitWgrad& wg, const float* xp, const float* gt, float* dwt,
                  const ConvDims& d) {
    const int64_t OCp = wg.OCp, WP = wg.WP;
    for (int64_t ob = 0; ob < OCp; ob += kWgradOR)
        for (int64_t kb = 0; kb < wg.Kp; kb += kWgradKR) {
            // Accumulators: row k = kb + i of the tile, channels ob .. ob+7 and ob+8 .. ob+15.
            float* acc = dwt + kb * OCp + ob;
            __m256 c00 = _mm256_loadu_ps(acc), c01 = _mm256_loadu_ps(acc + 8);
            __m256 c10 = _mm256_loadu_ps(acc + OCp), c11 = _mm256_loadu_ps(acc + OCp + 8);
            __m256 c20 = _mm256_loadu_ps(acc + 2 * OCp), c21 = _mm256_loadu_ps(acc + 2 * OCp + 8);
            __m256 c30 = _mm256_loadu_ps(acc + 3 * OCp), c31 = _mm256_loadu_ps(acc + 3 * OCp + 8);
            __m256 c40 = _mm256_loadu_ps(acc + 4 * OCp), c41 = _mm256_loadu_ps(acc + 4 * OCp + 8);
            __m256 c50 = _mm256_loadu_ps(acc + 5 * OCp), c51 = _mm256_loadu_ps(acc + 5 * OCp + 8);
            const int32_t* off = wg.off.data() + kb;
            const float* g = gt + ob;
            for (int64_t oh = 0; oh < d.OH; oh++) {
                const float* x0 = xp + off[0] + oh * WP;
                const float* x1 = xp + off[1] + oh * WP;
                const float* x2 = xp + off[2] + oh * WP;
                const float* x3 = xp + off[3] + oh * WP;
                const float* x4 = xp + off[4] + oh * WP;
                const float* x5 = xp + off[5] + oh * WP;
                for (int64_t ow = 0; ow < d.OW; ow++, g += OCp) {
                    const __m256 g0 = _mm256_loadu_ps(g), g1 = _mm256_loadu_ps(g + 8);
                    __m256 a = _mm256_broadcast_ss(x0 + ow);
                    c00 = _mm256_fmadd_ps(a, g0, c00), c01 = _mm256_fmadd_ps(a, g1, c01);
                    a = _mm256_broadcast_ss(x1 + ow);
                    c10 = _mm256_fmadd_ps(a, g0, c10), c11 = _mm256_fmadd_ps(a, g1, c11);
                    a = _mm256_broadcast_ss(x2 + ow);
                    c20 = _mm256_fmadd_ps(a, g0, c20), c21 = _mm256_fmadd_ps(a, g1, c21);
                    a = _mm256_broadcast_ss(x3 + ow);
                    c30 = _mm256_fmadd_ps(a, g0, c30), c31 = _mm256_fmadd_ps(a, g1, c31);
                    a = _mm256_broadcast_ss(x4 + ow);
                    c40 = _mm256_fmadd_ps(a, g0, c40), c41 = _mm256_fmadd_ps(a, g1, c41);
                    a = _mm256_broadcast_ss(x5 + ow);
                    c50 = _mm256_fmadd_ps(a, g0, c50), c51 = _mm256_fmadd_ps(a, g1, c51);
                }
            }
            _mm256_storeu_ps(acc, c00), _mm256_storeu_ps(acc + 8, c01);
            _mm256_storeu_ps(acc + OCp, c10), _mm256_storeu_ps(acc + OCp + 8, c11);
            _mm256_storeu_ps(acc + 2 * OCp, c20), _mm256_storeu_ps(acc + 2 * OCp + 8, c21);
            _mm256_storeu_ps(acc + 3 * OCp, c30), _mm256_storeu_ps(acc + 3 * OCp + 8, c31);
            _mm256_storeu_ps(acc + 4 * OCp, c40), _mm256_storeu_ps(acc + 4 * OCp + 8, c41);
            _mm256_storeu_ps(acc + 5 * OCp, c50), _mm256_storeu_ps(acc + 5 * OCp + 8, c51);
        }
}

}  // namespace qf::detail
#endif  // __AVX2__
