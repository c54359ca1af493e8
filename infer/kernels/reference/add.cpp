#include "infer/kernels/reference/reference.h"

namespace qf::infer::reference {

// Overflow: |x - z| <= 255, so |shifted| <= 255 * 2^20 < 2^28; the input
// multipliers are below 1 (validate() checks shift <= 0), so each scaled
// input is at most that too and their sum is below 2^29.
void add(const AddParams& p, int64_t size, const int8_t* input1, const int8_t* input2, int8_t* output) {
    const int32_t input1_zero_point = p.input1_zero_point, input2_zero_point = p.input2_zero_point;
    const QuantizedMultiplier m1 = p.input1_multiplier, m2 = p.input2_multiplier, mo = p.output_multiplier;
    for (int64_t i = 0; i < size; ++i) {
        const int32_t shifted1 = (int32_t(input1[i]) - input1_zero_point) * (1 << kAddLeftShift);
        const int32_t shifted2 = (int32_t(input2[i]) - input2_zero_point) * (1 << kAddLeftShift);
        const int32_t scaled1 = multiply_by_quantized_multiplier(shifted1, m1.M0, m1.shift);
        const int32_t scaled2 = multiply_by_quantized_multiplier(shifted2, m2.M0, m2.shift);
        const int32_t sum = scaled1 + scaled2;
        output[i] = int8_t(requantize(sum, mo.M0, mo.shift, p.output.zero_point, p.output.min, p.output.max));
    }
}

}  // namespace qf::infer::reference
