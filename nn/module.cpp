#include "nn/module.h"

#include <stdexcept>

namespace qf::nn {

void Module::collect(std::vector<NamedTensor>& out, const std::string& prefix, bool params) const {
    for (const NamedTensor& p : params ? params_ : buffers_)
        out.push_back({prefix + p.name, p.tensor, p.decay});
    for (const auto& [name, child] : children_) child->collect(out, prefix + name + ".", params);
}

std::vector<NamedTensor> Module::parameters() const {
    std::vector<NamedTensor> out;
    collect(out, "", true);
    return out;
}

std::vector<NamedTensor> Module::buffers() const {
    std::vector<NamedTensor> out;
    collect(out, "", false);
    return out;
}

std::vector<NamedTensor> Module::state() const {
    std::vector<NamedTensor> out = parameters();
    for (NamedTensor& b : buffers()) out.push_back(std::move(b));
    return out;
}

void Module::train(bool on) {
    training_ = on;
    for (auto& [name, child] : children_) child->train(on);
}

Tensor Module::register_parameter(const std::string& name, Tensor t, bool decay) {
    t.set_requires_grad(true);
    params_.push_back({name, t, decay});
    return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
    buffers_.push_back({name, t, false});
    return t;
}

void Module::replace_module(const std::string& name, std::shared_ptr<Module> m) {
    for (auto& [n, child] : children_)
        if (n == name) {
            child = std::move(m);
            return;
        }
    throw std::invalid_argument("replace_module: no child named '" + name + "'");
}

}  // namespace qf::nn
