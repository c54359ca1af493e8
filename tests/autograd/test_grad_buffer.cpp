// The backwards that hand their output's gradient buffer to their input
// (autograd/grad_buffer.h) against the zero-filled += path, bit for bit.
//
// The probe: an input that already holds a (zero) gradient before backward
// takes the += path; one without takes the buffer. The result of
// backward(out, dout) keeps its gradient on the += path and loses it when it
// was handed on, which tells which path ran.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/grad_buffer.h"
#include "autograd/ops.h"
#include "tests/autograd/gradcheck.h"

using namespace qf;
using qf::test::backward_exact;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// (N, C, H, W) = (4, 8, 32, 33): above kMinHandedElements, and above the
// parallel threshold (1 << 15) of the elementwise loops.
const Shape kShape{4, 8, 32, 33};

// Values around the kinks of relu and relu6 (0 and 6, hit exactly), and a NaN.
Tensor input(uint32_t seed) {
    std::mt19937 rng(seed);
    Tensor x = Tensor::randn(kShape, rng, 4.0f);
    for (int64_t i = 0; i < x.numel(); i += 97) x.data()[i] = 0.0f;
    for (int64_t i = 50; i < x.numel(); i += 101) x.data()[i] = 6.0f;
    x.data()[3] = std::nanf("");
    return x;
}

// d(out) with -0 (where 0 + -0 and -0 + 0 both give +0, but -0 alone would
// stay -0) and values that overflow when scaled.
std::vector<float> dout_of(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> d(size_t(shape_numel(kShape)));
    for (size_t i = 0; i < d.size(); i++) d[i] = i % 5 == 0 ? -0.0f : normal(rng);
    d[11] = 3e38f;
    return d;
}

// Runs backward(op(inputs), dout) twice from copies of `leaves`: once as
// they are, once with every leaf holding a zero gradient (the += path). The
// gradients of the leaves must match bit for bit; `handed` says whether the
// first run is expected to hand the result's buffer on.
void check_hand_over(const char* what, const std::function<Tensor(std::vector<Tensor>&)>& op,
                     const std::vector<Tensor>& leaves, bool handed) {
    const std::string op_name = what;
    CAPTURE(op_name);
    const std::vector<float> dout = dout_of(9);
    std::vector<std::vector<float>> grads[2];
    for (int pre_filled = 0; pre_filled < 2; pre_filled++) {
        std::vector<Tensor> in;
        for (const Tensor& t : leaves) {
            in.push_back(t.clone());
            in.back().set_requires_grad(t.requires_grad());
            if (pre_filled && t.requires_grad()) in.back().grad();
        }
        Tensor out = op(in);
        backward_exact(out, dout);
        CHECK(out.has_grad() == (pre_filled || !handed));
        for (const Tensor& t : in) grads[pre_filled].push_back(t.grad_values());
    }
    for (size_t k = 0; k < leaves.size(); k++) {
        CAPTURE(k);
        CHECK(same_bits(grads[0][k], grads[1][k]));
    }
}

Tensor grad_leaf(Tensor t) {
    t.set_requires_grad(true);
    return t;
}

}  // namespace

TEST_CASE("relu, relu6, add, scale_channels: handing the gradient buffer on equals the += path, bit for bit") {
    std::mt19937 rng(5);
    const Tensor x = grad_leaf(input(1)), y = grad_leaf(input(2));
    const Tensor constant_y = input(2);  // requires no gradient
    Tensor s = Tensor::randn({8}, rng, 2.0f);
    s.data()[2] = 0.0f;
    s.data()[5] = 1e30f;  // overflows some products
    const Tensor learned_s = grad_leaf(s.clone());
    const Tensor rows = Tensor::randn({4}, rng);

    check_hand_over("relu", [](std::vector<Tensor>& in) { return relu(in[0]); }, {x}, true);
    check_hand_over("relu6", [](std::vector<Tensor>& in) { return relu6(in[0]); }, {x}, true);
    check_hand_over("add", [](std::vector<Tensor>& in) { return add(in[0], in[1]); }, {x, y}, true);
    check_hand_over("add, b constant", [](std::vector<Tensor>& in) { return add(in[0], in[1]); }, {x, constant_y},
                    true);
    check_hand_over("add, a constant", [](std::vector<Tensor>& in) { return add(in[0], in[1]); }, {constant_y, x},
                    true);
    // x + x: both halves land in the one gradient; nothing is handed.
    check_hand_over("add x + x", [](std::vector<Tensor>& in) { return add(in[0], in[0]); }, {x}, false);
    check_hand_over("scale_channels, constant s",
                    [](std::vector<Tensor>& in) { return scale_channels(in[0], in[1], 1); }, {x, s}, true);
    check_hand_over("scale_channels, learned s",
                    [](std::vector<Tensor>& in) { return scale_channels(in[0], in[1], 1); }, {x, learned_s}, true);
    check_hand_over("scale_channels, axis 0",
                    [](std::vector<Tensor>& in) { return scale_channels(in[0], in[1], 0); }, {x, rows}, true);
}

TEST_CASE("add hands its buffer to one input only, after the other took its share") {
    Tensor a = grad_leaf(input(1)), b = grad_leaf(input(2));
    const std::vector<float> dout = dout_of(4);
    b.grad()[0] = 1.0f;  // b has a gradient already: a takes the buffer, b adds into its own
    Tensor out = add(a, b);
    backward_exact(out, dout);
    CHECK_FALSE(out.has_grad());
    REQUIRE(a.has_grad());
    CHECK(a.grad_values()[1] == dout[1]);
    CHECK(b.grad_values()[0] == 1.0f + dout[0]);
    CHECK(b.grad_values()[1] == dout[1]);
    CHECK(std::signbit(a.grad_values()[0]) == false);  // -0 became +0, as 0 + -0
}

TEST_CASE("a chain of handing backwards equals the same chain on the += path, bit for bit") {
    // x -> scale_channels (constant s) -> relu -> + x -> relu6 -> scale_channels
    // (learned t) -> + itself -> + b. Run twice: as is (every op that can
    // hands its buffer on), and with a zero gradient put in every tensor up
    // front so that every backward adds into one.
    std::mt19937 rng(8);
    const Tensor x0 = input(3), b0 = input(4);
    const Tensor s = Tensor::randn({8}, rng), t0 = Tensor::randn({8}, rng);
    const std::vector<float> dout = dout_of(6);
    std::vector<std::vector<float>> grads[2];
    for (int pre_filled = 0; pre_filled < 2; pre_filled++) {
        Tensor x = grad_leaf(x0.clone()), b = grad_leaf(b0.clone()), t = grad_leaf(t0.clone());
        std::vector<Tensor> chain;
        chain.push_back(scale_channels(x, s, 1));
        chain.push_back(relu(chain.back()));
        chain.push_back(add(chain.back(), x));
        chain.push_back(relu6(chain.back()));
        chain.push_back(scale_channels(chain.back(), t, 1));
        chain.push_back(add(chain.back(), chain.back()));
        const Tensor out = add(chain.back(), b);
        if (pre_filled) {
            for (Tensor& h : chain) h.grad();
            for (Tensor* leaf : {&x, &b, &t}) leaf->grad();
        }
        backward_exact(out, dout);
        grads[pre_filled] = {x.grad_values(), b.grad_values(), t.grad_values()};
    }
    for (size_t k = 0; k < 3; k++) {
        CAPTURE(k);
        CHECK(same_bits(grads[0][k], grads[1][k]));
    }
}

TEST_CASE("small tensors keep the += path") {
    Tensor x = grad_leaf(Tensor::from({3}, {-1.0f, 2.0f, 7.0f}));
    Tensor out = relu6(x);
    backward_exact(out, {1.0f, -0.0f, 3.0f});
    CHECK(out.has_grad());
    CHECK(x.grad_values() == std::vector<float>{0.0f, 0.0f, 0.0f});
    CHECK_FALSE(std::signbit(x.grad_values()[1]));
}
