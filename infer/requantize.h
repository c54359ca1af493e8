// Requantization: scaling an int32 accumulator by a real multiplier M with
// integers only, as DESIGN.md's "Quantization arithmetic" fixes it, with one
// deliberate change (below).
//
// M is stored as a Q31 integer M0 and a power of two:
//     M = (M0 / 2^31) * 2^shift,   M0 in [2^30, 2^31)   (so M0/2^31 in [0.5, 1))
// This is TFLite's convention; DESIGN.md's `M = M0 * 2^-n` is the same with
// n = -shift.
//
// The rounding: ONE rounding of the exact 64-bit product,
//     acc * M = round(acc * M0 / 2^(31 - shift)),  ties away from zero
// i.e. gemmlowp's RoundingDivideByPOT applied to int64(acc) * M0. DESIGN.md
// (and gemmlowp's and TFLite's classic kernels) round twice:
// SaturatingRoundingDoublingHighMul to 31 bits, then RoundingDivideByPOT.
// The first rounding moves the value by up to 2^-(1 - shift) of an output
// step, so whenever the exact value lies that close to a .5 the integer graph
// picks the other neighbour than exact arithmetic (and the float fake-quant
// forward of QAT) would: measured on resnet20 after QAT, 0.06% of the first
// conv's outputs and, compounded over 20 layers, 0.18% of the test images'
// top-1 class. With one rounding the int8 graph is exact arithmetic up to
// M0's 2^-31 relative error, and agrees with the fake-quant forward on
// 99.99% of those images (docs/parity.md). TFLite offers the same change
// (TFLITE_SINGLE_ROUNDING). tests/infer/test_requantize.cpp checks it
// against gemmlowp's RoundingDivideByPOT and exact long double arithmetic.
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

// round(x / 2^exponent) for exponent in [0, 62], on int64: gemmlowp's
// RoundingDivideByPOT. Rounding: to nearest, ties away from zero (the
// remainder is compared with half the divisor, one more for negative x
// because >> rounds them down). The result's magnitude never exceeds x's.
inline int64_t rounding_divide_by_pot(int64_t x, int exponent) {
    const int64_t mask = (int64_t(1) << exponent) - 1;
    const int64_t remainder = x & mask;
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);  // >> on int64 is arithmetic (C++20)
}

// acc * M with M = (M0 / 2^31) * 2^shift, shift in [-31, 30]: one rounding
// of the exact product (above), saturated to int32 (only possible for
// M >= 1; the output clamp that always follows makes it exact).
inline int32_t multiply_by_quantized_multiplier(int32_t acc, int32_t M0, int shift) {
    const int64_t r = rounding_divide_by_pot(int64_t(acc) * M0, 31 - shift);
    return int32_t(std::clamp<int64_t>(r, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
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
