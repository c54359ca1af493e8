// requantize.h's functions on 8 int32 lanes at once, each lane with its own
// multiplier and shift (one per output channel), for the AVX2 kernels.
// Bit-exact with the scalar functions (tests/infer/test_requantize.cpp).
#pragma once
#ifdef __AVX2__
#include <immintrin.h>

#include <cstdint>

namespace qf::infer::avx2 {

// Lane i: saturating_rounding_doubling_high_mul(a[i], b[i]).
// vpmuldq multiplies the even lanes to 64 bits, so the odd lanes are shifted
// down and multiplied apart. floor((ab + 2^30) / 2^31) keeps bits 31..62 of
// ab + 2^30: a logical 64-bit shift leaves them in the low half of each lane
// exactly as an arithmetic one would.
inline __m256i saturating_rounding_doubling_high_mul(__m256i a, __m256i b) {
    const __m256i nudge = _mm256_set1_epi64x(int64_t(1) << 30);
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, b), nudge);
    const __m256i odd = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32)), nudge);
    const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(_mm256_srli_epi64(odd, 31), 32),
                                            0xAA);
    // The one overflow: INT32_MIN * INT32_MIN saturates to INT32_MAX.
    const __m256i min = _mm256_set1_epi32(INT32_MIN);
    const __m256i overflow = _mm256_and_si256(_mm256_cmpeq_epi32(a, min), _mm256_cmpeq_epi32(b, min));
    return _mm256_blendv_epi8(high, _mm256_set1_epi32(INT32_MAX), overflow);
}

// Lane i: rounding_divide_by_pot(x[i], exponent[i]), exponents in [0, 31].
inline __m256i rounding_divide_by_pot(__m256i x, __m256i exponent) {
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, exponent), one);
    const __m256i remainder = _mm256_and_si256(x, mask);
    const __m256i negative = _mm256_cmpgt_epi32(_mm256_setzero_si256(), x);  // -1 where x < 0
    const __m256i threshold = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1), negative);
    const __m256i round_up = _mm256_cmpgt_epi32(remainder, threshold);      // -1 where rounding up
    return _mm256_sub_epi32(_mm256_srav_epi32(x, exponent), round_up);
}

// Lane i: saturating_left_shift(x[i], exponent[i]), exponents in [0, 31].
inline __m256i saturating_left_shift(__m256i x, __m256i exponent) {
    const __m256i max = _mm256_set1_epi32(INT32_MAX), min = _mm256_set1_epi32(INT32_MIN);
    const __m256i too_high = _mm256_cmpgt_epi32(x, _mm256_srav_epi32(max, exponent));
    const __m256i too_low = _mm256_cmpgt_epi32(_mm256_srav_epi32(min, exponent), x);
    const __m256i shifted = _mm256_sllv_epi32(x, exponent);
    return _mm256_blendv_epi8(_mm256_blendv_epi8(shifted, max, too_high), min, too_low);
}

// The per-lane constants of requantize(), loaded once per 8 output channels.
struct RequantizeLanes {
    __m256i M0, left_shift, right_shift;
    __m256i zero_point, min_minus_zero_point, max_minus_zero_point;
};

// Lane i: requantize(acc[i], ...) with lane i's constants.
inline __m256i requantize(__m256i acc, const RequantizeLanes& q) {
    __m256i x = saturating_left_shift(acc, q.left_shift);
    x = saturating_rounding_doubling_high_mul(x, q.M0);
    x = rounding_divide_by_pot(x, q.right_shift);
    x = _mm256_min_epi32(_mm256_max_epi32(x, q.min_minus_zero_point), q.max_minus_zero_point);
    return _mm256_add_epi32(x, q.zero_point);
}

// The same as requantize() for the multipliers the kernels hold, in fewer
// instructions (the output stage costs as much as the multiply-adds of a
// small-k GEMM or a depthwise conv):
//  - every lane's M0 is a valid multiplier's, in [0, 2^31): never INT32_MIN,
//    so the doubling high multiply's one overflow case cannot occur;
//  - kLeftShift false: every lane's left shift is 0 (all multipliers below
//    1, the usual case), so the saturating left shift is the identity.
// The odd lanes' products keep bits 31..62 in the upper half of each 64-bit
// lane after a shift left by 1, and a blend takes them.
template <bool kLeftShift>
inline __m256i requantize_valid_multiplier(__m256i acc, const RequantizeLanes& q) {
    const __m256i x = kLeftShift ? saturating_left_shift(acc, q.left_shift) : acc;
    const __m256i nudge = _mm256_set1_epi64x(int64_t(1) << 30);
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, q.M0), nudge);
    const __m256i odd = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_shuffle_epi32(x, 0xF5), _mm256_shuffle_epi32(q.M0, 0xF5)), nudge);
    const __m256i high = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
    __m256i y = rounding_divide_by_pot(high, q.right_shift);
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
