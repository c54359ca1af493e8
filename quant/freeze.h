// Freezing: a QAT model (prepare_qat, trained or calibrated) becomes the
// int8 graph that infer/ runs, with the same numbers the fake-quant forward
// used: BN folded with running statistics, weights quantized with the
// weight quantizer's parameters, biases to int32 at scale sw*sx, each
// layer's requantization multiplier sw*sx/sy as a Q31 M0 and shift, and
// ReLU/ReLU6 as the clamp of the requantized output.
//
// Example:
//   infer::ModelSpec spec = freeze(*qat_model, {.channels = 1, .height = 28, .width = 28,
//                                               .mean = {0.2860f}, .std = {0.3530f}});
//   infer::write_model(spec, "runs/x/model.int8.safetensors");
//   infer::Model int8(spec);   // or evaluate it in memory
#pragma once
#include <string>
#include <vector>

#include "infer/model_format.h"
#include "quant/qat.h"

namespace qf::quant {

struct FreezeInput {
    int channels = 1, height = 28, width = 28;
    std::vector<float> mean{0.0f}, std{1.0f};  // the normalization the model was trained with
    std::vector<std::string> class_names;
};

// Throws QuantError naming the layer for anything the integer graph cannot
// represent (a module kind without an integer op, a bias beyond int32, a
// multiplier out of range, a quantization point that never saw data).
infer::ModelSpec freeze(const nn::Sequential& qat_model, const FreezeInput& input);

}  // namespace qf::quant
