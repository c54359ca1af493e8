#include "infer/kernels/params.h"

#include <algorithm>
#include <cstdlib>
#include <limits>

namespace qf::infer {

namespace {

void require(bool ok, const std::string& what) {
    if (!ok) throw ParamError(what);
}

bool is_int8(int32_t v) { return v >= -128 && v <= 127; }

void check_zero_point(int32_t zp, const char* what) {
    require(is_int8(zp), std::string(what) + " zero point " + std::to_string(zp) + " outside [-128, 127]");
}

void check_output(const OutputRange& out, const char* op) {
    check_zero_point(out.zero_point, op);
    require(is_int8(out.min) && is_int8(out.max) && out.min <= out.max,
            std::string(op) + ": output range [" + std::to_string(out.min) + ", " +
                std::to_string(out.max) + "] not within [-128, 127]");
}

void check_multiplier(QuantizedMultiplier m, const char* op) {
    require(is_valid_quantized_multiplier(m.M0, m.shift),
            std::string(op) + ": multiplier (M0 " + std::to_string(m.M0) + ", shift " +
                std::to_string(m.shift) + ") out of range");
}

template <class T>
void check_per_channel(const std::vector<T>& v, int channels, const char* what) {
    require(v.size() == 1 || v.size() == size_t(channels),
            std::string(what) + ": " + std::to_string(v.size()) + " values for " +
                std::to_string(channels) + " output channels (need 1 or one per channel)");
}

// The proof that a conv/FC accumulator fits int32, checked per output channel.
void check_accumulator_bound(int out_channels, int weights_per_channel, const int8_t* weights,
                             const int32_t* bias, const std::vector<int32_t>& weight_zero_points,
                             int32_t input_zero_point, const char* op) {
    // max|x - zx| is max(127 - zx, zx + 128); |zx| + 128 is at least that and
    // also bounds the expanded form of the fast kernels (qs8_gemm.h).
    const int64_t max_input = std::abs(int64_t(input_zero_point)) + 128;
    for (int o = 0; o < out_channels; ++o) {
        const int32_t zw = per_channel(weight_zero_points, o);
        int64_t bound = bias ? std::abs(int64_t(bias[o])) : 0;
        const int8_t* w = weights + size_t(o) * weights_per_channel;
        for (int k = 0; k < weights_per_channel; ++k) bound += std::abs(int64_t(w[k]) - zw) * max_input;
        require(bound <= std::numeric_limits<int32_t>::max(),
                std::string(op) + ": output channel " + std::to_string(o) +
                    " could overflow its int32 accumulator (bias plus weights too large)");
    }
}

}  // namespace

AddParams make_add_params(double input1_scale, int32_t input1_zero_point, double input2_scale,
                          int32_t input2_zero_point, double output_scale, OutputRange output) {
    require(input1_scale > 0 && input2_scale > 0 && output_scale > 0, "add: scales must be positive");
    const double twice_max_input_scale = 2 * std::max(input1_scale, input2_scale);
    AddParams p;
    p.input1_zero_point = input1_zero_point;
    p.input2_zero_point = input2_zero_point;
    p.input1_multiplier = quantize_multiplier(input1_scale / twice_max_input_scale);
    p.input2_multiplier = quantize_multiplier(input2_scale / twice_max_input_scale);
    p.output_multiplier =
        quantize_multiplier(twice_max_input_scale / (double(1 << kAddLeftShift) * output_scale));
    p.output = output;
    return p;
}

int ConcatParams::out_c() const {
    int c = 0;
    for (const ConcatInput& in : inputs) c += in.channels;
    return c;
}

PoolParams global_average_pool_params(int in_h, int in_w, int channels, int32_t input_zero_point,
                                      QuantizedMultiplier multiplier, OutputRange output) {
    PoolParams p;
    p.in_h = p.kernel_h = in_h;
    p.in_w = p.kernel_w = in_w;
    p.channels = channels;
    p.input_zero_point = input_zero_point;
    p.multiplier = multiplier;
    p.output = output;
    return p;
}

void validate(const Conv2dParams& p, const int8_t* weights, const int32_t* bias) {
    require(p.in_h > 0 && p.in_w > 0 && p.in_c > 0 && p.out_c > 0, "conv2d: sizes must be positive");
    require(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0,
            "conv2d: kernel and stride must be positive");
    require(p.pad_top >= 0 && p.pad_left >= 0 && p.pad_bottom >= 0 && p.pad_right >= 0,
            "conv2d: negative padding");
    require(p.pad_top < p.kernel_h && p.pad_bottom < p.kernel_h && p.pad_left < p.kernel_w &&
                p.pad_right < p.kernel_w,
            "conv2d: padding must be smaller than the kernel");
    require(p.groups > 0 && p.in_c % p.groups == 0 && p.out_c % p.groups == 0,
            "conv2d: groups must divide in_c and out_c");
    require(p.in_h + p.pad_top + p.pad_bottom >= p.kernel_h && p.in_w + p.pad_left + p.pad_right >= p.kernel_w,
            "conv2d: kernel larger than the padded input");
    check_zero_point(p.input_zero_point, "conv2d: input");
    check_per_channel(p.weight_zero_points, p.out_c, "conv2d: weight zero points");
    for (int32_t zw : p.weight_zero_points) check_zero_point(zw, "conv2d: weight");
    check_per_channel(p.multipliers, p.out_c, "conv2d: multipliers");
    for (QuantizedMultiplier m : p.multipliers) check_multiplier(m, "conv2d");
    check_output(p.output, "conv2d: output");
    require(weights != nullptr, "conv2d: no weights");
    check_accumulator_bound(p.out_c, p.weights_per_out_channel(), weights, bias, p.weight_zero_points,
                            p.input_zero_point, "conv2d");
}

void validate(const FullyConnectedParams& p, const int8_t* weights, const int32_t* bias) {
    require(p.in_features > 0 && p.out_features > 0, "fully_connected: sizes must be positive");
    check_zero_point(p.input_zero_point, "fully_connected: input");
    check_per_channel(p.weight_zero_points, p.out_features, "fully_connected: weight zero points");
    for (int32_t zw : p.weight_zero_points) check_zero_point(zw, "fully_connected: weight");
    check_per_channel(p.multipliers, p.out_features, "fully_connected: multipliers");
    for (QuantizedMultiplier m : p.multipliers) check_multiplier(m, "fully_connected");
    check_output(p.output, "fully_connected: output");
    require(weights != nullptr, "fully_connected: no weights");
    check_accumulator_bound(p.out_features, p.in_features, weights, bias, p.weight_zero_points,
                            p.input_zero_point, "fully_connected");
}

void validate(const AddParams& p) {
    check_zero_point(p.input1_zero_point, "add: input 1");
    check_zero_point(p.input2_zero_point, "add: input 2");
    check_multiplier(p.input1_multiplier, "add: input 1");
    check_multiplier(p.input2_multiplier, "add: input 2");
    check_multiplier(p.output_multiplier, "add: output");
    // The input multipliers are s_i / (2 max(s1, s2)) <= 1/2: shift <= 0, and
    // (x - z) * 2^kAddLeftShift, at most 255 * 2^20 in magnitude, stays in int32
    // through the scaling and the sum of two (the bound of add.cpp).
    require(p.input1_multiplier.shift <= 0 && p.input2_multiplier.shift <= 0,
            "add: input multipliers must be below 1");
    check_output(p.output, "add: output");
}

void validate(const ConcatParams& p) {
    require(p.h > 0 && p.w > 0 && !p.inputs.empty(), "concat: empty");
    for (const ConcatInput& in : p.inputs) {
        require(in.channels > 0, "concat: input with no channels");
        check_zero_point(in.zero_point, "concat: input");
        check_multiplier(in.multiplier, "concat");
    }
    check_zero_point(p.output_zero_point, "concat: output");
}

static void validate_pool_shape(const PoolParams& p, const char* op) {
    const std::string name = op;
    require(p.in_h > 0 && p.in_w > 0 && p.channels > 0, name + ": sizes must be positive");
    require(p.kernel_h > 0 && p.kernel_w > 0 && p.stride_h > 0 && p.stride_w > 0,
            name + ": kernel and stride must be positive");
    require(p.pad_top >= 0 && p.pad_left >= 0 && p.pad_bottom >= 0 && p.pad_right >= 0 &&
                p.pad_top < p.kernel_h && p.pad_bottom < p.kernel_h && p.pad_left < p.kernel_w &&
                p.pad_right < p.kernel_w,
            name + ": padding must be in [0, kernel)");
    require(p.in_h + p.pad_top + p.pad_bottom >= p.kernel_h && p.in_w + p.pad_left + p.pad_right >= p.kernel_w,
            name + ": kernel larger than the padded input");
    check_output(p.output, op);
}

void validate_max_pool(const PoolParams& p) {
    validate_pool_shape(p, "max_pool");
    require(p.output.zero_point == p.input_zero_point,
            "max_pool: input and output must share the zero point");
}

void validate_average_pool(const PoolParams& p) {
    validate_pool_shape(p, "average_pool");
    check_zero_point(p.input_zero_point, "average_pool: input");
    check_multiplier(p.multiplier, "average_pool");
    // The window sum of (x - zx), each at most 255 in magnitude, must fit int32.
    require(int64_t(p.kernel_h) * p.kernel_w * 255 <= std::numeric_limits<int32_t>::max(),
            "average_pool: window too large for an int32 sum");
}

}  // namespace qf::infer
