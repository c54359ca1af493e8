// The sensitivity report: which layer of a quantized model hurts.
//
// For every quantization point of a QAT model (prepare_qat: a calibrated
// PTQ model or a QAT checkpoint), in graph order, it measures
//   - local error: the fp32 activation at the point against the same
//     activation fake-quantized with the point's (scale, zero point): SQNR
//     in dB and cosine similarity. This is the error the point itself adds.
//   - accumulated error: the quantized model's activation at the point
//     against the fp32 model's (everything before it quantized too).
//   - the fraction of fp32 values its range clips: outside
//     [(qmin - z) * s, (qmax - z) * s] by more than half a step s/2 (closer
//     ones round onto the end level: rounding error, not clipping).
//   - for conv/linear layers, the SQNR of the (folded) weight.
//   - the accuracy (and top-1 agreement with the fp32 model) with only this
//     layer left in float: its weight quantization, bias rounding and output
//     quantization disabled, every other point quantized.
// SQNR = 10 log10(sum x^2 / sum (x - xq)^2) over all values of all batches
// (x the fp32 activation); +inf when the two are identical.
//
// The fp32 reference is the same QAT model with every point and weight
// disabled (ActivationQuant::enabled, WeightQuant::enabled): it computes
// the model's float function with the same (folded) weights, and its value
// at a point is exactly the input that point's fake-quant op sees in float.
//
// Example:
//   auto qat = ...;                                 // calibrated, frozen ranges
//   std::vector<LabeledBatch> stats = ..., eval = ...;
//   SensitivityReport r = measure_sensitivity(*qat, stats, eval);
//   std::cout << r.to_text();                       // or r.to_markdown()
#pragma once
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "quant/qat.h"

namespace qf::quant {

struct LabeledBatch {
    Tensor images;                // N x C x H x W, normalized as the model input
    std::vector<int32_t> labels;  // N labels, or empty (agreement only, no accuracy)
};

struct SensitivityOptions {
    // A point whose local SQNR falls below this is flagged 'S'.
    double low_sqnr_db = 25.0;
    // A point whose range clips more than this fraction of fp32 values is flagged 'C'.
    double high_clip_fraction = 0.01;
    // The layers that restore the most top-1 agreement with the fp32 model
    // when left in float (the top `worst_layers` of those that restore at
    // least `min_agreement_gain` percentage points and `min_agreement_images`
    // images) are flagged 'A'.
    int worst_layers = 3;
    double min_agreement_gain = 0.1;
    int min_agreement_images = 3;
    // Progress lines during the accuracy passes (one per layer); null: quiet.
    std::function<void(const std::string&)> progress;
};

// One quantization point, with the layer whose output it quantizes.
struct LayerSensitivity {
    std::string name;  // the layer ("0", "3.conv1", "3" for a block's residual add, "input")
    std::string kind;  // conv, linear, add, avgpool, input
    int64_t values = 0;               // activation values measured
    float range_lo = 0, range_hi = 0; // what the point represents: [(qmin - z) s, (qmax - z) s]
    float fp32_min = 0, fp32_max = 0; // what the fp32 activations spanned
    double local_sqnr_db = 0, local_cosine = 0;
    double accum_sqnr_db = 0, accum_cosine = 0;
    double clipped = 0;               // fraction of fp32 values beyond the range by more than s/2
    double weight_sqnr_db = 0;        // NaN for points without a weight
    // With only this layer in float (NaN if not measured / no labels).
    double top1_float = 0, agreement_float = 0;
    std::string flags;                // "S", "C", "A" or a combination (see SensitivityOptions)
};

struct SensitivityReport {
    std::vector<LayerSensitivity> layers;  // graph order
    int64_t stats_images = 0, eval_images = 0;
    // On the eval batches: the fp32 model (all points in float), the fully
    // quantized one, and its top-1 agreement with fp32 (percent; NaN when
    // there were no eval batches, top-1 also when they had no labels).
    double fp32_top1 = 0, quant_top1 = 0, quant_agreement = 0;
    // The logits: accumulated SQNR of the whole quantized model.
    double logits_sqnr_db = 0;
    std::string to_text() const;
    std::string to_markdown() const;
};

// Measures the report on `qat_model` (switched to eval mode for the
// measurement; its mode and every point's switches are restored on return,
// also on error). Statistics come from `stats_batches`; the accuracy
// columns from `eval_batches` (skipped when empty: one forward per layer
// and batch, the slow part). Throws QuantError if the model has no
// quantization points or a point never saw data.
SensitivityReport measure_sensitivity(nn::Module& qat_model, std::span<const LabeledBatch> stats_batches,
                                      std::span<const LabeledBatch> eval_batches,
                                      const SensitivityOptions& options = {});

// SQNR and cosine similarity of `quantized` against `reference`, accumulated
// over calls (the report's per-point statistic, exposed for tests).
struct SignalError {
    double signal = 0, noise = 0, dot = 0, quantized_energy = 0;
    int64_t values = 0;
    void add(const float* reference, const float* quantized, int64_t n);
    double sqnr_db() const;  // +inf when noise is 0
    double cosine() const;   // 1 when both are all zero
};

}  // namespace qf::quant
