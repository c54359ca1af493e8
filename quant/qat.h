// Quantization-aware training: the rewrite of a model into one whose forward
// simulates the integer graph, and the schedule that freezes BN statistics
// and ranges.
//
// The fake-quant points are exactly where infer/ requantizes: the model
// input, the output of every conv+BN(+act) and linear(+act) layer, every
// residual add (after its ReLU) and the global average pool. Max pool and
// flatten work on the integers unchanged and get none.
//
// Conv+BN is simulated folded, as the whitepaper (and PyTorch's
// ConvBnReLU2d) does it:
//   sf = gamma / sqrt(running_var + eps)               (per output channel)
//   before the BN freeze, in training: batch statistics with the
//   "correction factor" form
//     y = batch_norm(conv(x, fake_quant(w * sf)) / sf)   (sf a constant here)
//   after it, and always in eval: exactly what the int8 graph computes,
//     y = conv(x, fake_quant(w * sf)) + fake_quantize_bias(b, sw, sx)
//     b = beta + (conv_bias - running_mean) * sf
//   with the folded bias on the int32 grid sw[c] * sx of the accumulator
//   (sx: the scale of the layer's input point). gamma and beta learn through
//   w * sf and b. The same fold() is what freeze quantizes, so the two cannot
//   round differently.
// Linear layers quantize their bias the same way.
//
// Example:
//   auto qat = prepare_qat(fp32_model, options);    // shares the fp32 tensors
//   QatSchedule schedule{.freeze_bn_after = 234, .freeze_ranges_after = 351};
//   for (step...) { schedule.apply(*qat, step); loss = ...(qat->forward(x)); ... }
#pragma once
#include <map>
#include <memory>
#include <optional>

#include "nn/models.h"
#include "quant/fake_quant.h"
#include "quant/observer.h"

namespace qf::quant {

enum class LearnedRanges { none, lsq, pact };
LearnedRanges parse_learned_ranges(const std::string& s);
const char* to_string(LearnedRanges r);

struct QatOptions {
    QuantScheme weight{.bits = 8, .symmetric = true, .per_channel = true, .axis = 0};
    QuantScheme activation{.bits = 8, .symmetric = false};
    ObserverKind observer = ObserverKind::moving_average;  // activations
    ObserverOptions observer_options;
    // lsq: scales of weights and activations are parameters; pact: the
    // clipping level of ReLU outputs is (other activations keep observers).
    LearnedRanges learned = LearnedRanges::none;
    // Mixed precision: the bits of the weights of named layers ("1.conv1" ->
    // 4) and of named activation points ("1.conv1.out" -> 6; "input" is the
    // model input), overriding weight.bits / activation.bits there.
    // prepare_qat refuses a name the model does not have, listing those it has.
    std::map<std::string, int> weight_bits_per_layer, activation_bits_per_point;
    QuantScheme weight_scheme(const std::string& layer) const;
    QuantScheme activation_scheme(const std::string& point) const;
    void validate() const;
};

// A quantization point of an activation: observes (while ranges are not
// frozen, in training) and fake-quantizes. Its range is saved as the buffer
// "range" = {min, max}, so a checkpoint of a QAT model keeps it.
class ActivationQuant : public nn::Module {
public:
    ActivationQuant(std::string name, const QatOptions& options, bool non_negative);
    Tensor forward(const Tensor& x) override { return forward(x, nullptr); }
    // The same, given x's finite min/max when the op that wrote it measured
    // them (relu, relu6; else null): the observer then skips its pass over x.
    Tensor forward(const Tensor& x, const FiniteMinMax* x_range);
    // Whether forward(x, x_range) would use x_range: this step observes,
    // with an observer that needs no more than the range.
    bool wants_range() const;
    std::string kind() const override { return "ActivationQuant"; }

    // The (scale, zero point) the forward uses now; throws QuantError naming
    // the point if it never saw data.
    QuantParams qparams() const;
    const QuantScheme& scheme() const { return scheme_; }
    bool ranges_frozen = false;
    const std::string& name() const { return name_; }
    Observer& observer() { return *observer_; }  // data-parallel training sets its range reduce
    // Parity checks: when set, forward keeps its last output here.
    bool keep_output = false;
    Tensor last_output;
    // false: forward is the identity (no observing, no rounding), so this
    // point computes in float. A diagnostic switch for the sensitivity report
    // (quant/sensitivity.h); freeze ignores it.
    bool enabled = true;

private:
    Tensor quantize(const Tensor& x, const FiniteMinMax* x_range);  // x_range may be null
    bool observing() const;
    std::string name_;
    QuantScheme scheme_;
    LearnedRanges learned_;
    std::unique_ptr<Observer> observer_;
    Tensor range_;   // buffer {min, max}: what the observer concluded
    Tensor scale_;       // LSQ: learned step size (1); PACT: learned alpha (1)
    Tensor zero_point_;  // LSQ+ on an asymmetric scheme: learned offset (1)
    bool initialized_ = false;
};

// Fake-quantizes a weight per the weight scheme: from its current per-channel
// min/max until the ranges freeze, then from the min/max it had then (as
// PyTorch's weight observers stop when observers are disabled), or a learned
// LSQ scale (initialized from them on first use). The frozen ranges are the
// owning layer's buffer "weight_range" ([channels][2], zeros until frozen),
// so a checkpoint keeps them and freeze quantizes with them: a weight that
// outgrows its frozen range clamps in the int8 graph as it did in training.
class WeightQuant {
public:
    // The quantizer of layer `layer`'s weights, named "<layer>.weight".
    WeightQuant(std::string layer, const QatOptions& options);
    Tensor apply(const Tensor& w);
    QuantParams qparams(const Tensor& w) const;  // what apply used / freeze uses
    const QuantScheme& scheme() const { return scheme_; }
    const std::string& name() const { return name_; }
    std::string layer() const { return name_.substr(0, name_.size() - std::string(".weight").size()); }
    // false: apply() returns the weight unchanged and the owning layer adds
    // its bias in float (the layer's weights stay float). A diagnostic switch
    // for the sensitivity report (quant/sensitivity.h); freeze ignores it.
    bool enabled = true;
    // Set by QatSchedule: the next apply() keeps the weight's ranges.
    bool ranges_frozen = false;
    bool has_frozen_ranges() const;
    // How many channels the ranges have: out_channels per channel, else 1.
    int64_t range_channels(int64_t out_channels) const { return scheme_.per_channel ? out_channels : 1; }
    // The owning layer registers these (zeros: not set yet).
    void set_range_buffer(Tensor r) { range_ = std::move(r); }
    Tensor lsq_scale() const { return scale_; }
    // LSQ: the step-size parameter the owning layer registered (zeros until
    // the first apply() initializes it from the weight's min/max).
    void set_lsq_scale(Tensor s) { scale_ = std::move(s); }

private:
    // Per channel: the frozen ranges once kept, else w's min/max now.
    std::vector<Range> ranges(const Tensor& w) const;
    std::string name_;
    QuantScheme scheme_;
    bool lsq_;
    Tensor scale_;
    Tensor range_;  // [channels][2]: {min, max} when frozen
};

// ConvBnAct with folded, fake-quantized weights and a quantized output.
class QatConvBnAct : public nn::ConvBnAct {
public:
    QatConvBnAct(const nn::ConvBnAct& fp32, const std::string& name, const QatOptions& options);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "QatConvBnAct"; }

    // The folded float weight w * sf and bias beta + (conv_bias - mean) * sf
    // with running statistics: what the forward uses once BN is frozen, and
    // what freeze quantizes. Differentiable in the weight, gamma and beta.
    struct Folded {
        Tensor weight, bias;
    };
    Folded fold() const;
    // conv(x, fake_quant(fold().weight), fold().bias on the int32 grid): the
    // forward once BN is frozen (and in eval), before the activation and the
    // output point. The profiler (bench/profile.cpp) times it as one op.
    Tensor folded_conv(const Tensor& x);

    bool bn_frozen = false;
    WeightQuant weight_quant;
    std::shared_ptr<ActivationQuant> out_quant;
    // The quantization point this layer reads (its scale is the bias's
    // input scale); set by prepare_qat.
    const ActivationQuant* input_quant = nullptr;

    // Before the BN freeze, in training: the per-channel sf = gamma /
    // sqrt(running_var + eps) (kept away from 0) that folds into the weights,
    // and its reciprocal that takes it back out of the conv output.
    struct FoldScales {
        Tensor sf, inv;  // (C) each, constants (no gradient)
    };
    FoldScales fold_scales() const;

private:
    Tensor forward_batch_statistics(const Tensor& x);
    // act, then out_quant, its observer fed from the activation's own pass.
    Tensor quantize_output(const Tensor& y);
};

// Linear(+act) with fake-quantized weights and a quantized output.
class QatLinear : public nn::Module {
public:
    QatLinear(const nn::Linear& fp32, const std::string& name, const QatOptions& options);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "QatLinear"; }
    // linear(x, fake_quant(weight), bias on the int32 grid): the forward
    // before the activation and the output point.
    Tensor quantized_linear(const Tensor& x);

    int in_features, out_features;
    nn::Act act;
    Tensor weight, bias;
    WeightQuant weight_quant;
    std::shared_ptr<ActivationQuant> out_quant;
    const ActivationQuant* input_quant = nullptr;  // set by prepare_qat
};

// Global average pool followed by its requantization.
class QatGlobalAvgPool : public nn::Module {
public:
    QatGlobalAvgPool(const std::string& name, const QatOptions& options);
    Tensor forward(const Tensor& x) override;
    std::string kind() const override { return "QatGlobalAvgPool"; }
    std::shared_ptr<ActivationQuant> out_quant;
};

// The QAT version of a reference model: a Sequential whose first child
// "input_quant" quantizes the input, followed by the model's own children
// under their own names (so "0.conv.weight" stays "0.conv.weight"). The
// tensors are shared with `fp32`. Throws QuantError for a module kind it
// does not know, naming it.
std::shared_ptr<nn::Sequential> prepare_qat(const std::shared_ptr<nn::Sequential>& fp32,
                                            const QatOptions& options);

// Visits every QAT layer and quantization point of a prepared model.
struct QatVisitor {
    std::function<void(QatConvBnAct&)> conv;
    std::function<void(QatLinear&)> linear;
    std::function<void(ActivationQuant&)> activation;
};
void visit_qat(nn::Module& model, const QatVisitor& v);

// When BN statistics and ranges stop moving (in global QAT steps; -1: never).
struct QatSchedule {
    int64_t freeze_bn_after = -1;
    int64_t freeze_ranges_after = -1;
    // Sets the flags for `step`; returns a message when a switch happens at
    // this step (for the log), else an empty string.
    std::string apply(nn::Module& model, int64_t step) const;
};

}  // namespace qf::quant
