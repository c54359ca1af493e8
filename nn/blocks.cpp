#include "nn/blocks.h"

namespace qf::nn {

ConvBnAct::ConvBnAct(int in, int out, int k, int stride, int groups, Act act, std::mt19937& rng)
    : act(act) {
    conv = register_module("conv", std::make_shared<Conv2d>(in, out, k, stride, k / 2, groups, false, rng));
    bn = register_module("bn", std::make_shared<BatchNorm2d>(out));
}

ConvBnAct::ConvBnAct(std::shared_ptr<Conv2d> c, std::shared_ptr<BatchNorm2d> b, Act act) : act(act) {
    conv = register_module("conv", std::move(c));
    bn = register_module("bn", std::move(b));
}

Tensor ConvBnAct::forward(const Tensor& x) { return apply_act(bn->forward(conv->forward(x)), act); }

BasicBlock::BasicBlock(int in, int out, int stride, std::mt19937& rng) {
    conv1 = register_module("conv1", std::make_shared<ConvBnAct>(in, out, 3, stride, 1, Act::ReLU, rng));
    conv2 = register_module("conv2", std::make_shared<ConvBnAct>(out, out, 3, 1, 1, Act::None, rng));
    if (stride != 1 || in != out)
        shortcut = register_module("shortcut", std::make_shared<ConvBnAct>(in, out, 1, stride, 1, Act::None, rng));
    out_quant = register_module("out_quant", std::make_shared<Identity>());
}

Tensor BasicBlock::forward(const Tensor& x) {
    Tensor h = conv2->forward(conv1->forward(x));
    Tensor s = shortcut ? shortcut->forward(x) : x;
    return out_quant->forward(relu(add(h, s)));
}

InvertedResidual::InvertedResidual(int in, int out, int stride, int expansion, std::mt19937& rng)
    : residual(stride == 1 && in == out) {
    const int hidden = in * expansion;
    expand = register_module("expand", std::make_shared<ConvBnAct>(in, hidden, 1, 1, 1, Act::ReLU6, rng));
    depthwise = register_module("depthwise",
                                std::make_shared<ConvBnAct>(hidden, hidden, 3, stride, hidden, Act::ReLU6, rng));
    project = register_module("project", std::make_shared<ConvBnAct>(hidden, out, 1, 1, 1, Act::None, rng));
    out_quant = register_module("out_quant", std::make_shared<Identity>());
}

Tensor InvertedResidual::forward(const Tensor& x) {
    Tensor h = project->forward(depthwise->forward(expand->forward(x)));
    return residual ? out_quant->forward(add(h, x)) : h;
}

}  // namespace qf::nn
