// Quantization schemes and the (scale, zero point) chosen for a float range.
//
// The arithmetic is DESIGN.md's contract with infer/:
//   r = s * (q - z),   q = clamp(round(r / s) + z, qmin, qmax)
// with round-half-to-even of the float quotient r / s (infer/quantize.cpp).
//
// Example:
//   QuantScheme w{.bits = 8, .symmetric = true, .per_channel = true, .axis = 0};
//   QuantParams p = choose_qparams({-0.5f, 0.3f}, w);   // one range -> one scale
//   check_int8_compatible(w, TensorRole::weight, "conv1.weight");
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tensor.h"

namespace qf::quant {

// Thrown for a bad scheme, bad parameters or an observer without data; the
// message names the tensor or observer and the setting.
struct QuantError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// The smallest scale choose_qparams returns (float32's epsilon, as PyTorch's
// observers): a constant tensor (min == max == 0) still gets a usable scale,
// and r / s never divides by zero.
constexpr float kMinScale = 1.1920928955078125e-07f;

struct QuantScheme {
    int bits = 8;              // 2..8
    bool symmetric = false;    // zero point fixed at the centre of [qmin, qmax]
    bool is_signed = true;     // q in [-2^(bits-1), 2^(bits-1) - 1], else [0, 2^bits - 1]
    bool per_channel = false;  // one (scale, zero point) per index of `axis`
    int axis = 0;              // weights: 0, the output channel (OIHW conv, (OUT, IN) linear)
    bool narrow_range = false; // drop the lowest level: [-127, 127] instead of [-128, 127]

    int32_t qmin() const;
    int32_t qmax() const;
    // The zero point of a symmetric scheme: 0 when signed, 2^(bits-1) when
    // unsigned (128 for 8 bits), so an unsigned symmetric tensor is the signed
    // one shifted by 2^(bits-1). (PyTorch picks (qmin+qmax)/2 for a custom
    // unsigned range; for [0, 255] both give 128.)
    int32_t symmetric_zero_point() const;
    // Throws QuantError for bits outside 2..8 or a negative axis; `name` names
    // the tensor or layer in the message.
    void validate(const std::string& name) const;
};

std::string to_string(const QuantScheme& s);  // "int8 asymmetric per-channel(axis 0)"

// One scale and zero point per tensor, or one per channel of the scheme's axis.
struct QuantParams {
    std::vector<float> scales;
    std::vector<int32_t> zero_points;
    size_t channels() const { return scales.size(); }
};

// A float range [min, max] seen by an observer.
using Range = FiniteMinMax;

// The affine parameters for one range (as PyTorch's observers, in float32):
//   the range is widened to include 0 (min <= 0 <= max);
//   asymmetric: s = (max - min) / (qmax - qmin), z = qmin - round(min / s),
//               clamped to [qmin, qmax] ("nudged": 0 is the integer z exactly);
//   symmetric:  s = max(-min, max) / ((qmax - qmin) / 2), z = symmetric_zero_point();
//   s is at least kMinScale. Throws QuantError for a NaN or infinite bound.
QuantParams choose_qparams(Range range, const QuantScheme& scheme);
// One (scale, zero point) per range: a per-channel scheme's ranges.
QuantParams choose_qparams(const std::vector<Range>& ranges, const QuantScheme& scheme);

// Checks that `shape` has the per-channel axis (and, given params, that they
// hold one entry per channel, or one for per tensor), that every scale is
// positive and finite and every zero point in [qmin, qmax]. Throws QuantError
// naming `name`, the setting and the shape.
void validate(const QuantScheme& scheme, const Shape& shape, const std::string& name);
void validate(const QuantParams& params, const QuantScheme& scheme, const Shape& shape,
              const std::string& name);

// A tensor seen as [outer][channels][inner] around the scheme's axis:
// element (o, c, i) is at (o * channels + c) * inner + i. Per tensor it is
// one channel of all the elements. The shape must have the axis (validate()).
struct ChannelLayout {
    int64_t outer = 1, channels = 1, inner = 0;
};
ChannelLayout channel_layout(const QuantScheme& scheme, const Shape& shape);

// What a tensor is in the integer graph: its kernels accept different schemes.
enum class TensorRole { weight, activation };

// Throws QuantError, saying which setting and why, for a scheme that
// infer/kernels (params.h) cannot run: an activation scheme must be per
// tensor (the kernels take one input zero point and scale); a weight scheme
// per tensor or per channel on axis 0 (one multiplier and zero point per
// output channel). Every 2..8-bit scheme fits int8 storage: a signed one
// directly, an unsigned one shifted by -128 (q - 128, zero point z - 128, both
// within [-128, 127] since z is in [qmin, qmax]).
void check_int8_compatible(const QuantScheme& scheme, TensorRole role, const std::string& name);

}  // namespace qf::quant
