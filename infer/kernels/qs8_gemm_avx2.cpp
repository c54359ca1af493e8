// The int8 GEMM's AVX2 kernel: a 4 x 16 register tile of int32 accumulators
// (4 rows of A by 16 output channels, 8 ymm registers), two k per step with
// vpmaddwd on int16 operands, and the requantization on the tile before it is
// stored. See qs8_gemm.h for the packing and the overflow bound.
#ifdef __AVX2__
#include <immintrin.h>

#include <cstring>

#include "infer/kernels/qs8_gemm.h"

namespace qf::infer {

static_assert(kGemmTileM == 4 && kGemmTileN == 16, "the kernel below is written for a 4 x 16 tile");

// Sign-extends `count` rows of k int8 into scratch rows of 2 * k_pairs int16.
static void widen_rows_avx2(const PackedGemm& g, const int8_t* const* rows, int count, int16_t* scratch) {
    const size_t row_len = 2 * size_t(g.k_pairs);
    for (int r = 0; r < count; ++r) {
        const int8_t* src = rows[r];
        int16_t* dst = scratch + r * row_len;
        int i = 0;
        for (; i + 16 <= g.k; i += 16) {
            const __m128i x8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_cvtepi8_epi16(x8));
        }
        for (; i < g.k; ++i) dst[i] = src[i];
        if (g.k % 2) dst[g.k] = 0;
    }
}

// The pair of int16 at p, repeated in all 8 lanes.
static inline __m256i broadcast_pair(const int16_t* p) {
    int32_t pair;
    std::memcpy(&pair, p, sizeof pair);
    return _mm256_set1_epi32(pair);
}

void qs8_gemm_panel_avx2(const PackedGemm& g, const int8_t* const* rows, int count, int8_t* c,
                         size_t ldc, int16_t* scratch) {
    widen_rows_avx2(g, rows, count, scratch);
    const ScratchRuns runs(g, scratch, count);
    qs8_gemm_panel_widened_avx2(g, runs.runs, count, c, ldc);
}

// GCC folds the weight loads into each of the 4 rows' vpmaddwd (8 loads
// where 2 do), which makes the loop load-bound; an empty asm that "changes"
// the registers makes it load each once.
static inline void keep_in_register(__m256i& a, __m256i& b) { asm("" : "+x"(a), "+x"(b)); }

// The 4 x 16 register tile: int32 accumulators of rows 0-3, channels 0-7
// (lo) and 8-15 (hi), as named members so that they stay in registers.
struct Tile4x16 {
    __m256i r0lo = _mm256_setzero_si256(), r0hi = _mm256_setzero_si256();
    __m256i r1lo = _mm256_setzero_si256(), r1hi = _mm256_setzero_si256();
    __m256i r2lo = _mm256_setzero_si256(), r2hi = _mm256_setzero_si256();
    __m256i r3lo = _mm256_setzero_si256(), r3hi = _mm256_setzero_si256();

    // Adds one k pair: w its 16 channels' weights [16][2], a0..a3 the pair of each row.
    void add_pair(const int16_t* w, const int16_t* a0, const int16_t* a1, const int16_t* a2, const int16_t* a3) {
        __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));       // channels 0-7
        __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16));  // channels 8-15
        keep_in_register(w0, w1);
        __m256i a = broadcast_pair(a0);
        r0lo = _mm256_add_epi32(r0lo, _mm256_madd_epi16(a, w0));
        r0hi = _mm256_add_epi32(r0hi, _mm256_madd_epi16(a, w1));
        a = broadcast_pair(a1);
        r1lo = _mm256_add_epi32(r1lo, _mm256_madd_epi16(a, w0));
        r1hi = _mm256_add_epi32(r1hi, _mm256_madd_epi16(a, w1));
        a = broadcast_pair(a2);
        r2lo = _mm256_add_epi32(r2lo, _mm256_madd_epi16(a, w0));
        r2hi = _mm256_add_epi32(r2hi, _mm256_madd_epi16(a, w1));
        a = broadcast_pair(a3);
        r3lo = _mm256_add_epi32(r3lo, _mm256_madd_epi16(a, w0));
        r3hi = _mm256_add_epi32(r3hi, _mm256_madd_epi16(a, w1));
    }
};

// Runs the 4 x 16 tile over every tile of channels and hands each tile's
// accumulators (row r, channels 0-7 and 8-15) to finish(tile, acc).
template <class Finish>
static inline void for_each_tile(const PackedGemm& g, const int16_t* const* runs, int count, Finish finish) {
    const int segments = g.segments;
    // Missing rows of a short panel repeat row 0: computed, never stored.
    const int16_t* const* row0 = runs;
    const int16_t* const* row1 = runs + (count > 1 ? 1 : 0) * segments;
    const int16_t* const* row2 = runs + (count > 2 ? 2 : 0) * segments;
    const int16_t* const* row3 = runs + (count > 3 ? 3 : 0) * segments;
    for (int tile = 0; tile < g.n_tiles; ++tile) {
        const int16_t* w = g.weights.data() + size_t(tile) * g.k_pairs * kGemmTileN * 2;
        Tile4x16 t;
        for (int s = 0; s < segments; ++s) {
            const int16_t *a0 = row0[s], *a1 = row1[s], *a2 = row2[s], *a3 = row3[s];
            for (int p = 0; p < g.segment_pairs; ++p, w += kGemmTileN * 2)
                t.add_pair(w, a0 + 2 * p, a1 + 2 * p, a2 + 2 * p, a3 + 2 * p);
        }
        const __m256i acc[kGemmTileM][2] = {{t.r0lo, t.r0hi}, {t.r1lo, t.r1hi}, {t.r2lo, t.r2hi}, {t.r3lo, t.r3hi}};
        finish(tile, acc);
    }
}

void qs8_gemm_panel_widened_avx2(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c,
                                 size_t ldc) {
    for_each_tile(g, runs, count, [&](int tile, const __m256i (&acc)[kGemmTileM][2]) {
        const int col = tile * kGemmTileN;
        const __m256i bias0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.bias.data() + col));
        const __m256i bias1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.bias.data() + col + 8));
        const avx2::RequantizeLanes& q0 = g.requantization.lanes(col);
        const avx2::RequantizeLanes& q1 = g.requantization.lanes(col + 8);
        const int cols = g.n - col < kGemmTileN ? g.n - col : kGemmTileN;
        for (int r = 0; r < count; ++r) {
            const __m128i out = avx2::requantize_to_int8x16(_mm256_add_epi32(acc[r][0], bias0),
                                                            _mm256_add_epi32(acc[r][1], bias1), q0, q1);
            int8_t* dst = c + r * ldc + col;
            if (cols == kGemmTileN) {
                _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), out);
            } else {  // the last, partial tile of channels
                int8_t tmp[kGemmTileN];
                _mm_storeu_si128(reinterpret_cast<__m128i*>(tmp), out);
                std::memcpy(dst, tmp, size_t(cols));
            }
        }
    });
}

void qs8_gemm_products_int32_avx2(const PackedGemm* gemms, int count_gemms, const int16_t* a, size_t a_gemm_stride,
                                  size_t a_row_stride, int rows, int32_t* c, size_t c_gemm_stride, size_t ldc) {
    // One call for all the matrices, and the tiles stored straight from their
    // registers: with the Winograd kernel's short rows (k = in_c) a call per
    // matrix cost as much again as its multiply-adds (callgrind).
    for (int i = 0; i < count_gemms; ++i, a += a_gemm_stride, c += c_gemm_stride) {
        const PackedGemm& g = gemms[i];
        // Missing rows of a short panel repeat row 0: computed, never stored.
        const int16_t* a0 = a;
        const int16_t* a1 = a + (rows > 1 ? 1 : 0) * a_row_stride;
        const int16_t* a2 = a + (rows > 2 ? 2 : 0) * a_row_stride;
        const int16_t* a3 = a + (rows > 3 ? 3 : 0) * a_row_stride;
        const int16_t* w = g.weights.data();
        for (int tile = 0; tile < g.n_tiles; ++tile) {
            Tile4x16 t;
            for (int p = 0; p < g.k_pairs; ++p, w += kGemmTileN * 2)
                t.add_pair(w, a0 + 2 * p, a1 + 2 * p, a2 + 2 * p, a3 + 2 * p);
            int32_t* dst = c + tile * kGemmTileN;
            auto store_row = [&](int r, __m256i lo, __m256i hi) {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * ldc), lo);
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * ldc + 8), hi);
            };
            store_row(0, t.r0lo, t.r0hi);
            if (rows > 1) store_row(1, t.r1lo, t.r1hi);
            if (rows > 2) store_row(2, t.r2lo, t.r2hi);
            if (rows > 3) store_row(3, t.r3lo, t.r3hi);
        }
    }
}

}  // namespace qf::infer
#endif  // __AVX2__
