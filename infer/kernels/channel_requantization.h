// The output stage of the packed kernels: each output channel's multiplier,
// padded to whole SIMD blocks so that a vector of 8 channels loads without
// bounds checks.
#pragma once
#include <cstdint>
#include <vector>

#include "infer/kernels/params.h"
#include "infer/kernels/requantize_avx2.h"
#include "infer/requantize.h"

namespace qf::infer {

struct ChannelRequantization {
    std::vector<int32_t> M0, shift;  // [padded_channels]; padding lanes are {0, 0}
    OutputRange output;
#ifdef __AVX2__
    // The vector constants of each block of 8 channels, derived once here:
    // building them took ~25 instructions per block, which the GEMM paid per
    // register tile (13% of a 1x1 convolution with 16 input channels).
    std::vector<avx2::RequantizeLanes> blocks;
#endif

    // `multipliers` has 1 element (per tensor) or `channels`.
    ChannelRequantization(const std::vector<QuantizedMultiplier>& multipliers, int channels,
                          int padded_channels, OutputRange out)
        : M0(size_t(padded_channels), 0), shift(size_t(padded_channels), 0), output(out) {
        for (int c = 0; c < channels; ++c) {
            const QuantizedMultiplier m = per_channel(multipliers, c);
            M0[size_t(c)] = m.M0;
            shift[size_t(c)] = m.shift;
        }
#ifdef __AVX2__
        auto load = [](const std::vector<int32_t>& v, int c) {
            return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.data() + c));
        };
        for (int c = 0; c + 8 <= padded_channels; c += 8)
            blocks.push_back(avx2::make_requantize_lanes(load(M0, c), load(shift, c), out.zero_point, out.min, out.max));
#endif
    }
    ChannelRequantization() = default;

    // requantize() for channel c.
    int32_t apply(int32_t acc, int c) const {
        return requantize(acc, M0[size_t(c)], shift[size_t(c)], output.zero_point, output.min, output.max);
    }

#ifdef __AVX2__
    // The constants of channels [c, c + 8), c a multiple of 8.
    const avx2::RequantizeLanes& lanes(int c) const { return blocks[size_t(c / 8)]; }
    // requantize() of 8 accumulators with the constants q of lanes(c).
    __m256i apply(__m256i acc, const avx2::RequantizeLanes& q) const { return avx2::requantize(acc, q); }
#endif
};

}  // namespace qf::infer
