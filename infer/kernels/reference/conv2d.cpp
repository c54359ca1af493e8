#include "infer/kernels/reference/reference.h"

namespace qf::infer::reference {

// Why the accumulator cannot overflow: validate() checked, for every output
// channel o, |bias[o]| + sum_k |w[o][k] - zw[o]| * (|zx| + 128) <= INT32_MAX,
// and that sum bounds |acc| at every step of the loop below (each term
// (w - zw)(x - zx) is at most |w - zw| * (|zx| + 128); padded inputs add 0).
// Each product fits easily: |w - zw|, |x - zx| <= 255.
void conv2d(const Conv2dParams& p, int batch, const int8_t* input, const int8_t* weights,
            const int32_t* bias, int8_t* output) {
    const int in_h = p.in_h, in_w = p.in_w, in_c = p.in_c;
    const int out_h = p.out_h(), out_w = p.out_w(), out_c = p.out_c;
    const int kernel_h = p.kernel_h, kernel_w = p.kernel_w;
    const int in_c_per_group = p.in_c_per_group(), out_c_per_group = p.out_c_per_group();
    const int32_t input_zero_point = p.input_zero_point;
    for (int b = 0; b < batch; ++b) {
        for (int oy = 0; oy < out_h; ++oy) {
            for (int ox = 0; ox < out_w; ++ox) {
                const int in_y0 = oy * p.stride_h - p.pad_top;
                const int in_x0 = ox * p.stride_w - p.pad_left;
                for (int oc = 0; oc < out_c; ++oc) {
                    const int group = oc / out_c_per_group;
                    const int32_t weight_zero_point = per_channel(p.weight_zero_points, oc);
                    const int8_t* filter = weights + size_t(oc) * p.weights_per_out_channel();
                    int32_t acc = 0;
                    for (int ky = 0; ky < kernel_h; ++ky) {
                        for (int kx = 0; kx < kernel_w; ++kx) {
                            const int iy = in_y0 + ky, ix = in_x0 + kx;
                            const bool inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                            for (int ic = 0; ic < in_c_per_group; ++ic) {
                                // Padding holds the input zero point, i.e. the real value 0.
                                const int32_t x =
                                    inside ? input[((size_t(b) * in_h + iy) * in_w + ix) * in_c +
                                                   group * in_c_per_group + ic]
                                           : input_zero_point;
                                const int32_t w = filter[(ky * kernel_w + kx) * in_c_per_group + ic];
                                acc += (w - weight_zero_point) * (x - input_zero_point);
                            }
                        }
                    }
                    if (bias) acc += bias[oc];
                    const QuantizedMultiplier m = per_channel(p.multipliers, oc);
                    output[((size_t(b) * out_h + oy) * out_w + ox) * out_c + oc] = int8_t(
                        requantize(acc, m.M0, m.shift, p.output.zero_point, p.output.min, p.output.max));
                }
            }
        }
    }
}

}  // namespace qf::infer::reference
