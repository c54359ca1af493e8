// requantize.h's functions on 8 int32 lanes at once, each lane with its own
// multiplier and shift (one per output channel), for the AVX2 kernels.
// Bit-exact with the scalar functions (tests/infer/test_requantize.cpp).
#pragma once
#ifdef __AVX2__
#include <immintrin.h>

#include <cstdint>

namespace qf::infer::avx2 {

// The per-lane constants of requantize(), built once per 8 output channels.
// exponent = 31 - shift, in [1, 62]. The 64-bit products of the even and the
// odd lanes are shifted separately, so their constants come in two halves.
struct RequantizeLanes {
    __m256i M0;                           // 32-bit lanes
    __m256i exponent_even, exponent_odd;  // 64-bit lanes: lanes 0,2,4,6 / 1,3,5,7
    __m256i nudge_even, nudge_odd;        // 64-bit: 2^62 + 2^(exponent - 1)
    __m256i offset;                       // 32-bit: 2^(62 - exponent) mod 2^32
    __m256i acc_min, acc_max;             // where the product still fits int32
    __m256i zero_point, min_minus_zero_point, max_minus_zero_point;
};

inline RequantizeLanes make_requantize_lanes(__m256i M0, __m256i shift, int32_t zero_point, int32_t qmin,
                                             int32_t qmax) {
    const __m256i exponent = _mm256_sub_epi32(_mm256_set1_epi32(31), shift);
    const __m256i even = _mm256_and_si256(exponent, _mm256_set1_epi64x(0xFFFFFFFF));
    const __m256i odd = _mm256_srli_epi64(exponent, 32);
    const __m256i one64 = _mm256_set1_epi64x(1), two62 = _mm256_set1_epi64x(int64_t(1) << 62);
    auto nudge = [&](__m256i e) { return _mm256_add_epi64(two62, _mm256_sllv_epi64(one64, _mm256_sub_epi64(e, one64))); };
    // A multiplier of 2^shift or more (shift > 0) could carry acc past int32;
    // |acc| <= 2^(31 - shift) - 1 keeps it inside, and any acc beyond that
    // scales far past every output range, so clamping it changes nothing.
    const __m256i left_shift = _mm256_max_epi32(shift, _mm256_setzero_si256());
    const __m256i acc_max = _mm256_srlv_epi32(_mm256_set1_epi32(INT32_MAX), left_shift);
    return {M0,
            even,
            odd,
            nudge(even),
            nudge(odd),
            // sllv gives 0 for counts of 32 or more: 2^(62 - e) mod 2^32.
            _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_sub_epi32(_mm256_set1_epi32(62), exponent)),
            _mm256_sub_epi32(_mm256_set1_epi32(-1), acc_max),  // -acc_max - 1: INT32_MIN when M < 1
            acc_max,
            _mm256_set1_epi32(zero_point),
            _mm256_set1_epi32(qmin - zero_point),
            _mm256_set1_epi32(qmax - zero_point)};
}

// Lane i: multiply_by_quantized_multiplier(acc[i], ...) for acc within
// [acc_min, acc_max]. One rounding of the exact product, ties away from
// zero: floor((x + 2^(e-1) - [x < 0]) / 2^e) with x = acc * M0. AVX2 has no
// 64-bit arithmetic shift, so x is first lifted by 2^62 (|x| < 2^62 makes it
// non-negative), shifted logically, and the 2^(62-e) that the lift became is
// taken off the low 32 bits, which hold the (int32) result.
inline __m256i multiply_by_quantized_multiplier(__m256i acc, const RequantizeLanes& q) {
    const __m256i negative = _mm256_cmpgt_epi32(_mm256_setzero_si256(), acc);  // -1 where acc < 0
    auto lifted = [&](__m256i product, __m256i nudge, __m256i minus_one) {
        return _mm256_add_epi64(_mm256_add_epi64(product, nudge), minus_one);
    };
    const __m256i even = lifted(_mm256_mul_epi32(acc, q.M0), q.nudge_even, _mm256_shuffle_epi32(negative, 0xA0));
    const __m256i odd = lifted(_mm256_mul_epi32(_mm256_shuffle_epi32(acc, 0xF5), _mm256_shuffle_epi32(q.M0, 0xF5)),
                               q.nudge_odd, _mm256_shuffle_epi32(negative, 0xF5));
    const __m256i shifted = _mm256_blend_epi32(_mm256_srlv_epi64(even, q.exponent_even),
                                               _mm256_slli_epi64(_mm256_srlv_epi64(odd, q.exponent_odd), 32), 0xAA);
    return _mm256_sub_epi32(shifted, q.offset);
}

// Lane i: requantize(acc[i], ...) with lane i's constants.
inline __m256i requantize(__m256i acc, const RequantizeLanes& q) {
    acc = _mm256_min_epi32(_mm256_max_epi32(acc, q.acc_min), q.acc_max);
    __m256i y = multiply_by_quantized_multiplier(acc, q);
    y = _mm256_min_epi32(_mm256_max_epi32(y, q.min_minus_zero_point), q.max_minus_zero_point);
    return _mm256_add_epi32(y, q.zero_point);
}

// Stores 8 int32 lanes already within [-128, 127] as 8 int8.
inline void store_int8x8(int8_t* dst, __m256i v) {
    const __m128i v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packs_epi16(v16, v16));
}

// Stores lanes a[0..8) then b[0..8), already within [-128, 127], as 16 int8.
inline void store_int8x16(int8_t* dst, __m256i a, __m256i b) {
    // packs works within 128-bit halves: [a0-3 b0-3 | a4-7 b4-7]; the permute restores the order.
    const __m256i ab16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    const __m128i ab8 = _mm_packs_epi16(_mm256_castsi256_si128(ab16), _mm256_extracti128_si256(ab16, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), ab8);
}

}  // namespace qf::infer::avx2
#endif  // __AVX2__
