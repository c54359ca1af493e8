// The residual add, vectorized: reference::add's formula (kernels/params.h,
// AddParams) on 8 int32 lanes at a time with AVX2, bit-exact with it.
// OpenMP over chunks of the tensor when it is large enough to pay for the
// threads' start (small adds run on the calling thread).
#pragma once
#include <cstdint>

#include "infer/kernels/params.h"

namespace qf::infer {

// output[i] = add(input1[i], input2[i]) for i < size. `use_simd` false runs
// the reference kernel (tests).
void qs8_add(const AddParams& p, int64_t size, const int8_t* input1, const int8_t* input2, int8_t* output,
             bool use_simd = true);

}  // namespace qf::infer
