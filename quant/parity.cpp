#include "quant/parity.h"

#include <cmath>
#include <sstream>

namespace qf::quant {

std::string ParityReport::summary() const {
    std::ostringstream s;
    s << "parity over " << images << " images: same top-1 " << same_top1 << " (" << top1_agreement()
      << "%), quantized logits exact " << logits_exact << "/" << logits << ", within 1 step " << logits_within_one
      << " (" << within_one() << "%)\n";
    s << (first_divergence.empty() ? std::string("no op differs from the fake-quant forward by more than 1 step")
                                   : "first op differing by more than 1 step: " + first_divergence)
      << "\n";
    for (const Point& p : points)
        if (p.differ > 0) {
            s << "first op differing at all: '" << p.op << "': " << p.differ << " of " << p.values
              << " values (" << 100.0 * p.differ / p.values << "%)\n";
            break;
        }
    return s.str();
}

std::string ParityReport::per_point() const {
    std::ostringstream s;
    for (const Point& p : points)
        s << "  " << p.op << ": " << p.differ << " of " << p.values << " values differ by 1 step or more, "
          << p.differ_more << " by more than 1\n";
    return s.str();
}

ParityChecker::ParityChecker(nn::Sequential& qat_model, infer::Model& int8_model)
    : qat_(qat_model), int8_(int8_model) {
    int8_.keep_op_outputs();  // compare_points reads every op's output
    visit_qat(qat_, {.conv = {}, .linear = {}, .activation = [&](ActivationQuant& a) {
                         a.keep_output = true;
                         points_[a.name()] = &a;
                     }});
}

ParityChecker::~ParityChecker() {
    for (auto& [name, a] : points_) {
        a->keep_output = false;
        a->last_output = Tensor();
    }
}

namespace {
// The integer the fake-quant value y stands for, as the int8 graph stores it.
int32_t stored_integer(float y, const QuantParams& p, const QuantScheme& s) {
    return (int32_t)std::nearbyint(y / p.scales[0]) + p.zero_points[0] - (s.is_signed ? 0 : 128);
}
}  // namespace

void ParityChecker::add_batch(const float* images, int n) {
    const bool was_training = qat_.training();
    qat_.eval();
    const auto& in = int8_.input();
    Tensor sim;
    {
        NoGrad ng;
        sim = qat_.forward(Tensor::from({n, in.channels, in.height, in.width},
                                        std::vector<float>(images, images + (size_t)n * in.channels * in.height * in.width)));
    }
    qat_.train(was_training);
    std::span<const int8_t> q = int8_.run_quantized(images, n);
    const int K = int8_.num_classes();
    const double s = int8_.output().scale;
    const int32_t z = int8_.output().zero_point;
    for (int i = 0; i < n; i++) {
        int best_sim = 0, best_int = 0;
        double best_qs = -1e300;
        for (int k = 0; k < K; k++) {
            const double qs = std::nearbyint(sim.data()[i * K + k] / s) + z;
            const int qi = q[size_t(i) * K + k];
            report_.logits_within_one += std::fabs(qs - qi) <= 1;
            report_.logits_exact += qs == qi;
            if (qs > best_qs) best_qs = qs, best_sim = k;
            if (qi > q[size_t(i) * K + best_int]) best_int = k;
        }
        report_.same_top1 += best_sim == best_int;
    }
    report_.images += n;
    report_.logits += int64_t(n) * K;
    compare_points(n);
}

void ParityChecker::compare_points(int n) {
    size_t next_point = 0;
    for (int op = 0; op < int8_.num_ops(); op++) {
        const infer::Model::OpOutput out = int8_.op_output(op);
        // freeze names an op's quantization point "<op>.out", and a block's
        // residual add "<block>.add" has the block's point "<block>.out".
        std::string point = out.name + ".out";
        if (out.name.size() > 4 && out.name.compare(out.name.size() - 4, 4, ".add") == 0)
            point = out.name.substr(0, out.name.size() - 4) + ".out";
        auto it = points_.find(point);
        if (it == points_.end() || !it->second->last_output.defined()) continue;
        const ActivationQuant& a = *it->second;
        const Tensor& y = a.last_output;  // NCHW (or NC)
        const QuantParams p = a.qparams();
        const int C = out.c, HW = out.h * out.w;
        if (y.numel() != int64_t(n) * C * HW) continue;
        int64_t bad = 0, differ = 0, worst = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++)
                for (int hw = 0; hw < HW; hw++) {
                    const int32_t qs = stored_integer(y.data()[(int64_t(i) * C + c) * HW + hw], p, a.scheme());
                    const int32_t qi = out.data[(int64_t(i) * HW + hw) * C + c];
                    const int64_t d = std::abs(int64_t(qs) - qi);
                    bad += d > 1;
                    differ += d > 0;
                    worst = std::max(worst, d);
                }
        if (next_point == report_.points.size()) report_.points.push_back({out.name});
        ParityReport::Point& pt = report_.points[next_point++];
        pt.values += int64_t(n) * C * HW;
        pt.differ += differ;
        pt.differ_more += bad;
        if (bad > 0 && report_.first_divergence.empty()) {
            report_.first_divergence = "op " + std::to_string(op) + " '" + out.name + "': " + std::to_string(bad) +
                                       " of " + std::to_string(int64_t(n) * C * HW) +
                                       " values, by up to " + std::to_string(worst) + " steps";
        }
    }
}

}  // namespace qf::quant
