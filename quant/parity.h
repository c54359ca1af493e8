// Parity between the fake-quant forward (what QAT trains and reports) and the
// frozen int8 graph (what ships): top-1 agreement, quantized logits within
// one step, and the first op whose output differs by more than one step.
//
// Example:
//   ParityChecker check(*qat_model, int8_model);
//   for (batch...) check.add_batch(images, n);
//   std::cout << check.report().summary();
#pragma once
#include <string>
#include <vector>

#include "infer/model.h"
#include "quant/qat.h"

namespace qf::quant {

struct ParityReport {
    int64_t images = 0, same_top1 = 0;
    int64_t logits = 0, logits_exact = 0, logits_within_one = 0;
    // The first op (in graph order) whose output differed from the
    // fake-quant activation by more than one step on some batch, with how
    // many values and the largest difference; empty when none did.
    std::string first_divergence;
    // Per quantization point in graph order: how many stored values the two
    // paths produced, and how many differ at all (the first place a 1-step
    // rounding flip appears is where the two arithmetics part).
    struct Point {
        std::string op;
        int64_t values = 0, differ = 0, differ_more = 0;
    };
    std::vector<Point> points;
    double top1_agreement() const { return images ? 100.0 * same_top1 / images : 0; }
    double within_one() const { return logits ? 100.0 * logits_within_one / logits : 0; }
    std::string summary() const;
    // One line per quantization point: the share of values that differ.
    std::string per_point() const;
};

class ParityChecker {
public:
    // Both models must come from the same weights (freeze(qat_model)).
    ParityChecker(nn::Sequential& qat_model, infer::Model& int8_model);
    ~ParityChecker();
    // images: n x C x H x W, normalized as the model input.
    void add_batch(const float* images, int n);
    const ParityReport& report() const { return report_; }

private:
    // Compares every quantization point's stored integers, op by op.
    void compare_points(int n);
    nn::Sequential& qat_;
    infer::Model& int8_;
    std::map<std::string, ActivationQuant*> points_;  // by name
    ParityReport report_;
};

}  // namespace qf::quant
