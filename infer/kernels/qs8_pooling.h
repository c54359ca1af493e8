// Max and average pooling (any window, stride and padding; global average
// pooling is the average pool whose window is the whole image), NHWC,
// vectorized over channels with AVX2: 32 channels per vpmaxsb for max
// pooling, 8 int32 window sums per vector for average pooling, requantized
// with requantize_avx2.h. Bit-exact with reference::max_pool and
// reference::average_pool (kernels/params.h, PoolParams, gives the formulas).
// OpenMP over batch x output rows when the work pays for the threads.
#pragma once
#include <cstdint>

#include "infer/kernels/params.h"

namespace qf::infer {

// input [batch][in_h][in_w][channels] -> output [batch][out_h][out_w][channels].
// `use_simd` false runs the scalar channel loops (tests).
void qs8_max_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output, bool use_simd = true);
void qs8_average_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output, bool use_simd = true);

}  // namespace qf::infer
