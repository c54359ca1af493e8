// Modules: named parameters and buffers arranged in a tree, as in PyTorch.
//
// A module registers its tensors and children in its constructor; their
// dotted names ("stage1.0.conv1.weight") make the state dict that
// checkpoints store. Parameters are trained; buffers (BatchNorm's running
// statistics) are state that is saved but not trained.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace qf::nn {

struct NamedTensor {
    std::string name;
    Tensor tensor;
    // false for biases and BatchNorm's gamma/beta: optimizers may exempt
    // them from weight decay (SgdOptions::decay_bn_and_bias).
    bool decay = true;
};

class Module {
public:
    virtual ~Module() = default;
    virtual Tensor forward(const Tensor& x) = 0;
    // A short name of the module kind for error messages and summaries.
    virtual std::string kind() const = 0;

    std::vector<NamedTensor> parameters() const;  // recursive, dotted names
    std::vector<NamedTensor> buffers() const;     // recursive, dotted names
    // Parameters then buffers: everything a checkpoint of the model holds.
    std::vector<NamedTensor> state() const;
    const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
        return children_;
    }

    // Switches this module and every child between training and evaluation
    // behaviour (BatchNorm's batch vs running statistics).
    void train(bool on = true);
    void eval() { train(false); }
    bool training() const { return training_; }

    // Replaces a registered child (the QAT rewrite swaps layers this way).
    void replace_module(const std::string& name, std::shared_ptr<Module> m);

protected:
    Tensor register_parameter(const std::string& name, Tensor t, bool decay = true);
    Tensor register_buffer(const std::string& name, Tensor t);
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
        children_.emplace_back(name, m);
        return m;
    }

private:
    void collect(std::vector<NamedTensor>& out, const std::string& prefix, bool params) const;
    std::vector<NamedTensor> params_;
    std::vector<NamedTensor> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    bool training_ = true;
};

}  // namespace qf::nn
