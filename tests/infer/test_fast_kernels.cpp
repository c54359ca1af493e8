// Every fast kernel bit-exactly against its reference kernel, on randomized
// shapes: odd sizes, strides 1 and 2, padding, groups and depthwise, batch 1
// and larger, nonzero zero points, per-tensor and per-channel weights. Both
// the AVX2 path (where built) and the portable path of each prepared op run.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "infer/kernels/conv2d.h"
#include "infer/kernels/reference/reference.h"
#include "kernel_test_util.h"

using namespace qf::infer;
using namespace qf::infer::test;

namespace {

// Builds a random convolution of the given shape, with random quantization.
struct ConvCase {
    Conv2dParams p;
    int batch = 1;
    std::vector<int8_t> input, weights;
    std::vector<int32_t> bias;

    ConvCase(std::mt19937_64& rng, Conv2dParams shape, int batch_) : p(shape), batch(batch_) {
        const bool per_channel = uniform_int(rng, 0, 1);
        const bool weight_zero_points = uniform_int(rng, 0, 2) == 0;  // mostly symmetric, as freeze makes them
        const int channels = per_channel ? p.out_c : 1;
        const int k = p.weights_per_out_channel();
        p.input_zero_point = uniform_int(rng, -128, 127);
        p.weight_zero_points = weight_zero_points ? random_int32(rng, size_t(channels), -128, 127)
                                                  : std::vector<int32_t>(size_t(channels), 0);
        p.multipliers.clear();
        for (int c = 0; c < channels; ++c) p.multipliers.push_back(random_multiplier(rng, k));
        if (uniform_int(rng, 0, 9) == 0) p.multipliers[0] = quantize_multiplier(1.5);  // a left shift
        p.output = random_output_range(rng);
        input = random_int8(rng, size_t(batch) * p.in_h * p.in_w * p.in_c);
        weights = random_int8(rng, size_t(p.out_c) * k);
        bias = random_int32(rng, size_t(p.out_c), -100000, 100000);
    }

    void input_zero_point_fixed(int32_t zx) { p.input_zero_point = zx; }

    std::string describe() const {
        return "batch " + std::to_string(batch) + " in " + std::to_string(p.in_h) + "x" + std::to_string(p.in_w) +
               "x" + std::to_string(p.in_c) + " out_c " + std::to_string(p.out_c) + " kernel " +
               std::to_string(p.kernel_h) + "x" + std::to_string(p.kernel_w) + " stride " + std::to_string(p.stride_h) +
               "," + std::to_string(p.stride_w) + " pad " + std::to_string(p.pad_top) + "," +
               std::to_string(p.pad_left) + "," + std::to_string(p.pad_bottom) + "," + std::to_string(p.pad_right) +
               " groups " + std::to_string(p.groups) + " zx " + std::to_string(p.input_zero_point) +
               " per-channel " + std::to_string(p.multipliers.size() > 1);
    }

    // Runs the prepared op on both paths and the reference; all must agree
    // exactly. A 3x3 stride-1 convolution runs both with and without Winograd.
    // Returns whether the first prepared op took the Winograd kernel.
    bool check() const {
        INFO(describe());
        const size_t out_size = size_t(batch) * p.out_h() * p.out_w() * p.out_c;
        std::vector<int8_t> expected(out_size);
        reference::conv2d(p, batch, input.data(), weights.data(), bias.data(), expected.data());
        bool winograd = false;
        for (const auto use : {Conv2d::Winograd::whenever_exact, Conv2d::Winograd::never}) {
            INFO("winograd allowed " << (use == Conv2d::Winograd::whenever_exact));
            const Conv2d conv(p, weights.data(), bias.data(), use);
            if (use == Conv2d::Winograd::whenever_exact) winograd = conv.uses_winograd();
            std::vector<int8_t> fast(out_size, 0x55), portable(out_size, 0x55);
            conv.run(batch, input.data(), fast.data());
            conv.run(batch, input.data(), portable.data(), false);
            REQUIRE(fast == expected);
            REQUIRE(portable == expected);
            if (!winograd) break;  // the same op twice
        }
        return winograd;
    }
};

// A square convolution with the same padding on every side.
Conv2dParams shape(int hw, int in_c, int out_c, int kernel, int stride, int pad, int groups) {
    Conv2dParams p;
    p.in_h = p.in_w = hw;
    p.in_c = in_c;
    p.out_c = out_c;
    p.kernel_h = p.kernel_w = kernel;
    p.stride_h = p.stride_w = stride;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
    p.groups = groups;
    return p;
}

Conv2dParams random_conv_shape(std::mt19937_64& rng, int groups, int kernel) {
    Conv2dParams p;
    p.groups = groups;
    p.in_c = groups * uniform_int(rng, 1, 7);
    p.out_c = groups * uniform_int(rng, 1, 21);
    p.kernel_h = kernel;
    p.kernel_w = uniform_int(rng, 0, 4) == 0 ? uniform_int(rng, 1, 3) : kernel;  // sometimes not square
    p.in_h = uniform_int(rng, p.kernel_h, 11);
    p.in_w = uniform_int(rng, p.kernel_w, 11);
    p.stride_h = uniform_int(rng, 1, 2);
    p.stride_w = uniform_int(rng, 1, 2);
    p.pad_top = uniform_int(rng, 0, p.kernel_h - 1);
    p.pad_bottom = uniform_int(rng, 0, p.kernel_h - 1);
    p.pad_left = uniform_int(rng, 0, p.kernel_w - 1);
    p.pad_right = uniform_int(rng, 0, p.kernel_w - 1);
    return p;
}

}  // namespace

TEST_CASE("conv2d (GEMM on the padded input, any kernel and groups) matches the reference") {
    std::mt19937_64 rng(20);
    for (int iter = 0; iter < 300; ++iter) {
        const int groups = uniform_int(rng, 0, 2) == 0 ? uniform_int(rng, 2, 4) : 1;
        const int kernel = uniform_int(rng, 1, 5);
        ConvCase(rng, random_conv_shape(rng, groups, kernel), uniform_int(rng, 1, 3)).check();
    }
}

TEST_CASE("conv2d 1x1 (GEMM on the input in place) matches the reference") {
    std::mt19937_64 rng(21);
    for (int iter = 0; iter < 150; ++iter) {
        Conv2dParams p = random_conv_shape(rng, uniform_int(rng, 0, 3) == 0 ? 2 : 1, 1);
        p.kernel_w = 1;
        p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 0;
        p.in_c = p.groups * uniform_int(rng, 1, 40);  // k odd and even, below and above 16
        ConvCase(rng, p, uniform_int(rng, 1, 4)).check();
    }
}

TEST_CASE("conv2d 3x3 stride 1 (exact integer Winograd) matches the reference") {
    std::mt19937_64 rng(26);
    for (int iter = 0; iter < 200; ++iter) {
        Conv2dParams p = random_conv_shape(rng, 1, 3);
        p.kernel_w = 3;
        p.stride_h = p.stride_w = 1;
        p.pad_left = uniform_int(rng, 0, 2);
        p.pad_right = uniform_int(rng, 0, 2);
        p.in_w = uniform_int(rng, 3, 11);  // odd and even output sizes: partial last tiles
        p.in_c = uniform_int(rng, 1, 40);  // odd and even, below and above a pair of GEMM tiles
        p.out_c = uniform_int(rng, 1, 40);
        REQUIRE(is_winograd3x3_shape(p));
        REQUIRE(ConvCase(rng, p, uniform_int(rng, 1, 3)).check());
    }
}

TEST_CASE("conv2d 3x3 whose Winograd intermediates could overflow int32 stays on the GEMM") {
    // |w - zw| = 127 with the sign alternating by kernel row: the transformed
    // weights of each input channel then sum to 127 * 8 * 8 in magnitude over
    // the 16 positions, times 512 (max |V|) times 600 channels > INT32_MAX,
    // though the direct sum stays far inside int32.
    std::mt19937_64 rng(27);
    Conv2dParams p = shape(6, 600, 2, 3, 1, 1, 1);
    p.weight_zero_points = {0};
    p.multipliers = {quantize_multiplier(1e-7)};
    ConvCase big(rng, p, 1);
    for (size_t i = 0; i < big.weights.size(); ++i) big.weights[i] = (i / 600 / 3) % 2 ? -127 : 127;
    big.input_zero_point_fixed(0);
    CHECK_FALSE(pack_winograd3x3(big.p, big.weights.data(), big.bias.data()).has_value());
    CHECK_FALSE(big.check());
}

TEST_CASE("conv2d depthwise 3x3 (direct kernel) matches the reference") {
    std::mt19937_64 rng(22);
    for (int iter = 0; iter < 200; ++iter) {
        Conv2dParams p = random_conv_shape(rng, 1, 3);
        p.kernel_w = 3;
        p.pad_left = uniform_int(rng, 0, 2);
        p.pad_right = uniform_int(rng, 0, 2);
        p.in_c = p.out_c = p.groups = uniform_int(rng, 1, 40);  // whole blocks of 8 and remainders
        p.in_w = uniform_int(rng, 3, 11);
        REQUIRE(is_depthwise3x3(p));
        ConvCase(rng, p, uniform_int(rng, 1, 3)).check();
    }
}

TEST_CASE("conv2d depthwise with other kernels and channel multipliers (GEMM per group)") {
    std::mt19937_64 rng(23);
    for (int iter = 0; iter < 60; ++iter) {
        const int channels = uniform_int(rng, 1, 12);
        Conv2dParams p = random_conv_shape(rng, channels, uniform_int(rng, 0, 1) ? 5 : 3);
        p.in_c = channels;
        p.out_c = channels * uniform_int(rng, 1, 2);
        ConvCase(rng, p, uniform_int(rng, 1, 2)).check();
    }
}

TEST_CASE("conv2d at the reference models' shapes") {
    std::mt19937_64 rng(24);
    const Conv2dParams shapes[] = {
        shape(28, 1, 32, 5, 1, 2, 1),    // lenet conv1
        shape(14, 32, 64, 5, 1, 2, 1),   // lenet conv2
        shape(28, 16, 16, 3, 1, 1, 1),   // resnet20 stage 1
        shape(28, 16, 32, 3, 2, 1, 1),   // resnet20 stage 2 entry
        shape(28, 16, 32, 1, 2, 0, 1),   // resnet20 projection shortcut
        shape(14, 24, 96, 1, 1, 0, 1),   // mbv2 expand
        shape(14, 96, 96, 3, 2, 1, 96),  // mbv2 depthwise, stride 2
        shape(7, 128, 128, 3, 1, 1, 128),
    };
    for (const Conv2dParams& p : shapes) ConvCase(rng, p, 3).check();
}

TEST_CASE("fully_connected matches the reference") {
    std::mt19937_64 rng(25);
    for (int iter = 0; iter < 100; ++iter) {
        FullyConnectedParams p;
        p.in_features = uniform_int(rng, 1, 300);
        p.out_features = uniform_int(rng, 1, 40);
        const int batch = uniform_int(rng, 1, 9);
        const bool per_channel = uniform_int(rng, 0, 1);
        const int channels = per_channel ? p.out_features : 1;
        p.input_zero_point = uniform_int(rng, -128, 127);
        p.weight_zero_points = random_int32(rng, size_t(channels), -128, 127);
        p.multipliers.clear();
        for (int c = 0; c < channels; ++c) p.multipliers.push_back(random_multiplier(rng, p.in_features));
        p.output = random_output_range(rng);
        const auto input = random_int8(rng, size_t(batch) * p.in_features);
        const auto weights = random_int8(rng, size_t(p.out_features) * p.in_features);
        const auto bias = random_int32(rng, size_t(p.out_features), -100000, 100000);
        std::vector<int8_t> expected(size_t(batch) * p.out_features), fast(expected.size()), portable(expected.size());
        reference::fully_connected(p, batch, input.data(), weights.data(), bias.data(), expected.data());
        const FullyConnected fc(p, weights.data(), bias.data());
        fc.run(batch, input.data(), fast.data());
        fc.run(batch, input.data(), portable.data(), false);
        INFO("batch " << batch << " in " << p.in_features << " out " << p.out_features);
        REQUIRE(fast == expected);
        REQUIRE(portable == expected);
    }
}

TEST_CASE("extreme accumulators: the largest weights and inputs the bound allows") {
    // in = -128 everywhere, zx = 127, w - zw = 255: every product is 255 * 255.
    Conv2dParams p = shape(5, 64, 3, 3, 1, 1, 1);
    p.input_zero_point = 127;
    p.weight_zero_points = {-128};
    p.multipliers = {quantize_multiplier(1e-6)};
    std::vector<int8_t> input(size_t(p.in_h) * p.in_w * p.in_c, -128), weights(size_t(p.out_c) * 9 * 64, 127);
    const std::vector<int32_t> bias = {0, 1000000000, -1000000000};
    std::vector<int8_t> expected(size_t(p.out_h()) * p.out_w() * p.out_c), fast(expected.size());
    reference::conv2d(p, 1, input.data(), weights.data(), bias.data(), expected.data());
    const Conv2d conv(p, weights.data(), bias.data());
    conv.run(1, input.data(), fast.data());
    CHECK(fast == expected);
    // The centre pixel of channel 0: 576 products of -255 * 255 = -37454400, times 1e-6.
    CHECK(int(expected[(2 * 5 + 2) * 3]) == -37);
}
