// Batch-norm folding: the float representation that PTQ works on and that
// the freeze-to-int8 step reads.
//
// A ConvBnAct computes act(BN(conv(x))); with BN's running statistics that is
//   act(conv(x, w') + b'),  w' = w * g / sqrt(var + eps),
//                           b' = beta + (b - mean) * g / sqrt(var + eps)
// per output channel (b: the conv bias, 0 when it has none).
//
// Example (PTQ):
//   std::vector<FoldedConv> layers = fold_batch_norms(*model);   // in place
//   cross_layer_equalize(layers);                                // cross_layer_equalize.h
//   empirical_bias_correction(*model, layers, quantize, batches); // bias_correction.h
//   // freeze: each layer's weight, bias, params and act make one integer conv.
//
// After fold_batch_norms the model still is an ordinary model with the same
// state names: conv.weight holds w' (a conv bias, if any, is zeroed: it is
// part of b'), and each BN is made an exact "add b'"
// (gamma 1, running mean 0, running var 1 - eps, beta b'), so the folded model
// saves, loads and evaluates like any other. Only in eval mode, though: in
// training mode BN would normalize with batch statistics again.
//
// Zero or tiny BN scale: a channel with |g / sqrt(var + eps)| below
// kMinFoldedScale gets an all-zero folded weight, i.e. it becomes the constant
// b' (= beta - mean * scale, about beta). Its conv contributes less than
// kMinFoldedScale * sum|w| * max|x| to the output, far below float resolution
// of any useful activation, and a weight of exact zeros keeps later steps from
// deriving a collapsing per-channel quantization scale (or a 1/range) from
// denormal values. Nothing here divides by the BN scale.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/blocks.h"

namespace qf::quant {

constexpr double kMinFoldedScale = 1e-10;

// One conv+BN+act after folding: act(conv(x, weight, params) + bias).
struct FoldedConv {
    std::string name;  // dotted module name of the ConvBnAct ("3.conv1"); error messages use it
    // The folded module; null for a FoldedConv made by fold_batch_norm alone.
    std::shared_ptr<nn::ConvBnAct> module;
    // From fold_batch_norms these alias the model's conv.weight and bn.bias
    // (a Tensor is a shared handle): writing their values changes the model.
    Tensor weight;  // (OC, C/groups, k, k)
    Tensor bias;    // (OC)
    Conv2dParams params;
    nn::Act act = nn::Act::None;
    // The pre-activation distribution that BN was trained to produce,
    // N(beta, gamma^2) per output channel, in the units of `weight` and
    // `bias` (equalization rescales it along). Analytic bias correction
    // derives E[input] of the next layer from it.
    std::vector<float> preact_mean, preact_std;

    // Where this layer's input comes from (filled by fold_batch_norms):
    // the index in the returned list of the layer whose activation output it
    // is, possibly through a max pool; -1 for anything else (the model
    // input, a residual add, an average pool, a linear layer).
    int input_from = -1;
    bool input_through_max_pool = false;
    // The producer's output goes nowhere else (no residual branch reads it),
    // so its channels may be rescaled as long as this layer compensates.
    bool input_exclusive = false;

    int64_t out_channels() const { return weight.dim(0); }
    int64_t in_channels() const { return weight.dim(1) * params.groups; }
};

// Folds one ConvBnAct's BN (running statistics) into new weight and bias
// tensors; the module is not changed. `name` names the layer in errors:
// std::invalid_argument for a negative or non-finite running variance,
// non-finite gamma/beta/mean, or var + eps not positive.
FoldedConv fold_batch_norm(const nn::ConvBnAct& layer, const std::string& name);

// Folds every ConvBnAct of `model` in place (see the top of this file) and
// returns them in forward order with their input links. The model should be
// in eval mode to compute the same function. Throws std::invalid_argument if
// a layer is already folded (its BN is the exact "add" form), since the BN
// statistics that analytic bias correction needs would be gone.
std::vector<FoldedConv> fold_batch_norms(nn::Module& model);

// The index of the layer called `name` in `layers`; throws
// std::invalid_argument naming it if absent.
size_t find_layer(const std::vector<FoldedConv>& layers, const std::string& name);

}  // namespace qf::quant
