// Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization",
// section 4.1) on folded layers.
//
// For a pair conv1 -> act -> conv2 where act is positive-homogeneous
// (act(x / s) = act(x) / s for s > 0: ReLU, no activation, and a max pool on
// the way), dividing output channel i of conv1 (its weights and bias) by s_i
// and multiplying input channel i of conv2 by s_i leaves the model's function
// unchanged. With r1_i = max|conv1 weights of output channel i| and
// r2_i = max|conv2 weights reading input channel i|, the choice
//   s_i = sqrt(r1_i * r2_i) / r2_i
// makes both ranges sqrt(r1_i * r2_i): per-tensor weight quantization then
// wastes no levels on a channel much narrower than its neighbours.
// A layer may be in two pairs (mbv2's depthwise conv is second of
// (expand, depthwise) and first of (depthwise, project)), so the pairs are
// swept until every s_i is within `tolerance` of 1.
//
// Pairs: a layer and the one that alone reads its output (FoldedConv's
// input_from / input_exclusive): consecutive ConvBnActs of a Sequential,
// possibly with a max pool between (lenet), conv1 -> conv2 of a BasicBlock,
// and expand -> depthwise -> project of an InvertedResidual. Depthwise and
// grouped convs work: input channel i of conv2 is read by the output
// channels of its group only.
//
// ReLU6 is not positive-homogeneous: after scaling, output channel i of
// conv1 is clipped at 6 in the scaled units, i.e. at 6 * s_i in the original
// ones, so the equalized model computes min(max(y_i, 0), 6 s_i) where the
// original computed min(max(y_i, 0), 6). It is exact for every input whose
// pre-activation y_i stays below 6 * min(1, s_i) and differs where it lies
// between 6 and 6 s_i. The DFQ paper replaces ReLU6 by ReLU before
// equalizing (no clip at all); keeping the clip at 6 s_i is closer to the
// original than that, and the integer graph can still run it (the clip is
// the per-tensor clamp at 6 of the scaled output). `equalize_relu6 = false`
// leaves such pairs alone, which keeps the model exactly as it was.
// The per-channel scaling also rescales FoldedConv::preact_mean/preact_std.
#pragma once
#include <utility>
#include <vector>

#include "quant/fold_batch_norm.h"

namespace qf::quant {

struct CleOptions {
    bool equalize_relu6 = true;  // see the header comment for what it changes
    int max_sweeps = 50;
    double tolerance = 1e-6;     // stop once every s_i is within 1 +- tolerance
};

// (first, second): indices into the folded layers.
using EqualizationPair = std::pair<size_t, size_t>;

struct CleResult {
    std::vector<EqualizationPair> pairs;
    int sweeps = 0;                // sweeps over all pairs that were run
    bool converged = false;
    double last_max_change = 0.0;  // max |s_i - 1| in the last sweep
};

// The pairs that may be equalized, in forward order. Throws
// std::invalid_argument naming both layers if their channel counts differ.
std::vector<EqualizationPair> equalization_pairs(const std::vector<FoldedConv>& layers,
                                                 const CleOptions& options = {});

// Equalizes the pairs in place (the model too, since the layers alias its
// tensors). Channels with a zero range on either side keep s_i = 1.
CleResult cross_layer_equalize(std::vector<FoldedConv>& layers, const CleOptions& options = {});

// r1: max |w| per output channel of `first`; r2: max |w| of `second`
// reading each of its input channels.
std::vector<float> output_channel_ranges(const FoldedConv& first);
std::vector<float> input_channel_ranges(const FoldedConv& second);

}  // namespace qf::quant
