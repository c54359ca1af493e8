// The building blocks of the reference models. Each conv of these models is
// followed by BatchNorm and an optional activation, which is exactly the unit
// that quantization folds into one integer conv, so it is one module here.
#pragma once
#include "nn/layers.h"

namespace qf::nn {

// act(bn(conv(x))); the conv has no bias since BN's beta plays its part.
class ConvBnAct : public Module {
public:
    ConvBnAct(int in_channels, int out_channels, int kernel, int stride, int groups, Act act,
              std::mt19937& rng);
    // The same layer around existing modules (their tensors are shared).
    ConvBnAct(std::shared_ptr<Conv2d> conv, std::shared_ptr<BatchNorm2d> bn, Act act);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "ConvBnAct"; }

    std::shared_ptr<Conv2d> conv;
    std::shared_ptr<BatchNorm2d> bn;
    Act act;
};

// ResNet's basic block: relu(conv2(conv1(x)) + shortcut(x)), with a 1x1
// conv+BN projection as shortcut when the shape changes.
class BasicBlock : public Module {
public:
    BasicBlock(int in_channels, int out_channels, int stride, std::mt19937& rng);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "BasicBlock"; }

    std::shared_ptr<ConvBnAct> conv1, conv2;
    std::shared_ptr<ConvBnAct> shortcut;  // null: identity
    // Applied to relu(sum): where the integer graph requantizes the add.
    std::shared_ptr<Module> out_quant;
};

// MobileNetV2's inverted residual: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6,
// 1x1 linear projection, plus the input when stride is 1 and channels match.
class InvertedResidual : public Module {
public:
    InvertedResidual(int in_channels, int out_channels, int stride, int expansion,
                     std::mt19937& rng);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "InvertedResidual"; }

    std::shared_ptr<ConvBnAct> expand, depthwise, project;
    bool residual;
    // Applied to the sum when there is a residual add.
    std::shared_ptr<Module> out_quant;
};

}  // namespace qf::nn
