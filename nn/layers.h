// The layers: thin modules that own parameters and call the ops of
// autograd/ops.h. Initialization follows PyTorch's defaults (uniform in
// +-1/sqrt(fan_in) for conv and linear weights and biases; BN gamma 1, beta 0),
// so a qforge model and a PyTorch one start from the same distribution.
#pragma once
#include <random>

#include "autograd/ops.h"
#include "nn/module.h"

namespace qf::nn {

// The activation that follows a conv or linear layer. The integer graph
// applies it as the clamp of the requantized output, so it is part of the
// layer rather than a module of its own.
enum class Act { None, ReLU, ReLU6 };
const char* act_name(Act a);
// out_range (ReLU and ReLU6 only): the output's finite min/max, from the same pass.
Tensor apply_act(const Tensor& x, Act a, FiniteMinMax* out_range = nullptr);

class Conv2d : public Module {
public:
    Conv2d(int in_channels, int out_channels, int kernel, int stride, int padding, int groups,
           bool bias, std::mt19937& rng);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "Conv2d"; }

    int in_channels, out_channels, kernel;
    Conv2dParams params;
    Tensor weight;  // (out, in/groups, k, k)
    Tensor bias;    // (out) or undefined
};

class BatchNorm2d : public Module {
public:
    explicit BatchNorm2d(int channels, float momentum = 0.1f, float eps = 1e-5f);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "BatchNorm2d"; }

    int channels;
    float momentum, eps;
    Tensor gamma, beta;                 // (C) parameters, named weight and bias
    Tensor running_mean, running_var;   // (C) buffers
};

// y = act(x W^T + b)
class Linear : public Module {
public:
    Linear(int in_features, int out_features, bool bias, Act act, std::mt19937& rng);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "Linear"; }

    int in_features, out_features;
    Act act;
    Tensor weight;  // (out, in)
    Tensor bias;    // (out) or undefined
};

class Activation : public Module {
public:
    explicit Activation(Act act) : act(act) {}
    Tensor forward(const Tensor& x) override { return apply_act(x, act); }
    std::string kind() const override { return act_name(act); }
    Act act;
};

class MaxPool2d : public Module {
public:
    MaxPool2d(int kernel, int stride, int padding = 0) : kernel(kernel), stride(stride), padding(padding) {}
    Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel, stride, padding); }
    std::string kind() const override { return "MaxPool2d"; }
    int kernel, stride, padding;
};

class AvgPool2d : public Module {
public:
    AvgPool2d(int kernel, int stride, int padding = 0) : kernel(kernel), stride(stride), padding(padding) {}
    Tensor forward(const Tensor& x) override { return avg_pool2d(x, kernel, stride, padding); }
    std::string kind() const override { return "AvgPool2d"; }
    int kernel, stride, padding;
};

// (N, C, H, W) -> (N, C)
class GlobalAvgPool : public Module {
public:
    Tensor forward(const Tensor& x) override { return global_avg_pool(x); }
    std::string kind() const override { return "GlobalAvgPool"; }
};

class Flatten : public Module {
public:
    Tensor forward(const Tensor& x) override { return flatten(x); }
    std::string kind() const override { return "Flatten"; }
};

// Passes its input through; marks a place that quantization may take over
// (the output of a residual add, for example).
class Identity : public Module {
public:
    Tensor forward(const Tensor& x) override { return x; }
    std::string kind() const override { return "Identity"; }
};

// Children named "0", "1", ... run in order.
class Sequential : public Module {
public:
    Sequential() = default;
    std::shared_ptr<Module> add(std::shared_ptr<Module> m);
    // Adds a child under a name of its own ("input_quant").
    std::shared_ptr<Module> add(const std::string& name, std::shared_ptr<Module> m);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "Sequential"; }
    size_t size() const { return children().size(); }
    std::shared_ptr<Module> at(size_t i) const { return children()[i].second; }
};

}  // namespace qf::nn
