#include "quant/fold_batch_norm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace qf::quant {

namespace {

[[noreturn]] void fail(const std::string& layer, const std::string& what) {
    throw std::invalid_argument("fold_batch_norm: layer '" + layer + "': " + what);
}

std::string at(const char* tensor, int64_t c, float v) {
    return std::string(tensor) + "[" + std::to_string(c) + "] = " + std::to_string(v);
}

// The running variance that makes batch_norm's eval path (which computes
// 1 / sqrt((double)var + eps) and rounds it to float) multiply by exactly 1.
float unit_running_var(float eps) { return (float)(1.0 - (double)eps); }

bool is_exact_add(const nn::BatchNorm2d& bn) {
    const float var1 = unit_running_var(bn.eps);
    for (int c = 0; c < bn.channels; c++)
        if (bn.gamma.data()[c] != 1.0f || bn.running_mean.data()[c] != 0.0f ||
            bn.running_var.data()[c] != var1)
            return false;
    return true;
}

// Makes `bn` compute x + bias in eval mode, exactly (scale 1, shift bias).
void make_exact_add(nn::BatchNorm2d& bn, const std::string& layer, const std::vector<float>& bias) {
    const float var1 = unit_running_var(bn.eps);
    if ((float)(1.0 / std::sqrt((double)var1 + bn.eps)) != 1.0f)
        fail(layer, "eps = " + std::to_string(bn.eps) + " is too large for BN to act as a plain add");
    for (int c = 0; c < bn.channels; c++) {
        bn.gamma.data()[c] = 1.0f;
        bn.beta.data()[c] = bias[c];
        bn.running_mean.data()[c] = 0.0f;
        bn.running_var.data()[c] = var1;
    }
}

std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
}

// Walks the module tree in forward order, folding each ConvBnAct and noting
// where its input comes from. It knows the containers of nn/ (Sequential and
// the two residual blocks); inside any other module it still folds every
// ConvBnAct but claims nothing about its input.
class FoldWalker {
public:
    // What flows out of a module: the activation output of layers[from]
    // (possibly max-pooled), or something else (from = -1).
    struct Flow {
        int from = -1;
        bool pooled = false;
    };

    std::vector<FoldedConv> layers;

    // `exclusive`: the module is the only reader of its input.
    Flow visit(const std::shared_ptr<nn::Module>& m, const std::string& name, Flow in, bool exclusive) {
        if (auto layer = std::dynamic_pointer_cast<nn::ConvBnAct>(m)) return fold(layer, name, in, exclusive);
        if (std::dynamic_pointer_cast<nn::MaxPool2d>(m)) return {in.from, true};
        if (std::dynamic_pointer_cast<nn::Identity>(m)) return in;
        if (std::dynamic_pointer_cast<nn::Sequential>(m)) {
            Flow flow = in;
            bool first = true;
            for (const auto& [child_name, child] : m->children()) {
                flow = visit(child, join(name, child_name), flow, first ? exclusive : true);
                first = false;
            }
            return flow;
        }
        if (auto block = std::dynamic_pointer_cast<nn::BasicBlock>(m)) {
            // The block input also feeds the shortcut (or the identity add).
            const Flow h = visit(block->conv1, join(name, "conv1"), in, false);
            visit(block->conv2, join(name, "conv2"), h, true);
            if (block->shortcut) visit(block->shortcut, join(name, "shortcut"), in, false);
            visit_unknown(block->out_quant, join(name, "out_quant"));
            return {};  // relu(sum): no single BN describes it
        }
        if (auto block = std::dynamic_pointer_cast<nn::InvertedResidual>(m)) {
            Flow h = visit(block->expand, join(name, "expand"), in, exclusive && !block->residual);
            h = visit(block->depthwise, join(name, "depthwise"), h, true);
            h = visit(block->project, join(name, "project"), h, true);
            visit_unknown(block->out_quant, join(name, "out_quant"));
            return block->residual ? Flow{} : h;
        }
        visit_unknown(m, name);
        return {};
    }

private:
    void visit_unknown(const std::shared_ptr<nn::Module>& m, const std::string& name) {
        for (const auto& [child_name, child] : m->children()) visit(child, join(name, child_name), {}, false);
    }

    Flow fold(const std::shared_ptr<nn::ConvBnAct>& layer, const std::string& name, Flow in, bool exclusive) {
        if (is_exact_add(*layer->bn))
            throw std::invalid_argument("fold_batch_norms: layer '" + name +
                                        "' is already folded (its BN is a plain add); fold a model once");
        FoldedConv f = fold_batch_norm(*layer, name);
        // Write the folded values into the model and alias them.
        layer->conv->weight.values() = f.weight.values();
        if (layer->conv->bias.defined())  // now part of the folded bias
            std::fill(layer->conv->bias.values().begin(), layer->conv->bias.values().end(), 0.0f);
        make_exact_add(*layer->bn, name, f.bias.values());
        f.weight = layer->conv->weight;
        f.bias = layer->bn->beta;
        f.module = layer;
        f.input_from = in.from;
        f.input_through_max_pool = in.pooled;
        f.input_exclusive = exclusive && in.from >= 0;
        layers.push_back(std::move(f));
        return {(int)layers.size() - 1, false};
    }
};

}  // namespace

FoldedConv fold_batch_norm(const nn::ConvBnAct& layer, const std::string& name) {
    const nn::Conv2d& conv = *layer.conv;
    const nn::BatchNorm2d& bn = *layer.bn;
    const int64_t OC = conv.weight.dim(0);
    if (bn.channels != OC)
        fail(name, "BN has " + std::to_string(bn.channels) + " channels but the conv has " +
                       std::to_string(OC) + " outputs");
    if (!(bn.eps >= 0.0f)) fail(name, "BN eps = " + std::to_string(bn.eps) + " is negative");

    FoldedConv f;
    f.name = name;
    f.params = conv.params;
    f.act = layer.act;
    f.weight = Tensor::zeros(conv.weight.shape());
    f.bias = Tensor::zeros({OC});
    f.preact_mean.resize(OC);
    f.preact_std.resize(OC);
    const int64_t per_channel = conv.weight.numel() / OC;
    const float* w = conv.weight.data();
    float* fw = f.weight.data();
    for (int64_t c = 0; c < OC; c++) {
        const float g = bn.gamma.data()[c], beta = bn.beta.data()[c];
        const float mean = bn.running_mean.data()[c], var = bn.running_var.data()[c];
        const float b = conv.bias.defined() ? conv.bias.data()[c] : 0.0f;
        if (!std::isfinite(g)) fail(name, at("BN weight (gamma)", c, g) + " is not finite");
        if (!std::isfinite(beta)) fail(name, at("BN bias (beta)", c, beta) + " is not finite");
        if (!std::isfinite(mean)) fail(name, at("running_mean", c, mean) + " is not finite");
        if (!std::isfinite(var) || var < 0.0f) fail(name, at("running_var", c, var) + " is negative or not finite");
        if (!std::isfinite(b)) fail(name, at("conv bias", c, b) + " is not finite");
        const double denom = std::sqrt((double)var + bn.eps);
        if (!(denom > 0.0)) fail(name, at("running_var", c, var) + " with eps 0 leaves BN dividing by zero");
        const double scale = g / denom;
        // A channel whose scale is (nearly) zero is the constant bias: see the header.
        const double weight_scale = std::fabs(scale) < kMinFoldedScale ? 0.0 : scale;
        for (int64_t i = 0; i < per_channel; i++)
            fw[c * per_channel + i] = (float)(w[c * per_channel + i] * weight_scale);
        f.bias.data()[c] = (float)(beta + ((double)b - mean) * scale);
        f.preact_mean[c] = beta;
        f.preact_std[c] = std::fabs(g);
    }
    return f;
}

std::vector<FoldedConv> fold_batch_norms(nn::Module& model) {
    FoldWalker walker;
    // A non-owning handle on the root: the walker works on shared pointers
    // because the folded layers keep their modules.
    walker.visit(std::shared_ptr<nn::Module>(std::shared_ptr<nn::Module>(), &model), "", {}, false);
    return std::move(walker.layers);
}

size_t find_layer(const std::vector<FoldedConv>& layers, const std::string& name) {
    for (size_t i = 0; i < layers.size(); i++)
        if (layers[i].name == name) return i;
    throw std::invalid_argument("no folded layer named '" + name + "'");
}

}  // namespace qf::quant
