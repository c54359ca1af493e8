#include "quant/scheme.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace qf::quant {

int32_t QuantScheme::qmin() const {
    const int32_t lowest = is_signed ? -(1 << (bits - 1)) : 0;
    return narrow_range ? lowest + 1 : lowest;
}

int32_t QuantScheme::qmax() const { return is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }

int32_t QuantScheme::symmetric_zero_point() const { return is_signed ? 0 : 1 << (bits - 1); }

void QuantScheme::validate(const std::string& name) const {
    if (bits < 2 || bits > 8) {
        throw QuantError(name + ": bits " + std::to_string(bits) +
                         " is outside 2..8 (the int8 kernels hold at most 8 bits; 1 bit has no zero)");
    }
    if (per_channel && axis < 0) {
        throw QuantError(name + ": per-channel axis " + std::to_string(axis) + " is negative");
    }
}

std::string to_string(const QuantScheme& s) {
    std::ostringstream o;
    o << (s.is_signed ? "int" : "uint") << s.bits << (s.symmetric ? " symmetric" : " asymmetric");
    if (s.narrow_range) o << " narrow-range";
    if (s.per_channel) o << " per-channel(axis " << s.axis << ")";
    else o << " per-tensor";
    return o.str();
}

QuantParams choose_qparams(Range range, const QuantScheme& scheme) {
    scheme.validate("choose_qparams");
    if (!std::isfinite(range.min) || !std::isfinite(range.max) || range.min > range.max) {
        std::ostringstream o;
        o << "choose_qparams: range [" << range.min << ", " << range.max
          << "] is not a finite interval";
        throw QuantError(o.str());
    }
    // Widen to include 0, so that real 0 (padding, ReLU's output) is exact.
    const float lo = std::min(range.min, 0.0f);
    const float hi = std::max(range.max, 0.0f);
    const int32_t qmin = scheme.qmin(), qmax = scheme.qmax();
    // Computed in float32 step by step, as PyTorch's observers, so the
    // fixtures match bit for bit.
    if (scheme.symmetric) {
        const float amax = std::max(-lo, hi);
        const float scale = std::max(amax / (float(qmax - qmin) / 2.0f), kMinScale);
        return {{scale}, {scheme.symmetric_zero_point()}};
    }
    const float scale = std::max((hi - lo) / float(qmax - qmin), kMinScale);
    // The zero point is the integer nearest to where real 0 falls, so 0 is
    // exactly representable; the range shifts by less than half a step.
    const float z = float(qmin) - std::nearbyint(lo / scale);
    const int32_t zero_point = int32_t(std::clamp(z, float(qmin), float(qmax)));
    return {{scale}, {zero_point}};
}

QuantParams choose_qparams(const std::vector<Range>& ranges, const QuantScheme& scheme) {
    QuantParams all;
    for (const Range& r : ranges) {
        const QuantParams one = choose_qparams(r, scheme);
        all.scales.push_back(one.scales[0]);
        all.zero_points.push_back(one.zero_points[0]);
    }
    return all;
}

void validate(const QuantScheme& scheme, const Shape& shape, const std::string& name) {
    scheme.validate(name);
    if (scheme.per_channel && scheme.axis >= int(shape.size())) {
        throw QuantError(name + ": per-channel axis " + std::to_string(scheme.axis) +
                         " but the tensor has " + std::to_string(shape.size()) + " dims (shape " +
                         shape_str(shape) + ")");
    }
}

void validate(const QuantParams& params, const QuantScheme& scheme, const Shape& shape,
              const std::string& name) {
    validate(scheme, shape, name);
    const size_t channels = scheme.per_channel ? size_t(shape[scheme.axis]) : 1;
    if (params.scales.size() != channels || params.zero_points.size() != channels) {
        throw QuantError(name + ": " + std::to_string(params.scales.size()) + " scales and " +
                         std::to_string(params.zero_points.size()) + " zero points for " +
                         to_string(scheme) + " of shape " + shape_str(shape) + " (need " +
                         std::to_string(channels) + ")");
    }
    for (size_t c = 0; c < channels; c++) {
        const float s = params.scales[c];
        const int32_t z = params.zero_points[c];
        if (!(s > 0.0f) || !std::isfinite(s)) {
            throw QuantError(name + ": scale " + std::to_string(s) + " of channel " +
                             std::to_string(c) + " is not positive and finite");
        }
        if (z < scheme.qmin() || z > scheme.qmax()) {
            throw QuantError(name + ": zero point " + std::to_string(z) + " of channel " +
                             std::to_string(c) + " is outside [" + std::to_string(scheme.qmin()) +
                             ", " + std::to_string(scheme.qmax()) + "] of " + to_string(scheme));
        }
    }
}

ChannelLayout channel_layout(const QuantScheme& scheme, const Shape& shape) {
    if (!scheme.per_channel) return {1, 1, shape_numel(shape)};
    ChannelLayout l;
    l.channels = shape[scheme.axis];
    for (int d = 0; d < scheme.axis; d++) l.outer *= shape[d];
    l.inner = 1;
    for (size_t d = scheme.axis + 1; d < shape.size(); d++) l.inner *= shape[d];
    return l;
}

void check_int8_compatible(const QuantScheme& scheme, TensorRole role, const std::string& name) {
    scheme.validate(name);
    if (role == TensorRole::activation && scheme.per_channel) {
        throw QuantError(name + ": per-channel activations (" + to_string(scheme) +
                         ") cannot run: the int8 kernels take one scale and zero point per "
                         "activation tensor; use a per-tensor activation scheme");
    }
    if (role == TensorRole::weight && scheme.per_channel && scheme.axis != 0) {
        throw QuantError(name + ": per-channel weights on axis " + std::to_string(scheme.axis) +
                         " cannot run: the int8 kernels hold one multiplier and zero point per "
                         "output channel (axis 0); use axis 0");
    }
}

}  // namespace qf::quant
