// The reference models of DESIGN.md, for 1x28x28 inputs (any size works for
// resnet20 and mbv2, which end in a global average pool).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/blocks.h"

namespace qf::nn {

struct ModelSpec {
    std::string arch;     // lenet | resnet20 | mbv2
    int num_classes = 10;
    int in_channels = 1;
    int image_size = 28;  // lenet's classifier depends on it
};

const std::vector<std::string>& model_archs();

// Builds the model with weights drawn from `seed`. Throws std::invalid_argument
// for an unknown arch (naming the valid ones) or an impossible size.
std::shared_ptr<Sequential> build_model(const ModelSpec& spec, uint32_t seed);

std::shared_ptr<Sequential> lenet(const ModelSpec& spec, std::mt19937& rng);
std::shared_ptr<Sequential> resnet20(const ModelSpec& spec, std::mt19937& rng);
std::shared_ptr<Sequential> mbv2(const ModelSpec& spec, std::mt19937& rng);

// Number of trained parameters.
int64_t count_parameters(const Module& m);

}  // namespace qf::nn
