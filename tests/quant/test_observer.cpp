// Observers: hand-computed ranges, NaN/inf handling, the errors for no data,
// the histogram's growth, percentile and MSE ranges, and PyTorch 1.13's
// MinMax / MovingAverage / PerChannel observers (tests/fixtures/gen_fake_quant.py).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>

#include "quant/observer.h"
#include "tests/quant/fixture.h"

using namespace qf;
using namespace qf::quant;
using qf::test::error_of;
using qf::test::fixture_has_meta;
using qf::test::fixture_ints;
using qf::test::fixture_number;
using qf::test::fixture_tensor;

namespace {

QuantScheme int8_scheme(bool per_channel = false, int axis = 0) {
    QuantScheme s;
    s.per_channel = per_channel;
    s.axis = axis;
    return s;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Mean squared error of quantizing `values` with p (per tensor), the integer graph's formula.
double sample_mse(const std::vector<float>& values, const QuantParams& p, const QuantScheme& s) {
    double err = 0;
    for (float v : values) {
        const float q = std::clamp(std::nearbyint(v / p.scales[0]) + float(p.zero_points[0]),
                                   float(s.qmin()), float(s.qmax()));
        const double d = double((q - float(p.zero_points[0])) * p.scales[0]) - v;
        err += d * d;
    }
    return err / double(values.size());
}

}  // namespace

TEST_CASE("MinMaxObserver: running min and max, NaN and inf skipped") {
    MinMaxObserver obs("layer1.act", int8_scheme());
    obs.observe(Tensor::from({3}, {1.0f, -2.0f, 3.0f}));
    obs.observe(Tensor::from({2}, {0.5f, 4.0f}));
    obs.observe(Tensor::from({4}, {NAN, INFINITY, -INFINITY, 1.0f}));
    const Range r = obs.ranges().at(0);
    CHECK(r.min == -2.0f);
    CHECK(r.max == 4.0f);
    const QuantParams p = obs.qparams();
    CHECK(p.scales[0] == 6.0f / 255.0f);
}

TEST_CASE("MinMaxObserver per channel (axis 1)") {
    MinMaxObserver obs("fc.weight", int8_scheme(true, 1));
    obs.observe(Tensor::from({2, 3}, {1, 2, 3, 4, -5, 6}));
    const std::vector<Range> r = obs.ranges();
    REQUIRE(r.size() == 3);
    CHECK(r[0].min == 1);
    CHECK(r[0].max == 4);
    CHECK(r[1].min == -5);
    CHECK(r[1].max == 2);
    CHECK(r[2].min == 3);
    CHECK(r[2].max == 6);
    CHECK(obs.qparams().channels() == 3);
    std::string e = error_of([&] { obs.observe(Tensor::from({2, 2}, {1, 2, 3, 4})); });
    CHECK(contains(e, "fc.weight"));
    CHECK(contains(e, "2 channels"));
    e = error_of([&] { obs.observe(Tensor::from({6}, {1, 2, 3, 4, 5, 6})); });
    CHECK(contains(e, "axis 1"));
}

TEST_CASE("observers without finite data throw, naming themselves") {
    MinMaxObserver never("stage2.block0.act", int8_scheme());
    std::string e = error_of([&] { never.ranges(); });
    CHECK(contains(e, "stage2.block0.act"));
    CHECK(contains(e, "never called"));

    for (ObserverKind kind : {ObserverKind::minmax, ObserverKind::moving_average,
                              ObserverKind::percentile, ObserverKind::mse}) {
        auto obs = make_observer(kind, "head.act", int8_scheme());
        obs->observe(Tensor::from({3}, {NAN, INFINITY, NAN}));
        e = error_of([&] { obs->qparams(); });
        CHECK(contains(e, "head.act"));
        CHECK(contains(e, "only NaN/inf"));
        CHECK(contains(e, obs->kind()));
    }
    // One channel without finite values is named.
    MinMaxObserver pc("conv.weight", int8_scheme(true, 0));
    pc.observe(Tensor::from({2, 2}, {1, 2, NAN, NAN}));
    CHECK(contains(error_of([&] { pc.ranges(); }), "channel 1"));

    CHECK(contains(error_of([] { parse_observer_kind("minmaxx"); }), "minmaxx"));
    CHECK(contains(error_of([] { MovingAverageMinMaxObserver("a", QuantScheme{}, 0.0f); }), "momentum"));
    CHECK(contains(error_of([] { PercentileObserver("a", QuantScheme{}, 20.0); }), "percentile"));
    QuantScheme bad;
    bad.bits = 9;
    CHECK(contains(error_of([&] { MinMaxObserver("a.act", bad); }), "bits 9"));
}

TEST_CASE("MovingAverageMinMaxObserver: the first batch sets, later ones average") {
    MovingAverageMinMaxObserver obs("a", int8_scheme(), 0.5f);
    obs.observe(Tensor::from({2}, {0.0f, 2.0f}));
    obs.observe(Tensor::from({2}, {-2.0f, 4.0f}));
    Range r = obs.ranges()[0];
    CHECK(r.min == -1.0f);  // 0 + 0.5 * (-2 - 0)
    CHECK(r.max == 3.0f);   // 2 + 0.5 * (4 - 2)
    obs.observe(Tensor::from({1}, {NAN}));  // a batch of nothing changes nothing
    r = obs.ranges()[0];
    CHECK(r.min == -1.0f);
    CHECK(r.max == 3.0f);
}

TEST_CASE("Histogram: growth merges bins exactly and keeps every count") {
    Histogram h;
    std::vector<float> a(1000);
    for (int i = 0; i < 1000; i++) a[i] = float(i) / 999.0f;  // [0, 1]
    h.add(a.data(), 1000, Range{0.0f, 1.0f});
    CHECK(h.lo() == 0.0f);
    const float w0 = h.bin_width();
    const float up = 5.0f;  // grows upwards: 1 -> 2 -> 4 -> 8
    h.add(&up, 1, Range{up, up});
    CHECK(h.bin_width() == 8.0f * w0);
    CHECK(h.lo() == 0.0f);
    const float down = -3.0f;  // grows downwards: lo 0 -> -8
    h.add(&down, 1, Range{down, down});
    CHECK(h.lo() == -8.0f * Histogram::kBins * w0);
    double sum = 0;
    for (double c : h.counts()) sum += c;
    CHECK(sum == 1002.0);
    CHECK(h.total() == 1002.0);
    CHECK(h.quantile(1.0) == 5.0f);
    CHECK(h.quantile(0.0) == -3.0f);
    CHECK(std::fabs(h.quantile(0.5) - 0.5f) < 2 * h.bin_width());
}

TEST_CASE("PercentileObserver clips outliers") {
    std::vector<float> v;
    for (int i = 0; i < 10000; i++) v.push_back(float(i));
    v.push_back(1e6f);  // one outlier
    PercentileObserver obs("a", int8_scheme(), 99.9);
    obs.observe(Tensor::from({int64_t(v.size())}, v));
    const Range r = obs.ranges()[0];
    // The 99.9th percentile of 0..9999 is ~9990; one bin is 1e6 / 2048 ~ 488 wide.
    CHECK(r.max > 9990.0f - 500.0f);
    CHECK(r.max < 9990.0f + 500.0f);
    CHECK(r.min >= 0.0f);
    CHECK(r.min < 500.0f);
    PercentileObserver all("b", int8_scheme(), 100.0);
    all.observe(Tensor::from({int64_t(v.size())}, v));
    CHECK(all.ranges()[0].max == 1e6f);
}

TEST_CASE("histogram_quantization_mse: hand-computed on two values") {
    Histogram h;
    const float v[2] = {-1.0f, 1.0f};
    h.add(v, 2, Range{-1.0f, 1.0f});
    QuantScheme s = int8_scheme();
    s.symmetric = true;
    const QuantParams p = choose_qparams(Range{-0.5f, 0.5f}, s);  // s = 0.5 / 127.5
    const double w = h.bin_width();
    const double lowest = p.scales[0] * -128.0, highest = p.scales[0] * 127.0;
    // Both values fall outside: each costs its bin centre's squared distance to the interval.
    const double c0 = -1.0 + 0.5 * w, c1 = -1.0 + 2047.5 * w;
    const double want = ((lowest - c0) * (lowest - c0) + (c1 - highest) * (c1 - highest)) / 2.0;
    CHECK(histogram_quantization_mse(h, p, s) == doctest::Approx(want).epsilon(1e-9));
    // A range holding both values: only the rounding error s^2 / 12.
    const QuantParams wide = choose_qparams(Range{-2.0f, 2.0f}, s);
    CHECK(histogram_quantization_mse(h, wide, s) ==
          doctest::Approx(double(wide.scales[0]) * wide.scales[0] / 12.0));
}

TEST_CASE("MseObserver: keeps a uniform range, clips a lone outlier, beats min/max") {
    std::mt19937 rng(3);
    QuantScheme s4 = int8_scheme();
    s4.bits = 4;

    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> uniform(20000);
    for (float& x : uniform) x = u(rng);
    MseObserver flat("flat", s4);
    flat.observe(Tensor::from({20000}, uniform));
    CHECK(flat.ranges()[0].max > 0.9f);

    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<float> gauss(20000);
    for (float& x : gauss) x = n(rng);
    gauss[0] = 40.0f;
    MseObserver mse("gauss", s4);
    MinMaxObserver minmax("gauss", s4);
    const Tensor t = Tensor::from({20000}, gauss);
    mse.observe(t);
    minmax.observe(t);
    CHECK(mse.ranges()[0].max < 10.0f);
    CHECK(sample_mse(gauss, mse.qparams(), s4) < 0.5 * sample_mse(gauss, minmax.qparams(), s4));

    // Per channel: each channel its own search.
    QuantScheme pc = s4;
    pc.per_channel = true;
    MseObserver per("w", pc);
    std::vector<float> two(2 * 20000);
    std::copy(uniform.begin(), uniform.end(), two.begin());
    std::copy(gauss.begin(), gauss.end(), two.begin() + 20000);
    per.observe(Tensor::from({2, 20000}, two));
    CHECK(per.ranges()[0].max == flat.ranges()[0].max);
    CHECK(per.ranges()[1].max == mse.ranges()[0].max);
}

TEST_CASE("observers match PyTorch 1.13's qparams") {
    const char* cases[] = {"minmax_u8",         "minmax_s8_sym",    "minmax_s8",   "minmax_relu",
                           "minmax_u4",         "minmax_s4_sym",    "moving_u8",   "perchannel_s8_sym",
                           "perchannel_s8",     "perchannel_axis1", "moving_perchannel"};
    for (const std::string name : cases) {
        CAPTURE(name);
        const std::string k = "obs_" + name;
        const int qmin = int(fixture_number(k + ".qmin")), qmax = int(fixture_number(k + ".qmax"));
        QuantScheme s;
        s.is_signed = qmin < 0;
        s.bits = int(std::lround(std::log2(qmax - qmin + 1)));
        s.symmetric = contains(name, "sym");
        s.per_channel = fixture_has_meta(k + ".axis");
        if (s.per_channel) s.axis = int(fixture_number(k + ".axis"));
        REQUIRE(s.qmin() == qmin);
        REQUIRE(s.qmax() == qmax);
        std::unique_ptr<Observer> obs;
        if (contains(name, "moving")) {
            obs = std::make_unique<MovingAverageMinMaxObserver>(k, s, float(fixture_number(k + ".momentum")));
        } else {
            obs = std::make_unique<MinMaxObserver>(k, s);
        }
        const int batches = int(fixture_number(k + ".batches"));
        for (int i = 0; i < batches; i++) obs->observe(fixture_tensor(k + ".x" + std::to_string(i)));

        const std::vector<Range> ranges = obs->ranges();
        const std::vector<float> want_min = fixture_tensor(k + ".min").values();
        const std::vector<float> want_max = fixture_tensor(k + ".max").values();
        REQUIRE(ranges.size() == want_min.size());
        const QuantParams p = obs->qparams();
        const std::vector<float> want_scale = fixture_tensor(k + ".scale").values();
        const std::vector<int32_t> want_zero = fixture_ints(k + ".zero_point");
        for (size_t c = 0; c < ranges.size(); c++) {
            CAPTURE(c);
            // Moving averages may differ in the last bit (a fused multiply-add).
            CHECK(ranges[c].min == doctest::Approx(want_min[c]).epsilon(1e-6));
            CHECK(ranges[c].max == doctest::Approx(want_max[c]).epsilon(1e-6));
            CHECK(p.scales[c] == doctest::Approx(want_scale[c]).epsilon(1e-6));
            CHECK(p.zero_points[c] == want_zero[c]);
        }
    }
}
