#include "quant/freeze.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "infer/kernels/params.h"

namespace qf::quant {

namespace {

// A quantized value of the graph as stored: int8, the zero point and range
// shifted by -128 for an unsigned scheme (q - 128 keeps every difference).
struct Stored {
    int id = infer::kModelInputValue;
    double scale = 1;
    int32_t zero_point = 0, qmin = -128, qmax = 127;
    int c = 0, h = 0, w = 0;  // NHWC shape of one image
};

Stored stored(const QuantParams& p, const QuantScheme& s) {
    const int32_t shift = s.is_signed ? 0 : 128;
    Stored v;
    v.scale = p.scales[0];
    v.zero_point = p.zero_points[0] - shift;
    v.qmin = s.qmin() - shift;
    v.qmax = s.qmax() - shift;
    return v;
}

infer::QuantizedMultiplier multiplier(double m, const std::string& layer) {
    try {
        return infer::quantize_multiplier(m);
    } catch (const std::exception& e) {
        throw QuantError(layer + ": requantization multiplier " + std::to_string(m) +
                         " cannot be represented (" + e.what() + ")");
    }
}

// The clamp that is the layer's activation, on the output's integers.
infer::OutputRange output_range(const Stored& y, nn::Act act) {
    infer::OutputRange r{y.zero_point, y.qmin, y.qmax};
    if (act != nn::Act::None) r.min = std::max(y.qmin, y.zero_point);
    if (act == nn::Act::ReLU6)
        r.max = std::min<int64_t>(y.qmax, y.zero_point + (int64_t)std::nearbyint(6.0 / y.scale));
    return r;
}

// Weights quantized per output channel (axis 0) as the fake-quant forward did.
struct QuantizedWeights {
    std::vector<int8_t> q;          // same layout as the float weight
    std::vector<int32_t> zero_points;  // stored (shifted) zero points, 1 or out channels
    std::vector<double> scales;     // one per output channel (repeated per tensor)
};

QuantizedWeights quantize_weights(const Tensor& w, const QuantParams& p, const QuantScheme& s) {
    const int32_t shift = s.is_signed ? 0 : 128;
    const int64_t out = w.dim(0), per = w.numel() / out;
    QuantizedWeights r;
    r.q.resize(w.numel());
    for (int64_t o = 0; o < out; o++) {
        const size_t c = p.channels() == 1 ? 0 : (size_t)o;
        const float sc = p.scales[c];
        const int32_t z = p.zero_points[c];
        for (int64_t i = 0; i < per; i++) {
            // The rounding of fake_quantize and infer::quantize: nearbyint of the true quotient.
            const float q = std::nearbyint(w.data()[o * per + i] / sc) + (float)z;
            r.q[o * per + i] = (int8_t)(std::clamp<float>(q, (float)s.qmin(), (float)s.qmax()) - shift);
        }
        r.scales.push_back(sc);
    }
    for (int32_t z : p.zero_points) r.zero_points.push_back(z - shift);
    return r;
}

std::vector<int32_t> quantize_bias(const std::vector<float>& b, const std::vector<double>& sw, double sx,
                                   const std::string& layer) {
    std::vector<int32_t> q(b.size());
    for (size_t o = 0; o < b.size(); o++) {
        const double v = quantize_bias_level(b[o], sw[o], sx);
        if (!(std::fabs(v) <= (double)std::numeric_limits<int32_t>::max()))
            throw QuantError(layer + ": bias of channel " + std::to_string(o) + " (" + std::to_string(b[o]) +
                             ") does not fit int32 at scale sw*sx = " + std::to_string(sw[o] * sx));
        q[o] = (int32_t)v;
    }
    return q;
}

class Freezer {
public:
    explicit Freezer(const FreezeInput& in) : in_(in) {}

    infer::ModelSpec run(const nn::Sequential& model) {
        spec_.class_names = in_.class_names;
        for (const auto& [name, child] : model.children()) module(*child, name);
        auto* last = dynamic_cast<const QatLinear*>(model.children().back().second.get());
        if (!last) throw QuantError("freeze: the model must end with a linear layer (the logits)");
        spec_.output = {cur_.id, cur_.scale, cur_.zero_point};
        return std::move(spec_);
    }

private:
    void module(const nn::Module& m, const std::string& name) {
        if (auto* a = dynamic_cast<const ActivationQuant*>(&m)) return input(*a);
        if (auto* c = dynamic_cast<const QatConvBnAct*>(&m)) return void(cur_ = conv(*c, cur_, name));
        if (auto* l = dynamic_cast<const QatLinear*>(&m)) return linear(*l, name);
        if (auto* g = dynamic_cast<const QatGlobalAvgPool*>(&m)) return global_pool(*g, name);
        if (auto* p = dynamic_cast<const nn::MaxPool2d*>(&m)) return max_pool(*p, name);
        if (dynamic_cast<const nn::Flatten*>(&m)) return flatten(name);
        if (auto* b = dynamic_cast<const nn::BasicBlock*>(&m)) return basic_block(*b, name);
        if (auto* r = dynamic_cast<const nn::InvertedResidual*>(&m)) return inverted_residual(*r, name);
        throw QuantError("freeze: module '" + name + "' (" + m.kind() +
                         ") has no integer op; was the model prepared with prepare_qat?");
    }

    void input(const ActivationQuant& a) {
        cur_ = stored(a.qparams(), a.scheme());
        cur_.id = infer::kModelInputValue;
        cur_.c = in_.channels, cur_.h = in_.height, cur_.w = in_.width;
        spec_.input = {in_.channels, in_.height, in_.width, in_.mean, in_.std,
                       cur_.scale, cur_.zero_point, cur_.qmin, cur_.qmax};
    }

    Stored conv(const QatConvBnAct& c, const Stored& x, const std::string& name) {
        NoGrad no_grad;
        const QatConvBnAct::Folded f = c.fold();
        const Tensor& w = f.weight;
        const QuantizedWeights qw = quantize_weights(w, c.weight_quant.qparams(w), c.weight_quant.scheme());
        Stored y = stored(c.out_quant->qparams(), c.out_quant->scheme());
        const int OC = (int)w.dim(0), Cg = (int)w.dim(1), K = (int)w.dim(2);
        const Conv2dParams& p = c.conv->params;
        infer::Conv2dSpec s;
        s.out_c = OC, s.kernel_h = K, s.kernel_w = K, s.in_c_per_group = Cg;
        s.window = {p.stride, p.stride, p.padding, p.padding, p.padding, p.padding};
        s.groups = p.groups;
        // OIHW -> OHWI
        s.weights.resize(qw.q.size());
        for (int o = 0; o < OC; o++)
            for (int i = 0; i < Cg; i++)
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++)
                        s.weights[((o * K + kh) * K + kw) * Cg + i] = qw.q[((o * Cg + i) * K + kh) * K + kw];
        s.bias = quantize_bias(std::vector<float>(f.bias.data(), f.bias.data() + OC), qw.scales, x.scale, name);
        s.weight_zero_points = qw.zero_points;
        for (int o = 0; o < OC; o++) s.multipliers.push_back(multiplier(qw.scales[o] * x.scale / y.scale, name));
        s.output = output_range(y, c.act);
        y.id = spec_.add_op(name, {x.id}, s);
        y.c = OC;
        y.h = (x.h + 2 * p.padding - K) / p.stride + 1;
        y.w = (x.w + 2 * p.padding - K) / p.stride + 1;
        return y;
    }

    void linear(const QatLinear& l, const std::string& name) {
        const QuantizedWeights qw = quantize_weights(l.weight, l.weight_quant.qparams(l.weight), l.weight_quant.scheme());
        Stored y = stored(l.out_quant->qparams(), l.out_quant->scheme());
        infer::FullyConnectedSpec s;
        s.out_features = l.out_features, s.in_features = l.in_features;
        // The fp32 model flattened NCHW; the int8 graph flattens NHWC.
        s.weights = flattened_spatial_ > 1 ? infer::fc_weights_chw_to_hwc(qw.q.data(), l.out_features, flat_c_,
                                                                          flat_h_, flat_w_)
                                           : qw.q;
        std::vector<float> b(l.out_features, 0.0f);
        if (l.bias.defined()) b.assign(l.bias.data(), l.bias.data() + l.out_features);
        s.bias = quantize_bias(b, qw.scales, cur_.scale, name);
        s.weight_zero_points = qw.zero_points;
        for (int o = 0; o < l.out_features; o++) s.multipliers.push_back(multiplier(qw.scales[o] * cur_.scale / y.scale, name));
        s.output = output_range(y, l.act);
        y.id = spec_.add_op(name, {cur_.id}, s);
        y.c = l.out_features, y.h = y.w = 1;
        cur_ = y;
        flattened_spatial_ = 1;
    }

    void global_pool(const QatGlobalAvgPool& g, const std::string& name) {
        Stored y = stored(g.out_quant->qparams(), g.out_quant->scheme());
        infer::GlobalAvgPoolSpec s;
        s.multiplier = multiplier(cur_.scale / (y.scale * cur_.h * cur_.w), name);
        s.output = {y.zero_point, y.qmin, y.qmax};
        y.id = spec_.add_op(name, {cur_.id}, s);
        y.c = cur_.c, y.h = y.w = 1;
        cur_ = y;
    }

    void max_pool(const nn::MaxPool2d& p, const std::string& name) {
        infer::MaxPoolSpec s;
        s.kernel_h = s.kernel_w = p.kernel;
        s.window = {p.stride, p.stride, p.padding, p.padding, p.padding, p.padding};
        s.qmin = cur_.qmin, s.qmax = cur_.qmax;
        Stored y = cur_;
        y.id = spec_.add_op(name, {cur_.id}, s);
        y.h = (cur_.h + 2 * p.padding - p.kernel) / p.stride + 1;
        y.w = (cur_.w + 2 * p.padding - p.kernel) / p.stride + 1;
        cur_ = y;
    }

    void flatten(const std::string& name) {
        flat_c_ = cur_.c, flat_h_ = cur_.h, flat_w_ = cur_.w;
        flattened_spatial_ = cur_.h * cur_.w;
        Stored y = cur_;
        y.id = spec_.add_op(name, {cur_.id}, infer::FlattenSpec{});
        y.c = cur_.c * cur_.h * cur_.w, y.h = y.w = 1;
        cur_ = y;
    }

    // out = a + b requantized to `out` with the activation as clamp.
    Stored residual_add(const Stored& a, const Stored& b, const ActivationQuant& q, nn::Act act,
                        const std::string& name) {
        Stored y = stored(q.qparams(), q.scheme());
        const infer::OutputRange range = output_range(y, act);
        infer::AddParams p;
        try {
            p = infer::make_add_params(a.scale, a.zero_point, b.scale, b.zero_point, y.scale, range);
        } catch (const std::exception& e) {
            throw QuantError(name + ": residual add cannot be represented: " + e.what());
        }
        infer::AddSpec s{p.input1_multiplier, p.input2_multiplier, p.output_multiplier, range};
        y.id = spec_.add_op(name, {a.id, b.id}, s);
        y.c = a.c, y.h = a.h, y.w = a.w;
        return y;
    }

    void basic_block(const nn::BasicBlock& b, const std::string& name) {
        const Stored x = cur_;
        Stored h = conv(qat(b.conv1, name + ".conv1"), x, name + ".conv1");
        h = conv(qat(b.conv2, name + ".conv2"), h, name + ".conv2");
        const Stored s = b.shortcut ? conv(qat(b.shortcut, name + ".shortcut"), x, name + ".shortcut") : x;
        cur_ = residual_add(h, s, activation(b.out_quant, name), nn::Act::ReLU, name + ".add");
    }

    void inverted_residual(const nn::InvertedResidual& r, const std::string& name) {
        const Stored x = cur_;
        Stored h = conv(qat(r.expand, name + ".expand"), x, name + ".expand");
        h = conv(qat(r.depthwise, name + ".depthwise"), h, name + ".depthwise");
        h = conv(qat(r.project, name + ".project"), h, name + ".project");
        cur_ = r.residual ? residual_add(h, x, activation(r.out_quant, name), nn::Act::None, name + ".add") : h;
    }

    static const QatConvBnAct& qat(const std::shared_ptr<nn::ConvBnAct>& c, const std::string& name) {
        auto* q = dynamic_cast<const QatConvBnAct*>(c.get());
        if (!q) throw QuantError("freeze: '" + name + "' is not a QAT layer; prepare the model with prepare_qat");
        return *q;
    }
    static const ActivationQuant& activation(const std::shared_ptr<nn::Module>& m, const std::string& name) {
        auto* a = dynamic_cast<const ActivationQuant*>(m.get());
        if (!a) throw QuantError("freeze: '" + name + "' has no output quantization point");
        return *a;
    }

    FreezeInput in_;
    infer::ModelSpec spec_;
    Stored cur_;
    int flat_c_ = 0, flat_h_ = 0, flat_w_ = 0, flattened_spatial_ = 1;
};

}  // namespace

infer::ModelSpec freeze(const nn::Sequential& qat_model, const FreezeInput& input) {
    return Freezer(input).run(qat_model);
}

}  // namespace qf::quant
