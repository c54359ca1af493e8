// Bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2)
// on folded layers: quantizing W to W_q shifts the mean of a layer's
// pre-activation output by E[(W_q - W) x], a per-channel bias error that the
// next layers see as a systematic offset. Both variants subtract it from the
// folded bias, so a model frozen with W_q has the float model's means again.
//
// Empirical (with data): the layers are corrected one at a time in forward
// order. For layer L the weight-quantized model (every weight W_q, the layers
// before L already corrected; activations in float) and the float model run
// the calibration batches, and the per-channel difference of L's mean
// pre-activation (over batch and positions) is subtracted from L's bias. It
// thus also removes the mean error that reaches L from the layers before.
// Cost: one float pass and one pass per layer over the batches.
//
// Analytic (data-free): E[x] of a layer's input is derived from the BN of
// the layer that produced it: its pre-activation is taken as N(beta, gamma^2)
// per channel (FoldedConv::preact_mean/std), so after ReLU
//   E[relu(X)] = mu Phi(mu / sigma) + sigma phi(mu / sigma)
// and after ReLU6 E[relu(X)] - E[relu(X - 6)] (the clipped normal). The
// correction is bias -= (W_q - W) E[x], summed over the kernel as if every
// tap saw the mean (zero padding at the borders is ignored, as in the paper).
// Only layers whose input is directly the activation output of a folded
// layer can be corrected; others (the model input, a residual add, a max
// pool in between) are skipped and listed.
//
// Both take the weight quantizer as a callback so that they work with any
// scheme: `quantize(layer_name, weight)` returns the quantize-dequantized
// weight values (weight.numel() of them); the name lets the scheme differ per
// layer (mixed precision). The model's weights stay in float; only the
// biases change. Linear layers are not corrected. No autograd is recorded.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "quant/fold_batch_norm.h"

namespace qf::quant {

using QuantizeWeights = std::function<std::vector<float>(const std::string& layer, const Tensor& weight)>;

struct BiasCorrectionResult {
    // Per layer (index-aligned with the layers): what was added to each
    // output channel's bias; empty for a layer left alone.
    std::vector<std::vector<float>> added;
    std::vector<std::string> skipped;  // "layer: reason"
};

// Corrects every layer from data. `model` must be the model that
// fold_batch_norms folded into `layers`; each batch an input batch of it.
// Runs in eval mode (and restores training mode if it was on).
BiasCorrectionResult empirical_bias_correction(nn::Module& model, std::vector<FoldedConv>& layers,
                                               const QuantizeWeights& quantize,
                                               const std::vector<Tensor>& batches);

// Corrects the layers whose input statistics BN predicts, without data.
BiasCorrectionResult analytic_bias_correction(std::vector<FoldedConv>& layers,
                                              const QuantizeWeights& quantize);

// E[act(X)] for X ~ N(mean, stddev^2): the clipped-normal expectation.
double expected_activation(double mean, double stddev, nn::Act act);

// Per layer and output channel, the mean pre-activation output of `model`
// (eval mode) over the batches, at positions N, H, W.
std::vector<std::vector<double>> preactivation_means(nn::Module& model, const std::vector<FoldedConv>& layers,
                                                     const std::vector<Tensor>& batches);

// For its lifetime, every layer's weight holds quantize(weight); the float
// values come back when it ends (also on an exception).
class QuantizedWeights {
public:
    QuantizedWeights(std::vector<FoldedConv>& layers, const QuantizeWeights& quantize);
    ~QuantizedWeights();
    QuantizedWeights(const QuantizedWeights&) = delete;
    QuantizedWeights& operator=(const QuantizedWeights&) = delete;

private:
    std::vector<FoldedConv>& layers_;
    std::vector<std::vector<float>> float_weights_;
};

// quantize(layer.name, layer.weight), checked to hold one value per weight; throws
// std::invalid_argument naming the layer otherwise.
std::vector<float> quantized_weight(const FoldedConv& layer, const QuantizeWeights& quantize);

}  // namespace qf::quant
