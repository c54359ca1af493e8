// The reference kernels against real arithmetic: dequantize, compute in
// double, quantize. The integer result may differ by one step, from the
// rounding of the multiplier (relative 2^-31) and requantization's two
// roundings; most outputs must match exactly.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "infer/kernels/reference/reference.h"
#include "infer/quantize.h"
#include "kernel_test_util.h"

using namespace qf::infer;
using namespace qf::infer::test;

namespace {

// Quantizes a real output; counts |integer - expected| > 1 as errors and > 0 as off-by-one.
struct StepCounter {
    int64_t total = 0, off_by_one = 0, errors = 0;
    void check(int8_t got, double real, double scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
        const double q = std::clamp(std::nearbyint(real / scale) + zero_point, double(qmin), double(qmax));
        const double diff = std::abs(double(got) - q);
        ++total;
        off_by_one += diff == 1;
        errors += diff > 1;
    }
};

}  // namespace

TEST_CASE("reference conv2d agrees with real arithmetic") {
    std::mt19937_64 rng(10);
    StepCounter steps;
    for (int iter = 0; iter < 40; ++iter) {
        Conv2dParams p;
        p.groups = uniform_int(rng, 1, 3);
        p.in_c = p.groups * uniform_int(rng, 1, 4);
        p.out_c = p.groups * uniform_int(rng, 1, 4);
        p.in_h = uniform_int(rng, 3, 7);
        p.in_w = uniform_int(rng, 3, 7);
        p.kernel_h = p.kernel_w = 3;
        p.stride_h = p.stride_w = uniform_int(rng, 1, 2);
        p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = uniform_int(rng, 0, 1);
        p.input_zero_point = uniform_int(rng, -20, 20);
        p.weight_zero_points = random_int32(rng, size_t(p.out_c), -3, 3);
        p.output = random_output_range(rng);
        const double input_scale = 0.02, output_scale = 0.05 * std::exp2(uniform_int(rng, 0, 4));
        std::vector<double> weight_scale(size_t(p.out_c));
        for (int o = 0; o < p.out_c; ++o) {
            weight_scale[size_t(o)] = 0.001 * uniform_int(rng, 1, 9);
            p.multipliers.push_back(quantize_multiplier(weight_scale[size_t(o)] * input_scale / output_scale));
        }
        const int k = p.weights_per_out_channel(), batch = 2;
        const auto input = random_int8(rng, size_t(batch) * p.in_h * p.in_w * p.in_c);
        const auto weights = random_int8(rng, size_t(p.out_c) * k);
        const auto bias = random_int32(rng, size_t(p.out_c), -5000, 5000);
        validate(p, weights.data(), bias.data());
        std::vector<int8_t> output(size_t(batch) * p.out_h() * p.out_w() * p.out_c);
        reference::conv2d(p, batch, input.data(), weights.data(), bias.data(), output.data());

        const int icg = p.in_c_per_group(), ocg = p.out_c_per_group();
        for (int b = 0; b < batch; ++b)
            for (int oy = 0; oy < p.out_h(); ++oy)
                for (int ox = 0; ox < p.out_w(); ++ox)
                    for (int o = 0; o < p.out_c; ++o) {
                        const double sw = weight_scale[size_t(o)];
                        double real = bias[size_t(o)] * sw * input_scale;
                        for (int ky = 0; ky < 3; ++ky)
                            for (int kx = 0; kx < 3; ++kx)
                                for (int i = 0; i < icg; ++i) {
                                    const int iy = oy * p.stride_h - p.pad_top + ky, ix = ox * p.stride_w - p.pad_left + kx;
                                    if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) continue;  // real 0
                                    const int c = (o / ocg) * icg + i;
                                    const double x = input_scale * (input[((size_t(b) * p.in_h + iy) * p.in_w + ix) * p.in_c + c] - p.input_zero_point);
                                    const double w = sw * (weights[size_t(o) * k + (ky * 3 + kx) * icg + i] - p.weight_zero_points[size_t(o)]);
                                    real += w * x;
                                }
                        steps.check(output[((size_t(b) * p.out_h() + oy) * p.out_w() + ox) * p.out_c + o], real,
                                    output_scale, p.output.zero_point, p.output.min, p.output.max);
                    }
    }
    CHECK(steps.errors == 0);
    CHECK(steps.off_by_one * 100 <= steps.total);  // ties of real arithmetic are rare
}

TEST_CASE("reference fully_connected agrees with real arithmetic") {
    std::mt19937_64 rng(11);
    FullyConnectedParams p;
    p.in_features = 37;
    p.out_features = 5;
    p.input_zero_point = -7;
    p.weight_zero_points = {0};
    const double sx = 0.03, sw = 0.004, sy = 0.1;
    p.multipliers = {quantize_multiplier(sw * sx / sy)};
    const int batch = 3;
    const auto input = random_int8(rng, size_t(batch) * p.in_features);
    const auto weights = random_int8(rng, size_t(p.out_features) * p.in_features);
    const auto bias = random_int32(rng, size_t(p.out_features), -2000, 2000);
    validate(p, weights.data(), bias.data());
    std::vector<int8_t> output(size_t(batch) * p.out_features);
    reference::fully_connected(p, batch, input.data(), weights.data(), bias.data(), output.data());
    StepCounter steps;
    for (int b = 0; b < batch; ++b)
        for (int o = 0; o < p.out_features; ++o) {
            double real = bias[size_t(o)] * sw * sx;
            for (int i = 0; i < p.in_features; ++i)
                real += sw * weights[size_t(o) * p.in_features + i] * sx * (input[size_t(b) * p.in_features + i] - p.input_zero_point);
            steps.check(output[size_t(b) * p.out_features + o], real, sy, 0, -128, 127);
        }
    CHECK(steps.errors == 0);
}

TEST_CASE("reference add rescales both inputs") {
    std::mt19937_64 rng(12);
    // Scales without a common small denominator, so that real results rarely tie.
    const double s1 = 0.0513, s2 = 0.0217, so = 0.0791;
    const int32_t z1 = 3, z2 = -10, zo = -5;
    const AddParams p = make_add_params(s1, z1, s2, z2, so, OutputRange{zo, -128, 127});
    validate(p);
    const auto a = random_int8(rng, 5000), b = random_int8(rng, 5000);
    std::vector<int8_t> out(a.size());
    reference::add(p, int64_t(a.size()), a.data(), b.data(), out.data());
    StepCounter steps;
    for (size_t i = 0; i < a.size(); ++i) steps.check(out[i], s1 * (a[i] - z1) + s2 * (b[i] - z2), so, zo, -128, 127);
    CHECK(steps.errors == 0);
    CHECK(steps.off_by_one * 100 <= steps.total);
    // Equal scales and zero points, output at twice the scale: exactly (a + b) / 2 rounded.
    const AddParams same = make_add_params(0.1, 0, 0.1, 0, 0.2, OutputRange{});
    const int8_t x[] = {10, 11, -7}, y[] = {20, 20, -8};
    int8_t sum[3];
    reference::add(same, 3, x, y, sum);
    CHECK(sum[0] == 15);
    CHECK(sum[1] == 16);   // 15.5, rounded up
    CHECK(sum[2] == -8);   // -7.5, rounded away from zero
}

TEST_CASE("reference concat copies or requantizes each input") {
    ConcatParams p;
    p.h = 1;
    p.w = 2;
    p.output_zero_point = 1;
    p.inputs = {{2, 1, quantize_multiplier(1.0)}, {1, 0, quantize_multiplier(0.5)}};  // same scale, half scale
    validate(p);
    const int8_t a[] = {5, 6, 7, 8}, b[] = {9, -9};
    const int8_t* inputs[] = {a, b};
    int8_t out[6];
    reference::concat(p, 1, inputs, out);
    // 4.5 -> 5 and -4.5 -> -5: one rounding, ties away from zero.
    const int8_t expected[] = {5, 6, 1 + 5, 7, 8, 1 - 5};
    for (int i = 0; i < 6; ++i) CHECK(out[i] == expected[i]);
}

TEST_CASE("reference pools") {
    // 1 x 3 x 3 x 2 input; channel 1 is channel 0 negated.
    const int8_t input[] = {1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8, 9, -9};
    PoolParams p;
    p.in_h = p.in_w = 3;
    p.channels = 2;
    p.kernel_h = p.kernel_w = 2;
    p.stride_h = p.stride_w = 2;
    p.pad_bottom = p.pad_right = 1;  // windows {1,2,4,5}, {3,6}, {7,8}, {9}
    validate_max_pool(p);
    int8_t out[8];
    reference::max_pool(p, 1, input, out);
    const int8_t expected_max[] = {5, -1, 6, -3, 8, -7, 9, -9};
    for (int i = 0; i < 8; ++i) CHECK(out[i] == expected_max[i]);

    // Average with the padding counted (as 0): sums 12, 9, 15, 9 over 4, by
    // M = 1/4 = (2^30 / 2^31) * 2^-1. 9/4 = 2.25 comes out 2: one rounding of
    // the exact product (requantize.h). gemmlowp's double rounding would give
    // 3 (9/2 = 4.5 rounded up to 5, then 5/2 = 2.5 rounded to 3), which the
    // float simulation of QAT cannot reproduce.
    p.multiplier = quantize_multiplier(0.25);
    validate_average_pool(p);
    reference::average_pool(p, 1, input, out);
    const int8_t expected_avg[] = {3, -3, 2, -2, 4, -4, 2, -2};
    for (int i = 0; i < 8; ++i) CHECK(out[i] == expected_avg[i]);

    // Global average pool with an input zero point and a different output scale.
    const PoolParams g = global_average_pool_params(3, 3, 2, 1, quantize_multiplier(2.0 / 9), OutputRange{-3, -128, 127});
    validate_average_pool(g);
    int8_t mean[2];
    reference::average_pool(g, 1, input, mean);
    CHECK(mean[0] == -3 + 8);   // sum of (x - 1) = 36, * 2/9 = 8
    CHECK(mean[1] == -3 - 12);  // sum of (x - 1) = -54, * 2/9 = -12
}

TEST_CASE("quantize and dequantize") {
    const float input[] = {0.f, 0.25f, 0.75f, -0.25f, 100.f, -100.f, NAN};
    int8_t q[7];
    quantize(input, 7, 0.5f, 3, q);
    const int8_t expected[] = {3, 3, 5, 3, 127, -128, 3};  // 0.5 -> 0 and 1.5 -> 2: ties to even
    for (int i = 0; i < 7; ++i) CHECK(q[i] == expected[i]);
    float r[7];
    dequantize(q, 7, 0.5f, 3, r);
    CHECK(r[2] == 1.0f);
    CHECK(r[4] == 62.0f);
}

TEST_CASE("validate rejects bad parameters with a ParamError") {
    Conv2dParams p;
    p.in_h = p.in_w = 4;
    p.in_c = 4;
    p.out_c = 4;
    p.kernel_h = p.kernel_w = 3;
    p.multipliers = {quantize_multiplier(0.01)};
    const std::vector<int8_t> weights(size_t(4 * 9 * 4), 1);
    std::vector<int32_t> bias(4, 0);
    CHECK_NOTHROW(validate(p, weights.data(), bias.data()));
    auto rejects = [&](auto change) {
        Conv2dParams bad = p;
        change(bad);
        CHECK_THROWS_AS(validate(bad, weights.data(), bias.data()), ParamError);
    };
    rejects([](Conv2dParams& q) { q.groups = 3; });
    rejects([](Conv2dParams& q) { q.multipliers = {{1 << 29, 0}}; });
    rejects([](Conv2dParams& q) { q.multipliers = {{1 << 30, -32}}; });
    rejects([](Conv2dParams& q) { q.multipliers = {{1 << 30, 0}, {1 << 30, 0}}; });
    rejects([](Conv2dParams& q) { q.input_zero_point = 128; });
    rejects([](Conv2dParams& q) { q.output.min = 10, q.output.max = 5; });
    rejects([](Conv2dParams& q) { q.kernel_h = 7; });
    rejects([](Conv2dParams& q) { q.pad_top = 3; });
    rejects([](Conv2dParams& q) { q.stride_w = 0; });
    bias[2] = 2147483000;  // the accumulator could overflow
    CHECK_THROWS_AS(validate(p, weights.data(), bias.data()), ParamError);
}
