// Schemes and choose_qparams: integer ranges, hand-computed parameters, the
// zero point's nudging, the scale floor, and the errors for bad settings.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>

#include "quant/scheme.h"
#include "tests/quant/fixture.h"

using namespace qf;
using namespace qf::quant;
using qf::test::error_of;

namespace {

QuantScheme scheme(int bits, bool is_signed, bool symmetric = false, bool narrow = false) {
    QuantScheme s;
    s.bits = bits;
    s.is_signed = is_signed;
    s.symmetric = symmetric;
    s.narrow_range = narrow;
    return s;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("scheme: integer ranges") {
    CHECK(scheme(8, true).qmin() == -128);
    CHECK(scheme(8, true).qmax() == 127);
    CHECK(scheme(8, true, false, true).qmin() == -127);
    CHECK(scheme(8, false).qmin() == 0);
    CHECK(scheme(8, false).qmax() == 255);
    CHECK(scheme(8, false, false, true).qmin() == 1);
    CHECK(scheme(4, true).qmin() == -8);
    CHECK(scheme(4, true).qmax() == 7);
    CHECK(scheme(4, false).qmax() == 15);
    CHECK(scheme(2, true).qmin() == -2);
    CHECK(scheme(2, true).qmax() == 1);
    CHECK(scheme(8, true, true).symmetric_zero_point() == 0);
    CHECK(scheme(8, false, true).symmetric_zero_point() == 128);
    CHECK(scheme(4, false, true).symmetric_zero_point() == 8);
    CHECK(to_string(scheme(4, false, true)) == "uint4 symmetric per-tensor");
}

TEST_CASE("choose_qparams: hand-computed asymmetric and symmetric parameters") {
    // [-1, 3] on uint8: s = 4/255, real 0 at -(-1)/s = 63.75 -> z = 64 (nudged).
    QuantParams p = choose_qparams(Range{-1.0f, 3.0f}, scheme(8, false));
    CHECK(p.scales[0] == 4.0f / 255.0f);
    CHECK(p.zero_points[0] == 64);
    // The same range on int8: shifted by -128.
    p = choose_qparams(Range{-1.0f, 3.0f}, scheme(8, true));
    CHECK(p.scales[0] == 4.0f / 255.0f);
    CHECK(p.zero_points[0] == -64);
    // A positive range widens to include 0: z = qmin.
    p = choose_qparams(Range{2.0f, 6.0f}, scheme(8, true));
    CHECK(p.scales[0] == 6.0f / 255.0f);
    CHECK(p.zero_points[0] == -128);
    // A negative range: z = qmax.
    p = choose_qparams(Range{-6.0f, -2.0f}, scheme(8, false));
    CHECK(p.zero_points[0] == 255);
    // Symmetric: s = max|r| / ((qmax - qmin) / 2), as PyTorch.
    p = choose_qparams(Range{-1.0f, 3.0f}, scheme(8, true, true));
    CHECK(p.scales[0] == 3.0f / 127.5f);
    CHECK(p.zero_points[0] == 0);
    p = choose_qparams(Range{-1.0f, 3.0f}, scheme(8, false, true));
    CHECK(p.zero_points[0] == 128);
    p = choose_qparams(Range{-1.0f, 3.0f}, scheme(8, true, true, true));
    CHECK(p.scales[0] == 3.0f / 127.0f);
    p = choose_qparams(Range{-0.5f, 0.25f}, scheme(4, true, true));
    CHECK(p.scales[0] == 0.5f / 7.5f);
}

TEST_CASE("choose_qparams: the scale never collapses to 0") {
    for (const QuantScheme& s : {scheme(8, true), scheme(8, false, true), scheme(2, true)}) {
        QuantParams p = choose_qparams(Range{0.0f, 0.0f}, s);
        CHECK(p.scales[0] == kMinScale);
        CHECK(p.zero_points[0] >= s.qmin());
        CHECK(p.zero_points[0] <= s.qmax());
        p = choose_qparams(Range{-1e-20f, 1e-20f}, s);
        CHECK(p.scales[0] == kMinScale);
    }
}

TEST_CASE("choose_qparams: zero is exact and the range is covered within half a step") {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-10.0f, 10.0f);
    for (int bits = 2; bits <= 8; bits++) {
        for (bool is_signed : {true, false}) {
            for (int trial = 0; trial < 200; trial++) {
                float a = u(rng), b = u(rng);
                if (a > b) std::swap(a, b);
                const QuantScheme s = scheme(bits, is_signed);
                const QuantParams p = choose_qparams(Range{a, b}, s);
                const float scale = p.scales[0];
                const int32_t z = p.zero_points[0];
                REQUIRE(z >= s.qmin());
                REQUIRE(z <= s.qmax());
                // Real 0 is the integer z: (z - z) * s == 0 exactly, by construction;
                // the representable interval misses the widened range by < half a step.
                const float lowest = scale * float(s.qmin() - z), highest = scale * float(s.qmax() - z);
                CHECK(lowest <= std::min(a, 0.0f) + 0.5001f * scale);
                CHECK(highest >= std::max(b, 0.0f) - 0.5001f * scale);
            }
        }
    }
}

TEST_CASE("scheme errors name the setting and the tensor") {
    std::string e = error_of([] { scheme(9, true).validate("fc1.weight"); });
    CHECK(contains(e, "fc1.weight"));
    CHECK(contains(e, "bits 9"));
    CHECK(contains(error_of([] { scheme(1, false).validate("x"); }), "bits 1"));
    CHECK(error_of([] { scheme(2, false).validate("x"); }).empty());

    QuantScheme pc = scheme(8, true);
    pc.per_channel = true;
    pc.axis = 2;
    e = error_of([&] { validate(pc, Shape{10, 128}, "fc.weight"); });
    CHECK(contains(e, "fc.weight"));
    CHECK(contains(e, "axis 2"));
    CHECK(contains(e, "(10, 128)"));
    pc.axis = 1;
    CHECK(error_of([&] { validate(pc, Shape{10, 128}, "fc.weight"); }).empty());

    CHECK_THROWS_AS(choose_qparams(Range{NAN, 1.0f}, scheme(8, true)), QuantError);
    CHECK_THROWS_AS(choose_qparams(Range{0.0f, INFINITY}, scheme(8, true)), QuantError);
    CHECK_THROWS_AS(choose_qparams(Range{2.0f, 1.0f}, scheme(8, true)), QuantError);
}

TEST_CASE("validate(params): counts, scales and zero points") {
    QuantScheme pc = scheme(8, true);
    pc.per_channel = true;
    const Shape w{3, 4};
    CHECK(error_of([&] { validate(QuantParams{{0.1f, 0.2f, 0.3f}, {0, 1, -1}}, pc, w, "w"); }).empty());
    CHECK(contains(error_of([&] { validate(QuantParams{{0.1f}, {0}}, pc, w, "w"); }), "need 3"));
    CHECK(contains(error_of([&] { validate(QuantParams{{0.1f, 0.0f, 0.3f}, {0, 0, 0}}, pc, w, "w"); }),
                   "channel 1"));
    CHECK(contains(error_of([&] { validate(QuantParams{{0.1f, 0.1f, 0.3f}, {0, 0, 200}}, pc, w, "w"); }),
                   "zero point 200"));
    CHECK(contains(error_of([&] { validate(QuantParams{{NAN}, {0}}, scheme(8, true), w, "w"); }),
                   "positive and finite"));
}

TEST_CASE("check_int8_compatible: what the int8 kernels can run") {
    QuantScheme s = scheme(8, false);
    CHECK(error_of([&] { check_int8_compatible(s, TensorRole::activation, "a"); }).empty());
    s.per_channel = true;
    std::string e = error_of([&] { check_int8_compatible(s, TensorRole::activation, "layer1.act"); });
    CHECK(contains(e, "layer1.act"));
    CHECK(contains(e, "per-channel activations"));
    CHECK(contains(e, "one scale and zero point per activation tensor"));
    // Weights: per channel on the output axis, asymmetric or not, signed or not.
    QuantScheme w = scheme(4, false);
    w.per_channel = true;
    CHECK(error_of([&] { check_int8_compatible(w, TensorRole::weight, "conv.weight"); }).empty());
    w.axis = 1;
    e = error_of([&] { check_int8_compatible(w, TensorRole::weight, "conv.weight"); });
    CHECK(contains(e, "axis 1"));
    CHECK(contains(e, "output channel"));
    CHECK(contains(error_of([] { check_int8_compatible(scheme(12, true), TensorRole::weight, "w"); }),
                   "bits 12"));
}

TEST_CASE("channel_layout") {
    QuantScheme s = scheme(8, true);
    ChannelLayout l = channel_layout(s, Shape{2, 5, 4});
    CHECK(l.outer == 1);
    CHECK(l.channels == 1);
    CHECK(l.inner == 40);
    s.per_channel = true;
    s.axis = 1;
    l = channel_layout(s, Shape{2, 5, 4});
    CHECK(l.outer == 2);
    CHECK(l.channels == 5);
    CHECK(l.inner == 4);
}
