// The int8 GEMM with fused requantization that convolutions (on windows of
// their padded input, or directly for 1x1) and fully connected layers run on:
//
//   C[m][n] = requantize(bias[n] + sum_k (W[n][k] - zw[n]) * (A[m][k] - za))
//
// A: int8 rows (activations, zero point za), W: int8 [n][k] (weights, zero
// point zw per row or one for all), C: int8 rows.
//
// Prepare once, run many (QNNPACK's scheme): pack_gemm() checks nothing
// itself (Conv2d and FullyConnected, which own it, call validate() first)
// but does all the per-weight work once:
//  - W - zw is stored as int16 (it lies in [-255, 255]), so the weight zero
//    point costs nothing at run time and A needs no row sums: the kernels
//    sign-extend A to int16 anyway (below), and the expanded formula
//      sum_k (W - zw)(A - za) = sum_k (W - zw) A  -  za * sum_k (W - zw)
//    leaves one per-channel constant, folded into the bias here.
//  - The int16 weights are laid out in tiles of kGemmTileN columns, two k
//    per 32-bit lane: [n_tiles][k_pairs][kGemmTileN][2], zero beyond n and k.
//  - A row of A need not be contiguous: it may be `segments` runs of equal
//    length (a convolution reads one run per kernel row straight from its
//    padded input, conv2d.cpp). Each run is padded to whole pairs on the
//    weight side with zeros, so the kernel may read one value past an odd
//    run: whatever lies there is multiplied by 0.
//
// The AVX2 kernel sign-extends A to int16 and multiplies with vpmaddwd, which
// sums two int16 x int16 products into an exact int32: no saturating 16-bit
// intermediate (unlike vpmaddubsw on full-range values). Accumulator bound:
// validate() proved |bias| + (|za| + 128) * sum_k |W - zw| <= INT32_MAX; the
// folded bias is at most |bias| + |za| sum_k |W - zw| and the running sum of
// (W - zw) A at most 128 sum_k |W - zw|, so no partial sum leaves int32.
#pragma once
#include <cstdint>
#include <vector>

#include "infer/kernels/channel_requantization.h"
#include "infer/kernels/params.h"

namespace qf::infer {

constexpr int kGemmTileM = 4;   // rows of A per kernel call (a "panel")
constexpr int kGemmTileN = 16;  // output channels per register tile (two 8-lane vectors)

struct PackedGemm {
    int n = 0, k = 0;
    int segments = 1;             // runs per row of A, k / segments values each
    int segment_pairs = 0;        // ceil(k / segments / 2): pairs per run
    int k_pairs = 0;              // segments * segment_pairs
    int n_tiles = 0;              // ceil(n / kGemmTileN)
    std::vector<int16_t> weights;  // [n_tiles][k_pairs][kGemmTileN][2]: W - zw
    std::vector<int32_t> bias;     // [n_tiles * kGemmTileN]: bias - za * sum_k (W - zw)
    ChannelRequantization requantization;
};

// weights [n][k] (row stride k); bias [n] or null; weight_zero_points and
// multipliers have 1 element or n; k divisible by segments.
PackedGemm pack_gemm(int n, int k, const int8_t* weights, const int32_t* bias,
                     const std::vector<int32_t>& weight_zero_points, int32_t input_zero_point,
                     const std::vector<QuantizedMultiplier>& multipliers, OutputRange output,
                     int segments = 1);

// The weight layout alone, from int16 values [n][k] (W - zw, or any values
// in [-2^15, 2^15)); bias zero, no requantization: for callers that add
// their own bias and output stage (the Winograd kernel).
PackedGemm pack_gemm_layout(int n, int k, const int16_t* weights, int segments = 1);

// Int16 scratch one thread needs for qs8_gemm_panel: kGemmTileM rows of 2 * k_pairs.
inline size_t gemm_scratch_size(const PackedGemm& g) { return size_t(kGemmTileM) * 2 * size_t(g.k_pairs); }

// The widened scratch rows of qs8_gemm_panel as the run pointers of
// qs8_gemm_panel_widened (one run per row).
struct ScratchRuns {
    const int16_t* runs[kGemmTileM];
    ScratchRuns(const PackedGemm& g, const int16_t* scratch, int count) {
        for (int r = 0; r < count; ++r) runs[r] = scratch + r * 2 * size_t(g.k_pairs);
    }
};

// Computes `count` (1..kGemmTileM) rows of C: row r from A row rows[r] (k
// int8 values) into c + r * ldc (n int8 values). Runs the AVX2 kernel where
// the build has AVX2, else the scalar one.
void qs8_gemm_panel(const PackedGemm& g, const int8_t* const* rows, int count, int8_t* c, size_t ldc,
                    int16_t* scratch);
// The portable kernel on the same packed data (tested against the AVX2 one).
void qs8_gemm_panel_scalar(const PackedGemm& g, const int8_t* const* rows, int count, int8_t* c,
                           size_t ldc, int16_t* scratch);
#ifdef __AVX2__
void qs8_gemm_panel_avx2(const PackedGemm& g, const int8_t* const* rows, int count, int8_t* c,
                         size_t ldc, int16_t* scratch);
#endif

// The same kernels on rows already sign-extended to int16, given as runs:
// run s of row r (segment_pairs pairs) starts at runs[r * g.segments + s].
// For one run per row, a pointer to 2 * k_pairs int16 (an odd k padded with
// a 0).
void qs8_gemm_panel_widened(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c, size_t ldc);
void qs8_gemm_panel_widened_scalar(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c,
                                   size_t ldc);
#ifdef __AVX2__
void qs8_gemm_panel_widened_avx2(const PackedGemm& g, const int16_t* const* runs, int count, int8_t* c,
                                 size_t ldc);
#endif

// The products alone, without bias and output stage, of several weight
// matrices with one panel each (the Winograd kernel's 16 tile positions): for
// matrix i < count_gemms (segments == 1) and row r < rows (1..kGemmTileM),
// whose 2 * k_pairs int16 start at a + i * a_gemm_stride + r * a_row_stride,
//   c[i * c_gemm_stride + r * ldc + col] = sum_k W_i'[col][k] * A_i[r][k]
// as int32 for every col < n_tiles * kGemmTileN (0 beyond n: c's rows must
// have room for whole tiles). The caller proves the sums fit.
void qs8_gemm_products_int32(const PackedGemm* gemms, int count_gemms, const int16_t* a, size_t a_gemm_stride,
                             size_t a_row_stride, int rows, int32_t* c, size_t c_gemm_stride, size_t ldc);
void qs8_gemm_products_int32_scalar(const PackedGemm* gemms, int count_gemms, const int16_t* a, size_t a_gemm_stride,
                                    size_t a_row_stride, int rows, int32_t* c, size_t c_gemm_stride, size_t ldc);
#ifdef __AVX2__
void qs8_gemm_products_int32_avx2(const PackedGemm* gemms, int count_gemms, const int16_t* a, size_t a_gemm_stride,
                                  size_t a_row_stride, int rows, int32_t* c, size_t c_gemm_stride, size_t ldc);
#endif

}  // namespace qf::infer
