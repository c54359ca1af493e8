#include "quant/cross_layer_equalize.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace qf::quant {

namespace {

bool positive_homogeneous(nn::Act act, const CleOptions& options) {
    return act == nn::Act::None || act == nn::Act::ReLU || (act == nn::Act::ReLU6 && options.equalize_relu6);
}

// Calls fn(o, j, k) for every weight of `layer` that reads input channel c:
// output channel o, index j on the weight's input axis, and k over the
// kernel's kh*kw positions; `offset` is the flat index of w[o][j][0][0].
template <class Fn>
void for_each_weight_reading(const FoldedConv& layer, int64_t c, Fn fn) {
    const int64_t OC = layer.weight.dim(0), Cg = layer.weight.dim(1);
    const int64_t K = layer.weight.dim(2) * layer.weight.dim(3);
    const int64_t OCg = OC / layer.params.groups;
    const int64_t group = c / Cg, j = c % Cg;
    for (int64_t o = group * OCg; o < (group + 1) * OCg; o++) fn((o * Cg + j) * K, K);
}

}  // namespace

std::vector<float> output_channel_ranges(const FoldedConv& first) {
    const int64_t OC = first.out_channels(), per = first.weight.numel() / OC;
    std::vector<float> r(OC, 0.0f);
    const float* w = first.weight.data();
    for (int64_t o = 0; o < OC; o++)
        for (int64_t i = 0; i < per; i++) r[o] = std::max(r[o], std::fabs(w[o * per + i]));
    return r;
}

std::vector<float> input_channel_ranges(const FoldedConv& second) {
    const int64_t C = second.in_channels();
    std::vector<float> r(C, 0.0f);
    const float* w = second.weight.data();
    for (int64_t c = 0; c < C; c++)
        for_each_weight_reading(second, c, [&](int64_t offset, int64_t K) {
            for (int64_t k = 0; k < K; k++) r[c] = std::max(r[c], std::fabs(w[offset + k]));
        });
    return r;
}

std::vector<EqualizationPair> equalization_pairs(const std::vector<FoldedConv>& layers,
                                                 const CleOptions& options) {
    std::vector<EqualizationPair> pairs;
    for (size_t i = 0; i < layers.size(); i++) {
        const FoldedConv& second = layers[i];
        if (second.input_from < 0 || !second.input_exclusive) continue;
        const FoldedConv& first = layers[second.input_from];
        if (!positive_homogeneous(first.act, options)) continue;
        if (first.out_channels() != second.in_channels())
            throw std::invalid_argument("cross_layer_equalize: layer '" + first.name + "' has " +
                                        std::to_string(first.out_channels()) + " output channels but '" +
                                        second.name + "', which reads them, has " +
                                        std::to_string(second.in_channels()) + " input channels");
        pairs.emplace_back((size_t)second.input_from, i);
    }
    return pairs;
}

namespace {

// Equalizes one pair; returns max |s_i - 1|.
double equalize_pair(FoldedConv& first, FoldedConv& second) {
    const std::vector<float> r1 = output_channel_ranges(first);
    const std::vector<float> r2 = input_channel_ranges(second);
    const int64_t C = (int64_t)r1.size(), per = first.weight.numel() / C;
    float* w1 = first.weight.data();
    float* b1 = first.bias.data();
    float* w2 = second.weight.data();
    double max_change = 0.0;
    for (int64_t c = 0; c < C; c++) {
        // A dead channel (zero range on either side) has nothing to balance.
        if (!(r1[c] > 0.0f) || !(r2[c] > 0.0f)) continue;
        const double s = std::sqrt((double)r1[c] / r2[c]);  // = sqrt(r1 r2) / r2
        if (s == 1.0) continue;
        max_change = std::max(max_change, std::fabs(s - 1.0));
        for (int64_t i = 0; i < per; i++) w1[c * per + i] = (float)(w1[c * per + i] / s);
        b1[c] = (float)(b1[c] / s);
        first.preact_mean[c] = (float)(first.preact_mean[c] / s);
        first.preact_std[c] = (float)(first.preact_std[c] / s);
        for_each_weight_reading(second, c, [&](int64_t offset, int64_t K) {
            for (int64_t k = 0; k < K; k++) w2[offset + k] = (float)(w2[offset + k] * s);
        });
    }
    return max_change;
}

}  // namespace

CleResult cross_layer_equalize(std::vector<FoldedConv>& layers, const CleOptions& options) {
    CleResult result;
    result.pairs = equalization_pairs(layers, options);
    if (result.pairs.empty()) {
        result.converged = true;
        return result;
    }
    while (result.sweeps < options.max_sweeps) {
        double change = 0.0;
        for (auto [first, second] : result.pairs)
            change = std::max(change, equalize_pair(layers[first], layers[second]));
        result.sweeps++;
        result.last_max_change = change;
        if (change <= options.tolerance) {
            result.converged = true;
            break;
        }
    }
    return result;
}

}  // namespace qf::quant
