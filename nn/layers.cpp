#include "nn/layers.h"

#include <cmath>
#include <stdexcept>

namespace qf::nn {

const char* act_name(Act a) {
    switch (a) {
        case Act::None: return "none";
        case Act::ReLU: return "relu";
        case Act::ReLU6: return "relu6";
    }
    return "?";
}

Tensor apply_act(const Tensor& x, Act a, FiniteMinMax* out_range) {
    switch (a) {
        case Act::ReLU: return relu(x, out_range);
        case Act::ReLU6: return relu6(x, out_range);
        case Act::None: break;
    }
    return x;
}

namespace {
// PyTorch's kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
// and its default bias init uses the same bound.
Tensor default_init(const Shape& shape, int fan_in, std::mt19937& rng) {
    const float bound = 1.0f / std::sqrt((float)fan_in);
    return Tensor::uniform(shape, rng, -bound, bound);
}
}  // namespace

Conv2d::Conv2d(int in_ch, int out_ch, int k, int stride, int padding, int groups, bool has_bias,
               std::mt19937& rng)
    : in_channels(in_ch), out_channels(out_ch), kernel(k), params{stride, padding, groups} {
    if (groups < 1 || in_ch % groups || out_ch % groups)
        throw std::invalid_argument("Conv2d: channels " + std::to_string(in_ch) + "->" +
                                    std::to_string(out_ch) + " are not divisible by groups " +
                                    std::to_string(groups));
    const int fan_in = in_ch / groups * k * k;
    weight = register_parameter("weight", default_init({out_ch, in_ch / groups, k, k}, fan_in, rng));
    if (has_bias) bias = register_parameter("bias", default_init({out_ch}, fan_in, rng), false);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, params); }

BatchNorm2d::BatchNorm2d(int c, float momentum, float eps) : channels(c), momentum(momentum), eps(eps) {
    gamma = register_parameter("weight", Tensor::full({c}, 1.0f), false);
    beta = register_parameter("bias", Tensor::zeros({c}), false);
    running_mean = register_buffer("running_mean", Tensor::zeros({c}));
    running_var = register_buffer("running_var", Tensor::full({c}, 1.0f));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
    return batch_norm(x, gamma, beta, running_mean, running_var, training(), momentum, eps);
}

Linear::Linear(int in, int out, bool has_bias, Act act, std::mt19937& rng)
    : in_features(in), out_features(out), act(act) {
    weight = register_parameter("weight", default_init({out, in}, in, rng));
    if (has_bias) bias = register_parameter("bias", default_init({out}, in, rng), false);
}

Tensor Linear::forward(const Tensor& x) { return apply_act(linear(x, weight, bias), act); }

std::shared_ptr<Module> Sequential::add(std::shared_ptr<Module> m) {
    return register_module(std::to_string(children().size()), std::move(m));
}

std::shared_ptr<Module> Sequential::add(const std::string& name, std::shared_ptr<Module> m) {
    return register_module(name, std::move(m));
}

Tensor Sequential::forward(const Tensor& x) {
    Tensor h = x;
    for (const auto& [name, child] : children()) h = child->forward(h);
    return h;
}

}  // namespace qf::nn
