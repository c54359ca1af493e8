#include "bench/profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "autograd/ops.h"
#include "nn/blocks.h"
#include "quant/qat.h"

namespace qf {

namespace {
double ms_between(OpProfile::Clock::time_point a, OpProfile::Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

void OpProfile::place_marker(const std::string& op_before) {
    Tensor flag = Tensor::zeros({1});
    record("profile_marker", flag, [this, op_before] { fired_.emplace_back(op_before, Clock::now()); });
    flag.grad();  // a gradient, so that backward() runs the marker
}

void OpProfile::begin_step() {
    fired_.clear();
    step_start_ = Clock::now();
    // Fires after the first op's backward: what follows is the tape's cleanup.
    place_marker("(tape clear: frees saved tensors)");
}

void OpProfile::forward_done() {
    forward_end_ = Clock::now();
    forward_ms_ += ms_between(step_start_, forward_end_);
}

void OpProfile::backward_done() {
    backward_end_ = Clock::now();
    backward_ms_ += ms_between(forward_end_, backward_end_);
    if (!fired_.empty()) ops_["(backward: seed)"].backward_ms += ms_between(forward_end_, fired_[0].second);
    for (size_t i = 0; i < fired_.size(); i++) {
        const auto end = i + 1 < fired_.size() ? fired_[i + 1].second : backward_end_;
        ops_[fired_[i].first].backward_ms += ms_between(fired_[i].second, end);
    }
}

void OpProfile::step_done() {
    const auto now = Clock::now();
    optimizer_ms_ += ms_between(backward_end_, now);
    step_ms_ += ms_between(step_start_, now);
}

void OpProfile::print(int steps) const {
    struct Row {
        std::string op;
        OpTimes t;
    };
    std::vector<Row> rows;
    double forward_sum = 0;
    for (const auto& [op, t] : ops_) {
        rows.push_back({op, t});
        forward_sum += t.forward_ms;
    }
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
        return a.t.forward_ms + a.t.backward_ms > b.t.forward_ms + b.t.backward_ms;
    });
    const double n = steps, step = step_ms_ / n;
    std::printf("%-34s %7s %10s %10s %10s %6s\n", "op (ms per step)", "calls", "forward", "backward",
                "total", "%step");
    for (const Row& r : rows) {
        const double total = (r.t.forward_ms + r.t.backward_ms) / n;
        std::printf("%-34s %7.0f %10.2f %10.2f %10.2f %5.1f%%\n", r.op.c_str(), r.t.calls / n,
                    r.t.forward_ms / n, r.t.backward_ms / n, total, 100.0 * total / step);
    }
    const double forward_other = (forward_ms_ - forward_sum) / n;
    std::printf("%-34s %7s %10.2f %10s %10.2f %5.1f%%\n", "(forward outside ops)", "", forward_other, "",
                forward_other, 100.0 * forward_other / step);
    std::printf("%-34s %7s %10s %10s %10.2f %5.1f%%\n", "sgd update + zero_grad", "", "", "",
                optimizer_ms_ / n, 100.0 * optimizer_ms_ / n / step);
    std::printf("%-34s %7s %10.2f %10.2f %10.2f\n", "step", "", forward_ms_ / n, backward_ms_ / n, step);
}

// ---- the forward of each module kind, op by op -------------------------------

namespace {

std::string conv_name(const nn::Conv2d& c) {
    const std::string k = std::to_string(c.kernel) + "x" + std::to_string(c.kernel);
    if (c.params.groups == 1) return "conv2d " + k;
    if (c.params.groups == c.in_channels && c.in_channels == c.out_channels) return "conv2d depthwise " + k;
    return "conv2d grouped " + k;
}

Tensor activation_quant(quant::ActivationQuant& a, const Tensor& x, OpProfile& prof,
                        const FiniteMinMax* x_range = nullptr) {
    return prof.time("qat: activation quant (observe, round)", [&] { return a.forward(x, x_range); });
}

// QatConvBnAct::forward, op by op (quant/qat.cpp).
Tensor qat_conv_bn_act(quant::QatConvBnAct& m, const Tensor& x, OpProfile& prof) {
    nn::Conv2d& c = *m.conv;
    nn::BatchNorm2d& bn = *m.bn;
    Tensor h;
    if (m.training() && !m.bn_frozen) {
        const quant::QatConvBnAct::FoldScales s = m.fold_scales();
        Tensor w = prof.time("qat: weight * sf", [&] { return scale_channels(c.weight, s.sf, 0); });
        w = prof.time("qat: weight quant (minmax, round)", [&] { return m.weight_quant.apply(w); });
        h = prof.time(conv_name(c), [&] { return conv2d(x, w, c.bias, c.params); });
        h = prof.time("batch_norm", [&] {
            return batch_norm(h, bn.gamma, bn.beta, bn.running_mean, bn.running_var, true, bn.momentum, bn.eps, s.inv);
        });
    } else {
        // The whole frozen path as one op: it has no batch_norm.
        h = prof.time("qat: frozen-BN conv (fold, quant, conv)", [&] { return m.folded_conv(x); });
    }
    // QatConvBnAct::quantize_output: the activation measures the range its quantization point observes.
    FiniteMinMax range;
    FiniteMinMax* measured = m.act != nn::Act::None && m.out_quant->wants_range() ? &range : nullptr;
    if (m.act != nn::Act::None) h = prof.time(nn::act_name(m.act), [&] { return nn::apply_act(h, m.act, measured); });
    return activation_quant(*m.out_quant, h, prof, measured);
}

Tensor conv_bn_act(nn::ConvBnAct& m, const Tensor& x, OpProfile& prof) {
    if (auto* q = dynamic_cast<quant::QatConvBnAct*>(&m)) return qat_conv_bn_act(*q, x, prof);
    nn::Conv2d& c = *m.conv;
    nn::BatchNorm2d& bn = *m.bn;
    Tensor h = prof.time(conv_name(c), [&] { return conv2d(x, c.weight, c.bias, c.params); });
    h = prof.time("batch_norm", [&] {
        return batch_norm(h, bn.gamma, bn.beta, bn.running_mean, bn.running_var, bn.training(),
                          bn.momentum, bn.eps);
    });
    if (m.act == nn::Act::None) return h;
    return prof.time(nn::act_name(m.act), [&] { return nn::apply_act(h, m.act); });
}

}  // namespace

Tensor profiled_forward(nn::Module& m, const Tensor& x, OpProfile& prof) {
    if (auto* seq = dynamic_cast<nn::Sequential*>(&m)) {
        Tensor h = x;
        for (const auto& [name, child] : seq->children()) h = profiled_forward(*child, h, prof);
        return h;
    }
    if (auto* cba = dynamic_cast<nn::ConvBnAct*>(&m)) return conv_bn_act(*cba, x, prof);
    if (auto* a = dynamic_cast<quant::ActivationQuant*>(&m)) return activation_quant(*a, x, prof);
    if (auto* l = dynamic_cast<quant::QatLinear*>(&m)) {
        // QatLinear::forward, op by op (quant/qat.cpp); its quantized linear as one op.
        Tensor h = prof.time("qat: linear (w, b quant, linear)", [&] { return l->quantized_linear(x); });
        if (l->act != nn::Act::None) h = prof.time(nn::act_name(l->act), [&] { return nn::apply_act(h, l->act); });
        return activation_quant(*l->out_quant, h, prof);
    }
    if (auto* p = dynamic_cast<quant::QatGlobalAvgPool*>(&m)) {
        Tensor h = prof.time("global_avg_pool", [&] { return global_avg_pool(x); });
        return activation_quant(*p->out_quant, h, prof);
    }
    if (auto* b = dynamic_cast<nn::BasicBlock*>(&m)) {
        Tensor h = conv_bn_act(*b->conv2, conv_bn_act(*b->conv1, x, prof), prof);
        Tensor s = b->shortcut ? conv_bn_act(*b->shortcut, x, prof) : x;
        Tensor sum = prof.time("add", [&] { return add(h, s); });
        Tensor y = prof.time("relu", [&] { return relu(sum); });
        return profiled_forward(*b->out_quant, y, prof);
    }
    if (auto* r = dynamic_cast<nn::InvertedResidual*>(&m)) {
        Tensor h = conv_bn_act(*r->expand, x, prof);
        h = conv_bn_act(*r->project, conv_bn_act(*r->depthwise, h, prof), prof);
        if (!r->residual) return h;
        Tensor sum = prof.time("add", [&] { return add(h, x); });
        return profiled_forward(*r->out_quant, sum, prof);
    }
    if (auto* l = dynamic_cast<nn::Linear*>(&m)) {
        Tensor h = prof.time("linear", [&] { return linear(x, l->weight, l->bias); });
        if (l->act == nn::Act::None) return h;
        return prof.time(nn::act_name(l->act), [&] { return nn::apply_act(h, l->act); });
    }
    if (auto* p = dynamic_cast<nn::MaxPool2d*>(&m))
        return prof.time("max_pool2d", [&] { return max_pool2d(x, p->kernel, p->stride, p->padding); });
    if (auto* p = dynamic_cast<nn::AvgPool2d*>(&m))
        return prof.time("avg_pool2d", [&] { return avg_pool2d(x, p->kernel, p->stride, p->padding); });
    if (dynamic_cast<nn::GlobalAvgPool*>(&m))
        return prof.time("global_avg_pool", [&] { return global_avg_pool(x); });
    if (dynamic_cast<nn::Flatten*>(&m)) return prof.time("flatten", [&] { return flatten(x); });
    if (auto* a = dynamic_cast<nn::Activation*>(&m))
        return prof.time(nn::act_name(a->act), [&] { return nn::apply_act(x, a->act); });
    if (dynamic_cast<nn::Identity*>(&m)) return x;
    throw std::runtime_error("profile: no profiled forward for module kind " + m.kind());
}

void check_profiled_forward(nn::Module& model, nn::Module& twin, const Tensor& x) {
    NoGrad no_grad;  // training mode still: batch statistics, as in the timed steps
    OpProfile scratch;
    const Tensor expected = twin.forward(x);
    const Tensor got = profiled_forward(model, x, scratch);
    if (got.shape() != expected.shape())
        throw std::runtime_error("profile: profiled forward gives shape " + shape_str(got.shape()) +
                                 ", the model " + shape_str(expected.shape()));
    float worst = 0;
    for (int64_t i = 0; i < got.numel(); i++)
        worst = std::max(worst, std::fabs(got.data()[i] - expected.data()[i]));
    if (worst > 1e-4f)
        throw std::runtime_error("profile: profiled forward differs from the model's by " +
                                 std::to_string(worst) + "; bench/profile.cpp is out of step with nn/");
}

}  // namespace qf
