#include "quant/sensitivity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

namespace qf::quant {

void SignalError::add(const float* reference, const float* quantized, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const double x = reference[i], y = quantized[i];
        signal += x * x;
        noise += (x - y) * (x - y);
        dot += x * y;
        quantized_energy += y * y;
    }
    values += n;
}

double SignalError::sqnr_db() const {
    if (noise == 0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(signal / noise);
}

double SignalError::cosine() const {
    if (signal == 0 && quantized_energy == 0) return 1.0;
    if (signal == 0 || quantized_energy == 0) return 0.0;
    return dot / std::sqrt(signal * quantized_energy);
}

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// One row of the report: a quantization point and, for conv/linear, the
// weight quantizer of the layer whose output it quantizes.
struct Row {
    std::string name, kind;
    ActivationQuant* point = nullptr;
    WeightQuant* weight = nullptr;
    std::function<Tensor()> float_weight;  // the weight WeightQuant::apply sees (folded for conv)
};

std::string layer_name(const std::string& point) {
    const std::string suffix = ".out";
    if (point.size() > suffix.size() && point.compare(point.size() - suffix.size(), suffix.size(), suffix) == 0)
        return point.substr(0, point.size() - suffix.size());
    return point;
}

// Walks the model in registration order, which is graph order for the
// reference models (a block's shortcut comes after its second conv).
void collect(nn::Module& m, const nn::Module* parent, std::vector<Row>& rows, std::set<const ActivationQuant*>& owned) {
    if (auto* c = dynamic_cast<QatConvBnAct*>(&m)) {
        rows.push_back({layer_name(c->out_quant->name()), "conv", c->out_quant.get(), &c->weight_quant,
                        [c] { return c->fold().weight; }});
        owned.insert(c->out_quant.get());
    } else if (auto* l = dynamic_cast<QatLinear*>(&m)) {
        rows.push_back({layer_name(l->out_quant->name()), "linear", l->out_quant.get(), &l->weight_quant,
                        [l] { return l->weight; }});
        owned.insert(l->out_quant.get());
    } else if (auto* a = dynamic_cast<ActivationQuant*>(&m); a && !owned.count(a)) {
        // Standalone points: the model input, a residual add, an average pool.
        const bool pool = parent && dynamic_cast<const QatGlobalAvgPool*>(parent);
        const bool input = parent && dynamic_cast<const nn::Sequential*>(parent);
        rows.push_back({layer_name(a->name()), pool ? "avgpool" : input ? "input" : "add", a, nullptr, {}});
    }
    for (const auto& [name, child] : m.children()) collect(*child, &m, rows, owned);
}

// Saves every switch the report touches and restores them (and the model's
// mode) when it goes out of scope, also on an exception.
class Switches {
public:
    Switches(nn::Module& model, std::vector<Row>& rows) : model_(model), rows_(rows), training_(model.training()) {
        for (const Row& r : rows_) saved_.push_back({r.point->enabled, r.point->keep_output, r.weight && r.weight->enabled});
    }
    ~Switches() {
        for (size_t i = 0; i < rows_.size(); i++) {
            rows_[i].point->enabled = saved_[i].point;
            rows_[i].point->keep_output = saved_[i].keep;
            rows_[i].point->last_output = Tensor();
            if (rows_[i].weight) rows_[i].weight->enabled = saved_[i].weight;
        }
        model_.train(training_);
    }
    // Every point quantized (true) or in float (false), except `except` which gets the opposite.
    void set_all(bool quantized, const Row* except = nullptr) {
        for (Row& r : rows_) {
            const bool on = &r == except ? !quantized : quantized;
            r.point->enabled = on;
            if (r.weight) r.weight->enabled = on;
            r.point->last_output = Tensor();
        }
    }
    void keep_outputs(bool on) {
        for (Row& r : rows_) r.point->keep_output = on;
    }

private:
    struct Saved {
        bool point, keep, weight;
    };
    nn::Module& model_;
    std::vector<Row>& rows_;
    bool training_;
    std::vector<Saved> saved_;
};

// The first index of the largest logit, as torch.argmax and infer/label_rank.h.
std::vector<int32_t> top1(const Tensor& logits) {
    const int64_t n = logits.dim(0), k = logits.numel() / logits.dim(0);
    std::vector<int32_t> out(n);
    for (int64_t i = 0; i < n; i++) {
        const float* p = logits.data() + i * k;
        out[i] = int32_t(std::max_element(p, p + k) - p);
    }
    return out;
}

struct Score {
    int64_t images = 0, correct = 0, agree = 0, labelled = 0;
    double top1() const { return labelled ? 100.0 * correct / labelled : kNaN; }
    double agreement() const { return images ? 100.0 * agree / images : kNaN; }
};

// Scores the model as its switches stand on every eval batch; `fp32_top1`
// holds the fp32 model's predictions per batch (filled when empty).
Score score(nn::Module& model, std::span<const LabeledBatch> batches, std::vector<std::vector<int32_t>>& fp32_top1) {
    const bool fill = fp32_top1.empty();
    Score s;
    for (size_t b = 0; b < batches.size(); b++) {
        const std::vector<int32_t> pred = top1(model.forward(batches[b].images));
        if (fill) fp32_top1.push_back(pred);
        const std::vector<int32_t>& labels = batches[b].labels;
        for (size_t i = 0; i < pred.size(); i++) {
            s.agree += pred[i] == fp32_top1[b][i];
            if (!labels.empty()) s.correct += pred[i] == labels[i], s.labelled++;
        }
        s.images += (int64_t)pred.size();
    }
    return s;
}

// What a per-tensor point represents: [(qmin - z) s, (qmax - z) s].
std::pair<float, float> representable(const QuantParams& p, const QuantScheme& sc) {
    return {float(sc.qmin() - p.zero_points[0]) * p.scales[0], float(sc.qmax() - p.zero_points[0]) * p.scales[0]};
}

struct PointStats {
    SignalError local, accum;
    int64_t clipped = 0;
    float lo = std::numeric_limits<float>::infinity(), hi = -std::numeric_limits<float>::infinity();
};

void flag(SensitivityReport& r, const SensitivityOptions& o) {
    for (LayerSensitivity& l : r.layers) {
        if (l.local_sqnr_db < o.low_sqnr_db) l.flags += "S";
        if (l.clipped > o.high_clip_fraction) l.flags += "C";
    }
    // The layers that recover the most when left in float, by agreement with
    // the fp32 model's top-1: top-1 accuracy moves both ways by chance (a
    // flip can fix a wrong fp32 answer), agreement counts only the damage.
    const auto gain = [&](const LayerSensitivity& l) { return l.agreement_float - r.quant_agreement; };
    std::vector<LayerSensitivity*> order;
    for (LayerSensitivity& l : r.layers)
        // A few images either way is chance; only clear gains count.
        if (!std::isnan(gain(l)) && gain(l) > 0 && gain(l) >= o.min_agreement_gain &&
            gain(l) * double(r.eval_images) / 100.0 >= o.min_agreement_images - 1e-9)
            order.push_back(&l);
    std::stable_sort(order.begin(), order.end(), [&](auto* a, auto* b) { return gain(*a) > gain(*b); });
    for (int i = 0; i < (int)order.size() && i < o.worst_layers; i++) order[i]->flags += "A";
}
}  // namespace

SensitivityReport measure_sensitivity(nn::Module& qat_model, std::span<const LabeledBatch> stats_batches,
                                      std::span<const LabeledBatch> eval_batches, const SensitivityOptions& o) {
    std::vector<Row> rows;
    std::set<const ActivationQuant*> owned;
    collect(qat_model, nullptr, rows, owned);
    if (rows.empty()) throw QuantError("sensitivity: the model has no quantization points; prepare it with prepare_qat");
    const LabeledBatch* probe = !stats_batches.empty() ? &stats_batches[0]
                                : !eval_batches.empty() ? &eval_batches[0] : nullptr;
    if (!probe) throw QuantError("sensitivity: no batches to measure on");
    NoGrad no_grad;
    {
        // The points the forward uses: mbv2's blocks without a residual add
        // have an out_quant that is never called (and never saw data).
        Switches probing(qat_model, rows);
        qat_model.eval();
        probing.set_all(false);
        probing.keep_outputs(true);
        qat_model.forward(probe->images);
        std::erase_if(rows, [](const Row& r) { return !r.point->last_output.defined(); });
    }
    std::vector<QuantParams> params;
    for (const Row& r : rows) params.push_back(r.point->qparams());  // throws, naming a point without data

    Switches switches(qat_model, rows);
    qat_model.eval();  // no observing: the ranges stay what calibration or training left
    SensitivityReport report;

    // Statistics: the fp32 forward, then the quantized one, on each batch.
    std::vector<PointStats> stats(rows.size());
    SignalError logits;
    switches.keep_outputs(true);
    for (const LabeledBatch& b : stats_batches) {
        switches.set_all(false);
        const Tensor ref_logits = qat_model.forward(b.images);
        std::vector<Tensor> ref;
        for (const Row& r : rows) ref.push_back(r.point->last_output);
        switches.set_all(true);
        const Tensor q_logits = qat_model.forward(b.images);
        logits.add(ref_logits.data(), q_logits.data(), ref_logits.numel());
        for (size_t i = 0; i < rows.size(); i++) {
            const Tensor& x = ref[i];
            const Tensor& y = rows[i].point->last_output;
            PointStats& s = stats[i];
            s.accum.add(x.data(), y.data(), x.numel());
            const Tensor local = fake_quantize(x, params[i], rows[i].point->scheme(), rows[i].point->name());
            s.local.add(x.data(), local.data(), x.numel());
            const QuantScheme& sc = rows[i].point->scheme();
            // Clipped: beyond the range by more than half a step, i.e. where
            // the clamp, not the rounding, sets the error. (Values within
            // half a step round onto the end level anyway; counting them
            // would flag every white pixel that sits exactly at the
            // calibrated maximum.)
            const float half = 0.5f * params[i].scales[0];
            const float lo = representable(params[i], sc).first - half;
            const float hi = representable(params[i], sc).second + half;
            for (int64_t j = 0; j < x.numel(); j++) {
                const float v = x.data()[j];
                s.clipped += v < lo || v > hi;
                s.lo = std::min(s.lo, v);
                s.hi = std::max(s.hi, v);
            }
        }
        report.stats_images += b.images.dim(0);
    }
    switches.keep_outputs(false);
    report.logits_sqnr_db = logits.values ? logits.sqnr_db() : kNaN;

    for (size_t i = 0; i < rows.size(); i++) {
        const PointStats& s = stats[i];
        LayerSensitivity l;
        l.name = rows[i].name;
        l.kind = rows[i].kind;
        l.values = s.local.values;
        const QuantScheme& sc = rows[i].point->scheme();
        std::tie(l.range_lo, l.range_hi) = representable(params[i], sc);
        l.fp32_min = s.local.values ? s.lo : 0;
        l.fp32_max = s.local.values ? s.hi : 0;
        l.local_sqnr_db = s.local.values ? s.local.sqnr_db() : kNaN;
        l.local_cosine = s.local.values ? s.local.cosine() : kNaN;
        l.accum_sqnr_db = s.accum.values ? s.accum.sqnr_db() : kNaN;
        l.accum_cosine = s.accum.values ? s.accum.cosine() : kNaN;
        l.clipped = s.local.values ? double(s.clipped) / double(s.local.values) : kNaN;
        l.weight_sqnr_db = kNaN;
        if (rows[i].weight) {
            rows[i].weight->enabled = true;
            const Tensor w = rows[i].float_weight();
            const Tensor wq = rows[i].weight->apply(w);
            SignalError e;
            e.add(w.data(), wq.data(), w.numel());
            l.weight_sqnr_db = e.sqnr_db();
        }
        l.top1_float = l.agreement_float = kNaN;
        report.layers.push_back(l);
    }

    // Accuracy: fp32, fully quantized, then each layer alone in float.
    report.fp32_top1 = report.quant_top1 = report.quant_agreement = kNaN;
    if (!eval_batches.empty()) {
        std::vector<std::vector<int32_t>> fp32_pred;
        switches.set_all(false);
        const Score fp32 = score(qat_model, eval_batches, fp32_pred);
        switches.set_all(true);
        const Score quant = score(qat_model, eval_batches, fp32_pred);
        report.eval_images = fp32.images;
        report.fp32_top1 = fp32.top1();
        report.quant_top1 = quant.top1();
        report.quant_agreement = quant.agreement();
        for (size_t i = 0; i < rows.size(); i++) {
            switches.set_all(true, &rows[i]);
            const Score s = score(qat_model, eval_batches, fp32_pred);
            report.layers[i].top1_float = s.top1();
            report.layers[i].agreement_float = s.agreement();
            if (o.progress) {
                char line[160];
                std::snprintf(line, sizeof line, "sensitivity: %zu/%zu %s in float: top-1 %.2f%%, agreement %.2f%%",
                              i + 1, rows.size(), rows[i].name.c_str(), s.top1(), s.agreement());
                o.progress(line);
            }
        }
    }
    flag(report, o);
    return report;
}

// ---- formatting -------------------------------------------------------------

namespace {
std::string num(double v, int precision) {
    if (std::isnan(v)) return "-";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[48];
    std::snprintf(buf, sizeof buf, "%.*f", precision, v);
    return buf;
}

std::string signed_num(double v, int precision) {
    if (std::isnan(v)) return "";
    return (v >= 0 ? "+" : "") + num(v, precision);
}

// A fraction as a percentage that never shows a few clipped values as 0.
std::string percent(double fraction) {
    if (fraction > 0 && fraction < 5e-6) return "<0.001";
    return num(100.0 * fraction, 3);
}

// The table both renderings share: a header row, then one row per point.
std::vector<std::vector<std::string>> cells(const SensitivityReport& r) {
    std::vector<std::vector<std::string>> t{{"#", "layer", "kind", "range", "fp32 min..max", "local SQNR dB",
                                             "local cos", "accum SQNR dB", "accum cos", "clipped %", "weight SQNR dB",
                                             "top-1 in float (gain)", "agree % in float (gain)", "flags"}};
    const bool labels = !std::isnan(r.quant_top1);
    for (size_t i = 0; i < r.layers.size(); i++) {
        const LayerSensitivity& l = r.layers[i];
        std::string acc = "-";
        if (labels && !std::isnan(l.top1_float))
            acc = num(l.top1_float, 2) + " (" + signed_num(l.top1_float - r.quant_top1, 2) + ")";
        t.push_back({std::to_string(i), l.name, l.kind, "[" + num(l.range_lo, 3) + ", " + num(l.range_hi, 3) + "]",
                     num(l.fp32_min, 3) + ".." + num(l.fp32_max, 3), num(l.local_sqnr_db, 1), num(l.local_cosine, 5),
                     num(l.accum_sqnr_db, 1), num(l.accum_cosine, 5), percent(l.clipped),
                     num(l.weight_sqnr_db, 1), acc,
                     std::isnan(l.agreement_float) ? "-"
                         : num(l.agreement_float, 2) + " (" + signed_num(l.agreement_float - r.quant_agreement, 2) + ")", l.flags.empty() ? "" : "<- " + l.flags});
    }
    return t;
}

std::string summary(const SensitivityReport& r, const char* bullet) {
    std::ostringstream s;
    s << bullet << "statistics over " << r.stats_images << " images; logits SQNR (whole model) "
      << num(r.logits_sqnr_db, 1) << " dB\n";
    if (r.eval_images > 0)
        s << bullet << "accuracy over " << r.eval_images << " images: fp32 top-1 " << num(r.fp32_top1, 2)
          << "%, quantized top-1 " << num(r.quant_top1, 2) << "%, quantized agrees with fp32 on "
          << num(r.quant_agreement, 2) << "% of top-1\n";
    else
        s << bullet << "accuracy columns not measured (no eval images)\n";
    return s.str();
}

const char* kLegend =
    "local: the fp32 activation vs itself fake-quantized by this point alone; accum: the quantized model's "
    "activation vs the fp32 model's (error of every point up to here); clipped: fp32 values beyond the range by more than half a step; "
    "in float: accuracy with only this layer's weight, bias and output quantization off. "
    "agree: top-1 agreement with the fp32 model. "
    "Flags: S local SQNR low, C clips much, A among the layers whose float version restores the most agreement.";
}  // namespace

std::string SensitivityReport::to_text() const {
    const auto t = cells(*this);
    std::vector<size_t> width(t[0].size(), 0);
    for (const auto& row : t)
        for (size_t c = 0; c < row.size(); c++) width[c] = std::max(width[c], row[c].size());
    std::ostringstream s;
    s << summary(*this, "");
    for (const auto& row : t) {
        for (size_t c = 0; c < row.size(); c++) {
            // Names left-aligned, numbers right-aligned.
            const bool left = c == 1 || c == 2 || c + 1 == row.size();
            const std::string pad(width[c] - row[c].size(), ' ');
            s << (c ? "  " : "") << (left ? row[c] + pad : pad + row[c]);
        }
        s << "\n";
    }
    s << kLegend << "\n";
    return s.str();
}

std::string SensitivityReport::to_markdown() const {
    const auto t = cells(*this);
    std::ostringstream s;
    s << summary(*this, "- ") << "\n";
    for (size_t i = 0; i < t.size(); i++) {
        s << "|";
        for (const std::string& c : t[i]) s << " " << c << " |";
        s << "\n";
        if (i == 0) {
            s << "|";
            for (size_t c = 0; c < t[i].size(); c++) s << (c == 1 || c == 2 || c + 1 == t[i].size() ? "---|" : "---:|");
            s << "\n";
        }
    }
    s << "\n" << kLegend << "\n";
    return s.str();
}

}  // namespace qf::quant
