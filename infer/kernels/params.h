// Parameters of the integer kernels, shared by the reference kernels
// (kernels/reference/) and the fast ones (kernels/conv2d.h, ...).
//
// Layout: activations are NHWC int8 (batch, height, width, channels; channels
// contiguous), as in TFLite and QNNPACK: a pixel's channels are one GEMM row,
// a 1x1 convolution is a GEMM on the tensor as it lies, and concatenation
// along channels interleaves rows. Conv weights are OHWI:
// [out_c][kernel_h][kernel_w][in_c / groups], so an output channel's weights
// are one contiguous GEMM row in the same order as an im2col row. A depthwise
// conv is groups == in_c with one weight per (out channel, tap).
//
// Types: activations are signed int8 with a per-tensor zero point in
// [-128, 127]; weights are int8 with a zero point per tensor or per output
// channel; biases int32 with scale sw * sx (zero point 0). Signed int8 on
// both sides lets the AVX2 kernels sign-extend both operands to int16 and use
// vpmaddwd, whose int32 sums of two products are exact (int8 x uint8 with
// vpmaddubsw would saturate at int16). Either signedness holds any 8-bit
// scheme: an asymmetric uint8 tensor with zero point z is the int8 tensor
// q - 128 with zero point z - 128.
//
// Per-channel vectors (weight zero points, multipliers) hold 1 element
// (per tensor) or one per output channel. The *Params structs hold integers
// only; validate_*() checks them before any kernel runs (the model loader and
// every prepare step call it) and throws ParamError with a message naming
// what is wrong.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer/requantize.h"

namespace qf::infer {

struct ParamError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// The output stage every kernel ends with: zero point and clamp range.
struct OutputRange {
    int32_t zero_point = 0;
    int32_t min = -128;  // ReLU: zero_point; ReLU6: min = zero_point, max = quantized 6
    int32_t max = 127;
};

struct Conv2dParams {
    int in_h = 0, in_w = 0, in_c = 0;
    int out_c = 0, kernel_h = 0, kernel_w = 0;
    int stride_h = 1, stride_w = 1;
    int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;  // padded with input_zero_point
    int groups = 1;  // in_c and out_c divisible by it; depthwise: groups == in_c
    int32_t input_zero_point = 0;
    std::vector<int32_t> weight_zero_points{0};       // 1 or out_c
    std::vector<QuantizedMultiplier> multipliers;     // 1 or out_c: sw * sx / sy
    OutputRange output;

    int padded_h() const { return in_h + pad_top + pad_bottom; }
    int padded_w() const { return in_w + pad_left + pad_right; }
    int out_h() const { return (padded_h() - kernel_h) / stride_h + 1; }
    int out_w() const { return (padded_w() - kernel_w) / stride_w + 1; }
    int in_c_per_group() const { return in_c / groups; }
    int out_c_per_group() const { return out_c / groups; }
    int weights_per_out_channel() const { return kernel_h * kernel_w * in_c_per_group(); }
};

// out[b][o] = requant(bias[o] + sum_i (w[o][i] - zw[o]) (x[b][i] - zx)); weights [out][in].
struct FullyConnectedParams {
    int in_features = 0, out_features = 0;
    int32_t input_zero_point = 0;
    std::vector<int32_t> weight_zero_points{0};    // 1 or out_features
    std::vector<QuantizedMultiplier> multipliers;  // 1 or out_features
    OutputRange output;
};

// TFLite's add: each input, minus its zero point, is shifted left by
// kAddLeftShift and scaled by its multiplier (s_i / (2 max(s1, s2)), at most
// 1/2) to a common scale; the int32 sum is requantized by
// 2 max(s1, s2) / (2^kAddLeftShift * s_out).
constexpr int kAddLeftShift = 20;
struct AddParams {
    int32_t input1_zero_point = 0, input2_zero_point = 0;
    QuantizedMultiplier input1_multiplier, input2_multiplier, output_multiplier;
    OutputRange output;
};
// The integers of AddParams from the real scales (used by freeze and tests).
AddParams make_add_params(double input1_scale, int32_t input1_zero_point, double input2_scale,
                          int32_t input2_zero_point, double output_scale, OutputRange output);

// Concatenation along channels of NHWC tensors of equal batch, height, width.
// Input i is requantized by s_i / s_out (an input already at the output's
// scale and zero point is copied).
struct ConcatInput {
    int channels = 0;
    int32_t zero_point = 0;
    QuantizedMultiplier multiplier;  // s_i / s_out
};
struct ConcatParams {
    int h = 0, w = 0;
    std::vector<ConcatInput> inputs;
    int32_t output_zero_point = 0;
    int out_c() const;
};

// Max pool: on the integers (input and output share scale and zero point);
// padded positions are skipped. The output clamp fuses a following ReLU.
// Average pool: the sum of (x - zx) over the whole window, padding included
// (padded positions count as zx, i.e. as 0; PyTorch's count_include_pad), is
// requantized by s_in / (s_out * kernel_h * kernel_w). Global average pool is
// the average pool whose kernel is the whole image.
struct PoolParams {
    int in_h = 0, in_w = 0, channels = 0;
    int kernel_h = 0, kernel_w = 0;
    int stride_h = 1, stride_w = 1;
    int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
    int32_t input_zero_point = 0;    // average pool only
    QuantizedMultiplier multiplier;  // average pool only
    OutputRange output;              // max pool: zero_point must equal the input's

    int out_h() const { return (in_h + pad_top + pad_bottom - kernel_h) / stride_h + 1; }
    int out_w() const { return (in_w + pad_left + pad_right - kernel_w) / stride_w + 1; }
};
PoolParams global_average_pool_params(int in_h, int in_w, int channels, int32_t input_zero_point,
                                      QuantizedMultiplier multiplier, OutputRange output);

// Checks shapes, zero points, multipliers and output ranges, and (for conv and
// FC, given the weights and bias) that no int32 accumulator can overflow:
// |bias[o]| + sum_k |w[o][k] - zw[o]| * (|zx| + 128) <= INT32_MAX for every
// output channel o. |zx| + 128 bounds |x - zx| (the naive formula of the
// reference kernels) and |zx| + |x| (the expanded one of the fast kernels).
void validate(const Conv2dParams& p, const int8_t* weights, const int32_t* bias);
void validate(const FullyConnectedParams& p, const int8_t* weights, const int32_t* bias);
void validate(const AddParams& p);
void validate(const ConcatParams& p);
void validate_max_pool(const PoolParams& p);
void validate_average_pool(const PoolParams& p);

// Element i of a per-channel vector of size 1 (per tensor) or n.
template <class T>
const T& per_channel(const std::vector<T>& v, int i) {
    return v.size() == 1 ? v[0] : v[size_t(i)];
}

}  // namespace qf::infer
