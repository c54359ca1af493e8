// Fake-quant ops: bit-exact agreement with the integer graph's quantize
// (infer/quantize.cpp), the straight-through estimator by hand, PyTorch 1.13
// fixtures for the fixed and learnable ops (tests/fixtures/gen_fake_quant.py),
// LSQ and PACT gradients against finite differences where the function is
// smooth, PACT by hand, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "autograd/ops.h"
#include "infer/quantize.h"
#include "quant/fake_quant.h"
#include "tests/autograd/gradcheck.h"
#include "tests/quant/fixture.h"

using namespace qf;
using namespace qf::quant;
using qf::test::error_of;
using qf::test::check_close;
using qf::test::check_gradients;
using qf::test::fixture_has_meta;
using qf::test::fixture_number;
using qf::test::fixture_tensor;

namespace {

QuantScheme make_scheme(int qmin, int qmax, bool symmetric = false, int axis = -1) {
    QuantScheme s;
    s.is_signed = qmin < 0;
    s.bits = int(std::lround(std::log2(qmax - qmin + 1)));
    s.narrow_range = s.is_signed ? qmin == -(1 << (s.bits - 1)) + 1 : qmin == 1;
    if (s.narrow_range) s.bits = int(std::lround(std::log2(qmax - qmin + 2)));
    s.symmetric = symmetric;
    s.per_channel = axis >= 0;
    s.axis = std::max(axis, 0);
    REQUIRE(s.qmin() == qmin);
    REQUIRE(s.qmax() == qmax);
    return s;
}

// The integer graph's result: infer::quantize then dequantize. An unsigned
// scheme runs shifted by -128 (params.h: q - 128 with zero point z - 128).
std::vector<float> integer_graph(const std::vector<float>& x, float scale, int32_t z, const QuantScheme& s) {
    const int32_t shift = s.is_signed ? 0 : 128;
    std::vector<int8_t> q(x.size());
    infer::quantize(x.data(), int64_t(x.size()), scale, z - shift, q.data(), s.qmin() - shift, s.qmax() - shift);
    std::vector<float> y(x.size());
    infer::dequantize(q.data(), int64_t(q.size()), scale, z - shift, y.data());
    return y;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0 || (a == 0 && b == 0); }

// Inputs at and next to every .5 tie of the grid, plus random ones and specials.
std::vector<float> tricky_inputs(float scale, int n_random, std::mt19937& rng) {
    std::vector<float> x;
    for (int k = -140; k <= 140; k++) {
        const float tie = (float(k) + 0.5f) * scale;
        x.push_back(tie);
        x.push_back(std::nextafter(tie, INFINITY));
        x.push_back(std::nextafter(tie, -INFINITY));
    }
    std::normal_distribution<float> n(0.0f, 60.0f * scale);
    for (int i = 0; i < n_random; i++) x.push_back(n(rng));
    x.push_back(NAN);
    x.push_back(INFINITY);
    x.push_back(-INFINITY);
    return x;
}

// A mismatch with PyTorch is allowed only at a near tie: there x * (1/s) and
// x / s may round to neighbouring integers. Returns the number of near-tie
// mismatches; fails on any other difference.
int compare_with_pytorch(const std::vector<float>& got, const std::vector<float>& want,
                         const std::vector<float>& x, const std::vector<float>& scale_of_element) {
    int ties = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (got[i] == want[i]) continue;
        const double v = double(x[i]) / scale_of_element[i];
        const bool near_tie = std::fabs(v - std::floor(v) - 0.5) < 1e-5 * std::max(1.0, std::fabs(v));
        INFO("element " << i << " x " << x[i] << " got " << got[i] << " want " << want[i]);
        CHECK(near_tie);
        ties++;
    }
    return ties;
}

// The scale of each element of a per-tensor or per-channel fixture case.
std::vector<float> element_scales(const Tensor& x, const std::vector<float>& scales, const QuantScheme& s) {
    const ChannelLayout l = channel_layout(s, x.shape());
    std::vector<float> out(size_t(x.numel()));
    for (int64_t i = 0; i < x.numel(); i++) out[i] = scales[size_t((i / l.inner) % l.channels)];
    return out;
}

Tensor learnable(const std::vector<float>& v) {
    Tensor t = Tensor::from({int64_t(v.size())}, v);
    t.set_requires_grad(true);
    return t;
}

}  // namespace

TEST_CASE("fake_quantize equals the integer graph's quantize-dequantize, bit for bit") {
    std::mt19937 rng(11);
    struct Case {
        int qmin, qmax;
        float scale;
        int32_t z;
    };
    const Case cases[] = {{-128, 127, 0.0371f, 3},   {-128, 127, 1.0f / 3.0f, -7}, {-127, 127, 0.1f, 0},
                          {0, 255, 0.0297f, 100},    {0, 15, 0.23f, 7},            {-8, 7, 0.0625f, 0},
                          {-128, 127, 1.3e-7f, 12},  {1, 255, 0.013f, 128},        {-2, 1, 0.7f, -1}};
    for (const Case& c : cases) {
        CAPTURE(c.scale);
        CAPTURE(c.qmin);
        const QuantScheme s = make_scheme(c.qmin, c.qmax);
        const std::vector<float> x = tricky_inputs(c.scale, 100000, rng);  // big: the parallel path
        const Tensor y = fake_quantize(Tensor::from({int64_t(x.size())}, x), {{c.scale}, {c.z}}, s);
        const std::vector<float> want = integer_graph(x, c.scale, c.z, s);
        int differ = 0;
        for (size_t i = 0; i < x.size(); i++) differ += !same_bits(y.data()[i], want[i]);
        CHECK(differ == 0);
    }
}

TEST_CASE("fake_quantize per channel equals the integer graph channel by channel") {
    std::mt19937 rng(5);
    const QuantScheme s = make_scheme(-128, 127, false, 1);
    const Shape shape{3, 4, 50};
    Tensor x = Tensor::randn(shape, rng, 2.0f);
    const QuantParams p{{0.01f, 0.02f, 0.0333f, 0.1f}, {0, -5, 17, 127}};
    const Tensor y = fake_quantize(x, p, s);
    for (int64_t o = 0; o < 3; o++) {
        for (int64_t c = 0; c < 4; c++) {
            const int64_t at = (o * 4 + c) * 50;
            const std::vector<float> span(x.data() + at, x.data() + at + 50);
            const std::vector<float> want = integer_graph(span, p.scales[c], p.zero_points[c], s);
            for (int i = 0; i < 50; i++) CHECK(same_bits(y.data()[at + i], want[i]));
        }
    }
}

TEST_CASE("straight-through estimator by hand: half-even rounding decides the clamp") {
    // int2 [-2, 1], s = 1, z = 0.
    const QuantScheme s = make_scheme(-2, 1);
    Tensor x = Tensor::from({8}, {-3.0f, -2.5f, -2.4f, 0.4f, 1.4f, 1.5f, 1.6f, NAN});
    x.set_requires_grad(true);
    Tensor y = fake_quantize(x, {{1.0f}, {0}}, s);
    CHECK(y.values() == std::vector<float>{-2, -2, -2, 0, 1, 1, 1, 0});
    backward(y, std::vector<float>(8, 1.0f));
    // -2.5 rounds to -2 (inside), 1.5 to 2 (outside); NaN passes nothing.
    CHECK(x.grad_values() == std::vector<float>{0, 1, 1, 1, 1, 0, 0, 0});

    // Gradients accumulate: x used twice.
    x.zero_grad();
    Tensor twice = add(fake_quantize(x, {{1.0f}, {0}}, s), fake_quantize(x, {{1.0f}, {0}}, s));
    backward(twice, std::vector<float>(8, 1.0f));
    CHECK(x.grad_values() == std::vector<float>{0, 2, 2, 2, 2, 0, 0, 0});
}

TEST_CASE("fake_quantize matches PyTorch's fake_quantize_per_{tensor,channel}_affine") {
    int ties = 0;
    for (const std::string name : {"s8", "u8", "u4", "s8_narrow", "ties", "axis0", "axis1"}) {
        CAPTURE(name);
        const std::string k = "fq_" + name;
        const int axis = fixture_has_meta(k + ".axis") ? int(fixture_number(k + ".axis")) : -1;
        const QuantScheme s = make_scheme(int(fixture_number(k + ".qmin")), int(fixture_number(k + ".qmax")),
                                          false, axis);
        Tensor x = fixture_tensor(k + ".x");
        x.set_requires_grad(true);
        const std::vector<float> scales = fixture_tensor(k + ".scale").values();
        const QuantParams p{scales, qf::test::fixture_ints(k + ".zero_point")};
        Tensor y = fake_quantize(x, p, s, k);
        backward(y, fixture_tensor(k + ".dout").values());
        const std::vector<float> per_element = element_scales(x, scales, s);
        ties += compare_with_pytorch(y.values(), fixture_tensor(k + ".out").values(), x.values(), per_element);
        ties += compare_with_pytorch(x.grad_values(), fixture_tensor(k + ".dx").values(), x.values(), per_element);
    }
    MESSAGE("elements differing from PyTorch at near .5 ties: " << ties);
}

TEST_CASE("fake_quantize_learned matches PyTorch's learnable ops (LSQ / LSQ+)") {
    const char* cases[] = {"s8_sym", "u8", "u4", "s4_sym", "axis0", "axis0_offset", "axis1"};
    for (const std::string name : cases) {
        CAPTURE(name);
        const std::string k = "lsq_" + name;
        const int axis = fixture_has_meta(k + ".axis") ? int(fixture_number(k + ".axis")) : -1;
        const int qmin = int(fixture_number(k + ".qmin")), qmax = int(fixture_number(k + ".qmax"));
        const float g = float(fixture_number(k + ".grad_factor"));
        const Tensor x0 = fixture_tensor(k + ".x");
        const std::vector<float> dout = fixture_tensor(k + ".dout").values();

        // LSQ+ (a learned zero point) on the asymmetric scheme: every output and gradient.
        const QuantScheme s = make_scheme(qmin, qmax, false, axis);
        Tensor x = x0.clone();
        x.set_requires_grad(true);
        Tensor scale = learnable(fixture_tensor(k + ".scale").values());
        Tensor zero = learnable(fixture_tensor(k + ".zero_point").values());
        CHECK(lsq_grad_factor(x.numel(), s) == doctest::Approx(g).epsilon(1e-7));
        Tensor y = fake_quantize_learned(x, scale, zero, s, g, k);
        backward(y, dout);
        const std::vector<float> per_element = element_scales(x, scale.values(), s);
        CHECK(compare_with_pytorch(y.values(), fixture_tensor(k + ".out").values(), x.values(), per_element) == 0);
        CHECK(compare_with_pytorch(x.grad_values(), fixture_tensor(k + ".dx").values(), x.values(), per_element) == 0);
        // The per-element terms differ in the last bits ((xfq - x) / s against q - z - x / s).
        check_close(scale.grad_values(), fixture_tensor(k + ".dscale").values(), 1e-6, 1e-4, k + ".dscale");
        check_close(zero.grad_values(), fixture_tensor(k + ".dzero_point").values(), 1e-7, 1e-5, k + ".dzero_point");

        // LSQ (symmetric scheme, no zero point): the same output, dx and dscale.
        if (name.find("sym") != std::string::npos) {
            const QuantScheme sym = make_scheme(qmin, qmax, true, axis);
            Tensor x2 = x0.clone();
            x2.set_requires_grad(true);
            Tensor scale2 = learnable(fixture_tensor(k + ".scale").values());
            Tensor y2 = fake_quantize_learned(x2, scale2, Tensor(), sym, g, k);
            backward(y2, dout);
            CHECK(y2.values() == y.values());
            CHECK(x2.grad_values() == x.grad_values());
            CHECK(scale2.grad_values() == scale.grad_values());
        }
    }
}

TEST_CASE("LSQ scale gradient against finite differences where every element is clamped") {
    // There y = (qmin or qmax - z) * s is linear in s: smooth, and LSQ's
    // gradient is the true one. (Inside the range LSQ's -x/s term is an
    // estimator, checked against PyTorch above.)
    const Tensor x = Tensor::from({2, 4}, {5, -6, 7, -8, 9, 10, -11, 12});
    const QuantScheme per_tensor = make_scheme(-8, 7, true);
    check_gradients([&](std::vector<Tensor>& in) {
        return fake_quantize_learned(x, in[0], Tensor(), per_tensor, 1.0f);
    }, {Tensor::from({1}, {0.1f})});
    const QuantScheme per_channel = make_scheme(0, 15, false, 0);
    check_gradients([&](std::vector<Tensor>& in) {
        return fake_quantize_learned(x, in[0], Tensor::from({2}, {3.2f, 8.0f}), per_channel, 1.0f);
    }, {Tensor::from({2}, {0.05f, 0.2f})});
}

TEST_CASE("PACT by hand") {
    // uint2 [0, 3], alpha 2: s = 2/3, z = 0.
    const QuantScheme s = make_scheme(0, 3);
    Tensor x = Tensor::from({8}, {-1.0f, 0.0f, 0.3f, 0.4f, 1.1f, 1.9f, 2.0f, 3.0f});
    x.set_requires_grad(true);
    Tensor alpha = learnable({2.0f});
    Tensor y = pact(x, alpha, s);
    const float step = 2.0f / 3.0f;
    CHECK(y.values() == std::vector<float>{0, 0, 0, step, 2 * step, 3 * step, 3 * step, 3 * step});
    const std::vector<float> dout{1, 2, 3, 4, 5, 6, 7, 8};
    backward(y, dout);
    CHECK(x.grad_values() == std::vector<float>{0, 2, 3, 4, 5, 6, 0, 0});  // 0 <= x < alpha
    CHECK(alpha.grad_values()[0] == 7.0f + 8.0f);                          // x >= alpha

    // int8 [-128, 127]: z = -128, so real 0 is -128 and alpha is 127.
    const QuantScheme s8 = make_scheme(-128, 127);
    const QuantParams p = pact_qparams(6.0f, s8);
    CHECK(p.scales[0] == 6.0f / 255.0f);
    CHECK(p.zero_points[0] == -128);
    Tensor relu6_like = pact(Tensor::from({3}, {-1.0f, 0.0f, 7.0f}), Tensor::from({1}, {6.0f}), s8);
    CHECK(relu6_like.values()[0] == 0.0f);
    CHECK(relu6_like.values()[1] == 0.0f);
    CHECK(relu6_like.values()[2] == doctest::Approx(6.0f).epsilon(1e-6));
}

TEST_CASE("PACT's alpha gradient against finite differences where smooth") {
    // x clipped (x >= alpha) or below 0: y is alpha or 0 there.
    const Tensor x = Tensor::from({6}, {2.5f, 3.0f, -1.0f, 4.0f, -0.5f, 2.2f});
    const QuantScheme s = make_scheme(0, 15);
    check_gradients([&](std::vector<Tensor>& in) { return pact(x, in[0], s); }, {Tensor::from({1}, {2.0f})});
}

TEST_CASE("fake-quant errors name the tensor and the setting") {
    const Tensor x = Tensor::zeros({2, 3});
    QuantScheme pc = make_scheme(-128, 127, false, 0);
    std::string e = error_of([&] { fake_quantize(x, {{0.1f}, {0}}, pc, "conv1.weight"); });
    CHECK(e.find("conv1.weight") != std::string::npos);
    CHECK(e.find("need 2") != std::string::npos);
    pc.axis = 3;
    e = error_of([&] { fake_quantize(x, {{0.1f}, {0}}, pc, "conv1.weight"); });
    CHECK(e.find("axis 3") != std::string::npos);
    e = error_of([&] { fake_quantize_learned(x, Tensor::from({1}, {0.1f}), Tensor(), make_scheme(0, 255), 1.0f, "a"); });
    CHECK(e.find("learned zero point") != std::string::npos);
    e = error_of([&] { pact(x, Tensor::from({1}, {1.0f}), make_scheme(-128, 127, true), "act"); });
    CHECK(e.find("asymmetric") != std::string::npos);
    e = error_of([&] { pact(x, Tensor::from({2}, {1.0f, 2.0f}), make_scheme(0, 255), "act"); });
    CHECK(e.find("alpha") != std::string::npos);
}

TEST_CASE("learned scale at or below 0 quantizes with kMinScale") {
    const QuantScheme s = make_scheme(-128, 127, true);
    Tensor y = fake_quantize_learned(Tensor::from({2}, {1e-6f, -1.0f}), Tensor::from({1}, {-0.5f}), Tensor(), s, 1.0f);
    CHECK(y.values()[0] == doctest::Approx(8 * kMinScale));
    CHECK(y.values()[1] == doctest::Approx(-128 * kMinScale));
}

TEST_CASE("the straight-through backward handing its buffer to x equals the zero-filled one, bit for bit") {
    // Big enough for the hand-over path (autograd/grad_buffer.h); dy holds -0
    // (seeded as it is by backward_exact), values out of range and NaN
    // inputs, where the two paths could differ.
    const int64_t n = 3 * (1 << 14) + 7;
    std::mt19937 rng(3);
    const QuantScheme s = make_scheme(0, 255);
    const QuantParams p{{0.02f}, {100}};
    std::vector<float> dout(static_cast<size_t>(n));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < n; i++) dout[i] = i % 5 == 0 ? -0.0f : normal(rng);
    Tensor x0 = Tensor::randn({n}, rng, 3.0f);
    x0.data()[7] = std::nanf("");
    std::vector<float> grads[2];
    for (int pre_filled = 0; pre_filled < 2; pre_filled++) {
        Tensor x = x0.clone();
        x.set_requires_grad(true);
        if (pre_filled) x.grad();  // a zero gradient already there: the += path
        test::backward_exact(fake_quantize(x, p, s), dout);
        grads[pre_filled] = x.grad_values();
    }
    REQUIRE(grads[0].size() == grads[1].size());
    CHECK(std::memcmp(grads[0].data(), grads[1].data(), grads[0].size() * sizeof(float)) == 0);
}
