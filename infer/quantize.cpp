#include "infer/quantize.h"

#include <algorithm>
#include <cmath>

namespace qf::infer {

void quantize(const float* input, int64_t size, float scale, int32_t zero_point, int8_t* output,
              int32_t qmin, int32_t qmax) {
    for (int64_t i = 0; i < size; ++i) {
        const float r = input[i];
        if (std::isnan(r)) {
            output[i] = int8_t(std::clamp(zero_point, qmin, qmax));
            continue;
        }
        // Clamped in float before the conversion to int, so no value can overflow it.
        const float q = std::nearbyint(r / scale) + float(zero_point);
        output[i] = int8_t(std::clamp(q, float(qmin), float(qmax)));
    }
}

void dequantize(const int8_t* input, int64_t size, float scale, int32_t zero_point, float* output) {
    for (int64_t i = 0; i < size; ++i) output[i] = scale * float(int32_t(input[i]) - zero_point);
}

}  // namespace qf::infer
