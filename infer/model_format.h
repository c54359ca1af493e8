// The int8 model file: what quant/'s freeze writes and infer/ loads
// (docs/int8-format.md is the full description).
//
// A safetensors file whose metadata holds
//   format = "qforge-int8", format_version = "2",
//   graph  = JSON: the input quantization, the ops in execution order, the
//            output dequantization and the class names;
// and whose tensors are the ops' integers: I8 weights, I32 biases, weight
// zero points, per-channel M0 and shifts.
//
// In memory the same thing is a ModelSpec: plain structs that freeze fills
// and write_model() serializes, and that parse_model() reads back after
// checking every field, dtype and shape of the file. The checks that need the
// whole graph (value shapes, zero points flowing from op to op, kernel
// parameters) are the loader's (infer/model.h). This header and
// model_format.cpp use no kernel: quant/ can include it and link qf_infer
// for it alone.
//
// Writing a model (what freeze does):
//
//   ModelSpec m;
//   m.input = {.channels = 1, .height = 28, .width = 28, .mean = {0.2860f},
//              .std = {0.3530f}, .scale = s_in, .zero_point = z_in};
//   Conv2dSpec conv;  // weights OHWI, bias, multipliers, output range ...
//   int x = m.add_op("stem", {kModelInputValue}, conv);
//   ...
//   int logits = m.add_op("fc", {x}, fc);
//   m.output = {.value = logits, .scale = s_out, .zero_point = z_out};
//   m.class_names = {...};
//   write_model(m, "model.safetensors");
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "format/safetensors.h"
#include "infer/kernels/params.h"
#include "infer/requantize.h"

namespace qf::infer {

inline constexpr const char* kModelFormat = "qforge-int8";
inline constexpr const char* kModelFormatVersion = "2";  // 2: requantization rounds once (infer/requantize.h)
inline constexpr int kModelInputValue = 0;  // the quantized input image is value 0

// Anything wrong with a model file; the message names the file, the op
// (index, name, type) where there is one, and what is wrong.
struct ModelError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// How a float image becomes value 0: pixels in [0, 1] are normalized per
// channel, x = (p - mean[c]) / std[c] (what the fp32 model was trained on),
// then quantized, q = clamp(round(x / scale) + zero_point, qmin, qmax).
struct InputSpec {
    int channels = 1, height = 0, width = 0;
    std::vector<float> mean{0.0f};  // 1 value (all channels) or `channels`
    std::vector<float> std{1.0f};   // 1 value or `channels`; positive
    double scale = 1.0;
    int32_t zero_point = 0, qmin = -128, qmax = 127;
};

// What is wrong with `input` ("" if nothing): its shape (each side in
// [1, 65536], at most 2^24 elements), scale, zero point and range, mean and std.
std::string input_spec_error(const InputSpec& input);

// The logits: value `value` (shape 1x1xclasses), r = scale * (q - zero_point).
// zero_point must equal the producing op's output zero point.
struct OutputSpec {
    int value = -1;
    double scale = 1.0;
    int32_t zero_point = 0;
};

// Stride and padding of a convolution or pooling window.
struct Window {
    int stride_h = 1, stride_w = 1;
    int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
};

// Convolution (general, 1x1 and depthwise alike; the loader picks the
// kernel). The input zero point is the input value's.
struct Conv2dSpec {
    int out_c = 0, kernel_h = 0, kernel_w = 0, in_c_per_group = 0;  // the weights' OHWI shape
    Window window;
    int groups = 1;
    std::vector<int8_t> weights;                   // [out_c][kernel_h][kernel_w][in_c_per_group]
    std::vector<int32_t> bias;                     // [out_c], scale sw * sx
    std::vector<int32_t> weight_zero_points{0};    // 1 or out_c
    std::vector<QuantizedMultiplier> multipliers;  // 1 or out_c: sw * sx / sy
    OutputRange output;                            // zero point and clamp (ReLU, ReLU6)
};

// Fully connected on a 1x1xin_features value (after flatten or a global pool).
struct FullyConnectedSpec {
    int out_features = 0, in_features = 0;
    std::vector<int8_t> weights;  // [out_features][in_features]
    std::vector<int32_t> bias;    // [out_features]
    std::vector<int32_t> weight_zero_points{0};
    std::vector<QuantizedMultiplier> multipliers;
    OutputRange output;
};

// Residual add of two values of one shape: AddParams without the input zero
// points (the inputs' own); make_add_params computes the multipliers.
struct AddSpec {
    QuantizedMultiplier input1_multiplier, input2_multiplier, output_multiplier;
    OutputRange output;
};

// Concatenation along channels; input i is requantized by s_i / s_out.
struct ConcatSpec {
    std::vector<QuantizedMultiplier> multipliers;  // one per input
    int32_t output_zero_point = 0;
};

// Max pool on the integers: output zero point = input zero point.
struct MaxPoolSpec {
    int kernel_h = 0, kernel_w = 0;
    Window window;
    int32_t qmin = -128, qmax = 127;  // a fused ReLU raises qmin
};

// Average pool, padding counted as zeros: multiplier s_in / (s_out * kh * kw).
struct AvgPoolSpec {
    int kernel_h = 0, kernel_w = 0;
    Window window;
    QuantizedMultiplier multiplier;
    OutputRange output;
};

// Average over the whole image: multiplier s_in / (s_out * h * w).
struct GlobalAvgPoolSpec {
    QuantizedMultiplier multiplier;
    OutputRange output;
};

// h x w x c -> 1 x 1 x (h*w*c) in NHWC order, no data moves. The fp32 model
// flattens NCHW: freeze reorders the following FC's weight columns to HWC
// order (fc_weights_chw_to_hwc below), so the op itself never permutes.
struct FlattenSpec {};

using OpAttributes = std::variant<Conv2dSpec, FullyConnectedSpec, AddSpec, ConcatSpec, MaxPoolSpec,
                                  AvgPoolSpec, GlobalAvgPoolSpec, FlattenSpec>;

// "conv2d", "fully_connected", "add", "concat", "max_pool", "avg_pool",
// "global_avg_pool", "flatten": the op's "type" in the file.
const char* op_type_name(const OpAttributes& op);

struct OpSpec {
    std::string name;         // for messages and the profile (e.g. the fp32 module's name)
    std::vector<int> inputs;  // value ids, each defined earlier
    int output = -1;          // a new value id
    OpAttributes op;
};

struct ModelSpec {
    InputSpec input;
    std::vector<OpSpec> ops;  // execution order
    OutputSpec output;
    std::vector<std::string> class_names;  // label order; empty, or one per logit

    // Appends an op reading `inputs` and returns the id of its new output value.
    int add_op(std::string name, std::vector<int> inputs, OpAttributes op);
};

// The safetensors bytes of `model` (tensors named "ops.<index>.<role>").
std::vector<uint8_t> model_to_bytes(const ModelSpec& model);
// Writes them atomically (temporary file, flush, rename). Throws
// safetensors::FormatError when the file cannot be written.
void write_model(const ModelSpec& model, const std::string& path);

// Reads a parsed safetensors file back into a ModelSpec, checking the format
// and version, the JSON's structure and types, every op type and attribute,
// that each referenced tensor exists with the dtype and shape the op needs
// and that no tensor is left unreferenced, every (M0, shift) with
// is_valid_quantized_multiplier, zero points and clamp ranges. Throws ModelError.
ModelSpec parse_model(const safetensors::File& file);

// The columns of an FC weight matrix [out][c*h*w] reordered from NCHW flatten
// order (c, y, x) to the NHWC order (y, x, c) of FlattenSpec.
std::vector<int8_t> fc_weights_chw_to_hwc(const int8_t* weights, int out_features, int channels,
                                          int height, int width);

}  // namespace qf::infer
