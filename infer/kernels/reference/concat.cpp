#include "infer/kernels/reference/reference.h"

namespace qf::infer::reference {

// Each input value becomes zo + round((x - zi) * s_i / s_out), clamped to
// int8; |x - zi| <= 255, and the left shift of a multiplier above 1 saturates.
void concat(const ConcatParams& p, int batch, const int8_t* const* inputs, int8_t* output) {
    const int out_c = p.out_c();
    const int64_t pixels = int64_t(batch) * p.h * p.w;
    int channel_offset = 0;
    for (size_t i = 0; i < p.inputs.size(); ++i) {
        const ConcatInput& in = p.inputs[i];
        for (int64_t pixel = 0; pixel < pixels; ++pixel) {
            for (int c = 0; c < in.channels; ++c) {
                const int32_t x = inputs[i][pixel * in.channels + c];
                output[pixel * out_c + channel_offset + c] = int8_t(requantize(
                    x - in.zero_point, in.multiplier.M0, in.multiplier.shift, p.output_zero_point, -128, 127));
            }
        }
        channel_offset += in.channels;
    }
}

}  // namespace qf::infer::reference
