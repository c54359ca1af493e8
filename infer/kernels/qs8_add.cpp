// The AVX2 residual add: each block of 8 values is widened to int32, shifted
// by kAddLeftShift, scaled by its input's multiplier, summed and requantized
// with the scalar functions' vector twins (requantize_avx2.h), so the result
// is the reference kernel's bit for bit. The overflow argument is the
// reference's (reference/add.cpp): every intermediate stays below 2^29.
#include "infer/kernels/qs8_add.h"

#include <algorithm>

#include "infer/kernels/reference/reference.h"
#include "infer/kernels/requantize_avx2.h"
#include "infer/kernels/threading.h"

namespace qf::infer {

// Values per OpenMP chunk: a thread takes at least one (threading.h).
constexpr int64_t kAddChunk = kMinValuesPerThread;

#ifdef __AVX2__
namespace {

avx2::RequantizeLanes lanes_of(QuantizedMultiplier m, OutputRange out = {0, INT32_MIN, INT32_MAX}) {
    return avx2::make_requantize_lanes(_mm256_set1_epi32(m.M0), _mm256_set1_epi32(m.shift), out.zero_point,
                                       out.min, out.max);
}

void add_avx2(const AddParams& p, int64_t size, const int8_t* input1, const int8_t* input2, int8_t* output) {
    const avx2::RequantizeLanes m1 = lanes_of(p.input1_multiplier), m2 = lanes_of(p.input2_multiplier);
    const avx2::RequantizeLanes out = lanes_of(p.output_multiplier, p.output);
    const __m256i z1 = _mm256_set1_epi32(p.input1_zero_point), z2 = _mm256_set1_epi32(p.input2_zero_point);
    auto load8 = [](const int8_t* src) {
        return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    };
    int64_t i = 0;
    for (; i + 8 <= size; i += 8) {
        const __m256i shifted1 = _mm256_slli_epi32(_mm256_sub_epi32(load8(input1 + i), z1), kAddLeftShift);
        const __m256i shifted2 = _mm256_slli_epi32(_mm256_sub_epi32(load8(input2 + i), z2), kAddLeftShift);
        const __m256i sum = _mm256_add_epi32(avx2::multiply_by_quantized_multiplier(shifted1, m1),
                                             avx2::multiply_by_quantized_multiplier(shifted2, m2));
        avx2::store_int8x8(output + i, avx2::requantize(sum, out));
    }
    if (i < size) reference::add(p, size - i, input1 + i, input2 + i, output + i);
}

}  // namespace
#endif

void qs8_add(const AddParams& p, int64_t size, const int8_t* input1, const int8_t* input2, int8_t* output,
             bool use_simd) {
    auto kernel = reference::add;
#ifdef __AVX2__
    if (use_simd) kernel = add_avx2;
#endif
    const int64_t chunks = (size + kAddChunk - 1) / kAddChunk;
#pragma omp parallel for schedule(static) num_threads(threads_for(size, kMinValuesPerThread))
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t first = chunk * kAddChunk;
        kernel(p, std::min(kAddChunk, size - first), input1 + first, input2 + first, output + first);
    }
}

}  // namespace qf::infer
