#include "tiny_models.h"

#include "kernel_test_util.h"

namespace qf::infer::test {

namespace {

OutputRange relu(int32_t zero_point) { return {zero_point, zero_point, 127}; }
OutputRange linear(int32_t zero_point) { return {zero_point, -128, 127}; }

std::vector<std::string> class_names(int n) {
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) names.push_back("class_" + std::to_string(i));
    return names;
}

InputSpec input_spec(int channels, int height, int width) {
    InputSpec in;
    in.channels = channels, in.height = height, in.width = width;
    in.mean = channels == 1 ? std::vector<float>{0.2860f} : std::vector<float>{0.485f, 0.456f, 0.406f};
    in.std = channels == 1 ? std::vector<float>{0.3530f} : std::vector<float>{0.229f, 0.224f, 0.225f};
    in.scale = 0.02;  // normalized pixels span about [-2.2, 2.7]
    in.zero_point = -10;
    return in;
}

}  // namespace

Conv2dSpec random_conv(std::mt19937_64& rng, int in_c, int out_c, int kernel, int stride, int pad, int groups,
                       bool per_channel, OutputRange output) {
    Conv2dSpec c;
    c.out_c = out_c, c.kernel_h = c.kernel_w = kernel, c.in_c_per_group = in_c / groups;
    c.window.stride_h = c.window.stride_w = stride;
    c.window.pad_top = c.window.pad_left = c.window.pad_bottom = c.window.pad_right = pad;
    c.groups = groups;
    const int k = kernel * kernel * c.in_c_per_group;
    c.weights = random_int8(rng, size_t(out_c) * k, -127, 127);
    c.bias = random_int32(rng, size_t(out_c), -2000, 2000);
    const int channels = per_channel ? out_c : 1;
    c.weight_zero_points = per_channel ? std::vector<int32_t>(size_t(out_c), 0) : std::vector<int32_t>{3};
    c.multipliers.clear();
    for (int i = 0; i < channels; ++i) c.multipliers.push_back(random_multiplier(rng, k));
    c.output = output;
    return c;
}

FullyConnectedSpec random_fc(std::mt19937_64& rng, int in_features, int out_features, OutputRange output) {
    FullyConnectedSpec f;
    f.out_features = out_features, f.in_features = in_features;
    f.weights = random_int8(rng, size_t(out_features) * in_features, -127, 127);
    f.bias = random_int32(rng, size_t(out_features), -2000, 2000);
    f.weight_zero_points = {0};
    for (int i = 0; i < out_features; ++i) f.multipliers.push_back(random_multiplier(rng, in_features));
    f.output = output;
    return f;
}

ModelSpec residual_model(std::mt19937_64& rng, int channels, int height, int width) {
    ModelSpec m;
    m.input = input_spec(channels, height, width);
    const int a = m.add_op("stem", {kModelInputValue}, random_conv(rng, channels, 8, 3, 1, 1, 1, true, relu(-128)));
    const int b = m.add_op("block.depthwise", {a}, random_conv(rng, 8, 8, 3, 1, 1, 8, true, {-100, -100, 20}));
    const int c = m.add_op("block.project", {b}, random_conv(rng, 8, 8, 1, 1, 0, 1, false, linear(5)));
    const int d = m.add_op("block.add", {a, c}, AddSpec{quantize_multiplier(0.05 / 0.16), quantize_multiplier(0.08 / 0.16),
                                                        quantize_multiplier(0.16 / (double(1 << kAddLeftShift) * 0.1)),
                                                        relu(-128)});
    const int e = m.add_op("pool", {d}, GlobalAvgPoolSpec{quantize_multiplier(1.0 / (height * width)), linear(-128)});
    const int f = m.add_op("fc", {e}, random_fc(rng, 8, 10, linear(3)));
    m.output = {f, 0.25, 3};
    m.class_names = class_names(10);
    return m;
}

ModelSpec lenet_like_model(std::mt19937_64& rng, int height, int width) {
    ModelSpec m;
    m.input = input_spec(1, height, width);
    const int a = m.add_op("conv1", {kModelInputValue}, random_conv(rng, 1, 4, 5, 1, 2, 1, true, relu(-128)));
    MaxPoolSpec pool;
    pool.kernel_h = pool.kernel_w = 2;
    pool.window.stride_h = pool.window.stride_w = 2;
    const int b = m.add_op("pool1", {a}, pool);
    const int c = m.add_op("conv2", {b}, random_conv(rng, 4, 6, 3, 2, 1, 1, false, relu(-120)));
    const int h = (height / 2 + 2 - 3) / 2 + 1, w = (width / 2 + 2 - 3) / 2 + 1;
    const int d = m.add_op("flatten", {c}, FlattenSpec{});
    FullyConnectedSpec fc1 = random_fc(rng, 6 * h * w, 16, relu(-128));
    fc1.weights = fc_weights_chw_to_hwc(fc1.weights.data(), 16, 6, h, w);
    const int e = m.add_op("fc1", {d}, fc1);
    const int f = m.add_op("fc2", {e}, random_fc(rng, 16, 10, linear(0)));
    m.output = {f, 0.1, 0};
    m.class_names = class_names(10);
    return m;
}

ModelSpec concat_model(std::mt19937_64& rng) {
    ModelSpec m;
    m.input = input_spec(1, 8, 8);
    const int a = m.add_op("left", {kModelInputValue}, random_conv(rng, 1, 3, 3, 1, 1, 1, true, relu(-128)));
    const int b = m.add_op("right", {kModelInputValue}, random_conv(rng, 1, 5, 1, 1, 0, 1, true, linear(7)));
    const int c = m.add_op("cat", {a, b}, ConcatSpec{{quantize_multiplier(0.7), quantize_multiplier(1.3)}, -4});
    AvgPoolSpec pool;
    pool.kernel_h = pool.kernel_w = 2;
    pool.window.stride_h = pool.window.stride_w = 2;
    pool.multiplier = quantize_multiplier(1.0 / 4);
    pool.output = linear(-4);
    const int d = m.add_op("avg", {c}, pool);
    const int e = m.add_op("gap", {d}, GlobalAvgPoolSpec{quantize_multiplier(1.0 / 16), linear(-4)});
    const int f = m.add_op("fc", {e}, random_fc(rng, 8, 4, linear(0)));
    m.output = {f, 0.1, 0};
    m.class_names = {"a", "b", "c", "d"};
    return m;
}

}  // namespace qf::infer::test
