#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "quant/observer.h"
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
    visit_qat(*qat, {.conv = [&](QatConvBnAct& c) { frozen += c.bn_frozen; }, .linear = {}, .activation = {}});
    CHECK(frozen > 10);
    CHECK(s.apply(*qat, 3).find("ranges frozen at step 3") != std::string::npos);
}

TEST_CASE("frozen ranges hold the weights' ranges too: fake-quant and freeze keep them as the weights move") {
    auto fp32 = nn::build_model({"lenet", 10, 1, 28}, 0);
    warm_up(*fp32);
    auto qat = prepare_qat(fp32, QatOptions{});
    qat->train();
    QatSchedule s{.freeze_bn_after = 0, .freeze_ranges_after = 1};
    std::vector<QatConvBnAct*> convs;
    std::vector<QatLinear*> linears;
    visit_qat(*qat, {.conv = [&](QatConvBnAct& c) { convs.push_back(&c); },
                     .linear = [&](QatLinear& l) { linears.push_back(&l); },
                     .activation = {}});
    REQUIRE(convs.size() == 2);
    REQUIRE(linears.size() == 2);
    NoGrad ng;
    s.apply(*qat, 0);
    qat->forward(batch(8, 5));
    QatConvBnAct& conv = *convs[0];
    QatLinear& fc = *linears[0];
    CHECK_FALSE(conv.weight_quant.has_frozen_ranges());
    // Not frozen: the scales follow the weights.
    auto scale_all = [](Tensor w, float f) {
        for (int64_t i = 0; i < w.numel(); i++) w.data()[i] *= f;
    };
    const float before = conv.weight_quant.qparams(conv.fold().weight).scales[0];
    scale_all(conv.conv->weight, 2.0f);
    CHECK(conv.weight_quant.qparams(conv.fold().weight).scales[0] == doctest::Approx(2 * before));

    CHECK(s.apply(*qat, 1).find("weight and activation ranges frozen at step 1") != std::string::npos);
    qat->forward(batch(8, 5));
    for (QatConvBnAct* c : convs) CHECK(c->weight_quant.has_frozen_ranges());
    for (QatLinear* l : linears) CHECK(l->weight_quant.has_frozen_ranges());
    const QuantParams frozen = conv.weight_quant.qparams(conv.fold().weight);
    const QuantParams frozen_fc = fc.weight_quant.qparams(fc.weight);
    CHECK(frozen.scales[0] == doctest::Approx(2 * before));
    // Frozen: the weights grow, the scales stay, and the fake-quant weights
    // clamp at the frozen range (symmetric: 127 steps at most).
    scale_all(conv.conv->weight, 3.0f);
    scale_all(fc.weight, 3.0f);
    CHECK(conv.weight_quant.qparams(conv.fold().weight).scales == frozen.scales);
    CHECK(fc.weight_quant.qparams(fc.weight).scales == frozen_fc.scales);
    const Tensor w = conv.fold().weight, fq = conv.weight_quant.apply(w);
    const int64_t per = w.numel() / w.dim(0);
    for (int64_t c = 0; c < w.dim(0); c++)
        for (int64_t i = 0; i < per; i++)
            CHECK(std::fabs(fq.data()[c * per + i]) <= 128.0f * frozen.scales[size_t(c)] * (1 + 1e-6f));
    // The ranges are state (a checkpoint keeps them), one {min, max} per channel.
    int buffers = 0;
    for (const auto& b : qat->buffers())
        if (b.name.size() > 13 && b.name.substr(b.name.size() - 13) == ".weight_range") {
            buffers++;
            CHECK(b.tensor.dim(1) == 2);
        }
    CHECK(buffers == 4);
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
                     .linear = {},
                     .activation = [&](ActivationQuant& a) {
                         const int bits = a.name() == "1.conv1.out" ? 4 : a.name() == "input" ? 6 : 8;
                         CHECK(a.scheme().bits == bits);
                         seen += bits != 8;
                     }});
    CHECK(seen == 3);
    // The 4-bit point's outputs take at most 16 values.
    {
        NoGrad ng;
        visit_qat(*qat, {.conv = {}, .linear = {}, .activation = [](ActivationQuant& a) { a.keep_output = a.name() == "1.conv1.out"; }});
        qat->forward(batch(4, 6));
        visit_qat(*qat, {.conv = {}, .linear = {}, .activation = [](ActivationQuant& a) {
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

TEST_CASE("a QAT conv training step equals its composition of autograd ops, bit for bit") {
    // QatConvBnAct's batch-statistics forward as written in quant/qat.h, from
    // scale_channels, fake_quantize, conv2d and batch_norm (with its input
    // scale 1/sf), against the layer.
    // Big enough (8x16x16x16) for the backwards that hand their gradient
    // buffer on (autograd/grad_buffer.h); the composition holds a zero
    // gradient in every tensor up front, so each of its backwards adds into
    // one instead: the two paths must agree bit for bit.
    for (const bool depthwise : {false, true}) {
        CAPTURE(depthwise);
        const int cin = depthwise ? 16 : 8, groups = depthwise ? 16 : 1;
        std::mt19937 rng_a(1), rng_b(1);
        nn::ConvBnAct fp_a(cin, 16, 3, 1, groups, nn::Act::ReLU6, rng_a), fp_b(cin, 16, 3, 1, groups, nn::Act::ReLU6, rng_b);
        for (nn::ConvBnAct* m : {&fp_a, &fp_b}) {  // BN statistics and gamma away from 1
            for (int64_t c = 0; c < 16; c++) {
                m->bn->running_var.data()[c] = 0.5f + 0.1f * float(c);
                m->bn->gamma.data()[c] = 1.0f - 0.05f * float(c);
            }
        }
        const QatOptions o;
        QatConvBnAct layer(fp_a, "c", o);
        layer.train();
        ActivationQuant out_quant("c.out", o, true);
        out_quant.train();
        std::mt19937 rng(7);
        const Tensor x0 = Tensor::randn({8, cin, 16, 16}, rng);
        std::vector<float> dout(size_t(8 * 16 * 16 * 16));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (float& d : dout) d = normal(rng);

        Tensor xa = x0.clone(), xb = x0.clone();
        xa.set_requires_grad(true);
        xb.set_requires_grad(true);
        const QatConvBnAct::FoldScales s = layer.fold_scales();
        Tensor ya = layer.forward(xa);
        backward(ya, dout);  // the tape is global: one forward and backward at a time
        Tensor w = scale_channels(fp_b.conv->weight, s.sf, 0);
        MinMaxObserver wobs("c.weight", o.weight);
        wobs.observe(w);
        const Tensor wq = fake_quantize(w, wobs.qparams(), o.weight);
        const Tensor conv_out = conv2d(xb, wq, Tensor(), fp_b.conv->params);
        nn::BatchNorm2d& bn = *fp_b.bn;
        const Tensor normalized = batch_norm(conv_out, bn.gamma, bn.beta, bn.running_mean, bn.running_var, true,
                                             bn.momentum, bn.eps, s.inv);
        const Tensor h = relu6(normalized);
        Tensor yb = out_quant.forward(h);
        for (Tensor t : {xb, w, wq, conv_out, normalized, h}) t.grad();
        backward(yb, dout);
        auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
            return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
        };
        CHECK(same(ya.values(), yb.values()));
        CHECK(same(xa.grad_values(), xb.grad_values()));
        CHECK(same(fp_a.conv->weight.grad_values(), fp_b.conv->weight.grad_values()));
        CHECK(same(fp_a.bn->gamma.grad_values(), fp_b.bn->gamma.grad_values()));
        CHECK(same(fp_a.bn->beta.grad_values(), fp_b.bn->beta.grad_values()));
        CHECK(same(fp_a.bn->running_mean.values(), fp_b.bn->running_mean.values()));
        CHECK(same(fp_a.bn->running_var.values(), fp_b.bn->running_var.values()));
    }
}

TEST_CASE("an activation point fed the range its relu measured observes exactly as from the tensor") {
    std::mt19937 rng(3);
    Tensor x = Tensor::randn({4, 8, 6, 6}, rng);
    x.data()[5] = std::numeric_limits<float>::quiet_NaN();  // skipped by both
    x.data()[9] = std::numeric_limits<float>::infinity();
    for (const ObserverKind kind : {ObserverKind::moving_average, ObserverKind::minmax, ObserverKind::percentile}) {
        CAPTURE(int(kind));
        QatOptions o;
        o.observer = kind;
        ActivationQuant from_tensor("a", o, true), from_range("a", o, true);
        from_tensor.train();
        from_range.train();
        CHECK(from_range.wants_range() == (kind != ObserverKind::percentile));
        for (int step = 0; step < 3; step++) {
            const Tensor scaled = scale_channels(x, Tensor::full({8}, 1.0f + float(step)), 1);
            FiniteMinMax range;
            const Tensor h = relu6(scaled, &range);
            const Tensor a = from_tensor.forward(relu6(scaled));
            const Tensor b = from_range.forward(h, &range);
            CHECK(std::memcmp(a.values().data(), b.values().data(), a.values().size() * sizeof(float)) == 0);
        }
        CHECK(from_tensor.qparams().scales == from_range.qparams().scales);
        CHECK(from_tensor.qparams().zero_points == from_range.qparams().zero_points);
    }
    MinMaxObserver per_channel("w", QuantScheme{.bits = 8, .symmetric = true, .per_channel = true, .axis = 0});
    CHECK_THROWS_AS(per_channel.observe_range({4, 3}, Range{0.0f, 1.0f}), QuantError);
}
