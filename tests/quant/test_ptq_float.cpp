// The float side of PTQ on the reference models: BN folding keeps the eval
// function, cross-layer equalization keeps it for ReLU pairs and equalizes
// the ranges, and bias correction (empirical and analytic) removes the mean
// error that weight quantization adds to each layer's pre-activations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "nn/models.h"
#include "quant/bias_correction.h"
#include "quant/cross_layer_equalize.h"
#include "quant/fold_batch_norm.h"

using namespace qf;
using namespace qf::quant;

namespace {

constexpr int kSide = 16;  // small images keep the tests fast; every model accepts them

std::shared_ptr<nn::Sequential> model(const std::string& arch) { return nn::build_model({arch, 10, 1, kSide}, 0); }

Tensor images(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    return Tensor::randn({n, 1, kSide, kSide}, rng);
}

Tensor eval_forward(nn::Module& m, const Tensor& x) {
    NoGrad no_grad;
    m.eval();
    return m.forward(x);
}

// max |a - b| relative to max(1, max |a|)
double relative_difference(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    double diff = 0.0, scale = 1.0;
    for (int64_t i = 0; i < a.numel(); i++) {
        diff = std::max(diff, (double)std::fabs(a.data()[i] - b.data()[i]));
        scale = std::max(scale, (double)std::fabs(a.data()[i]));
    }
    return diff / scale;
}

// Non-trivial BN state: gamma of both signs, shifted betas, running stats
// far from (0, 1).
void randomize_batch_norms(nn::Module& m, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::normal_distribution<float> n(0.0f, 1.0f);
    auto ends_with = [](const std::string& s, const std::string& t) {
        return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
    };
    for (auto& [name, t, decay] : m.state()) {
        if (name.find("bn.") == std::string::npos) continue;
        for (float& v : t.values()) {
            if (ends_with(name, "bn.weight")) v = (0.3f + 1.2f * u(rng)) * (u(rng) < 0.2f ? -1.0f : 1.0f);
            if (ends_with(name, "bn.bias")) v = 0.3f * n(rng);
            if (ends_with(name, "running_mean")) v = 0.2f * n(rng);
            if (ends_with(name, "running_var")) v = 0.05f + 2.0f * u(rng);
        }
    }
}

// BN statistics that match the data: one training-mode pass with momentum 1
// makes the running statistics those of `x` (after randomizing gamma/beta).
void set_batch_norms_from_data(nn::Module& m, const Tensor& x) {
    randomize_batch_norms(m, 7);
    for (auto& [name, t, decay] : m.state())
        if (name.find("running_var") != std::string::npos) std::fill(t.values().begin(), t.values().end(), 1.0f);
    std::function<void(nn::Module&)> set_momentum = [&](nn::Module& mod) {
        if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&mod)) bn->momentum = 1.0f;
        for (auto& [n, child] : mod.children()) set_momentum(*child);
    };
    set_momentum(m);
    NoGrad no_grad;
    m.train();
    m.forward(x);
    m.eval();
}

// Symmetric per-output-channel rounding to `bits`, as the tests' weight quantizer.
QuantizeWeights per_channel_symmetric(int bits) {
    return [bits](const std::string&, const Tensor& w) {
        const int64_t OC = w.dim(0), per = w.numel() / OC;
        const float qmax = (float)((1 << (bits - 1)) - 1);
        std::vector<float> q(w.numel());
        for (int64_t o = 0; o < OC; o++) {
            float range = 0.0f;
            for (int64_t i = 0; i < per; i++) range = std::max(range, std::fabs(w.data()[o * per + i]));
            const float s = range > 0.0f ? range / qmax : 1.0f;
            for (int64_t i = 0; i < per; i++)
                q[o * per + i] = s * std::clamp(std::nearbyint(w.data()[o * per + i] / s), -qmax, qmax);
        }
        return q;
    };
}

// Symmetric per-tensor rounding to `bits`: the scheme equalization helps.
QuantizeWeights per_tensor_symmetric(int bits) {
    return [bits](const std::string&, const Tensor& w) {
        const float qmax = (float)((1 << (bits - 1)) - 1);
        float range = 0.0f;
        for (float v : w.values()) range = std::max(range, std::fabs(v));
        const float s = range > 0.0f ? range / qmax : 1.0f;
        std::vector<float> q(w.numel());
        for (int64_t i = 0; i < w.numel(); i++) q[i] = s * std::clamp(std::nearbyint(w.data()[i] / s), -qmax, qmax);
        return q;
    };
}

// Per layer, mean over channels of |mean pre-activation error|, the
// weight-quantized model against the float means given.
std::vector<double> mean_errors(nn::Module& m, std::vector<FoldedConv>& layers, const QuantizeWeights& quantize,
                                const std::vector<Tensor>& batches,
                                const std::vector<std::vector<double>>& float_means) {
    QuantizedWeights quantized(layers, quantize);
    const auto means = preactivation_means(m, layers, batches);
    std::vector<double> err(layers.size(), 0.0);
    for (size_t i = 0; i < layers.size(); i++) {
        for (size_t c = 0; c < means[i].size(); c++) err[i] += std::fabs(means[i][c] - float_means[i][c]);
        err[i] /= (double)means[i].size();
    }
    return err;
}

double sum(const std::vector<double>& v) {
    double s = 0.0;
    for (double x : v) s += x;
    return s;
}

}  // namespace

TEST_CASE("folding BN keeps the eval output of every reference model") {
    const std::vector<std::pair<std::string, size_t>> archs = {{"lenet", 2}, {"resnet20", 21}, {"mbv2", 17}};
    for (const auto& [arch, layer_count] : archs) {
        CAPTURE(arch);
        auto m = model(arch);
        randomize_batch_norms(*m, 1);
        const Tensor x = images(4, 2);
        const Tensor before = eval_forward(*m, x);
        const auto state_names_before = m->state().size();
        std::vector<FoldedConv> layers = fold_batch_norms(*m);
        CHECK(layers.size() == layer_count);
        CHECK(m->state().size() == state_names_before);  // still checkpoint-compatible
        CHECK(relative_difference(before, eval_forward(*m, x)) < 1e-4);
        for (const FoldedConv& f : layers) {
            CHECK(f.weight.same(f.module->conv->weight));
            CHECK(f.bias.same(f.module->bn->beta));
        }
        CHECK_THROWS_WITH_AS(fold_batch_norms(*m), doctest::Contains("already folded"), std::invalid_argument);
    }
}

TEST_CASE("fold_batch_norm: the formula, a conv bias, zero and tiny BN scales, bad statistics") {
    std::mt19937 rng(3);
    nn::ConvBnAct layer(3, 4, 3, 1, 1, nn::Act::ReLU, rng);
    layer.conv->bias = Tensor::randn({4}, rng);  // folding must include a conv bias
    layer.bn->gamma.values() = {2.0f, 0.0f, 1e-12f, -0.5f};
    layer.bn->beta.values() = {0.1f, 0.7f, -0.3f, 0.2f};
    layer.bn->running_mean.values() = {0.5f, 1.0f, 2.0f, -1.0f};
    layer.bn->running_var.values() = {3.0f, 1.0f, 1.0f, 0.25f};
    const FoldedConv f = fold_batch_norm(layer, "stem");
    const float eps = layer.bn->eps;
    const float scale0 = 2.0f / std::sqrt(3.0f + eps);
    CHECK(f.weight.data()[5] == doctest::Approx(layer.conv->weight.data()[5] * scale0));
    CHECK(f.bias.data()[0] == doctest::Approx(0.1f + (layer.conv->bias.data()[0] - 0.5f) * scale0));
    // gamma 0 and a scale of 1e-12: the channel is the constant beta, weights exactly 0
    const int64_t per = 27;
    for (int64_t i = 0; i < per; i++) {
        CHECK(f.weight.data()[1 * per + i] == 0.0f);
        CHECK(f.weight.data()[2 * per + i] == 0.0f);
    }
    CHECK(f.bias.data()[1] == doctest::Approx(0.7f));
    CHECK(f.preact_std[3] == doctest::Approx(0.5f));  // |gamma|

    const Tensor x = Tensor::randn({2, 3, 5, 5}, rng);
    layer.eval();
    auto seq = std::make_shared<nn::Sequential>();
    seq->add(std::make_shared<nn::ConvBnAct>(layer));  // shares the conv and BN; folds them in place
    const Tensor before = eval_forward(*seq, x);
    fold_batch_norms(*seq);
    CHECK(relative_difference(before, eval_forward(*seq, x)) < 1e-5);

    nn::ConvBnAct bad(3, 4, 3, 1, 1, nn::Act::ReLU, rng);
    bad.bn->running_var.data()[2] = -1.0f;
    CHECK_THROWS_WITH_AS(fold_batch_norm(bad, "3.conv1"), doctest::Contains("'3.conv1'"), std::invalid_argument);
    bad.bn->running_var.data()[2] = 1.0f;
    bad.bn->gamma.data()[0] = NAN;
    CHECK_THROWS_WITH_AS(fold_batch_norm(bad, "3.conv1"), doctest::Contains("gamma"), std::invalid_argument);
}

TEST_CASE("fold_batch_norms links each layer to the layer whose output it reads") {
    auto link = [](const std::vector<FoldedConv>& layers, const std::string& name) {
        const FoldedConv& f = layers[find_layer(layers, name)];
        return std::make_tuple(f.input_from < 0 ? std::string("-") : layers[f.input_from].name,
                               f.input_exclusive, f.input_through_max_pool);
    };
    auto lenet = model("lenet");
    auto l = fold_batch_norms(*lenet);
    CHECK(link(l, "0") == std::make_tuple(std::string("-"), false, false));
    CHECK(link(l, "2") == std::make_tuple(std::string("0"), true, true));

    auto resnet = model("resnet20");
    auto r = fold_batch_norms(*resnet);
    CHECK(link(r, "1.conv1") == std::make_tuple(std::string("0"), false, false));  // also the identity add
    CHECK(link(r, "1.conv2") == std::make_tuple(std::string("1.conv1"), true, false));
    CHECK(link(r, "4.conv1") == std::make_tuple(std::string("-"), false, false));   // relu(sum)
    CHECK(link(r, "4.shortcut") == std::make_tuple(std::string("-"), false, false));

    auto mbv2 = model("mbv2");
    auto b = fold_batch_norms(*mbv2);
    CHECK(link(b, "1.expand") == std::make_tuple(std::string("0"), false, false));  // residual block
    CHECK(link(b, "1.depthwise") == std::make_tuple(std::string("1.expand"), true, false));
    CHECK(link(b, "1.project") == std::make_tuple(std::string("1.depthwise"), true, false));
    CHECK(link(b, "3.expand") == std::make_tuple(std::string("2.project"), false, false));
    CHECK(link(b, "4.expand") == std::make_tuple(std::string("-"), false, false));
    CHECK_THROWS_WITH_AS(find_layer(b, "9.expand"), doctest::Contains("'9.expand'"), std::invalid_argument);
}

TEST_CASE("cross-layer equalization keeps ReLU models exact and equalizes the ranges") {
    const std::vector<std::pair<std::string, size_t>> archs = {{"lenet", 1}, {"resnet20", 9}};
    for (const auto& [arch, pair_count] : archs) {
        CAPTURE(arch);
        auto m = model(arch);
        randomize_batch_norms(*m, 4);
        auto layers = fold_batch_norms(*m);
        const Tensor x = images(4, 5);
        const Tensor before = eval_forward(*m, x);
        const CleResult result = cross_layer_equalize(layers);
        CHECK(result.pairs.size() == pair_count);
        CHECK(result.converged);
        CHECK(relative_difference(before, eval_forward(*m, x)) < 1e-4);
        for (auto [first, second] : result.pairs) {
            const auto r1 = output_channel_ranges(layers[first]);
            const auto r2 = input_channel_ranges(layers[second]);
            for (size_t c = 0; c < r1.size(); c++) CHECK(r1[c] == doctest::Approx(r2[c]).epsilon(1e-5));
        }
    }
}

TEST_CASE("cross-layer equalization of mbv2: depthwise pairs, and what ReLU6 changes") {
    auto m = model("mbv2");
    randomize_batch_norms(*m, 6);
    auto layers = fold_batch_norms(*m);
    const Tensor small = images(4, 8);
    Tensor large = small.clone();
    for (float& v : large.values()) v *= 30.0f;
    const Tensor small_before = eval_forward(*m, small), large_before = eval_forward(*m, large);

    // Without ReLU6 pairs there is nothing to equalize: all of mbv2's pairs clip at 6.
    CHECK(cross_layer_equalize(layers, {.equalize_relu6 = false}).pairs.empty());

    const CleResult result = cross_layer_equalize(layers);
    CHECK(result.pairs.size() == 10);  // (expand, depthwise) and (depthwise, project) of 5 blocks
    CHECK(result.converged);
    // The depthwise layer sits in two pairs: after convergence all three ranges agree.
    for (auto [first, second] : result.pairs) {
        const auto r1 = output_channel_ranges(layers[first]);
        const auto r2 = input_channel_ranges(layers[second]);
        for (size_t c = 0; c < r1.size(); c++) CHECK(r1[c] == doctest::Approx(r2[c]).epsilon(1e-4));
    }
    // Exact while no scaled pre-activation reaches a clip; with inputs 30x
    // larger the clip at 6 s_i instead of 6 shows in the output.
    CHECK(relative_difference(small_before, eval_forward(*m, small)) < 1e-4);
    const double large_change = relative_difference(large_before, eval_forward(*m, large));
    MESSAGE("mbv2 output change after ReLU6 equalization, inputs x30: " << large_change);
    CHECK(large_change > 1e-3);
}

// mbv2, the DFQ paper's case: its depthwise layers lose most to per-tensor
// ranges. (On resnet20 built the same way equalization did not lower this
// error: its conv2 and shortcut layers, which feed residual adds, cannot be
// equalized and dominate it.)
TEST_CASE("equalization lowers the error of per-tensor weight quantization of mbv2") {
    {
        const std::string arch = "mbv2";
        auto m = model(arch);
        randomize_batch_norms(*m, 13);
        // Channels of very different scales (as trained depthwise layers
        // have): gamma spread log-uniformly over two decades.
        std::mt19937 rng(15);
        std::uniform_real_distribution<float> decades(-1.0f, 1.0f);
        for (auto& [name, t, decay] : m->state())
            if (name.find("bn.weight") != std::string::npos)
                for (float& g : t.values()) g *= std::pow(10.0f, decades(rng));
        auto layers = fold_batch_norms(*m);
        const Tensor x = images(8, 14);
        auto quantization_error = [&]() {
            const Tensor reference = eval_forward(*m, x);
            QuantizedWeights quantized(layers, per_tensor_symmetric(6));
            return relative_difference(reference, eval_forward(*m, x));
        };
        const double before = quantization_error();
        cross_layer_equalize(layers);
        const double after = quantization_error();
        MESSAGE(arch << ": output error with 6-bit per-tensor weights " << before << " -> " << after);
        CHECK(after < before);
    }
}

TEST_CASE("empirical bias correction zeroes each layer's mean pre-activation error") {
    for (const std::string arch : {"resnet20", "mbv2"}) {
        CAPTURE(arch);
        auto m = model(arch);
        randomize_batch_norms(*m, 9);
        auto layers = fold_batch_norms(*m);
        const std::vector<Tensor> batches = {images(8, 10), images(8, 11)};
        const QuantizeWeights quantize = per_channel_symmetric(4);
        const auto float_means = preactivation_means(*m, layers, batches);
        const std::vector<double> before = mean_errors(*m, layers, quantize, batches, float_means);

        const BiasCorrectionResult result = empirical_bias_correction(*m, layers, quantize, batches);
        CHECK(result.skipped.empty());
        const std::vector<double> after = mean_errors(*m, layers, quantize, batches, float_means);
        for (size_t i = 0; i < layers.size(); i++) {
            CAPTURE(layers[i].name);
            CHECK(after[i] < 1e-4 * std::max(1.0, before[i]));
        }
        MESSAGE(arch << ": summed mean |error| over layers " << sum(before) << " -> " << sum(after));
        CHECK(sum(after) < 1e-3 * sum(before));
    }
}

TEST_CASE("analytic bias correction agrees with the empirical one where BN matches the data") {
    for (const std::string arch : {"resnet20", "mbv2"}) {
        CAPTURE(arch);
        const Tensor data = images(16, 12);
        const std::vector<Tensor> batches = {data};
        const QuantizeWeights quantize = per_channel_symmetric(4);
        auto prepared = [&]() {
            auto m = model(arch);
            set_batch_norms_from_data(*m, data);
            return m;
        };
        auto empirical_model = prepared(), analytic_model = prepared();
        auto empirical_layers = fold_batch_norms(*empirical_model);
        auto analytic_layers = fold_batch_norms(*analytic_model);
        const auto float_means = preactivation_means(*analytic_model, analytic_layers, batches);
        const std::vector<double> before = mean_errors(*analytic_model, analytic_layers, quantize, batches, float_means);

        const auto empirical = empirical_bias_correction(*empirical_model, empirical_layers, quantize, batches);
        const auto analytic = analytic_bias_correction(analytic_layers, quantize);
        const std::vector<double> after = mean_errors(*analytic_model, analytic_layers, quantize, batches, float_means);

        int corrected = 0, agree = 0, compared = 0;
        double before_corrected = 0.0, after_corrected = 0.0;
        for (size_t i = 0; i < analytic_layers.size(); i++) {
            if (analytic.added[i].empty()) continue;
            corrected++;
            before_corrected += before[i];
            after_corrected += after[i];
            for (size_t c = 0; c < analytic.added[i].size(); c++) {
                const float e = empirical.added[i][c], a = analytic.added[i][c];
                if (std::fabs(e) < 1e-3f) continue;  // too small to have a direction
                compared++;
                agree += (e > 0) == (a > 0);
            }
        }
        MESSAGE(arch << ": analytic corrected " << corrected << " layers (skipped " << analytic.skipped.size()
                     << "); sign agreement " << agree << "/" << compared << "; mean |error| on them "
                     << before_corrected << " -> " << after_corrected << "; all layers " << sum(before)
                     << " -> " << sum(after));
        CHECK(corrected == (arch == "resnet20" ? 10 : 13));
        CHECK(compared > 0);
        CHECK(agree >= 0.8 * compared);
        // Less than the empirical correction removes: the analytic one is local
        // (error arriving from skipped layers stays) and ignores zero padding,
        // which matters on these 16x16 (down to 4x4) maps.
        CHECK(after_corrected < 0.8 * before_corrected);
        CHECK(sum(after) < sum(before));
    }
}

TEST_CASE("bias correction: clear errors") {
    auto m = model("resnet20");
    auto layers = fold_batch_norms(*m);
    const QuantizeWeights wrong_size = [](const std::string&, const Tensor&) { return std::vector<float>(3); };
    CHECK_THROWS_WITH_AS(analytic_bias_correction(layers, wrong_size), doctest::Contains("'1.conv1'"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(empirical_bias_correction(*m, layers, per_channel_symmetric(8), {}),
                         doctest::Contains("no calibration batches"), std::invalid_argument);
    CHECK(expected_activation(1.0, 0.0, nn::Act::ReLU6) == 1.0);
    CHECK(expected_activation(-1.0, 0.0, nn::Act::ReLU) == 0.0);
    CHECK(expected_activation(0.0, 1.0, nn::Act::ReLU) == doctest::Approx(1.0 / std::sqrt(2.0 * M_PI)));
    CHECK(expected_activation(3.0, 1e-3, nn::Act::ReLU6) == doctest::Approx(3.0));
    CHECK(expected_activation(100.0, 1.0, nn::Act::ReLU6) == doctest::Approx(6.0));
}
