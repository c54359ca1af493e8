// Optimizers over a model's named parameters: SGD with momentum and AdamW,
// with PyTorch 1.13's update formulas (tests/fixtures/gen_optim.py checks
// them against torch.optim).
//
// Example:
//   auto opt = make_optimizer(cfg.optimizer, model->parameters());
//   opt->zero_grad();  backward(loss);  opt->step(schedule.lr(step));
//
// The optimizer's state (momentum buffers, moments) is a list of named
// tensors, "<parameter name>.<what>", which checkpoints save and restore by
// copying into them; step_count() goes beside it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "train/config.h"

namespace qf::train {

class Optimizer {
public:
    virtual ~Optimizer() = default;
    // One update of every parameter that has a gradient, at learning rate lr.
    // Parameters without a gradient (unused this step) are left alone, as
    // PyTorch skips parameters whose .grad is None.
    virtual void step(double lr) = 0;
    virtual const char* name() const = 0;  // "sgd", "adamw"
    // Drops every parameter's gradient.
    void zero_grad();

    // Buffers a resumed run needs, named "<param>.momentum" and so on, in a
    // fixed order. Their storage is the optimizer's: writing into these
    // tensors' values restores the state.
    const std::vector<nn::NamedTensor>& state() const { return state_; }
    // Completed steps (AdamW's bias correction depends on it).
    int64_t step_count() const { return steps_; }
    void set_step_count(int64_t steps) { steps_ = steps; }
    const std::vector<nn::NamedTensor>& parameters() const { return params_; }

protected:
    Optimizer(std::vector<nn::NamedTensor> params, const OptimizerConfig& cfg);
    // Adds one state tensor per parameter, zeros of the parameter's shape.
    void add_state_per_parameter(const std::string& suffix);
    // Weight decay of parameter i: 0 for decay=false parameters when
    // decay_bn_and_bias is off.
    double decay_of(size_t i) const;

    std::vector<nn::NamedTensor> params_;
    std::vector<nn::NamedTensor> state_;
    OptimizerConfig cfg_;
    int64_t steps_ = 0;
};

// SGD as torch.optim.SGD (dampening 0): d = g + wd*w; buf = momentum*buf + d
// (buf = d on the first step, the same as starting from zeros);
// d = nesterov ? d + momentum*buf : buf; w -= lr*d.
// State: "<param>.momentum" (only when momentum > 0).
class Sgd : public Optimizer {
public:
    Sgd(std::vector<nn::NamedTensor> params, const OptimizerConfig& cfg);
    void step(double lr) override;
    const char* name() const override { return "sgd"; }
};

// AdamW as torch.optim.AdamW: w *= 1 - lr*wd; m = b1*m + (1-b1)*g;
// v = b2*v + (1-b2)*g^2; w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
// State: "<param>.exp_avg", "<param>.exp_avg_sq". One step count is shared
// by all parameters (PyTorch keeps one per parameter; they differ only for
// parameters that went without a gradient for a step).
class AdamW : public Optimizer {
public:
    AdamW(std::vector<nn::NamedTensor> params, const OptimizerConfig& cfg);
    void step(double lr) override;
    const char* name() const override { return "adamw"; }
};

// The optimizer cfg.name names.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerConfig& cfg, std::vector<nn::NamedTensor> params);

}  // namespace qf::train
