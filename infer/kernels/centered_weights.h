// What every packed int8 kernel (GEMM, depthwise 3x3, Winograd) prepares
// from a layer's weights: W - zw as int16 (in [-255, 255]), and the bias with
// the input zero point folded in, bias - zx * sum_k (W - zw), so that at run
// time the kernels sum (W - zw) * x over the raw input (the expanded formula
// of qs8_gemm.h). validate() has proved every such sum fits int32.
#pragma once
#include <cstdint>
#include <vector>

#include "infer/kernels/params.h"

namespace qf::infer {

struct CenteredWeights {
    std::vector<int16_t> values;       // [n][k]: W - zw
    std::vector<int32_t> folded_bias;  // [n]
};

// weights [n][k] (row stride k); bias [n] or null; weight_zero_points 1 or n.
inline CenteredWeights center_weights(int n, int k, const int8_t* weights, const int32_t* bias,
                                      const std::vector<int32_t>& weight_zero_points, int32_t input_zero_point) {
    CenteredWeights cw{std::vector<int16_t>(size_t(n) * k), std::vector<int32_t>(size_t(n))};
    for (int o = 0; o < n; ++o) {
        const int32_t zw = per_channel(weight_zero_points, o);
        int32_t sum = 0;
        for (int i = 0; i < k; ++i) {
            const int16_t w = int16_t(weights[size_t(o) * k + i] - zw);
            cw.values[size_t(o) * k + i] = w;
            sum += w;
        }
        cw.folded_bias[size_t(o)] = (bias ? bias[o] : 0) - input_zero_point * sum;
    }
    return cw;
}

}  // namespace qf::infer
