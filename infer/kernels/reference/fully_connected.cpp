#include "infer/kernels/reference/reference.h"

namespace qf::infer::reference {

// Why the accumulator cannot overflow: the bound of conv2d.cpp, which
// validate() checks for the FC weights and bias too.
void fully_connected(const FullyConnectedParams& p, int batch, const int8_t* input,
                     const int8_t* weights, const int32_t* bias, int8_t* output) {
    const int in_features = p.in_features, out_features = p.out_features;
    const int32_t input_zero_point = p.input_zero_point;
    for (int b = 0; b < batch; ++b) {
        for (int o = 0; o < out_features; ++o) {
            const int32_t weight_zero_point = per_channel(p.weight_zero_points, o);
            int32_t acc = 0;
            for (int i = 0; i < in_features; ++i) {
                const int32_t x = input[size_t(b) * in_features + i];
                const int32_t w = weights[size_t(o) * in_features + i];
                acc += (w - weight_zero_point) * (x - input_zero_point);
            }
            if (bias) acc += bias[o];
            const QuantizedMultiplier m = per_channel(p.multipliers, o);
            output[size_t(b) * out_features + o] =
                int8_t(requantize(acc, m.M0, m.shift, p.output.zero_point, p.output.min, p.output.max));
        }
    }
}

}  // namespace qf::infer::reference
