// Fake quantization as autograd ops: the forward rounds x to the integer grid
// and back (quantize-dequantize), so training sees the integer graph's values.
//
// Example (QAT of a conv weight and its output activation):
//   Tensor wq = fake_quantize(w, weight_observer.qparams(), weight_scheme, "conv1.weight");
//   Tensor y  = fake_quantize(conv2d(x, wq, b, p), act_observer.qparams(), act_scheme);
//   // LSQ: the step size is a parameter, trained with the weights
//   Tensor s = Tensor::full({out_c}, 0.01f); s.set_requires_grad(true);
//   Tensor wq = fake_quantize_learned(w, s, Tensor(), weight_scheme,
//                                     lsq_grad_factor(w.numel(), weight_scheme));
//
// Rounding: exactly infer/quantize.cpp's, element by element:
//   q = clamp(nearbyint(x / s) + z, qmin, qmax),  y = (q - z) * s
// in float32, with x / s a true division and nearbyint rounding half to even.
// PyTorch's fake_quantize multiplies by a precomputed 1/s instead; x * (1/s)
// and x / s can round to different floats, so near a .5 tie the two can pick
// neighbouring integers. qforge follows the integer graph (tests/quant's
// fixture test counts and bounds those ties). NaN becomes 0 (the zero point),
// +-inf become the range ends, as infer::quantize.
//
// Backward: the straight-through estimator. d(y)/d(x) = 1 where the unclamped
// nearbyint(x / s) + z lies inside [qmin, qmax], 0 elsewhere (and for NaN).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "autograd/tensor.h"
#include "quant/scheme.h"

namespace qf::quant {

// Fixed scale and zero point, per tensor or per channel of scheme.axis.
// Throws QuantError (naming `name`) for params that do not fit the scheme and shape.
Tensor fake_quantize(const Tensor& x, const QuantParams& params, const QuantScheme& scheme,
                     const std::string& name = "fake_quantize");

// Learned ranges, as PyTorch's _fake_quantize_learnable_per_{tensor,channel}_affine.
//   scale:      1 element (per tensor) or one per channel; the forward uses
//               max(scale, kMinScale), so a scale pushed to 0 or below by an
//               update still quantizes (PyTorch clamps it in place likewise).
//   zero_point: undefined for LSQ (a symmetric scheme: z = its symmetric zero
//               point, not learned), or a float tensor shaped as `scale`
//               (LSQ+: learned offset; the forward uses
//               clamp(nearbyint(zero_point), qmin, qmax), the backward passes
//               straight through the rounding).
// Gradients (Esser et al. 2019, eq. 3; LSQ+ for the offset), per element,
// with q = nearbyint(x / s) + z before the clamp:
//   inside [qmin, qmax]: dy/dx = 1, dy/ds = (q - z) - x / s, dy/dz = 0
//   below qmin:          dy/dx = 0, dy/ds = qmin - z,       dy/dz = -s
//   above qmax:          dy/dx = 0, dy/ds = qmax - z,       dy/dz = -s
// summed per channel and multiplied by grad_factor (LSQ's gradient scale g).
// PyTorch's per-channel op rounds the zero point half away from zero, its
// per-tensor backward with z + 0.5 truncated: they agree with nearbyint except
// at .5 (and, per tensor, for negative zero points); qforge uses nearbyint in
// both directions.
Tensor fake_quantize_learned(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                             const QuantScheme& scheme, float grad_factor,
                             const std::string& name = "fake_quantize_learned");

// LSQ's gradient scale g = 1 / sqrt(numel * qmax), numel being the number of
// elements sharing one scale in Esser et al.; PyTorch's _LearnableFakeQuantize
// passes the whole tensor's numel, per channel too; so do the fixtures.
float lsq_grad_factor(int64_t numel, const QuantScheme& scheme);

// A bias as the integer graph adds it to its int32 accumulator: in steps of
// sw[c] * sx (channel c's weight scale times the input's scale),
//   q = nearbyint(b / (sw * sx))  in double,   y = q * sw * sx,
// the rounding freeze writes (quantize_bias_level). Backward: straight
// through (the int32 range is never near; freeze refuses a bias beyond it).
// weight_params: per tensor (1 scale) or one scale per element of b.
Tensor fake_quantize_bias(const Tensor& b, const QuantParams& weight_params, double input_scale,
                          const std::string& name = "fake_quantize_bias");
inline double quantize_bias_level(float b, double weight_scale, double input_scale) {
    return std::nearbyint(double(b) / (weight_scale * input_scale));
}

// PACT (Choi et al. 2018): y = fake-quantized clamp(x, 0, alpha), with the
// range [0, alpha] mapped onto [qmin, qmax]: s = alpha / (qmax - qmin),
// z = qmin (so real 0 is exact and alpha is the top level). alpha is a learned
// one-element tensor; the scheme must be per tensor and asymmetric.
// Gradients (the paper's straight-through estimator):
//   dy/dx = 1 where 0 <= x < alpha, else 0;  dy/dalpha = 1 where x >= alpha, else 0.
Tensor pact(const Tensor& x, const Tensor& alpha, const QuantScheme& scheme,
            const std::string& name = "pact");

// The (scale, zero point) PACT quantizes with, for freezing to the int8 graph.
QuantParams pact_qparams(float alpha, const QuantScheme& scheme);

}  // namespace qf::quant
