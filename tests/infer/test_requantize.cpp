// requantize.h against gemmlowp's fixedpoint header and exact (long double)
// arithmetic, bit for bit, and quantize_multiplier against double arithmetic.
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

// The exact answer: x / 2^e in long double (64-bit mantissa: |x| < 2^63 and
// the power-of-two scaling are exact), rounded half away from zero by roundl.
int64_t exact_rounding_divide_by_pot(int64_t x, int e) {
    return int64_t(std::roundl(std::ldexp((long double)x, -e)));
}

int32_t exact_multiply(int32_t acc, int32_t M0, int shift) {
    const int64_t r = exact_rounding_divide_by_pot(int64_t(acc) * M0, 31 - shift);
    return int32_t(std::clamp<int64_t>(r, kMin, kMax));
}

}  // namespace

TEST_CASE("rounding_divide_by_pot matches gemmlowp's and exact arithmetic") {
    CHECK(rounding_divide_by_pot(5, 1) == 3);    // 2.5 -> 3
    CHECK(rounding_divide_by_pot(-5, 1) == -3);  // -2.5 -> -3: ties away from zero
    CHECK(rounding_divide_by_pot(int64_t(1) << 62, 62) == 1);
    CHECK(rounding_divide_by_pot(-(int64_t(1) << 61), 62) == -1);  // -1/2 -> -1
    CHECK(rounding_divide_by_pot((int64_t(1) << 61) - 1, 62) == 0);
    std::mt19937_64 rng(2);
    int64_t mismatches = 0;
    for (int i = 0; i < 4'000'000; ++i) {
        // Products of two int32 (the only inputs the kernels give it), and small ties.
        const int64_t x = i % 2 ? int64_t(random_int32(rng)) * random_int32(rng) : int64_t(random_int32(rng));
        const int e = int(rng() % 63);
        mismatches += rounding_divide_by_pot(x, e) != exact_rounding_divide_by_pot(x, e);
        // gemmlowp's RoundingDivideByPOT (int32 only, e <= 31) where it applies.
        if (e <= 31 && x == int64_t(int32_t(x)))
            mismatches += rounding_divide_by_pot(x, e) != gemmlowp::RoundingDivideByPOT(int32_t(x), e);
    }
    CHECK(mismatches == 0);
    for (int32_t a : edge_values())
        for (int e = 0; e <= 62; ++e) {
            const int64_t x = int64_t(a) * (e % 2 ? kMax : kMin);
            REQUIRE(rounding_divide_by_pot(x, e) == exact_rounding_divide_by_pot(x, e));
        }
}

TEST_CASE("multiply_by_quantized_multiplier and requantize round once, exactly") {
    // Multipliers near 1 (M0 = 2^31 - 1, shift 0), near 2^30 (shift 30), exactly
    // 1/2 (M0 = 2^30), the smallest (shift -31), and zero.
    const std::vector<QuantizedMultiplier> multipliers = {
        {kMax, 0}, {kMax, 1}, {1 << 30, 1}, {1 << 30, 0}, {kMax, 30}, {1 << 30, 30},
        {1 << 30, -31}, {kMax, -31}, {0, 0}, {1518500250, -7}};
    const std::vector<int32_t> edges = edge_values();
    for (QuantizedMultiplier m : multipliers) {
        REQUIRE(is_valid_quantized_multiplier(m.M0, m.shift));
        for (int32_t acc : edges) REQUIRE(multiply_by_quantized_multiplier(acc, m.M0, m.shift) == exact_multiply(acc, m.M0, m.shift));
    }
    CHECK(multiply_by_quantized_multiplier(kMax, kMax, 30) == kMax);  // saturates
    CHECK(multiply_by_quantized_multiplier(kMin, kMax, 30) == kMin);
    CHECK(multiply_by_quantized_multiplier(1000, 1 << 30, 0) == 500);  // M = 1/2
    CHECK(multiply_by_quantized_multiplier(3, 1 << 30, -1) == 1);      // 3/4 -> 1
    CHECK(multiply_by_quantized_multiplier(-3, 1 << 30, -2) == -0);    // -3/8 -> 0
    CHECK(multiply_by_quantized_multiplier(-5, 1 << 30, 0) == -3);     // -2.5 -> -3

    // Where the classic two-rounding form differs: acc = 1, M = (2^31 - 1) / 2^32,
    // exactly 0.49999999977 -> 0; the doubling high multiply would first round
    // 0.99999999953 to 1, and then 1 / 2 = 0.5 rounds away from zero to 1.
    CHECK(multiply_by_quantized_multiplier(1, kMax, -1) == 0);

    std::mt19937_64 rng(3);
    int64_t mismatches = 0;
    for (int i = 0; i < 2'000'000; ++i) {
        const int32_t acc = random_int32(rng);
        const int32_t M0 = int32_t((1u << 30) + uint32_t(rng() % (1u << 30)));
        const int shift = kMinShift + int(rng() % (kMaxShift - kMinShift + 1));
        const int32_t zero_point = int32_t(rng() % 256) - 128;
        const int32_t expected_scaled = exact_multiply(acc, M0, shift);
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
        alignas(32) int32_t acc[8], M0[8], shift[8], out[8];
        const int32_t zero_point = int32_t(rng() % 256) - 128;
        for (int i = 0; i < 8; ++i) {
            acc[i] = iter % 4 == 0 ? edges[rng() % edges.size()] : random_int32(rng);
            shift[i] = kMinShift + int(rng() % (kMaxShift - kMinShift + 1));
            const int32_t special_M0[] = {1 << 30, kMax};
            M0[i] = rng() % 4 == 0 ? special_M0[rng() % 2] : int32_t((1u << 30) + uint32_t(rng() % (1u << 30)));
            if (rng() % 16 == 0) M0[i] = 0, shift[i] = 0;
        }
        auto load = [](const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); };
        const avx2::RequantizeLanes lanes = avx2::make_requantize_lanes(load(M0), load(shift), zero_point, -128, 127);
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), avx2::requantize(load(acc), lanes));
        for (int i = 0; i < 8; ++i) mismatches += out[i] != requantize(acc[i], M0[i], shift[i], zero_point, -128, 127);
        // The raw multiply, for multipliers below 1 (where it needs no clamp).
        for (int i = 0; i < 8; ++i) shift[i] = std::min(shift[i], 0);
        const avx2::RequantizeLanes below_one = avx2::make_requantize_lanes(load(M0), load(shift), 0, kMin, kMax);
        _mm256_store_si256(reinterpret_cast<__m256i*>(out), avx2::multiply_by_quantized_multiplier(load(acc), below_one));
        for (int i = 0; i < 8; ++i) mismatches += out[i] != multiply_by_quantized_multiplier(acc[i], M0[i], shift[i]);
    }
    CHECK(mismatches == 0);
}

TEST_CASE("AVX2 requantize_to_int8x16 matches the scalar requantize for any output range") {
    std::mt19937_64 rng(6);
    const std::vector<int32_t> edges = edge_values();
    int64_t mismatches = 0;
    for (int iter = 0; iter < 100000; ++iter) {
        alignas(32) int32_t acc[16], M0[16], shift[16];
        const int32_t zero_point = int32_t(rng() % 256) - 128;
        int32_t qmin = int32_t(rng() % 256) - 128, qmax = int32_t(rng() % 256) - 128;
        if (qmin > qmax) std::swap(qmin, qmax);
        if (iter % 3 == 0) qmin = -128, qmax = 127;
        // Half the iterations with every multiplier below 1 (the unclamped path).
        const int max_shift = iter % 2 ? 0 : kMaxShift;
        for (int i = 0; i < 16; ++i) {
            acc[i] = iter % 4 == 0 ? edges[rng() % edges.size()] : random_int32(rng);
            shift[i] = kMinShift + int(rng() % (max_shift - kMinShift + 1));
            M0[i] = int32_t((1u << 30) + uint32_t(rng() % (1u << 30)));
            if (rng() % 16 == 0) M0[i] = 0, shift[i] = 0;
        }
        auto load = [](const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); };
        const avx2::RequantizeLanes qa = avx2::make_requantize_lanes(load(M0), load(shift), zero_point, qmin, qmax);
        const avx2::RequantizeLanes qb =
            avx2::make_requantize_lanes(load(M0 + 8), load(shift + 8), zero_point, qmin, qmax);
        alignas(16) int8_t out[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(out), avx2::requantize_to_int8x16(load(acc), load(acc + 8), qa, qb));
        for (int i = 0; i < 16; ++i) mismatches += out[i] != requantize(acc[i], M0[i], shift[i], zero_point, qmin, qmax);
    }
    CHECK(mismatches == 0);
}
#endif
