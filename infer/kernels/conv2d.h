// A prepared int8 convolution: construct once per layer (validates the
// parameters, packs the weights, folds zero points into the bias, splits the
// multipliers), then run() on any batch. It picks its kernel at prepare time:
//  - depthwise 3x3 (groups == in_c == out_c): the direct kernel of qs8_dwconv3x3.h;
//  - 1x1 without padding (any stride, any groups): the GEMM on the input's
//    pixels as they lie in memory, no copy;
//  - 3x3 stride 1, groups 1, with at least kWinogradMinInChannels input
//    channels and weights that keep it inside int32 (pack_winograd3x3): exact integer Winograd
//    F(2x2, 3x3) (qs8_winograd3x3.h) on the padded int16 input below, 16
//    multiplies per 2x2 outputs instead of 36. Below 16 input channels its
//    transforms cost what it saves (build/bench/conv3x3_algorithms);
//  - anything else: the input is first sign-extended to int16 inside its
//    padding (the input zero point), once per run; then each output pixel's
//    GEMM row is read in place from it, as one run of values per kernel row
//    (QNNPACK's indirect convolution, by rows instead of taps): no im2col
//    copy. One GEMM per group.
// run() spreads the output pixels of the whole batch over the OpenMP threads.
#pragma once
#include <cstdint>
#include <vector>

#include "infer/kernels/params.h"
#include "infer/kernels/qs8_dwconv3x3.h"
#include "infer/kernels/qs8_gemm.h"
#include "infer/kernels/qs8_winograd3x3.h"

namespace qf::infer {

class Conv2d {
public:
    // weights [out_c][kernel_h][kernel_w][in_c / groups]; bias [out_c] or null.
    // Throws ParamError for invalid parameters. `winograd` says when a 3x3
    // stride-1 convolution runs on Winograd (tests and benchmarks compare).
    enum class Winograd { when_faster, never, whenever_exact };
    Conv2d(const Conv2dParams& p, const int8_t* weights, const int32_t* bias,
           Winograd winograd = Winograd::when_faster);

    // input [batch][in_h][in_w][in_c] -> output [batch][out_h][out_w][out_c].
    // use_simd false runs the portable kernels (for tests).
    void run(int batch, const int8_t* input, int8_t* output, bool use_simd = true) const;

    const Conv2dParams& params() const { return params_; }
    bool uses_winograd() const { return kernel_ == Kernel::winograd3x3; }

private:
    enum class Kernel { depthwise3x3, gemm_pointwise, gemm_padded_input, winograd3x3 };
    void run_gemm(int batch, const int8_t* input, int8_t* output, bool use_simd) const;

    Conv2dParams params_;
    Kernel kernel_;
    std::vector<PackedGemm> groups_;  // the GEMM kernels: one per group
    std::vector<size_t> window_runs_;  // gemm_padded_input: where each run of a window starts
    PackedDepthwise3x3 depthwise_;
    PackedWinograd3x3 winograd_;
};

// A prepared fully connected layer: the GEMM with one row per batch item.
class FullyConnected {
public:
    // weights [out_features][in_features]; bias [out_features] or null.
    FullyConnected(const FullyConnectedParams& p, const int8_t* weights, const int32_t* bias);
    // input [batch][in_features] -> output [batch][out_features].
    void run(int batch, const int8_t* input, int8_t* output, bool use_simd = true) const;

    const FullyConnectedParams& params() const { return params_; }

private:
    FullyConnectedParams params_;
    PackedGemm gemm_;
};

}  // namespace qf::infer
