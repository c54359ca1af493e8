// The two ends of the integer graph, the only places with float: the model's
// float input is quantized once, and the logits are dequantized once.
// r = scale * (q - zero_point); q = clamp(round(r / scale) + zero_point, qmin, qmax)
// with round-half-to-even (std::nearbyint in the default rounding mode, as
// PyTorch's quantize_per_tensor and fake_quantize round). quant/'s input
// fake-quant must round the same way.
#pragma once
#include <cstdint>

namespace qf::infer {

// NaN quantizes to the zero point (real 0); infinities to qmin / qmax.
void quantize(const float* input, int64_t size, float scale, int32_t zero_point, int8_t* output,
              int32_t qmin = -128, int32_t qmax = 127);
void dequantize(const int8_t* input, int64_t size, float scale, int32_t zero_point, float* output);

}  // namespace qf::infer
