#include "infer/kernels/reference/reference.h"

#include <algorithm>

namespace qf::infer::reference {

void max_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output) {
    const int in_h = p.in_h, in_w = p.in_w, channels = p.channels;
    const int out_h = p.out_h(), out_w = p.out_w();
    for (int b = 0; b < batch; ++b) {
        for (int oy = 0; oy < out_h; ++oy) {
            for (int ox = 0; ox < out_w; ++ox) {
                for (int c = 0; c < channels; ++c) {
                    // validate() ensures every window holds at least one input pixel.
                    int32_t max = -128;
                    for (int ky = 0; ky < p.kernel_h; ++ky) {
                        for (int kx = 0; kx < p.kernel_w; ++kx) {
                            const int iy = oy * p.stride_h - p.pad_top + ky;
                            const int ix = ox * p.stride_w - p.pad_left + kx;
                            if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) continue;  // padding is skipped
                            max = std::max<int32_t>(max, input[((size_t(b) * in_h + iy) * in_w + ix) * channels + c]);
                        }
                    }
                    output[((size_t(b) * out_h + oy) * out_w + ox) * channels + c] =
                        int8_t(std::clamp(max, p.output.min, p.output.max));
                }
            }
        }
    }
}

// Overflow: the window sum of kernel_h * kernel_w values of |x - zx| <= 255
// fits int32 (validate_average_pool checks it).
void average_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output) {
    const int in_h = p.in_h, in_w = p.in_w, channels = p.channels;
    const int out_h = p.out_h(), out_w = p.out_w();
    const int32_t input_zero_point = p.input_zero_point;
    for (int b = 0; b < batch; ++b) {
        for (int oy = 0; oy < out_h; ++oy) {
            for (int ox = 0; ox < out_w; ++ox) {
                for (int c = 0; c < channels; ++c) {
                    int32_t sum = 0;
                    for (int ky = 0; ky < p.kernel_h; ++ky) {
                        for (int kx = 0; kx < p.kernel_w; ++kx) {
                            const int iy = oy * p.stride_h - p.pad_top + ky;
                            const int ix = ox * p.stride_w - p.pad_left + kx;
                            if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) continue;  // padding adds 0
                            sum += input[((size_t(b) * in_h + iy) * in_w + ix) * channels + c] - input_zero_point;
                        }
                    }
                    output[((size_t(b) * out_h + oy) * out_w + ox) * channels + c] =
                        int8_t(requantize(sum, p.multiplier.M0, p.multiplier.shift, p.output.zero_point,
                                          p.output.min, p.output.max));
                }
            }
        }
    }
}

}  // namespace qf::infer::reference
