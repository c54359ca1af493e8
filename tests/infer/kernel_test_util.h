// Random tensors and parameters for the kernel tests.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "infer/kernels/params.h"

namespace qf::infer::test {

inline int uniform_int(std::mt19937_64& rng, int lo, int hi) {  // [lo, hi]
    return std::uniform_int_distribution<int>(lo, hi)(rng);
}

inline std::vector<int8_t> random_int8(std::mt19937_64& rng, size_t n, int lo = -128, int hi = 127) {
    std::vector<int8_t> v(n);
    for (int8_t& x : v) x = int8_t(uniform_int(rng, lo, hi));
    return v;
}

inline std::vector<int32_t> random_int32(std::mt19937_64& rng, size_t n, int lo, int hi) {
    std::vector<int32_t> v(n);
    for (int32_t& x : v) x = uniform_int(rng, lo, hi);
    return v;
}

// A multiplier that maps a sum of k random int8 products to a spread of int8
// outputs (a sum's typical size is 128^2 / 3 * sqrt(k)), scaled by 2^[-3, 3]
// so that some outputs saturate.
inline QuantizedMultiplier random_multiplier(std::mt19937_64& rng, int k) {
    const double log2_factor = std::uniform_real_distribution<double>(-3.0, 3.0)(rng);
    return quantize_multiplier(64.0 / (5461.0 * std::sqrt(double(k))) * std::exp2(log2_factor));
}

// No clamp, ReLU (min at the zero point) or a ReLU6-like upper bound.
inline OutputRange random_output_range(std::mt19937_64& rng) {
    OutputRange out;
    out.zero_point = uniform_int(rng, -128, 127);
    switch (uniform_int(rng, 0, 2)) {
        case 1: out.min = out.zero_point; break;
        case 2: out.min = out.zero_point; out.max = std::min(127, out.zero_point + uniform_int(rng, 0, 100)); break;
        default: break;
    }
    return out;
}

}  // namespace qf::infer::test
