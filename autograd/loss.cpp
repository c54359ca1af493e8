// Softmax cross-entropy with label smoothing, as PyTorch 1.13's
// F.cross_entropy(logits, labels, label_smoothing=eps), reduction "mean".
//
// Letters: N rows, K classes. With logp = log_softmax(logits row) and the
// target t_k = (1 - eps) * [k == label] + eps / K:
//   loss_n = -sum_k t_k * logp_k = (1 - eps) * (-logp_label) + eps * (-sum_k logp_k) / K
//   loss   = mean_n loss_n
//   dlogits_nk = (softmax_nk - t_nk) / N * dloss
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/ops.h"

namespace qf {

// logits (N, K), labels (N) in [0, K) -> loss () (one element)
Tensor cross_entropy(const Tensor& logits, const std::vector<int32_t>& labels,
                     float label_smoothing) {
    if (logits.ndim() != 2)
        throw std::invalid_argument("cross_entropy: logits must be (N, K), got " + shape_str(logits.shape()));
    const int64_t N = logits.dim(0), K = logits.dim(1);
    if ((int64_t)labels.size() != N)
        throw std::invalid_argument("cross_entropy: " + std::to_string(labels.size()) +
                                    " labels for logits of shape " + shape_str(logits.shape()));
    if (N == 0 || K == 0)
        throw std::invalid_argument("cross_entropy: empty logits of shape " + shape_str(logits.shape()));
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
        throw std::invalid_argument("cross_entropy: label_smoothing " + std::to_string(label_smoothing) +
                                    " is outside [0, 1]");
    for (int64_t n = 0; n < N; n++)
        if (labels[n] < 0 || labels[n] >= K)
            throw std::invalid_argument("cross_entropy: label " + std::to_string(labels[n]) + " at index " +
                                        std::to_string(n) + " is outside [0, " + std::to_string(K) + ")");

    const float eps = label_smoothing;
    const float* inp = logits.data();
    // The softmax, kept for the backward (N*K floats, a small fraction of any
    // activation that feeds it).
    std::vector<float> probs(N * K);
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        const float* row = inp + n * K;
        float* p = probs.data() + n * K;
        // log-softmax stabilized by the row maximum: logp_k = z_k - max - log(sum exp(z - max)).
        float maxv = row[0];
        for (int64_t k = 1; k < K; k++) maxv = std::max(maxv, row[k]);
        double sum_exp = 0, sum_shifted = 0;
        for (int64_t k = 0; k < K; k++) {
            const float shifted = row[k] - maxv;
            p[k] = std::exp(shifted);
            sum_exp += p[k];
            sum_shifted += shifted;
        }
        const double log_sum_exp = std::log(sum_exp);
        const float inv_sum = (float)(1.0 / sum_exp);
        for (int64_t k = 0; k < K; k++) p[k] *= inv_sum;
        const double nll = log_sum_exp - (row[labels[n]] - maxv);          // -logp_label
        const double smooth = log_sum_exp - sum_shifted / K;                // -mean_k logp_k
        total += (1.0 - eps) * nll + eps * smooth;
    }
    Tensor out = Tensor::from({}, {(float)(total / N)});

    if (needs_grad({&logits})) {
        record("cross_entropy", out, [logits = logits, labels, probs = std::move(probs), out, N, K, eps]() mutable {
            const float scale = out.grad()[0] / N;
            const float off_target = eps / K;
            float* dlogits = logits.grad();
            for (int64_t n = 0; n < N; n++) {
                const float* p = probs.data() + n * K;
                float* d = dlogits + n * K;
                for (int64_t k = 0; k < K; k++) d[k] += (p[k] - off_target) * scale;
                d[labels[n]] -= (1.0f - eps) * scale;
            }
        });
    }
    return out;
}

}  // namespace qf
