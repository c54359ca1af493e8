// Requantization: scaling an int32 accumulator by a real multiplier M with
// integers only, as DESIGN.md's "Quantization arithmetic" fixes it.
//
// M is stored as a Q31 integer M0 and a power of two:
//     M = (M0 / 2^31) * 2^shift,   M0 in [2^30, 2^31)   (so M0/2^31 in [0.5, 1))
// shift > 0 multiplies by 2^shift first (a left shift, for M >= 1); shift <= 0
// divides by 2^-shift at the end (a rounding right shift). This is TFLite's
// convention; DESIGN.md's `M = M0 * 2^-n` is the same with n = -shift.
//
// The rounding is gemmlowp's: SaturatingRoundingDoublingHighMul, then
// RoundingDivideByPOT. Each function below is bit-exact with its namesake in
// gemmlowp/fixedpoint/fixedpoint.h (tests/infer/test_requantize.cpp checks).
//
// quant/ (freeze) and infer/ (the loader and every kernel) both use these: the
// header has no dependencies and nothing to link.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace qf::infer {

// round(a * b / 2^31), the high half of the doubled 64-bit product.
// Rounding: to nearest, ties upward (towards +infinity). gemmlowp spells it as
// a nudge of +2^30 (or 1 - 2^30 for a negative product) and a division that
// truncates towards zero; both come to floor((a*b + 2^30) / 2^31).
// Overflow: only a == b == INT32_MIN, whose true result 2^31 does not fit;
// it saturates to INT32_MAX.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == std::numeric_limits<int32_t>::min() && b == std::numeric_limits<int32_t>::min())
        return std::numeric_limits<int32_t>::max();
    int64_t product = int64_t(a) * int64_t(b);
    return int32_t((product + (int64_t(1) << 30)) >> 31);  // >> on int64 is an arithmetic shift (C++20)
}

// round(x / 2^exponent) for exponent in [0, 31].
// Rounding: to nearest, ties away from zero (the remainder is compared with
// half the divisor, one more for negative x because >> rounds them down).
// Overflow: none; the result's magnitude never exceeds x's.
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = int32_t((int64_t(1) << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * 2^exponent for exponent in [0, 31], saturated to the int32 range.
// Overflow: any x whose shifted value leaves int32 saturates (TFLite leaves
// this undefined; saturating keeps the sign, and the output clamp that always
// follows gives the same result as infinite precision would).
inline int32_t saturating_left_shift(int32_t x, int exponent) {
    if (x > (std::numeric_limits<int32_t>::max() >> exponent)) return std::numeric_limits<int32_t>::max();
    if (x < (std::numeric_limits<int32_t>::min() >> exponent)) return std::numeric_limits<int32_t>::min();
    return int32_t(uint32_t(x) << exponent);
}

// acc * M with M = (M0 / 2^31) * 2^shift, shift in [-31, 30] (TFLite's
// MultiplyByQuantizedMultiplier): left shift for shift > 0, the doubling high
// multiply, then a rounding right shift for shift < 0. Two roundings, as in
// gemmlowp and TFLite; quant/'s simulation must round the same way.
// Overflow: only in the left shift, where it saturates (above).
inline int32_t multiply_by_quantized_multiplier(int32_t acc, int32_t M0, int shift) {
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(saturating_left_shift(acc, left_shift), M0),
        right_shift);
}

// The whole output stage of a kernel: scale the accumulator, add the output
// zero point, clamp to [qmin, qmax] (ReLU and ReLU6 are this clamp, with qmin
// or qmax moved to the quantized 0 and 6). The clamp is applied before adding
// the zero point, to [qmin - zp, qmax - zp]: the same result as add-then-clamp,
// but the addition cannot overflow when the scaled value is near INT32_MAX.
inline int32_t requantize(int32_t acc, int32_t M0, int shift, int32_t zero_point,
                          int32_t qmin, int32_t qmax) {
    const int32_t scaled = multiply_by_quantized_multiplier(acc, M0, shift);
    return std::clamp(scaled, qmin - zero_point, qmax - zero_point) + zero_point;
}

struct QuantizedMultiplier {
    int32_t M0 = 0;  // Q31, in [2^30, 2^31), or 0 for M == 0
    int shift = 0;   // in [kMinShift, kMaxShift]
};
constexpr int kMinShift = -31;  // RoundingDivideByPOT takes exponents up to 31
constexpr int kMaxShift = 30;   // a larger left shift saturates every nonzero acc

// Whether (M0, shift) is a multiplier the kernels accept: {0, 0} (M == 0) or
// M0 in [2^30, 2^31) with shift in [kMinShift, kMaxShift]. The model loader
// rejects anything else.
inline bool is_valid_quantized_multiplier(int32_t M0, int shift) {
    if (M0 == 0) return shift == 0;
    return M0 >= (int32_t(1) << 30) && shift >= kMinShift && shift <= kMaxShift;
}

// M0 and shift with (M0 / 2^31) * 2^shift == M, M0 rounded to nearest.
// Supported: M == 0, and M in (0, 2^30) (shift up to kMaxShift). M below
// 2^-32 (shift < kMinShift) gives {0, 0}: |acc * M| < 2^31 * 2^-32 = 1/2
// rounds to 0 for every int32 acc anyway, which is what TFLite does too.
// Negative, NaN, infinite or M >= 2^30: std::invalid_argument.
// The relative error of the result is at most 2^-31 (half an M0 step).
inline QuantizedMultiplier quantize_multiplier(double M) {
    if (!(M >= 0.0) || !(M < std::ldexp(1.0, kMaxShift)))
        throw std::invalid_argument("quantize_multiplier: multiplier " + std::to_string(M) +
                                    " outside [0, 2^30)");
    if (M == 0.0) return {};
    int exponent = 0;
    const double fraction = std::frexp(M, &exponent);  // M = fraction * 2^exponent, fraction in [0.5, 1)
    int64_t M0 = std::llround(fraction * double(int64_t(1) << 31));
    if (M0 == (int64_t(1) << 31)) {  // the fraction rounded up to 1.0
        M0 /= 2;
        ++exponent;
    }
    if (exponent < kMinShift) return {};
    if (exponent > kMaxShift)
        throw std::invalid_argument("quantize_multiplier: multiplier " + std::to_string(M) +
                                    " rounds to 2^30 or more");
    return {int32_t(M0), exponent};
}

// The real value a quantized multiplier stands for (for tests and messages).
inline double multiplier_value(QuantizedMultiplier q) {
    return std::ldexp(double(q.M0), q.shift - 31);
}

}  // namespace qf::infer
