#include "quant/qat.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

namespace qf::quant {

LearnedRanges parse_learned_ranges(const std::string& s) {
    if (s == "none") return LearnedRanges::none;
    if (s == "lsq") return LearnedRanges::lsq;
    if (s == "pact") return LearnedRanges::pact;
    throw QuantError("learned ranges '" + s + "': expected none, lsq or pact");
}

const char* to_string(LearnedRanges r) {
    switch (r) {
        case LearnedRanges::none: return "none";
        case LearnedRanges::lsq: return "lsq";
        case LearnedRanges::pact: return "pact";
    }
    return "?";
}

QuantScheme QatOptions::weight_scheme(const std::string& layer) const {
    QuantScheme s = weight;
    if (auto it = weight_bits_per_layer.find(layer); it != weight_bits_per_layer.end()) s.bits = it->second;
    return s;
}

QuantScheme QatOptions::activation_scheme(const std::string& point) const {
    QuantScheme s = activation;
    if (auto it = activation_bits_per_point.find(point); it != activation_bits_per_point.end()) s.bits = it->second;
    return s;
}

void QatOptions::validate() const {
    weight.validate("quant.weight");
    activation.validate("quant.activation");
    check_int8_compatible(weight, TensorRole::weight, "quant.weight");
    check_int8_compatible(activation, TensorRole::activation, "quant.activation");
    for (const auto& [layer, bits] : weight_bits_per_layer) {
        const std::string what = "quant.weight_bits_per_layer '" + layer + "'";
        weight_scheme(layer).validate(what);
        check_int8_compatible(weight_scheme(layer), TensorRole::weight, what);
    }
    for (const auto& [point, bits] : activation_bits_per_point) {
        const std::string what = "quant.activation_bits_per_point '" + point + "'";
        activation_scheme(point).validate(what);
        check_int8_compatible(activation_scheme(point), TensorRole::activation, what);
    }
    if (learned == LearnedRanges::pact && activation.symmetric)
        throw QuantError("quant.learned_ranges pact: PACT maps [0, alpha] onto the whole range, "
                         "so the activation scheme must be asymmetric");
}

// ---- activations ------------------------------------------------------------

ActivationQuant::ActivationQuant(std::string name, const QatOptions& o, bool non_negative)
    : name_(std::move(name)), scheme_(o.activation_scheme(name_)) {
    // PACT clips at 0, so it only fits outputs that are non-negative anyway.
    learned_ = (o.learned == LearnedRanges::pact && !non_negative) ? LearnedRanges::none : o.learned;
    observer_ = make_observer(o.observer, name_, scheme_, o.observer_options);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    range_ = register_buffer("range", Tensor::from({2}, {nan, nan}));
    if (learned_ != LearnedRanges::none)
        scale_ = register_parameter(learned_ == LearnedRanges::pact ? "alpha" : "scale",
                                    Tensor::zeros({1}), false);
    // LSQ+: an asymmetric range also learns its offset.
    if (learned_ == LearnedRanges::lsq && !scheme_.symmetric)
        zero_point_ = register_parameter("zero_point", Tensor::zeros({1}), false);
}

Tensor ActivationQuant::forward(const Tensor& x, const FiniteMinMax* x_range) {
    Tensor y = enabled ? quantize(x, x_range) : x;
    if (keep_output) last_output = y;
    return y;
}

bool ActivationQuant::observing() const {
    return learned_ == LearnedRanges::none ? training() && !ranges_frozen : scale_.data()[0] <= 0.0f;
}

bool ActivationQuant::wants_range() const { return enabled && observing() && !observer_->needs_values(); }

Tensor ActivationQuant::quantize(const Tensor& x, const FiniteMinMax* x_range) {
    if (observing()) {
        if (x_range && !observer_->needs_values())
            observer_->observe_range(x.shape(), *x_range);
        else
            observer_->observe(x);
        const Range r = observer_->ranges()[0];
        range_.data()[0] = r.min;
        range_.data()[1] = r.max;
        // A learned range starts from what the first batch shows.
        if (learned_ == LearnedRanges::pact) scale_.data()[0] = std::max(r.max, 1e-3f);
        if (learned_ == LearnedRanges::lsq) {
            const QuantParams p = choose_qparams(r, scheme_);
            scale_.data()[0] = p.scales[0];
            if (zero_point_.defined()) zero_point_.data()[0] = (float)p.zero_points[0];
        }
    }
    switch (learned_) {
        case LearnedRanges::pact: return pact(x, scale_, scheme_, name_);
        case LearnedRanges::lsq:
            return fake_quantize_learned(x, scale_, zero_point_, scheme_,
                                         lsq_grad_factor(x.numel() / x.dim(0), scheme_), name_);
        case LearnedRanges::none: break;
    }
    return fake_quantize(x, qparams(), scheme_, name_);
}

QuantParams ActivationQuant::qparams() const {
    if (learned_ == LearnedRanges::pact) return pact_qparams(scale_.data()[0], scheme_);
    if (learned_ == LearnedRanges::lsq) {
        if (scale_.data()[0] <= 0.0f) throw QuantError(name_ + ": the LSQ scale was never initialized (no data seen)");
        const int32_t z = zero_point_.defined()
                              ? std::clamp((int32_t)std::nearbyint(zero_point_.data()[0]), scheme_.qmin(), scheme_.qmax())
                              : scheme_.symmetric_zero_point();
        return QuantParams{{std::max(scale_.data()[0], kMinScale)}, {z}};
    }
    const float lo = range_.data()[0], hi = range_.data()[1];
    if (std::isnan(lo) || std::isnan(hi))
        throw QuantError(name_ + ": this activation quantization point saw no data (calibrate or train first)");
    return choose_qparams(Range{lo, hi}, scheme_);
}

// ---- weights ----------------------------------------------------------------

WeightQuant::WeightQuant(std::string layer, const QatOptions& o)
    : name_(layer + ".weight"), scheme_(o.weight_scheme(layer)), lsq_(o.learned == LearnedRanges::lsq) {}

bool WeightQuant::has_frozen_ranges() const {
    if (!range_.defined()) return false;
    for (int64_t i = 0; i < range_.numel(); i++)
        if (range_.data()[i] != 0.0f) return true;
    return false;  // all zeros: an all-zero weight has nothing to keep either
}

std::vector<Range> WeightQuant::ranges(const Tensor& w) const {
    std::vector<Range> r;
    if (has_frozen_ranges()) {
        for (int64_t c = 0; c < range_.shape()[0]; c++) r.push_back({range_.data()[2 * c], range_.data()[2 * c + 1]});
        return r;
    }
    MinMaxObserver obs(name_, scheme_);
    obs.observe(w);
    return obs.ranges();
}

QuantParams WeightQuant::qparams(const Tensor& w) const {
    if (lsq_ && scale_.defined() && scale_.data()[0] > 0.0f) {
        QuantParams p;
        for (int64_t i = 0; i < scale_.numel(); i++) {
            p.scales.push_back(std::max(scale_.data()[i], kMinScale));
            p.zero_points.push_back(scheme_.symmetric_zero_point());
        }
        return p;
    }
    return choose_qparams(ranges(w), scheme_);
}

Tensor WeightQuant::apply(const Tensor& w) {
    if (!enabled) return w;
    if (!lsq_) {
        if (ranges_frozen && range_.defined() && !has_frozen_ranges()) {
            const std::vector<Range> now = ranges(w);
            if (int64_t(now.size()) != range_.shape()[0])
                throw QuantError(name_ + ": " + std::to_string(now.size()) + " weight ranges, buffer has " +
                                 std::to_string(range_.shape()[0]));
            for (size_t c = 0; c < now.size(); c++) {
                range_.data()[2 * c] = now[c].min;
                range_.data()[2 * c + 1] = now[c].max;
            }
        }
        return fake_quantize(w, qparams(w), scheme_, name_);
    }
    if (!scale_.defined()) throw QuantError(name_ + ": LSQ weight scale not registered");
    if (scale_.data()[0] <= 0.0f) {
        QuantParams p = qparams(w);
        for (int64_t i = 0; i < scale_.numel(); i++) scale_.data()[i] = p.scales[i % p.scales.size()];
    }
    return fake_quantize_learned(w, scale_, Tensor(), scheme_, lsq_grad_factor(w.numel(), scheme_), name_);
}

// ---- conv + BN --------------------------------------------------------------

QatConvBnAct::QatConvBnAct(const nn::ConvBnAct& fp32, const std::string& name, const QatOptions& o)
    : nn::ConvBnAct(fp32.conv, fp32.bn, fp32.act), weight_quant(name, o) {
    out_quant = register_module("out_quant", std::make_shared<ActivationQuant>(
                                                 name + ".out", o, act != nn::Act::None));
    if (o.learned == LearnedRanges::lsq)
        weight_quant.set_lsq_scale(register_parameter(
            "weight_scale", Tensor::zeros({weight_quant.range_channels(conv->out_channels)}), false));
    else
        weight_quant.set_range_buffer(
            register_buffer("weight_range", Tensor::zeros({weight_quant.range_channels(conv->out_channels), 2})));
}

namespace {
// The scale of the point a layer reads: its bias's int32 grid needs it.
double input_scale(const ActivationQuant* in, const std::string& layer) {
    if (!in) throw QuantError(layer + ": no input quantization point; prepare the model with prepare_qat");
    return in->qparams().scales[0];
}
}  // namespace

QatConvBnAct::Folded QatConvBnAct::fold() const {
    const int64_t C = bn->channels;
    std::vector<float> inv_std(C), minus_mean(C);
    for (int64_t c = 0; c < C; c++) {
        inv_std[c] = 1.0f / std::sqrt(bn->running_var.data()[c] + bn->eps);
        minus_mean[c] = -bn->running_mean.data()[c];
    }
    const Tensor sf = scale_channels(bn->gamma, Tensor::from({C}, inv_std), 0);
    Tensor centered = Tensor::from({C}, minus_mean);
    if (conv->bias.defined()) centered = add(conv->bias, centered);
    return {scale_channels(conv->weight, sf, 0), add(bn->beta, scale_channels(centered, sf, 0))};
}

Tensor QatConvBnAct::forward(const Tensor& x) {
    if (training() && !bn_frozen) return forward_batch_statistics(x);
    return quantize_output(folded_conv(x));
}

Tensor QatConvBnAct::folded_conv(const Tensor& x) {
    const Folded f = fold();
    const Tensor wq = weight_quant.apply(f.weight);
    const Tensor b = !weight_quant.enabled ? f.bias
                     : fake_quantize_bias(f.bias, weight_quant.qparams(f.weight),
                                        input_scale(input_quant, weight_quant.name()), weight_quant.name());
    return conv2d(x, wq, b, conv->params);
}

QatConvBnAct::FoldScales QatConvBnAct::fold_scales() const {
    const int64_t C = bn->channels;
    std::vector<float> sf(C), inv(C);
    for (int64_t c = 0; c < C; c++) {
        float s = bn->gamma.data()[c] / std::sqrt(bn->running_var.data()[c] + bn->eps);
        // A BN scale of ~0 makes the channel the constant beta; keep 1/sf finite.
        if (std::fabs(s) < 1e-8f) s = s < 0 ? -1e-8f : 1e-8f;
        sf[c] = s;
        inv[c] = 1.0f / s;
    }
    return {Tensor::from({C}, sf), Tensor::from({C}, inv)};
}

Tensor QatConvBnAct::forward_batch_statistics(const Tensor& x) {
    const FoldScales s = fold_scales();
    Tensor wq = weight_quant.apply(scale_channels(conv->weight, s.sf, 0));
    // BN of the conv output divided by sf, the division done inside batch_norm.
    const Tensor y = batch_norm(conv2d(x, wq, conv->bias, conv->params), bn->gamma, bn->beta, bn->running_mean,
                                bn->running_var, true, bn->momentum, bn->eps, s.inv);
    return quantize_output(y);
}

Tensor QatConvBnAct::quantize_output(const Tensor& y) {
    FiniteMinMax range;
    FiniteMinMax* measured = act != nn::Act::None && out_quant->wants_range() ? &range : nullptr;
    const Tensor activated = nn::apply_act(y, act, measured);
    return out_quant->forward(activated, measured);
}

// ---- linear -----------------------------------------------------------------

QatLinear::QatLinear(const nn::Linear& fp32, const std::string& name, const QatOptions& o)
    : in_features(fp32.in_features), out_features(fp32.out_features), act(fp32.act),
      weight_quant(name, o) {
    weight = register_parameter("weight", fp32.weight);
    if (fp32.bias.defined()) bias = register_parameter("bias", fp32.bias, false);
    out_quant = register_module("out_quant", std::make_shared<ActivationQuant>(
                                                 name + ".out", o, act != nn::Act::None));
    if (o.learned == LearnedRanges::lsq)
        weight_quant.set_lsq_scale(register_parameter(
            "weight_scale", Tensor::zeros({weight_quant.range_channels(out_features)}), false));
    else
        weight_quant.set_range_buffer(
            register_buffer("weight_range", Tensor::zeros({weight_quant.range_channels(out_features), 2})));
}

Tensor QatLinear::forward(const Tensor& x) { return out_quant->forward(nn::apply_act(quantized_linear(x), act)); }

Tensor QatLinear::quantized_linear(const Tensor& x) {
    const Tensor wq = weight_quant.apply(weight);
    Tensor b = bias;
    if (b.defined() && weight_quant.enabled)
        b = fake_quantize_bias(bias, weight_quant.qparams(weight), input_scale(input_quant, weight_quant.name()),
                               weight_quant.name());
    return linear(x, wq, b);
}

// ---- global average pool ----------------------------------------------------

QatGlobalAvgPool::QatGlobalAvgPool(const std::string& name, const QatOptions& o) {
    out_quant = register_module("out_quant", std::make_shared<ActivationQuant>(name + ".out", o, false));
}

Tensor QatGlobalAvgPool::forward(const Tensor& x) { return out_quant->forward(global_avg_pool(x)); }

// ---- the rewrite ------------------------------------------------------------

namespace {
// `in` is the quantization point the module reads; on return, the one its
// output carries (max pool and flatten keep their input's).
std::shared_ptr<QatConvBnAct> qat_conv(const std::shared_ptr<nn::ConvBnAct>& c, const std::string& name,
                                       const QatOptions& o, const ActivationQuant*& in) {
    auto q = std::make_shared<QatConvBnAct>(*c, name, o);
    q->input_quant = in;
    in = q->out_quant.get();
    return q;
}

std::shared_ptr<nn::Module> convert(const std::shared_ptr<nn::Module>& m, const std::string& name,
                                     const QatOptions& o, const ActivationQuant*& in) {
    if (auto c = std::dynamic_pointer_cast<nn::ConvBnAct>(m)) return qat_conv(c, name, o, in);
    if (auto l = std::dynamic_pointer_cast<nn::Linear>(m)) {
        auto q = std::make_shared<QatLinear>(*l, name, o);
        q->input_quant = in;
        in = q->out_quant.get();
        return q;
    }
    if (std::dynamic_pointer_cast<nn::GlobalAvgPool>(m)) {
        auto q = std::make_shared<QatGlobalAvgPool>(name, o);
        in = q->out_quant.get();
        return q;
    }
    if (std::dynamic_pointer_cast<nn::MaxPool2d>(m) || std::dynamic_pointer_cast<nn::Flatten>(m)) return m;
    if (auto b = std::dynamic_pointer_cast<nn::BasicBlock>(m)) {
        const ActivationQuant* x = in;
        b->conv1 = qat_conv(b->conv1, name + ".conv1", o, in);
        b->replace_module("conv1", b->conv1);
        b->conv2 = qat_conv(b->conv2, name + ".conv2", o, in);
        b->replace_module("conv2", b->conv2);
        if (b->shortcut) {
            b->shortcut = qat_conv(b->shortcut, name + ".shortcut", o, x);
            b->replace_module("shortcut", b->shortcut);
        }
        auto out = std::make_shared<ActivationQuant>(name + ".out", o, true);
        in = out.get();
        b->out_quant = out;
        b->replace_module("out_quant", b->out_quant);
        return b;
    }
    if (auto r = std::dynamic_pointer_cast<nn::InvertedResidual>(m)) {
        r->expand = qat_conv(r->expand, name + ".expand", o, in);
        r->replace_module("expand", r->expand);
        r->depthwise = qat_conv(r->depthwise, name + ".depthwise", o, in);
        r->replace_module("depthwise", r->depthwise);
        r->project = qat_conv(r->project, name + ".project", o, in);
        r->replace_module("project", r->project);
        auto out = std::make_shared<ActivationQuant>(name + ".out", o, false);
        if (r->residual) in = out.get();
        r->out_quant = out;
        r->replace_module("out_quant", r->out_quant);
        return r;
    }
    throw QuantError("prepare_qat: no QAT rule for module '" + name + "' of kind " + m->kind());
}
// Every name of the per-layer bit widths must be a layer (weights) or a
// quantization point (activations) of the model: a typo would otherwise
// quietly leave that layer at the default width.
void check_per_layer_names(nn::Module& model, const QatOptions& o) {
    std::set<std::string> layers, points;
    std::function<void(nn::Module&)> walk = [&](nn::Module& m) {
        if (auto* c = dynamic_cast<QatConvBnAct*>(&m)) layers.insert(c->weight_quant.layer());
        if (auto* l = dynamic_cast<QatLinear*>(&m)) layers.insert(l->weight_quant.layer());
        if (auto* a = dynamic_cast<ActivationQuant*>(&m)) points.insert(a->name());
        for (const auto& [name, child] : m.children()) walk(*child);
    };
    walk(model);
    auto join = [](const std::set<std::string>& names) {
        std::string s;
        for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
        return s;
    };
    for (const auto& [layer, bits] : o.weight_bits_per_layer)
        if (!layers.count(layer))
            throw QuantError("quant.weight_bits_per_layer: the model has no layer '" + layer + "'; its layers: " +
                             join(layers));
    for (const auto& [point, bits] : o.activation_bits_per_point)
        if (!points.count(point))
            throw QuantError("quant.activation_bits_per_point: the model has no quantization point '" + point +
                             "'; its points: " + join(points));
}
}  // namespace

std::shared_ptr<nn::Sequential> prepare_qat(const std::shared_ptr<nn::Sequential>& fp32,
                                            const QatOptions& options) {
    options.validate();
    auto q = std::make_shared<nn::Sequential>();
    auto input = std::make_shared<ActivationQuant>("input", options, false);
    q->add("input_quant", input);
    const ActivationQuant* in = input.get();
    for (const auto& [name, child] : fp32->children()) q->add(name, convert(child, name, options, in));
    q->train(fp32->training());
    check_per_layer_names(*q, options);
    return q;
}

void visit_qat(nn::Module& model, const QatVisitor& v) {
    if (auto* c = dynamic_cast<QatConvBnAct*>(&model); c && v.conv) v.conv(*c);
    if (auto* l = dynamic_cast<QatLinear*>(&model); l && v.linear) v.linear(*l);
    if (auto* a = dynamic_cast<ActivationQuant*>(&model); a && v.activation) v.activation(*a);
    for (const auto& [name, child] : model.children()) visit_qat(*child, v);
}

std::string QatSchedule::apply(nn::Module& model, int64_t step) const {
    const bool bn = freeze_bn_after >= 0 && step >= freeze_bn_after;
    const bool ranges = freeze_ranges_after >= 0 && step >= freeze_ranges_after;
    visit_qat(model, {.conv = [&](QatConvBnAct& c) {
                          c.bn_frozen = bn;
                          c.weight_quant.ranges_frozen = ranges;
                      },
                      .linear = [&](QatLinear& l) { l.weight_quant.ranges_frozen = ranges; },
                      .activation = [&](ActivationQuant& a) { a.ranges_frozen = ranges; }});
    std::string msg;
    if (step == freeze_bn_after) msg += "QAT: BN statistics frozen at step " + std::to_string(step);
    if (step == freeze_ranges_after)
        msg += (msg.empty() ? "" : "; ") + std::string("QAT: weight and activation ranges frozen at step ") + std::to_string(step);
    return msg;
}

}  // namespace qf::quant
