// requantize.h against gemmlowp's fixedpoint header, bit for bit, and
// quantize_multiplier against double arithmetic.
#include <doctest/doctest.h>
#include <gemmlowp/fixedpoint/fixedpoint.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "infer/kernels/requantize_avx2.h"
#include "infer/requantize.h"

using namespace qf::infer;

namespace {

constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kMax = std::numeric_limits<int32_t>::max();

// Values worth hitting: the extremes, around 0, and around powers of two.
std::vector<int32_t> edge_values() {
    std::vector<int32_t> v = {kMin, kMin + 1, kMin + 2, kMax, kMax - 1, -1, 0, 1, 2, -2};
    for (int e = 1; e < 31; ++e) {
        const int32_t p = int32_t(1) << e;
        for (int32_t d : {-1, 0, 1}) {
            v.push_back(p + d);
            v.push_back(-p + d);
        }
    }
    return v;
}

// Random int32 of random magnitude (a random number of bits), so that small
// values and ties of the rounding come up often.
int32_t random_int32(std::mt19937_64& rng) {
    const int bits = int(rng() % 33);
    const uint64_t r = rng();
    if (bits == 32) return int32_t(uint32_t(r));
    const int32_t magnitude = int32_t(r & ((uint64_t(1) << bits) - 1) & 0x7fffffff);
    return (r >> 63) ? -magnitude : magnitude;
}

// gemmlowp has no run-time-shift multiply; this is TFLite's
// MultiplyByQuantizedMultiplier spelled with gemmlowp's functions (with the
// left shift done in int64 and saturated, as requantize.h documents).
int32_t gemmlowp_multiply(int32_t acc, int32_t M0, int shift) {
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int64_t shifted = int64_t(acc) * (int64_t(1) << left);
    const int32_t saturated = int32_t(std::clamp<int64_t>(shifted, kMin, kMax));
    return gemmlowp::RoundingDivideByPOT(gemmlowp::SaturatingRoundingDoublingHighMul(saturated, M0), right);
}

}  // namespace

TEST_CASE("saturating_rounding_doubling_high_mul matches gemmlowp") {
    CHECK(saturating_rounding_doubling_high_mul(kMin, kMin) == kMax);  // the one overflow
    CHECK(saturating_rounding_doubling_high_mul(kMin, kMax) == -kMax);
    CHECK(saturating_rounding_doubling_high_mul(kMax, kMax) == kMax - 1);
    CHECK(saturating_rounding_doubling_high_mul(1 << 30, 1) == 1);    // 1/2 rounds up
    CHECK(saturating_rounding_doubling_high_mul(-(1 << 30), 1) == 0);  // -1/2 rounds up too
    const std::vector<int32_t> edges = edge_values();
    for (int32_t a : edges)
        for (int32_t b : edges)
            REQUIRE(saturating_rounding_doubling_high_mul(a, b) == gemmlowp::SaturatingRoundingDoublingHighMul(a, b));
    std::mt19937_64 rng(1);
    int64_t mismatches = 0;
    for (int i = 0; i < 4'000'000; ++i) {
        const int32_t a = random_int32(rng), b = random_int32(rng);
        mismatches += saturating_rounding_doubling_high_mul(a, b) != gemmlowp::SaturatingRoundingDoublingHighMul(a, b);
    }
    CHECK(mismatches == 0);
}

TEST_CASE("rounding_divide_by_pot matches gemmlowp") {
    CHECK(rounding_divide_by_pot(5, 1) == 3);    // 2.5 -> 3
    CHECK(rounding_divide_by_pot(-5, 1) == -3);  // -2.5 -> -3: ties away from zero
    CHECK(rounding_divide_by_pot(kMin, 31) == -1);
    CHECK(rounding_divide_by_pot(kMax, 31) == 1);
    CHECK(rounding_divide_by_pot(kMin, 0) == kMin);
    for (int32_t x : edge_values())
        for (int e = 0; e <= 31; ++e) REQUIRE(rounding_divide_by_pot(x, e) == gemmlowp::RoundingDivideByPOT(x, e));
    std::mt19937_64 rng(2);
    int64_t mismatches = 0;
    for (int i = 0; i < 4'000'000; ++i) {
        const int32_t x = random_int32(rng);
        const int e = int(rng() % 32);
        mismatches += rounding_divide_by_pot(x, e) != gemmlowp::RoundingDivideByPOT(x, e);
    }
    CHECK(mismatches == 0);
}

TEST_CASE("multiply_by_quantized_multiplier and requantize match gemmlowp's composition") {
    // Multipliers near 1 (M0 = 2^31 - 1, shift 0), near 2^30 (shift 30), exactly
    // 1/2 (M0 = 2^30), the smallest (shift -31), and zero.
    const std::vector<QuantizedMultiplier> multipliers = {
        {kMax, 0}, {kMax, 1}, {1 << 30, 1}, {1 << 30, 0}, {kMax, 30}, {1 << 30, 30},
        {1 << 30, -31}, {kMax, -31}, {0, 0}, {1518500250, -7}};
    const std::vector<int32_t> edges = edge_values();
    for (QuantizedMultiplier m : multipliers) {
        REQUIRE(is_valid_quantized_multiplier(m.M0, m.shift));
        for (int32_t acc : edges) REQUIRE(multiply_by_quantized_multiplier(acc, m.M0, m.shift) == gemmlowp_multiply(acc, m.M0, m.shift));
    }
    CHECK(multiply_by_quantized_multiplier(kMax, kMax, 30) == kMax - 1);  // left shift saturates to kMax
    CHECK(multiply_by_quantized_multiplier(kMin, kMax, 30) == -kMax);
    CHECK(multiply_by_quantized_multiplier(1000, 1 << 30, 0) == 500);  // M = 1/2

    std::mt19937_64 rng(3);
    int64_t mismatches = 0;
    for (int i = 0; i < 2'000'000; ++i) {
        const int32_t acc = random_int32(rng);
        const int32_t M0 = int32_t((1u << 30) + uint32_t(rng() % (1u << 30)));
        const int shift = kMinShift + int(rng() % (kMaxShift - kMinShift + 1));
        const int32_t zero_point = int32_t(rng() % 256) - 128;
        const int32_t expected_scaled = gemmlowp_multiply(acc, M0, shift);
        const int64_t with_zero_point = int64_t(expected_scaled) + zero_point;
        const int32_t expected = int32_t(std::clamp<int64_t>(with_zero_point, -128, 127));
        mismatches += multiply_by_quantized_multiplier(acc, M0, shift) != expected_scaled;
        mismatches += requantize(acc, M0, shift, zero_point, -128, 127) != expected;
    }
    CHECK(mismatches == 0);
    CHECK(requantize(kMax, kMax, 0, 127, -128, 127) == 127);  // no overflow adding the zero point
    CHECK(requantize(kMin, kMax, 0, -128, -128, 127) == -128);
    CHECK(requantize(-1000, 1 << 30, 0, 10, 10, 127) == 10);    // ReLU is the clamp
}

TEST_CASE("quantize_multiplier against double") {
    // Tolerance: M0 is rounded to nearest, so the relative error is at most
    // half a unit of M0 >= 2^30, i.e. 2^-31.
    const double tolerance = std::ldexp(1.0, -31);
    std::mt19937_64 rng(4);
    std::uniform_real_distribution<double> log2_uniform(-32.0, 30.0);
    for (int i = 0; i < 200000; ++i) {
        const double M = std::exp2(log2_uniform(rng));
        const QuantizedMultiplier q = quantize_multiplier(M);
        if (M < std::ldexp(1.0, -32)) {
            REQUIRE((q.M0 == 0 && q.shift == 0));
            continue;
        }
        REQUIRE(is_valid_quantized_multiplier(q.M0, q.shift));
        REQUIRE(std::abs(multiplier_value(q) - M) <= tolerance * M);
    }
    CHECK((quantize_multiplier(0.0).M0 == 0 && quantize_multiplier(0.0).shift == 0));
    CHECK((quantize_multiplier(1.0).M0 == (1 << 30) && quantize_multiplier(1.0).shift == 1));
    CHECK((quantize_multiplier(0.5).M0 == (1 << 30) && quantize_multiplier(0.5).shift == 0));
    // Just below 1: M0 rounds up to 2^31 and is renormalized.
    const QuantizedMultiplier near_one = quantize_multiplier(1.0 - 1e-12);
    CHECK((near_one.M0 == (1 << 30) && near_one.shift == 1));
    CHECK((quantize_multiplier(1e-12).M0 == 0 && quantize_multiplier(1e-12).shift == 0));  // below 2^-32
    CHECK(quantize_multiplier(std::ldexp(1.0, -32)).shift == -31);
    CHECK(quantize_multiplier(std::ldexp(1.0, 30) * 0.99).shift == 30);
    CHECK_THROWS_AS(quantize_multiplier(-0.5), std::invalid_argument);
    CHECK_THROWS_AS(quantize_multiplier(std::ldexp(1.0, 30)), std::invalid_argument);
    CHECK_THROWS_AS(quantize_multiplier(std::nan("")), std::invalid_argument);
    CHECK_THROWS_AS(quantize_multiplier(INFINITY), std::invalid_argument);
    // Out-of-range pairs, as a model file might hold them.
    CHECK_FALSE(is_valid_quantized_multiplier(1 << 29, 0));
    CHECK_FALSE(is_valid_quantized_multiplier(-5, 0));
    CHECK_FALSE(is_valid_quantized_multiplier(1 << 30, 31));
    CHECK_FALSE(is_valid_quantized_multiplier(1 << 30, -32));
    CHECK_FALSE(is_valid_quantized_multiplier(0, 3));
}

#ifdef __AVX2__
TEST_CASE("AVX2 requantization lanes match the scalar functions") {
    std::mt19937_64 rng(5);
    const std::vector<int32_t> edges = edge_values();
    int64_t mismatches = 0;
    for (int iter = 0; iter < 200000; ++iter) {
        alignas(32) int32_t acc[8], M0[8], left[8], right[8], out[8];
        const int32_t zero_point = int32_t(rng() % 256) - 128;
        for (int i = 0; i < 8; ++i) {
            acc[i] = iter % 4 == 0 ? edges[rng() % edges.size()] : random_int32(rng);
            const int shift = kMinShift + int(rng() % (kMaxShift - kMinShift + 1));
            const int32_t special_M0[] = {0, 1 << 30, kMax};
            M0[i] = rng() % 4 == 0 ? special_M0[rng() % 3] : int32_t((1u << 30) + uint32_t(rng() % (1u << 30)));
            left[i] = shift > 0 ? shift : 0;
            right[i] = shift > 0 ? 0 : -shift;
        }
        auto load = [](const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); };
        const avx2::RequantizeLanes lanes = {load(M0), load(left), load(right), _mm256_set1_epi32(zero_point),
                                             _mm256_set1_epi32(-128 - zero_point), _mm256_set1_epi32(127 - zero_point)};
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), avx2::requantize(load(acc), lanes));
        for (int i = 0; i < 8; ++i)
            mismatches += out[i] != requantize(acc[i], M0[i], left[i] - right[i], zero_point, -128, 127);
        // The raw high multiply, including INT32_MIN * INT32_MIN.
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), avx2::saturating_rounding_doubling_high_mul(load(acc), load(acc)));
        for (int i = 0; i < 8; ++i) mismatches += out[i] != saturating_rounding_doubling_high_mul(acc[i], acc[i]);
    }
    CHECK(mismatches == 0);
}
#endif
