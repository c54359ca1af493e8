// Packing of the int8 GEMM's weights, and its portable scalar kernel.
#include "infer/kernels/qs8_gemm.h"

#include <algorithm>

#include "infer/kernels/centered_weights.h"

namespace qf::infer {

PackedGemm pack_gemm_layout(int n, int k, const int16_t* weights, int segments) {
    PackedGemm g;
    g.n = n;
    g.k = k;
    g.segments = segments;
    const int run = k / segments;
    g.segment_pairs = (run + 1) / 2;
    g.k_pairs = segments * g.segment_pairs;
    g.n_tiles = (n + kGemmTileN - 1) / kGemmTileN;
    g.weights.assign(size_t(g.n_tiles) * g.k_pairs * kGemmTileN * 2, 0);
    g.bias.assign(size_t(g.n_tiles) * kGemmTileN, 0);
    for (int col = 0; col < n; ++col) {
        const int16_t* row = weights + size_t(col) * k;
        int16_t* tile = g.weights.data() + size_t(col / kGemmTileN) * g.k_pairs * kGemmTileN * 2;
        for (int i = 0; i < k; ++i) {
            const int at = i / run * 2 * g.segment_pairs + i % run;  // its place in the padded runs
            tile[(size_t(at / 2) * kGemmTileN + col % kGemmTileN) * 2 + at % 2] = row[i];
        }
    }
    return g;
}

PackedGemm pack_gemm(int n, int k, const int8_t* weights, const int32_t* bias,
                     const std::vector<int32_t>& weight_zero_points, int32_t input_zero_point,
                     const std::vector<QuantizedMultiplier>& multipliers, OutputRange output,
                     int segments) {
    const CenteredWeights centered =
        center_weights(n, k, weights, bias, weight_zero_points, input_zero_point);
    PackedGemm g = pack_gemm_layout(n, k, centered.values.data(), segments);
    std::copy(centered.folded_bias.begin(), centered.folded_bias.end(), g.bias.begin());
    g.requantization = ChannelRequantization(multipliers, n, g.n_tiles * kGemmTileN, output);
    return g;
}

// Sign-extends `count` rows of k int8 into scratch rows of 2 * k_pairs int16
// (an odd k gets a trailing 0, matching the packed weights' padding).
static void widen_rows(const PackedGemm& g, const int8_t* const* rows, int count, int16_t* scratch) {
    const size_t row_len = 2 * size_t(g.k_pairs);
    for (int r = 0; r < count; ++r) {
        int16_t* dst = scratch + r * row_len;
        for (int i = 0; i < g.k; ++i) dst[i] = rows[r][i];
        if (g.k % 2) dst[g.k] = 0;
    }
}

void qs8_gemm_panel_scalar(const PackedGemm& g, const int8_t* const* rows, int count, int8_t* c,
                           size_t ldc, int16_t* scratch) {
    widen_rows(g, rows, count, scratch);
    const ScratchRuns runs(g, scratch, count);
    qs8_gemm_panel_widened_scalar(g, runs.runs, count, c, ldc);
}

// Row r, column col of the product (no bias), from the runs of row r.
static int32_t dot_runs(const PackedGemm& g, const int16_t* const* runs, int r, int col) {
    const int16_t* w = g.weights.data() + size_t(col / kGemmTileN) * g.k_pairs * kGemmTileN * 2 + (col % kGemmTileN) * 2;
    int32_t acc = 0;
    for (int s = 0; s < g.segments; ++s) {
        const int16_t* a = runs[r * g.segments + s];
        for (int p = 0; p < g.segment_pairs; ++p, w += kGemmTileN * 2) acc += a[2 * p] * w[0] + a[2 * p + 1] * w[1];
    }
    return acc;
}

void qs8_gemm_panel_widened_scalar(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c,
                                   size_t ldc) {
    for (int r = 0; r < count; ++r)
        for (int col = 0; col < g.n; ++col)
            c[r * ldc + col] = int8_t(g.requantization.apply(g.bias[size_t(col)] + dot_runs(g, runs, r, col), col));
}

void qs8_gemm_products_int32_scalar(const PackedGemm* gemms, int count_gemms, const int16_t* a, size_t a_gemm_stride,
                                    size_t a_row_stride, int rows, int32_t* c, size_t c_gemm_stride, size_t ldc) {
    for (int i = 0; i < count_gemms; ++i) {
        const PackedGemm& g = gemms[i];
        for (int r = 0; r < rows; ++r) {
            const int16_t* row = a + i * a_gemm_stride + r * a_row_stride;
            for (int col = 0; col < g.n_tiles * kGemmTileN; ++col)
                c[i * c_gemm_stride + r * ldc + col] = col < g.n ? dot_runs(g, &row, 0, col) : 0;
        }
    }
}

void qs8_gemm_panel(const PackedGemm& g, const int8_t* const* rows, int count, int8_t* c, size_t ldc,
                    int16_t* scratch) {
#ifdef __AVX2__
    qs8_gemm_panel_avx2(g, rows, count, c, ldc, scratch);
#else
    qs8_gemm_panel_scalar(g, rows, count, c, ldc, scratch);
#endif
}

void qs8_gemm_panel_widened(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c, size_t ldc) {
#ifdef __AVX2__
    qs8_gemm_panel_widened_avx2(g, runs, count, c, ldc);
#else
    qs8_gemm_panel_widened_scalar(g, runs, count, c, ldc);
#endif
}

void qs8_gemm_products_int32(const PackedGemm* gemms, int count_gemms, const int16_t* a, size_t a_gemm_stride,
                             size_t a_row_stride, int rows, int32_t* c, size_t c_gemm_stride, size_t ldc) {
#ifdef __AVX2__
    qs8_gemm_products_int32_avx2(gemms, count_gemms, a, a_gemm_stride, a_row_stride, rows, c, c_gemm_stride, ldc);
#else
    qs8_gemm_products_int32_scalar(gemms, count_gemms, a, a_gemm_stride, a_row_stride, rows, c, c_gemm_stride, ldc);
#endif
}

}  // namespace qf::infer
