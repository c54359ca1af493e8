// conv2d, linear and the pools: gradients against finite differences, and
// forward and backward against PyTorch (tests/fixtures/gen_conv_linear_pool.py).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>

#include "autograd/ops.h"
#include "format/safetensors.h"
#include "tests/autograd/gradcheck.h"

using namespace qf;
using qf::test::check_gradients;

namespace {

// A random tensor whose elements are at least `gap` apart from each other
// (a shuffled grid plus small noise), so no max-pool window holds a tie and
// the finite-difference steps never change which element wins.
Tensor distinct(const Shape& shape, std::mt19937& rng, float gap = 0.05f) {
    const int64_t n = shape_numel(shape);
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; i++) v[i] = (float)(i - n / 2) * gap;
    std::shuffle(v.begin(), v.end(), rng);
    return Tensor::from(shape, v);
}

struct ConvCase {
    int64_t N, C, H, W, OC, KH, KW;
    int stride, padding, groups;
    bool bias;
};

void check_conv(const ConvCase& c) {
    std::mt19937 rng(7);
    std::vector<Tensor> inputs = {Tensor::randn({c.N, c.C, c.H, c.W}, rng),
                                  Tensor::randn({c.OC, c.C / c.groups, c.KH, c.KW}, rng, 0.5f)};
    if (c.bias) inputs.push_back(Tensor::randn({c.OC}, rng));
    const Conv2dParams p{c.stride, c.padding, c.groups};
    check_gradients(
        [&](std::vector<Tensor>& in) {
            return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), p);
        },
        inputs);
}

}  // namespace

TEST_CASE("conv2d gradients match finite differences") {
    // N, C, H, W, OC, KH, KW, stride, padding, groups, bias
    const ConvCase cases[] = {
        {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, true},   // 3x3 same padding
        {2, 3, 7, 6, 2, 3, 3, 2, 0, 1, false},  // stride 2, no padding
        {1, 2, 5, 5, 3, 3, 2, 2, 2, 1, true},   // padding 2, non-square kernel
        {2, 4, 5, 4, 6, 3, 3, 1, 1, 2, false},  // 2 groups
        {2, 4, 6, 5, 4, 3, 3, 1, 1, 4, true},   // depthwise
        {2, 3, 7, 7, 3, 3, 3, 2, 1, 3, false},  // depthwise, stride 2
        {3, 2, 5, 5, 6, 3, 3, 2, 1, 2, true},   // groups with 3 outputs per group
        {2, 5, 3, 4, 3, 1, 1, 1, 0, 1, true},   // 1x1 (no im2col)
        {2, 4, 5, 5, 3, 1, 1, 2, 0, 1, false},  // 1x1, stride 2 (im2col)
        {2, 4, 4, 3, 4, 1, 1, 1, 0, 2, false},  // 1x1 grouped
        {1, 2, 6, 6, 3, 5, 5, 1, 2, 1, true},   // 5x5, lenet's padding
    };
    for (const ConvCase& c : cases) {
        CAPTURE(c.C);
        CAPTURE(c.OC);
        CAPTURE(c.stride);
        CAPTURE(c.padding);
        CAPTURE(c.groups);
        check_conv(c);
    }
}

TEST_CASE("conv2d with batch 1 (serial batch, threaded GEMM) matches finite differences") {
    check_conv({1, 3, 5, 5, 4, 3, 3, 1, 1, 1, true});
}

TEST_CASE("conv2d batching several small images per GEMM matches finite differences") {
    // Small planes put several images side by side in one GEMM; 7 images
    // leave a shorter last chunk.
    check_conv({7, 2, 4, 4, 3, 3, 3, 1, 1, 1, true});
    check_conv({7, 4, 4, 3, 4, 3, 3, 2, 1, 2, false});
    check_conv({7, 3, 3, 3, 2, 1, 1, 1, 0, 1, true});  // 1x1
}

TEST_CASE("conv2d gradients for x alone or weight alone") {
    std::mt19937 rng(3);
    Tensor x = Tensor::randn({2, 3, 5, 5}, rng), w = Tensor::randn({4, 3, 3, 3}, rng);
    check_gradients([&](std::vector<Tensor>& in) { return conv2d(in[0], w, Tensor(), {1, 1, 1}); },
                    {x.clone()});
    CHECK_FALSE(w.has_grad());
    check_gradients([&](std::vector<Tensor>& in) { return conv2d(x, in[0], Tensor(), {2, 1, 1}); },
                    {w.clone()});
    CHECK_FALSE(x.has_grad());
}

TEST_CASE("conv2d shape errors name the op and the shapes") {
    Tensor x = Tensor::zeros({8, 1, 28, 28}), w = Tensor::zeros({16, 3, 3, 3});
    try {
        conv2d(x, w, Tensor(), {});
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()) ==
              "conv2d: weight (16, 3, 3, 3) expects 3*groups=3 input channels, got x (8, 1, 28, 28)");
    }
    CHECK_THROWS_AS(conv2d(Tensor::zeros({1, 4, 5, 5}), Tensor::zeros({3, 2, 3, 3}), Tensor(), {1, 0, 2}),
                    std::invalid_argument);  // 3 outputs over 2 groups
    CHECK_THROWS_AS(conv2d(Tensor::zeros({1, 3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5}), {}),
                    std::invalid_argument);  // bias size
    CHECK_THROWS_AS(conv2d(Tensor::zeros({1, 3, 2, 2}), Tensor::zeros({4, 3, 3, 3}), Tensor(), {}),
                    std::invalid_argument);  // kernel larger than the padded input
    CHECK_THROWS_AS(conv2d(Tensor::zeros({3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), Tensor(), {}),
                    std::invalid_argument);  // not 4-d
    CHECK_THROWS_AS(conv2d(Tensor::zeros({1, 3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), Tensor(), {0, 0, 1}),
                    std::invalid_argument);  // stride 0
}

TEST_CASE("linear gradients match finite differences") {
    std::mt19937 rng(5);
    check_gradients([](std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                    {Tensor::randn({3, 5}, rng), Tensor::randn({4, 5}, rng), Tensor::randn({4}, rng)});
    check_gradients([](std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); },
                    {Tensor::randn({2, 7}, rng), Tensor::randn({3, 7}, rng)});
    CHECK_THROWS_WITH_AS(linear(Tensor::zeros({2, 5}), Tensor::zeros({3, 4}), Tensor()),
                         "linear: x (2, 5) must be (N, IN) and weight (3, 4) (OUT, IN)",
                         std::invalid_argument);
    CHECK_THROWS_AS(linear(Tensor::zeros({2, 4}), Tensor::zeros({3, 4}), Tensor::zeros({4})),
                    std::invalid_argument);
}

TEST_CASE("pool gradients match finite differences") {
    std::mt19937 rng(11);
    // kernel, stride, padding
    const int configs[][3] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}, {3, 3, 0}};
    for (const auto& k : configs) {
        CAPTURE(k[0]);
        CAPTURE(k[1]);
        CAPTURE(k[2]);
        // The elements are 0.05 apart and the step is 1e-3, so no window's winner changes.
        check_gradients([&](std::vector<Tensor>& in) { return max_pool2d(in[0], k[0], k[1], k[2]); },
                        {distinct({2, 2, 7, 6}, rng)});
        check_gradients([&](std::vector<Tensor>& in) { return avg_pool2d(in[0], k[0], k[1], k[2]); },
                        {Tensor::randn({2, 2, 7, 6}, rng)});
    }
    check_gradients([](std::vector<Tensor>& in) { return global_avg_pool(in[0]); },
                    {Tensor::randn({2, 3, 4, 5}, rng)});
}

TEST_CASE("pool shape errors") {
    CHECK_THROWS_AS(max_pool2d(Tensor::zeros({2, 3, 4}), 2, 2), std::invalid_argument);
    CHECK_THROWS_AS(max_pool2d(Tensor::zeros({1, 1, 4, 4}), 2, 2, 2), std::invalid_argument);  // pad > k/2
    CHECK_THROWS_AS(avg_pool2d(Tensor::zeros({1, 1, 2, 2}), 3, 1), std::invalid_argument);
    CHECK_THROWS_AS(avg_pool2d(Tensor::zeros({1, 1, 4, 4}), 2, 0), std::invalid_argument);
    CHECK_THROWS_AS(global_avg_pool(Tensor::zeros({2, 3})), std::invalid_argument);
}

TEST_CASE("max_pool2d propagates NaN") {
    Tensor x = Tensor::from({1, 1, 2, 2}, {1, NAN, 3, 2});
    CHECK(std::isnan(max_pool2d(x, 2, 2).item()));
}

// ---- against PyTorch ----------------------------------------------------------

namespace {

const char* kFixture = "tests/fixtures/conv_linear_pool.safetensors";

Tensor load(const safetensors::File& f, const std::string& name) {
    return Tensor::from(f.get(name, safetensors::DType::F32).shape, f.floats(name));
}

std::vector<int32_t> params(const safetensors::File& f, const std::string& name) {
    const auto& info = f.get(name + "/params", safetensors::DType::I32);
    const int32_t* p = f.ptr<int32_t>(info);
    return std::vector<int32_t>(p, p + info.nbytes / sizeof(int32_t));
}

void check_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); i++) {
        INFO(what << "[" << i << "]: got " << got[i] << " want " << want[i]);
        CHECK(std::fabs(got[i] - want[i]) <= 1e-4f + 1e-4f * std::fabs(want[i]));
    }
}

// Runs `op` on the fixture's inputs NAME/x, NAME/w, NAME/b (those present),
// feeds NAME/dout to backward, and compares the output and every gradient.
void check_against_torch(const safetensors::File& f, const std::string& name,
                         const std::function<Tensor(std::vector<Tensor>&)>& op) {
    CAPTURE(name);
    std::vector<std::string> keys;
    for (const char* k : {"x", "w", "b"})
        if (f.has(name + "/" + k)) keys.push_back(k);
    std::vector<Tensor> inputs;
    for (const auto& k : keys) {
        inputs.push_back(load(f, name + "/" + k));
        inputs.back().set_requires_grad(true);
    }
    Tensor out = op(inputs);
    Tensor want = load(f, name + "/out");
    CHECK(out.shape() == want.shape());
    check_close(out.values(), want.values(), name + "/out");
    backward(out, f.floats(name + "/dout"));
    for (size_t i = 0; i < keys.size(); i++) {
        REQUIRE(inputs[i].has_grad());
        check_close(inputs[i].grad_values(), f.floats(name + "/d" + keys[i]), name + "/d" + keys[i]);
    }
}

}  // namespace

TEST_CASE("conv2d, linear and pools match PyTorch") {
    const safetensors::File f = safetensors::read(kFixture);
    for (const char* name : {"conv_3x3_s1_p1_bias", "conv_3x3_s2_p0", "conv_5x5_s1_p2_bias",
                             "conv_groups2_s2_p2", "conv_depthwise_s1_p1_bias", "conv_depthwise_s2_p1",
                             "conv_1x1_bias", "conv_1x1_s2"}) {
        const std::vector<int32_t> p = params(f, name);
        REQUIRE(p.size() == 3);
        check_against_torch(f, name, [&](std::vector<Tensor>& in) {
            return conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), {p[0], p[1], p[2]});
        });
    }
    for (const char* name : {"linear_bias", "linear"})
        check_against_torch(f, name, [](std::vector<Tensor>& in) {
            return linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor());
        });
    for (const char* name : {"max_pool_k2_s2", "max_pool_k3_s2_p1", "avg_pool_k2_s2", "avg_pool_k3_s1_p1"}) {
        const std::vector<int32_t> p = params(f, name);
        REQUIRE(p.size() == 3);
        const bool is_max = std::string(name).rfind("max", 0) == 0;
        check_against_torch(f, name, [&](std::vector<Tensor>& in) {
            return is_max ? max_pool2d(in[0], p[0], p[1], p[2]) : avg_pool2d(in[0], p[0], p[1], p[2]);
        });
    }
    check_against_torch(f, "global_avg_pool", [](std::vector<Tensor>& in) { return global_avg_pool(in[0]); });
}
