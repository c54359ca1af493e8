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
    __m256i M0, M0_odd;                   // M0_odd: the odd lanes' M0 in the even positions
    __m256i exponent_even, exponent_odd;  // 64-bit lanes: lanes 0,2,4,6 / 1,3,5,7
    __m256i half_even, half_odd;          // 64-bit: 2^(exponent - 1)
    __m256i acc_min, acc_max;             // where the product still fits int32
    __m256i zero_point, min_minus_zero_point, max_minus_zero_point;
    __m256i zero_point16, min16, max16;   // int16 lanes, for requantize_to_int8x16
    bool clamp_acc;                       // some lane's multiplier is >= 1 (shift > 0)
};

inline RequantizeLanes make_requantize_lanes(__m256i M0, __m256i shift, int32_t zero_point, int32_t qmin,
                                             int32_t qmax) {
    const __m256i exponent = _mm256_sub_epi32(_mm256_set1_epi32(31), shift);
    const __m256i even = _mm256_and_si256(exponent, _mm256_set1_epi64x(0xFFFFFFFF));
    const __m256i odd = _mm256_srli_epi64(exponent, 32);
    const __m256i one64 = _mm256_set1_epi64x(1);
    auto half = [&](__m256i e) { return _mm256_sllv_epi64(one64, _mm256_sub_epi64(e, one64)); };
    // A multiplier of 2^shift or more (shift > 0) could carry acc past int32;
    // |acc| <= 2^(31 - shift) - 1 keeps it inside, and any acc beyond that
    // scales far past every output range, so clamping it changes nothing.
    const __m256i left_shift = _mm256_max_epi32(shift, _mm256_setzero_si256());
    const __m256i acc_max = _mm256_srlv_epi32(_mm256_set1_epi32(INT32_MAX), left_shift);
    return {M0,
            _mm256_srli_epi64(M0, 32),
            even,
            odd,
            half(even),
            half(odd),
            _mm256_sub_epi32(_mm256_set1_epi32(-1), acc_max),  // -acc_max - 1: INT32_MIN when M < 1
            acc_max,
            _mm256_set1_epi32(zero_point),
            _mm256_set1_epi32(qmin - zero_point),
            _mm256_set1_epi32(qmax - zero_point),
            _mm256_set1_epi16(int16_t(zero_point)),
            _mm256_set1_epi16(int16_t(qmin)),
            _mm256_set1_epi16(int16_t(qmax)),
            _mm256_movemask_epi8(_mm256_cmpgt_epi32(shift, _mm256_setzero_si256())) != 0};
}

// Lane i: multiply_by_quantized_multiplier(acc[i], ...) for acc within
// [acc_min, acc_max]. One rounding of the exact product, ties away from
// zero, on the magnitude: round(x / 2^e) = sign(x) floor((|x| + 2^(e-1)) / 2^e)
// with x = acc * M0, and M0 >= 0 so |x| = |acc| M0. |acc| <= 2^31 (vpabsd
// leaves INT32_MIN as 2^31, which the unsigned multiply reads as such), so
// |x| + 2^(e-1) < 2^63: the unsigned 64-bit add and logical shift are exact,
// and the result (at most M0 < 2^31 in magnitude, by the clamp above) sits in
// the low 32 bits for vpsignd to give acc's sign.
inline __m256i multiply_by_quantized_multiplier(__m256i acc, const RequantizeLanes& q) {
    const __m256i magnitude = _mm256_abs_epi32(acc);
    const __m256i even = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epu32(magnitude, q.M0), q.half_even),
                                           q.exponent_even);
    const __m256i odd = _mm256_srlv_epi64(
        _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(magnitude, 32), q.M0_odd), q.half_odd), q.exponent_odd);
    return _mm256_sign_epi32(_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA), acc);
}

// multiply_by_quantized_multiplier of acc clamped to where the product fits
// (a no-op, skipped, when every lane's multiplier is below 1).
inline __m256i scale_accumulator(__m256i acc, const RequantizeLanes& q) {
    if (q.clamp_acc) acc = _mm256_min_epi32(_mm256_max_epi32(acc, q.acc_min), q.acc_max);
    return multiply_by_quantized_multiplier(acc, q);
}

// Lane i: requantize(acc[i], ...) with lane i's constants.
inline __m256i requantize(__m256i acc, const RequantizeLanes& q) {
    const __m256i y = scale_accumulator(acc, q);
    return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(y, q.min_minus_zero_point), q.max_minus_zero_point),
                            q.zero_point);
}

// requantize() of a and b (constants qa, qb; one output range) as int16
// lanes in vpackssdw's order: [a0-3 b0-3 | a4-7 b4-7]. The output stage runs
// on int16 lanes: clamp(y, min - zp, max - zp) + zp equals
// clamp(sat16(sat16(y) + zp), min, max), because whatever saturates at
// +-32767 lies far outside [min, max] either way.
inline __m256i requantize_to_int16_packed(__m256i a, __m256i b, const RequantizeLanes& qa, const RequantizeLanes& qb) {
    const __m256i y = _mm256_packs_epi32(scale_accumulator(a, qa), scale_accumulator(b, qb));
    return _mm256_min_epi16(_mm256_max_epi16(_mm256_adds_epi16(y, qa.zero_point16), qa.min16), qa.max16);
}

// The 16 int16 lanes (each within [-128, 127]) as 16 int8, in lane order.
inline __m128i pack_int16_to_int8(__m256i y) {
    return _mm_packs_epi16(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
}

// requantize() of a[0..8) then b[0..8) as 16 int8 in that order.
inline __m128i requantize_to_int8x16(__m256i a, __m256i b, const RequantizeLanes& qa, const RequantizeLanes& qb) {
    // The permute undoes vpackssdw's interleaving of the 128-bit halves.
    return pack_int16_to_int8(_mm256_permute4x64_epi64(requantize_to_int16_packed(a, b, qa, qb), 0xD8));
}

// Stores 8 int32 lanes already within [-128, 127] as 8 int8.
inline void store_int8x8(int8_t* dst, __m256i v) {
    const __m128i v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packs_epi16(v16, v16));
}

}  // namespace qf::infer::avx2
#endif  // __AVX2__
