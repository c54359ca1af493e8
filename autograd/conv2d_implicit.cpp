// The implicit-GEMM kernels of conv2d_implicit.h, and the transposes between
// their (P, OC) layout and conv2d's (OC, P) planes.
#ifdef __AVX2__
#include "autograd/conv2d_implicit.h"

#include <immintrin.h>

#include <algorithm>

namespace qf::detail {

namespace {

// A 6 x 16 tile of accumulators: row i (a pixel, or a k) by 16 channels.
// The loops over it are unrolled, so they index it with constants only and
// it lives in 12 registers (without `#pragma GCC unroll`, GCC at -O2 kept
// the loops and the tile in memory: 3x slower).
struct Tile {
    __m256 c[6][2];
};

inline __attribute__((always_inline)) void tile_zero(Tile& t) {
    #pragma GCC unroll 8
    for (int i = 0; i < 6; i++) t.c[i][0] = t.c[i][1] = _mm256_setzero_ps();
}
inline __attribute__((always_inline)) void tile_load(Tile& t, const float* src, int64_t ld) {
    #pragma GCC unroll 8
    for (int i = 0; i < 6; i++)
        t.c[i][0] = _mm256_loadu_ps(src + i * ld), t.c[i][1] = _mm256_loadu_ps(src + i * ld + 8);
}
inline __attribute__((always_inline)) void tile_store(const Tile& t, float* dst, int64_t ld) {
    #pragma GCC unroll 8
    for (int i = 0; i < 6; i++)
        _mm256_storeu_ps(dst + i * ld, t.c[i][0]), _mm256_storeu_ps(dst + i * ld + 8, t.c[i][1]);
}

// t.c[i] += x[i][o] * v (16 channels): 6 broadcasts, 2 loads, 12 FMAs.
inline __attribute__((always_inline)) void tile_fma(Tile& t, const float* const* x, int64_t o,
                                                    const float* v) {
    const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
    #pragma GCC unroll 8
    for (int i = 0; i < 6; i++) {
        const __m256 a = _mm256_broadcast_ss(x[i] + o);
        t.c[i][0] = _mm256_fmadd_ps(a, v0, t.c[i][0]);
        t.c[i][1] = _mm256_fmadd_ps(a, v1, t.c[i][1]);
    }
}

// Transposes the 8x8 block r[0..7] in place.
inline void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 2; i++) {
        s[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

// r[j] = column j of the 8x8 block whose rows start at src + i * ld.
inline void load_transposed8(const float* src, int64_t ld, __m256 r[8]) {
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld);
    transpose8(r);
}

}  // namespace

ImplicitConv implicit_prepare(const float* w, const ConvDims& d) {
    ImplicitConv ic;
    ic.K = d.K(), ic.P = d.P();
    ic.Kp = (ic.K + kImplicitKR - 1) / kImplicitKR * kImplicitKR;
    ic.Pp = (ic.P + kImplicitPR - 1) / kImplicitPR * kImplicitPR;
    ic.OCp = (d.OC + kImplicitOR - 1) / kImplicitOR * kImplicitOR;
    ic.HP = d.H + 2 * d.pad, ic.WP = d.W + 2 * d.pad;
    ic.off.assign(ic.Kp, 0);
    for (int64_t c = 0; c < d.Cg(); c++)
        for (int64_t kh = 0; kh < d.KH; kh++)
            for (int64_t kw = 0; kw < d.KW; kw++)
                ic.off[(c * d.KH + kh) * d.KW + kw] = (int32_t)((c * ic.HP + kh) * ic.WP + kw);
    ic.pix.resize(ic.Pp);
    for (int64_t p = 0; p < ic.Pp; p++) {
        const int64_t q = std::min(p, ic.P - 1);
        ic.pix[p] = (int32_t)((q / d.OW) * d.stride * ic.WP + (q % d.OW) * d.stride);
    }
    if (w) {
        ic.wpk.assign(ic.OCp * ic.K, 0.0f);
        for (int64_t oc = 0; oc < d.OC; oc++)
            for (int64_t k = 0; k < ic.K; k++)
                ic.wpk[((oc / kImplicitOR) * ic.K + k) * kImplicitOR + oc % kImplicitOR] = w[oc * ic.K + k];
    }
    return ic;
}

void implicit_forward(const ImplicitConv& ic, const float* xp, float* outT) {
    for (int64_t ob = 0; ob < ic.OCp; ob += kImplicitOR)
        for (int64_t p = 0; p < ic.Pp; p += kImplicitPR) {
            const float* x[6];
            #pragma GCC unroll 8
            for (int i = 0; i < 6; i++) x[i] = xp + ic.pix[p + i];
            Tile t;
            tile_zero(t);
            const float* w = ic.wpk.data() + ob * ic.K;
            for (int64_t k = 0; k < ic.K; k++, w += kImplicitOR) tile_fma(t, x, ic.off[k], w);
            tile_store(t, outT + p * ic.OCp + ob, ic.OCp);
        }
}

void implicit_weight_grad(const ImplicitConv& ic, const float* xp, const float* gT, float* dwT) {
    for (int64_t ob = 0; ob < ic.OCp; ob += kImplicitOR)
        for (int64_t kb = 0; kb < ic.Kp; kb += kImplicitKR) {
            const float* x[6];
            #pragma GCC unroll 8
            for (int i = 0; i < 6; i++) x[i] = xp + ic.off[kb + i];
            Tile t;
            tile_load(t, dwT + kb * ic.OCp + ob, ic.OCp);
            const float* g = gT + ob;
            for (int64_t p = 0; p < ic.P; p++, g += ic.OCp) tile_fma(t, x, ic.pix[p], g);
            tile_store(t, dwT + kb * ic.OCp + ob, ic.OCp);
        }
}

void transpose_to_planes(const float* t, int64_t ld, int64_t OC, int64_t P, const float* bias,
                         bool accumulate, float* out) {
    const int64_t OC8 = OC / 8 * 8, P8 = P / 8 * 8;
    for (int64_t o = 0; o < OC8; o += 8)
        for (int64_t p = 0; p < P8; p += 8) {
            __m256 r[8];
            load_transposed8(t + p * ld + o, ld, r);  // r[j]: channel o+j, pixels p .. p+7
            #pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                float* dst = out + (o + j) * P + p;
                const __m256 base = accumulate ? _mm256_loadu_ps(dst)
                                               : _mm256_set1_ps(bias ? bias[o + j] : 0.0f);
                _mm256_storeu_ps(dst, _mm256_add_ps(base, r[j]));
            }
        }
    // The channels past OC8 at every pixel, and the pixels past P8 of the others.
    for (int64_t o = 0; o < OC; o++)
        for (int64_t p = o < OC8 ? P8 : 0; p < P; p++) {
            float& dst = out[o * P + p];
            dst = (accumulate ? dst : bias ? bias[o] : 0.0f) + t[p * ld + o];
        }
}

void transpose_from_planes(const float* g, int64_t OC, int64_t P, float* t, int64_t ld) {
    const int64_t OC8 = OC / 8 * 8, P8 = P / 8 * 8;
    for (int64_t o = 0; o < OC8; o += 8)
        for (int64_t p = 0; p < P8; p += 8) {
            __m256 r[8];
            load_transposed8(g + o * P + p, P, r);  // r[i]: pixel p+i, channels o .. o+7
            #pragma GCC unroll 8
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(t + (p + i) * ld + o, r[i]);
        }
    for (int64_t p = 0; p < P; p++)
        for (int64_t o = p < P8 ? OC8 : 0; o < ld; o++) t[p * ld + o] = o < OC ? g[o * P + p] : 0.0f;
}

}  // namespace qf::detail
#endif  // __AVX2__
