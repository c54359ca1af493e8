#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>

#include "quant/fold_batch_norm.h"
#include "quant/sensitivity.h"

using namespace qf;
using namespace qf::quant;

namespace {
constexpr int kSide = 12;  // a small lenet: the report's logic, not the model, is under test

Tensor images(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    return Tensor::randn({n, 1, kSide, kSide}, rng);
}

// A folded fp32 lenet (BN statistics moved off the identity first) and its
// calibrated QAT model with frozen ranges, in eval mode.
struct Models {
    std::shared_ptr<nn::Sequential> fp32, qat;
};
// Calibrates on batches of `calibration_n` images from seeds 20, 21, ...
Models calibrated_lenet(ObserverKind observer = ObserverKind::moving_average, int calibration_n = 32) {
    Models m;
    m.fp32 = nn::build_model({"lenet", 10, 1, kSide}, 0);
    {
        NoGrad ng;
        for (int i = 0; i < 3; i++) m.fp32->forward(images(16, 10 + i));
    }
    m.fp32->eval();
    fold_batch_norms(*m.fp32);
    QatOptions options;
    options.observer = observer;
    m.qat = prepare_qat(m.fp32, options);
    m.qat->train();
    QatSchedule{.freeze_bn_after = 0}.apply(*m.qat, 0);
    {
        NoGrad ng;
        for (int i = 0; i < 4; i++) m.qat->forward(images(calibration_n, 20 + i));
    }
    m.qat->eval();
    return m;
}

Tensor forward(nn::Module& m, const Tensor& x) {
    NoGrad ng;
    return m.forward(x);
}

// Batches labelled with the fp32 model's own predictions: top-1 is then the
// agreement with fp32, and the fp32 model scores exactly 100%.
std::vector<LabeledBatch> labelled_by(nn::Module& fp32, int batches, int n, uint32_t seed) {
    std::vector<LabeledBatch> out;
    for (int b = 0; b < batches; b++) {
        LabeledBatch lb{images(n, seed + b), {}};
        const Tensor logits = forward(fp32, lb.images);
        for (int i = 0; i < n; i++) {
            const float* p = logits.data() + i * 10;
            lb.labels.push_back(int32_t(std::max_element(p, p + 10) - p));
        }
        out.push_back(std::move(lb));
    }
    return out;
}

Tensor& range_buffer(nn::Module& m, const std::string& name) {
    static std::vector<nn::NamedTensor> keep;  // buffers() returns handles; keep one alive
    keep = m.buffers();
    for (auto& b : keep)
        if (b.name == name) return b.tensor;
    FAIL("no buffer " << name);
    return keep[0].tensor;
}

const LayerSensitivity& row(const SensitivityReport& r, const std::string& name) {
    for (const auto& l : r.layers)
        if (l.name == name) return l;
    FAIL("no row " << name);
    return r.layers[0];
}
}  // namespace

TEST_CASE("SignalError: SQNR and cosine by their definitions") {
    SignalError e;
    const float x[4] = {1, -2, 3, 0}, y[4] = {1, -2, 2, 0};
    e.add(x, y, 4);
    CHECK(e.sqnr_db() == doctest::Approx(10 * std::log10(14.0 / 1.0)));
    CHECK(e.cosine() == doctest::Approx(11.0 / std::sqrt(14.0 * 9.0)));
    SignalError same;
    same.add(x, x, 4);
    CHECK(std::isinf(same.sqnr_db()));
    CHECK(same.cosine() == doctest::Approx(1.0));
}

TEST_CASE("An 8-bit point on Gaussian data has the SQNR of uniform rounding noise, about 40 dB") {
    // The model input is N(0, 1), so the input point's local SQNR is
    // 10 log10(var / (s^2 / 12)) with s its scale: ~40 dB for a min/max
    // range of about +-4 sigma over 255 steps. The min/max observer saw
    // the very images measured, so nothing clips and rounding is all the noise.
    Models m = calibrated_lenet(ObserverKind::minmax, 64);
    std::vector<LabeledBatch> stats{{images(64, 20), {}}, {images(64, 21), {}}};
    const SensitivityReport r = measure_sensitivity(*m.qat, stats, {});
    const LayerSensitivity& in = row(r, "input");
    CHECK(in.kind == "input");
    CHECK(in.values == 2 * 64 * kSide * kSide);
    const double s = (in.range_hi - in.range_lo) / 255.0;
    const double theory = 10 * std::log10(12.0 / (s * s));
    CAPTURE(theory);
    CHECK(in.local_sqnr_db == doctest::Approx(theory).epsilon(0.05));
    CHECK(in.local_sqnr_db > 36);
    CHECK(in.local_sqnr_db < 46);
    CHECK(in.local_cosine > 0.9999);
    // The input point is the first: nothing before it, so accumulated == local.
    CHECK(in.accum_sqnr_db == doctest::Approx(in.local_sqnr_db));
    CHECK(in.clipped == 0);
    CHECK(std::isnan(in.weight_sqnr_db));
    // No eval batches: the accuracy columns stay empty.
    CHECK(r.eval_images == 0);
    CHECK(std::isnan(in.top1_float));
}

TEST_CASE("Every point and weight in float computes exactly the fp32 model") {
    Models m = calibrated_lenet();
    const Tensor x = images(8, 7);
    const Tensor ref = forward(*m.fp32, x);
    const Tensor quantized = forward(*m.qat, x);
    visit_qat(*m.qat, {.conv = [](QatConvBnAct& c) { c.weight_quant.enabled = false; },
                       .linear = [](QatLinear& l) { l.weight_quant.enabled = false; },
                       .activation = [](ActivationQuant& a) { a.enabled = false; }});
    const Tensor all_float = forward(*m.qat, x);
    REQUIRE(all_float.numel() == ref.numel());
    for (int64_t i = 0; i < ref.numel(); i++) CHECK(all_float.data()[i] == ref.data()[i]);
    // and the quantized forward really differs, so the check above can fail
    double diff = 0;
    for (int64_t i = 0; i < ref.numel(); i++) diff += std::fabs(quantized.data()[i] - ref.data()[i]);
    CHECK(diff > 0);
}

TEST_CASE("The report's fp32 reference is the fp32 model, and it leaves the model's switches as they were") {
    Models m = calibrated_lenet();
    const auto eval = labelled_by(*m.fp32, 2, 32, 300);
    const Tensor x = images(8, 7);
    const Tensor before = forward(*m.qat, x);
    const SensitivityReport r = measure_sensitivity(*m.qat, std::span(eval).first(1), eval);
    CHECK(r.fp32_top1 == doctest::Approx(100.0));
    CHECK(r.eval_images == 64);
    CHECK(r.quant_top1 == doctest::Approx(r.quant_agreement));
    // lenet: input, two convs, two linears, in graph order
    REQUIRE(r.layers.size() == 5);
    CHECK(r.layers[0].name == "input");
    CHECK(r.layers[1].name == "0");
    CHECK(r.layers[1].kind == "conv");
    CHECK(r.layers[3].name == "5");
    CHECK(r.layers[4].kind == "linear");
    for (const auto& l : r.layers) {
        CAPTURE(l.name);
        CHECK(l.local_sqnr_db > 25);  // 8 bits, calibrated: every point is fine
        CHECK(l.accum_sqnr_db <= l.local_sqnr_db + 3);
        if (l.kind != "input") CHECK(l.weight_sqnr_db > 30);
    }
    const Tensor after = forward(*m.qat, x);
    CHECK(!m.qat->training());
    for (int64_t i = 0; i < before.numel(); i++) CHECK(after.data()[i] == before.data()[i]);
    const std::string md = r.to_markdown();
    CHECK(md.find("| 0 | input | input |") != std::string::npos);
    CHECK(r.to_text().find("local SQNR dB") != std::string::npos);
}

TEST_CASE("A layer with a terrible range is the one the report blames") {
    Models m = calibrated_lenet();
    // The second conv's output range shrunk to 2% of what calibration saw:
    // most of its values clip.
    Tensor& range = range_buffer(*m.qat, "2.out_quant.range");
    range.data()[0] = 0;
    range.data()[1] *= 0.02f;
    const auto eval = labelled_by(*m.fp32, 4, 64, 500);
    const SensitivityReport r = measure_sensitivity(*m.qat, std::span(eval).first(2), eval);
    INFO(r.to_text());
    const LayerSensitivity& bad = row(r, "2");
    for (const auto& l : r.layers) {
        if (l.name == "2") continue;
        CAPTURE(l.name);
        CHECK(l.local_sqnr_db > bad.local_sqnr_db + 10);
        CHECK(l.clipped < bad.clipped);
        CHECK(l.top1_float < bad.top1_float);
    }
    CHECK(bad.clipped > 0.3);
    CHECK(bad.top1_float > r.quant_top1 + 5);
    CHECK(bad.flags.find('S') != std::string::npos);
    CHECK(bad.flags.find('C') != std::string::npos);
    CHECK(bad.flags.find('A') != std::string::npos);
    // Its error is carried on: the points after it have a poor accumulated SQNR.
    CHECK(row(r, "5").accum_sqnr_db < 15);
}

TEST_CASE("A model without quantization points, without batches or without calibration is refused") {
    auto fp32 = nn::build_model({"lenet", 10, 1, kSide}, 0);
    std::vector<LabeledBatch> none;
    CHECK_THROWS_WITH_AS(measure_sensitivity(*fp32, none, none), doctest::Contains("prepare_qat"), QuantError);
    // and so is a QAT model without batches, or one whose points saw no data
    auto qat = prepare_qat(fp32, QatOptions{});
    CHECK_THROWS_WITH_AS(measure_sensitivity(*qat, none, none), doctest::Contains("no batches"), QuantError);
    const std::vector<LabeledBatch> one{{images(2, 1), {}}};
    CHECK_THROWS_WITH_AS(measure_sensitivity(*qat, one, none), doctest::Contains("input: this activation"), QuantError);
    // the failed attempt left the switches as they were
    const ActivationQuant* input = dynamic_cast<ActivationQuant*>(qat->at(0).get());
    REQUIRE(input);
    CHECK(input->enabled);
    CHECK(!input->keep_output);
}

TEST_CASE("resnet20 and mbv2: one row per point the forward uses, in graph order, with its kind") {
    // mbv2's blocks without a residual add have an out_quant their forward
    // never calls: no row for them.
    for (const auto& [arch, rows, adds] : {std::tuple{std::string("resnet20"), 33, 9}, std::tuple{std::string("mbv2"), 23, 3}}) {
        CAPTURE(arch);
        auto fp32 = nn::build_model({arch, 10, 1, 8}, 0);
        fp32->eval();
        auto qat = prepare_qat(fp32, QatOptions{});
        qat->train();
        QatSchedule{.freeze_bn_after = 0}.apply(*qat, 0);
        std::mt19937 rng(3);
        const Tensor x = Tensor::randn({4, 1, 8, 8}, rng);
        {
            NoGrad ng;
            qat->forward(x);
        }
        qat->eval();
        const std::vector<LabeledBatch> stats{{x, {}}};
        const SensitivityReport r = measure_sensitivity(*qat, stats, {});
        REQUIRE((int)r.layers.size() == rows);
        CHECK(r.layers.front().kind == "input");
        CHECK(r.layers.back().kind == "linear");
        CHECK(r.layers[r.layers.size() - 2].kind == "avgpool");
        CHECK(std::count_if(r.layers.begin(), r.layers.end(), [](const auto& l) { return l.kind == "add"; }) == adds);
        for (const auto& l : r.layers) {
            CAPTURE(l.name);
            CHECK(l.values > 0);
            CHECK(l.local_sqnr_db > 20);
        }
    }
}
