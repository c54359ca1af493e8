#include "quant/bias_correction.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>

namespace qf::quant {

namespace {

// Sits in place of a folded layer's BN (a plain add after folding, so its
// output is the layer's pre-activation) and sums that output per channel.
// nn/ has no forward hooks; swapping the ConvBnAct's bn pointer, which its
// forward calls, is the least intrusive way to observe the real forward of
// any block. TapScope puts the original back.
class PreActivationTap : public nn::BatchNorm2d {
public:
    explicit PreActivationTap(std::shared_ptr<nn::BatchNorm2d> inner)
        : nn::BatchNorm2d(inner->channels, inner->momentum, inner->eps),
          inner(std::move(inner)),
          sums(channels, 0.0) {}

    Tensor forward(const Tensor& x) override {
        Tensor y = inner->forward(x);
        const int64_t N = y.dim(0), C = y.dim(1), S = y.numel() / (N * C);
        const float* p = y.data();
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++) {
                double s = 0.0;
                for (int64_t i = 0; i < S; i++) s += p[(n * C + c) * S + i];
                sums[c] += s;
            }
        count += N * S;
        return y;
    }

    std::vector<double> means() const {
        std::vector<double> m(sums.size());
        for (size_t c = 0; c < m.size(); c++) m[c] = count ? sums[c] / (double)count : 0.0;
        return m;
    }

    std::shared_ptr<nn::BatchNorm2d> inner;
    std::vector<double> sums;
    int64_t count = 0;
};

class TapScope {
public:
    TapScope(const std::vector<FoldedConv>& layers, const std::vector<size_t>& which) {
        for (size_t i : which) {
            const auto& module = layers[i].module;
            if (!module)
                throw std::invalid_argument("bias correction: layer '" + layers[i].name +
                                            "' has no module; fold the model with fold_batch_norms");
            auto tap = std::make_shared<PreActivationTap>(module->bn);
            taps_.push_back({module, tap});
            module->bn = tap;
        }
    }
    ~TapScope() {
        for (auto& [module, tap] : taps_) module->bn = tap->inner;
    }
    std::vector<double> means(size_t k) const { return taps_[k].second->means(); }

private:
    std::vector<std::pair<std::shared_ptr<nn::ConvBnAct>, std::shared_ptr<PreActivationTap>>> taps_;
};

// Runs the batches through the model in eval mode without recording; the
// means of the layers in `which`, in that order.
std::vector<std::vector<double>> run_and_measure(nn::Module& model, const std::vector<FoldedConv>& layers,
                                                 const std::vector<Tensor>& batches,
                                                 const std::vector<size_t>& which) {
    if (batches.empty()) throw std::invalid_argument("bias correction: no calibration batches");
    const bool was_training = model.training();
    model.eval();
    std::vector<std::vector<double>> means;
    {
        TapScope taps(layers, which);
        NoGrad no_grad;
        for (const Tensor& batch : batches) model.forward(batch);
        for (size_t k = 0; k < which.size(); k++) means.push_back(taps.means(k));
    }
    if (was_training) model.train();
    return means;
}

double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI); }
double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// E[max(X, 0)] for X ~ N(mean, stddev^2), stddev > 0.
double expected_relu(double mean, double stddev) {
    const double z = mean / stddev;
    return mean * normal_cdf(z) + stddev * normal_pdf(z);
}

}  // namespace

std::vector<float> quantized_weight(const FoldedConv& layer, const QuantizeWeights& quantize) {
    std::vector<float> q = quantize(layer.name, layer.weight);
    if ((int64_t)q.size() != layer.weight.numel())
        throw std::invalid_argument("bias correction: the weight quantizer returned " + std::to_string(q.size()) +
                                    " values for layer '" + layer.name + "', whose weight " +
                                    shape_str(layer.weight.shape()) + " has " +
                                    std::to_string(layer.weight.numel()));
    return q;
}

QuantizedWeights::QuantizedWeights(std::vector<FoldedConv>& layers, const QuantizeWeights& quantize)
    : layers_(layers) {
    std::vector<std::vector<float>> quantized;
    for (const FoldedConv& layer : layers) quantized.push_back(quantized_weight(layer, quantize));
    for (size_t i = 0; i < layers.size(); i++) {
        float_weights_.push_back(layers[i].weight.values());
        layers[i].weight.values() = std::move(quantized[i]);
    }
}

QuantizedWeights::~QuantizedWeights() {
    for (size_t i = 0; i < float_weights_.size(); i++) layers_[i].weight.values() = std::move(float_weights_[i]);
}

std::vector<std::vector<double>> preactivation_means(nn::Module& model, const std::vector<FoldedConv>& layers,
                                                     const std::vector<Tensor>& batches) {
    std::vector<size_t> all(layers.size());
    for (size_t i = 0; i < all.size(); i++) all[i] = i;
    return run_and_measure(model, layers, batches, all);
}

BiasCorrectionResult empirical_bias_correction(nn::Module& model, std::vector<FoldedConv>& layers,
                                               const QuantizeWeights& quantize,
                                               const std::vector<Tensor>& batches) {
    BiasCorrectionResult result;
    result.added.resize(layers.size());
    const std::vector<std::vector<double>> float_means = preactivation_means(model, layers, batches);
    QuantizedWeights quantized(layers, quantize);
    for (size_t i = 0; i < layers.size(); i++) {
        const std::vector<double> quant_means = run_and_measure(model, layers, batches, {i})[0];
        float* bias = layers[i].bias.data();
        std::vector<float>& added = result.added[i];
        added.resize(quant_means.size());
        for (size_t c = 0; c < added.size(); c++) {
            added[c] = (float)(float_means[i][c] - quant_means[c]);
            bias[c] += added[c];
        }
    }
    return result;
}

double expected_activation(double mean, double stddev, nn::Act act) {
    if (!(stddev > 0.0)) {  // a constant channel (gamma 0): the activation of its mean
        switch (act) {
            case nn::Act::None: return mean;
            case nn::Act::ReLU: return std::max(mean, 0.0);
            case nn::Act::ReLU6: return std::clamp(mean, 0.0, 6.0);
        }
    }
    switch (act) {
        case nn::Act::None: return mean;
        case nn::Act::ReLU: return expected_relu(mean, stddev);
        // min(max(X, 0), 6) = max(X, 0) - max(X - 6, 0)
        case nn::Act::ReLU6: return expected_relu(mean, stddev) - expected_relu(mean - 6.0, stddev);
    }
    return mean;
}

BiasCorrectionResult analytic_bias_correction(std::vector<FoldedConv>& layers, const QuantizeWeights& quantize) {
    BiasCorrectionResult result;
    result.added.resize(layers.size());
    for (size_t i = 0; i < layers.size(); i++) {
        FoldedConv& layer = layers[i];
        if (layer.input_from < 0) {
            result.skipped.push_back(layer.name + ": its input is not the output of a folded layer");
            continue;
        }
        if (layer.input_through_max_pool) {
            result.skipped.push_back(layer.name + ": its input passes a max pool, which BN does not describe");
            continue;
        }
        const FoldedConv& producer = layers[layer.input_from];
        if ((int64_t)producer.preact_mean.size() != layer.in_channels())
            throw std::invalid_argument("analytic_bias_correction: layer '" + layer.name + "' reads " +
                                        std::to_string(layer.in_channels()) + " channels but '" +
                                        producer.name + "' produces " +
                                        std::to_string(producer.preact_mean.size()));
        std::vector<double> input_mean(layer.in_channels());
        for (size_t c = 0; c < input_mean.size(); c++)
            input_mean[c] = expected_activation(producer.preact_mean[c], producer.preact_std[c], producer.act);

        // added[o] = -sum over the weights of o of (W_q - W) * E[x of their input channel]
        const std::vector<float> wq = quantized_weight(layer, quantize);
        const float* w = layer.weight.data();
        const int64_t OC = layer.out_channels(), Cg = layer.weight.dim(1);
        const int64_t K = layer.weight.dim(2) * layer.weight.dim(3), OCg = OC / layer.params.groups;
        std::vector<float>& added = result.added[i];
        added.resize(OC);
        for (int64_t o = 0; o < OC; o++) {
            const int64_t first_channel = o / OCg * Cg;
            double shift = 0.0;
            for (int64_t j = 0; j < Cg; j++)
                for (int64_t k = 0; k < K; k++) {
                    const int64_t idx = (o * Cg + j) * K + k;
                    shift += ((double)wq[idx] - w[idx]) * input_mean[first_channel + j];
                }
            added[o] = (float)-shift;
            layer.bias.data()[o] += added[o];
        }
    }
    return result;
}

}  // namespace qf::quant
