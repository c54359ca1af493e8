// Small int8 models built in code through the format writer, with random
// weights and valid multipliers: the graphs of the model tests, the `infer`
// end-to-end test and the model-loader fuzzer's seeds.
#pragma once
#include <random>

#include "infer/model_format.h"

namespace qf::infer::test {

// input C x H x W (C = 3 exercises the NCHW -> NHWC step)
//   -> conv3x3 pad 1 (8 channels) + ReLU                       value a
//   -> depthwise 3x3 pad 1 + ReLU6                             value b
//   -> conv1x1 (8 channels), linear                            value c
//   -> add(a, c) + ReLU                                        value d
//   -> global average pool -> fully connected (10 classes)
ModelSpec residual_model(std::mt19937_64& rng, int channels = 3, int height = 9, int width = 7);

// lenet in miniature: conv5x5 pad 2 + ReLU, max pool 2, conv3x3 stride 2,
// flatten, FC + ReLU, FC; the first FC's columns reordered from an NCHW
// flatten with fc_weights_chw_to_hwc (as freeze does).
ModelSpec lenet_like_model(std::mt19937_64& rng, int height = 12, int width = 12);

// Two branches concatenated (different scales), average pool 2x2, then
// global average pool and FC.
ModelSpec concat_model(std::mt19937_64& rng);

// The pieces the builders use, for tests that build their own graphs.
Conv2dSpec random_conv(std::mt19937_64& rng, int in_c, int out_c, int kernel, int stride, int pad, int groups,
                       bool per_channel, OutputRange output);
FullyConnectedSpec random_fc(std::mt19937_64& rng, int in_features, int out_features, OutputRange output);

}  // namespace qf::infer::test
