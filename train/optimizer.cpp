#include "train/optimizer.h"

#include <cmath>
#include <stdexcept>

namespace qf::train {

namespace {
// Below this many elements a parameter is updated on one thread: starting a
// parallel region costs more than the loop.
constexpr int64_t kParallelMinElements = 16384;
}  // namespace

Optimizer::Optimizer(std::vector<nn::NamedTensor> params, const OptimizerConfig& cfg)
    : params_(std::move(params)), cfg_(cfg) {}

void Optimizer::zero_grad() {
    for (nn::NamedTensor& p : params_) p.tensor.zero_grad();
}

void Optimizer::add_state_per_parameter(const std::string& suffix) {
    for (const nn::NamedTensor& p : params_)
        state_.push_back({p.name + "." + suffix, Tensor::zeros(p.tensor.shape()), false});
}

double Optimizer::decay_of(size_t i) const {
    return params_[i].decay || cfg_.decay_bn_and_bias ? cfg_.weight_decay : 0.0;
}

// ---- SGD -------------------------------------------------------------------------

Sgd::Sgd(std::vector<nn::NamedTensor> params, const OptimizerConfig& cfg) : Optimizer(std::move(params), cfg) {
    if (cfg_.momentum > 0) add_state_per_parameter("momentum");
}

void Sgd::step(double lr) {
    // Scalars in float, as PyTorch casts them for float32 tensors.
    const float momentum = (float)cfg_.momentum, neg_lr = (float)-lr;
    const bool nesterov = cfg_.nesterov, has_momentum = cfg_.momentum > 0;
    for (size_t i = 0; i < params_.size(); i++) {
        Tensor& p = params_[i].tensor;
        if (!p.has_grad()) continue;
        const float wd = (float)decay_of(i);
        const int64_t n = p.numel();
        float* w = p.data();
        const float* g = p.grad_values().data();
        float* buf = has_momentum ? state_[i].tensor.data() : nullptr;
#pragma omp parallel for if (n >= kParallelMinElements)
        for (int64_t k = 0; k < n; k++) {
            float d = g[k] + wd * w[k];
            if (has_momentum) {
                buf[k] = momentum * buf[k] + d;
                d = nesterov ? d + momentum * buf[k] : buf[k];
            }
            w[k] += neg_lr * d;
        }
    }
    steps_++;
}

// ---- AdamW -----------------------------------------------------------------------

AdamW::AdamW(std::vector<nn::NamedTensor> params, const OptimizerConfig& cfg)
    : Optimizer(std::move(params), cfg) {
    if (cfg_.betas.size() != 2) throw std::invalid_argument("AdamW needs two betas");
    add_state_per_parameter("exp_avg");
    add_state_per_parameter("exp_avg_sq");
}

void AdamW::step(double lr) {
    steps_++;
    const double beta1 = cfg_.betas[0], beta2 = cfg_.betas[1];
    // Bias corrections in double, as PyTorch computes them in Python floats.
    const float step_size = (float)(lr / (1 - std::pow(beta1, (double)steps_)));
    const float correction2_sqrt = (float)std::sqrt(1 - std::pow(beta2, (double)steps_));
    const float b1 = (float)beta1, b2 = (float)beta2, one_minus_b1 = (float)(1 - beta1),
                one_minus_b2 = (float)(1 - beta2), eps = (float)cfg_.eps;
    const size_t count = params_.size();
    for (size_t i = 0; i < count; i++) {
        Tensor& p = params_[i].tensor;
        if (!p.has_grad()) continue;
        const float shrink = (float)(1 - lr * decay_of(i));  // decoupled weight decay
        const int64_t n = p.numel();
        float* w = p.data();
        const float* g = p.grad_values().data();
        float* m = state_[i].tensor.data();
        float* v = state_[count + i].tensor.data();
#pragma omp parallel for if (n >= kParallelMinElements)
        for (int64_t k = 0; k < n; k++) {
            w[k] *= shrink;
            m[k] = b1 * m[k] + one_minus_b1 * g[k];
            v[k] = b2 * v[k] + one_minus_b2 * g[k] * g[k];
            float denom = std::sqrt(v[k]) / correction2_sqrt + eps;
            w[k] -= step_size * (m[k] / denom);
        }
    }
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg, std::vector<nn::NamedTensor> params) {
    switch (cfg.name) {
        case OptimizerKind::Sgd: return std::make_unique<Sgd>(std::move(params), cfg);
        case OptimizerKind::AdamW: return std::make_unique<AdamW>(std::move(params), cfg);
    }
    throw std::invalid_argument("unknown optimizer");
}

}  // namespace qf::train
