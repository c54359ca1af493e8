// Direct depthwise 3x3 convolution (groups == in_c == out_c, any stride and
// padding) with fused requantization, NHWC, vectorized over channels.
//
// Prepared like the GEMM (qs8_gemm.h): weights stored once as int16 w - zw,
// and the input zero point folded into the bias as -zx * sum_taps (w - zw),
// so the kernel sums (w - zw) * x over the 9 taps; padded taps read a row of
// zx, which the folded term cancels. The int16 weights pair two taps per
// 32-bit lane for vpmaddwd: [channel_blocks][5 tap pairs][8 channels][2]
// (tap 9 pairs with a zero), zero beyond the last channel. The accumulator
// bound is the GEMM's, with k = 9.
#pragma once
#include <cstdint>
#include <vector>

#include "infer/kernels/channel_requantization.h"
#include "infer/kernels/params.h"

namespace qf::infer {

constexpr int kDepthwiseBlock = 8;      // channels per vector
constexpr int kDepthwiseTapPairs = 5;   // ceil(9 / 2)

struct PackedDepthwise3x3 {
    Conv2dParams params;
    int channel_blocks = 0;           // ceil(channels / kDepthwiseBlock)
    std::vector<int16_t> weights;     // [channel_blocks][kDepthwiseTapPairs][kDepthwiseBlock][2]
    // The same weights for the AVX2 loop over 16 channels (whole pairs of
    // blocks), in the order vpunpck{l,h}wd leaves a 16-channel tap pair:
    // [channels / 16][kDepthwiseTapPairs][channels 0-3, 8-11, 4-7, 12-15][2].
    std::vector<int16_t> weights16;
    std::vector<int32_t> bias;        // [channel_blocks * kDepthwiseBlock]: bias - zx * sum (w - zw)
    std::vector<int8_t> padding_row;  // channels values of zx: what out-of-image taps read
    ChannelRequantization requantization;
};

// Whether `p` is a convolution this kernel runs.
bool is_depthwise3x3(const Conv2dParams& p);
// p must have passed validate() and is_depthwise3x3(); weights [channels][3][3][1].
PackedDepthwise3x3 pack_depthwise3x3(const Conv2dParams& p, const int8_t* weights, const int32_t* bias);
// input [batch][in_h][in_w][channels] -> output [batch][out_h][out_w][channels].
// OpenMP over batch x output rows. `use_simd` false runs the scalar path (tests).
void qs8_dwconv3x3(const PackedDepthwise3x3& dw, int batch, const int8_t* input, int8_t* output,
                   bool use_simd = true);

}  // namespace qf::infer
