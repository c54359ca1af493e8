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
        __m256i acc00 = _mm256_setzero_si256(), acc01 = _mm256_setzero_si256();
        __m256i acc10 = _mm256_setzero_si256(), acc11 = _mm256_setzero_si256();
        __m256i acc20 = _mm256_setzero_si256(), acc21 = _mm256_setzero_si256();
        __m256i acc30 = _mm256_setzero_si256(), acc31 = _mm256_setzero_si256();
        for (int s = 0; s < segments; ++s) {
            const int16_t *a0 = row0[s], *a1 = row1[s], *a2 = row2[s], *a3 = row3[s];
            for (int p = 0; p < g.segment_pairs; ++p, w += kGemmTileN * 2) {
                __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));       // channels 0-7
                __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16));  // channels 8-15
                keep_in_register(w0, w1);
                __m256i a = broadcast_pair(a0 + 2 * p);
                acc00 = _mm256_add_epi32(acc00, _mm256_madd_epi16(a, w0));
                acc01 = _mm256_add_epi32(acc01, _mm256_madd_epi16(a, w1));
                a = broadcast_pair(a1 + 2 * p);
                acc10 = _mm256_add_epi32(acc10, _mm256_madd_epi16(a, w0));
                acc11 = _mm256_add_epi32(acc11, _mm256_madd_epi16(a, w1));
                a = broadcast_pair(a2 + 2 * p);
                acc20 = _mm256_add_epi32(acc20, _mm256_madd_epi16(a, w0));
                acc21 = _mm256_add_epi32(acc21, _mm256_madd_epi16(a, w1));
                a = broadcast_pair(a3 + 2 * p);
                acc30 = _mm256_add_epi32(acc30, _mm256_madd_epi16(a, w0));
                acc31 = _mm256_add_epi32(acc31, _mm256_madd_epi16(a, w1));
            }
        }
        const __m256i acc[kGemmTileM][2] = {{acc00, acc01}, {acc10, acc11}, {acc20, acc21}, {acc30, acc31}};
        finish(tile, acc);
    }
}

void qs8_gemm_panel_widened_avx2(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c,
                                 size_t ldc) {
    for_each_tile(g, runs, count, [&](int tile, const __m256i (&acc)[kGemmTileM][2]) {
        const int col = tile * kGemmTileN;
        const __m256i bias0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.bias.data() + col));
        const __m256i bias1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.bias.data() + col + 8));
        const avx2::RequantizeLanes q0 = g.requantization.lanes(col);
        const avx2::RequantizeLanes q1 = g.requantization.lanes(col + 8);
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

void qs8_gemm_rows_widened_int32_avx2(const PackedGemm& g, const int16_t* const* runs, int count, int32_t* c,
                                      size_t ldc) {
    for (int first = 0; first < count; first += kGemmTileM, runs += kGemmTileM * g.segments, c += kGemmTileM * ldc) {
        const int rows = count - first < kGemmTileM ? count - first : kGemmTileM;
        for_each_tile(g, runs, rows, [&](int tile, const __m256i (&acc)[kGemmTileM][2]) {
            const int col = tile * kGemmTileN;
            const int cols = g.n - col < kGemmTileN ? g.n - col : kGemmTileN;
            for (int r = 0; r < rows; ++r) {
                int32_t* dst = c + r * ldc + col;
                if (cols == kGemmTileN) {
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), acc[r][0]);
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), acc[r][1]);
                } else {
                    int32_t tmp[kGemmTileN];
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tmp), acc[r][0]);
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tmp + 8), acc[r][1]);
                    std::memcpy(dst, tmp, sizeof(int32_t) * size_t(cols));
                }
            }
        });
    }
}

}  // namespace qf::infer
#endif  // __AVX2__
