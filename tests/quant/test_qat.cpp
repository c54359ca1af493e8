#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "quant/qat.h"

using namespace qf;
using namespace qf::quant;

namespace {
Tensor batch(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    return Tensor::randn({n, 1, 28, 28}, rng);
}

// Trains BN statistics a little so folding is not the identity.
void warm_up(nn::Module& m) {
    m.train();
    NoGrad ng;
    for (int i = 0; i < 3; i++) m.forward(batch(8, 10 + i));
}
}  // namespace

TEST_CASE("QAT models keep the fp32 state names and add quantization state") {
    for (const std::string& arch : nn::model_archs()) {
        CAPTURE(arch);
        auto fp32 = nn::build_model({arch, 10, 1, 28}, 0);
        std::set<std::string> before;
        for (const auto& t : fp32->state()) before.insert(t.name);
        auto qat = prepare_qat(fp32, QatOptions{});
        std::set<std::string> after;
        for (const auto& t : qat->state()) after.insert(t.name);
        for (const auto& n : before) CHECK(after.count(n));
        CHECK(after.count("input_quant.range"));
        CHECK(after.size() > before.size());
    }
}

TEST_CASE("QAT forward stays close to fp32 at 8 bits, and outputs lie on the quantization grid") {
    for (const std::string& arch : nn::model_archs()) {
        CAPTURE(arch);
        auto fp32 = nn::build_model({arch, 10, 1, 28}, 0);
        warm_up(*fp32);
        fp32->eval();
        Tensor x = batch(16, 99);
        Tensor ref;
        {
            NoGrad ng;
            ref = fp32->forward(x);
        }
        auto qat = prepare_qat(fp32, QatOptions{});
        qat->train();
        {
            NoGrad ng;  // calibrate ranges with training-mode observers, BN frozen
            QatSchedule{.freeze_bn_after = 0}.apply(*qat, 0);
            for (int i = 0; i < 4; i++) qat->forward(batch(16, 99));
        }
        qat->eval();
        NoGrad ng;
        Tensor y = qat->forward(x);
        double err = 0, mag = 0;
        for (int64_t i = 0; i < y.numel(); i++) {
            err += std::fabs(y.data()[i] - ref.data()[i]);
            mag += std::fabs(ref.data()[i]);
        }
        CHECK(err / mag < 0.1);
        // The logits are fake-quantized: multiples of the output scale away from its zero point.
        auto* last = dynamic_cast<QatLinear*>(qat->at(qat->size() - 1).get());
        REQUIRE(last);
        QuantParams p = last->out_quant->qparams();
        for (int64_t i = 0; i < y.numel(); i++) {
            const double q = y.data()[i] / p.scales[0] + p.zero_points[0];
            CHECK(std::fabs(q - std::nearbyint(q)) < 1e-3);
        }
    }
}

TEST_CASE("QAT trains: gradients reach the fp32 weights, BN and LSQ scales") {
    QatOptions o;
    o.learned = LearnedRanges::lsq;
    auto fp32 = nn::build_model({"resnet20", 10, 1, 28}, 0);
    auto qat = prepare_qat(fp32, o);
    qat->train();
    Tensor loss = cross_entropy(qat->forward(batch(8, 5)), {0, 1, 2, 3, 4, 5, 6, 7});
    backward(loss);
    int with_grad = 0, total = 0;
    for (const auto& p : qat->parameters()) {
        total++;
        with_grad += p.tensor.has_grad();
    }
    CHECK(with_grad == total);
}

TEST_CASE("the schedule freezes BN and ranges at the configured steps and says so") {
    auto qat = prepare_qat(nn::build_model({"mbv2", 10, 1, 28}, 0), QatOptions{});
    QatSchedule s{.freeze_bn_after = 2, .freeze_ranges_after = 3};
    CHECK(s.apply(*qat, 1).empty());
    CHECK(s.apply(*qat, 2).find("BN statistics frozen at step 2") != std::string::npos);
    int frozen = 0;
    visit_qat(*qat, {.conv = [&](QatConvBnAct& c) { frozen += c.bn_frozen; }, .activation = {}});
    CHECK(frozen > 10);
    CHECK(s.apply(*qat, 3).find("ranges frozen at step 3") != std::string::npos);
}

TEST_CASE("an activation point that saw no data says so by name") {
    auto qat = prepare_qat(nn::build_model({"lenet", 10, 1, 28}, 0), QatOptions{});
    qat->eval();
    NoGrad ng;
    CHECK_THROWS_WITH_AS(qat->forward(batch(2, 1)), doctest::Contains("input"), QuantError);
}

TEST_CASE("mixed precision: named layers and points get their own bit widths, unknown names are refused") {
    auto fp32 = nn::build_model({"resnet20", 10, 1, 28}, 0);
    warm_up(*fp32);
    QatOptions o;
    o.weight_bits_per_layer = {{"1.conv1", 3}};
    o.activation_bits_per_point = {{"1.conv1.out", 4}, {"input", 6}};
    auto qat = prepare_qat(fp32, o);
    qat->train();
    {
        NoGrad ng;
        QatSchedule{.freeze_bn_after = 0}.apply(*qat, 0);
        for (int i = 0; i < 2; i++) qat->forward(batch(8, 5));
    }
    qat->eval();
    int seen = 0;
    visit_qat(*qat, {.conv = [&](QatConvBnAct& c) {
                         const int bits = c.weight_quant.layer() == "1.conv1" ? 3 : 8;
                         CHECK(c.weight_quant.scheme().bits == bits);
                         if (bits == 3) {  // at most 2^3 levels per output channel
                             NoGrad ng;
                             Tensor w = c.weight_quant.apply(c.fold().weight);
                             const int64_t per = w.numel() / w.dim(0);
                             std::set<float> levels(w.data(), w.data() + per);
                             CHECK(levels.size() <= 8);
                             CHECK(levels.size() >= 4);
                             seen++;
                         }
                     },
                     .activation = [&](ActivationQuant& a) {
                         const int bits = a.name() == "1.conv1.out" ? 4 : a.name() == "input" ? 6 : 8;
                         CHECK(a.scheme().bits == bits);
                         seen += bits != 8;
                     }});
    CHECK(seen == 3);
    // The 4-bit point's outputs take at most 16 values.
    {
        NoGrad ng;
        visit_qat(*qat, {.conv = {}, .activation = [](ActivationQuant& a) { a.keep_output = a.name() == "1.conv1.out"; }});
        qat->forward(batch(4, 6));
        visit_qat(*qat, {.conv = {}, .activation = [](ActivationQuant& a) {
                             if (a.name() != "1.conv1.out") return;
                             std::set<float> values(a.last_output.data(), a.last_output.data() + a.last_output.numel());
                             CHECK(values.size() <= 16);
                             CHECK(values.size() >= 4);
                         }});
    }

    QatOptions typo;
    typo.weight_bits_per_layer = {{"1.conv9", 4}};
    CHECK_THROWS_WITH_AS(prepare_qat(nn::build_model({"resnet20", 10, 1, 28}, 0), typo),
                         doctest::Contains("no layer '1.conv9'"), QuantError);
    QatOptions typo_point;
    typo_point.activation_bits_per_point = {{"1.conv1", 4}};  // the layer, not its point "1.conv1.out"
    CHECK_THROWS_WITH_AS(prepare_qat(nn::build_model({"resnet20", 10, 1, 28}, 0), typo_point),
                         doctest::Contains("1.conv1.out"), QuantError);
    QatOptions one_bit;
    one_bit.weight_bits_per_layer = {{"1.conv1", 1}};
    CHECK_THROWS_AS(prepare_qat(nn::build_model({"resnet20", 10, 1, 28}, 0), one_bit), QuantError);
}
