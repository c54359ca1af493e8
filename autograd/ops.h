// The differentiable ops. Each computes its result and, when an input requires
// grad and recording is on, records its backward on the tape (tensor.h).
// Layouts: images are NCHW; conv weights are (OC, C/groups, KH, KW);
// linear weights are (OUT, IN) as in PyTorch. An undefined Tensor() means
// "no bias". Shapes are checked; a mismatch throws std::invalid_argument
// naming the op and both shapes.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "autograd/tensor.h"

namespace qf {

// x (N, IN), w (OUT, IN), b (OUT) or undefined -> (N, OUT)
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

struct Conv2dParams {
    int stride = 1;
    int padding = 0;
    int groups = 1;
};
// x (N, C, H, W), w (OC, C/groups, KH, KW), b (OC) or undefined
// -> (N, OC, (H + 2p - KH)/s + 1, (W + 2p - KW)/s + 1)
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, Conv2dParams p);

// x (N, C, H, W) or (N, C); gamma, beta, running_mean, running_var (C).
// training: normalize with the batch mean and biased variance, and update the
// running statistics in place (running = (1-momentum)*running + momentum*batch,
// the unbiased variance, as PyTorch). eval: normalize with the running statistics.
// input_scale (C), optional: normalize x * input_scale[c] (a constant, no
// gradient) without writing that product out: QAT's BN folding divides the
// folded conv's output by the BN scale right before this batch norm.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  Tensor& running_mean, Tensor& running_var, bool training, float momentum,
                  float eps, const Tensor& input_scale = Tensor());

// Synchronized batch norm (data-parallel training): while set, training-mode
// batch_norm takes its statistics over the batch of every process rather
// than this process's part of it. `sum` replaces n doubles by their sum over
// the processes; forward sums the count, sum and sum of squares per channel,
// backward sum(dy) and sum(dy * xhat). Every process must then run the same
// batch_norm calls in the same order. An empty function (the default): each
// process normalizes with its own statistics.
using SumOverProcesses = std::function<void(double* data, int64_t n)>;
void set_batch_norm_sync(SumOverProcesses sum);

// The smallest and largest finite value of a tensor (min > max: it had none);
// quant/ calls it a Range (what an observer saw).
struct FiniteMinMax {
    float min = 0.0f, max = 0.0f;
};
// false for NaN and +-inf; a comparison, so loops using it vectorize.
inline bool is_finite_value(float v) { return std::fabs(v) <= std::numeric_limits<float>::max(); }
// The finite min/max of p[0, n), on the calling thread; {+inf, -inf} when
// there are none. (Plain selects, not std::min/max, which return references:
// with those GCC 12 left this loop scalar and branchy.)
inline FiniteMinMax finite_min_max(const float* p, int64_t n) {
    constexpr float inf = std::numeric_limits<float>::infinity();
    float lo = inf, hi = -inf;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t i = 0; i < n; i++) {
        const float v = p[i];
        const bool ok = is_finite_value(v);
        const float for_min = ok ? v : inf, for_max = ok ? v : -inf;
        lo = for_min < lo ? for_min : lo;
        hi = for_max > hi ? for_max : hi;
    }
    return {lo, hi};
}
// out_range, when given, gets the finite min/max of the output, measured
// block by block as it is written (QAT's activation observers would
// otherwise read the whole output again).
Tensor relu(const Tensor& x, FiniteMinMax* out_range = nullptr);
Tensor relu6(const Tensor& x, FiniteMinMax* out_range = nullptr);

// x (N, C, H, W); padding counts as -inf for max, as zeros (included in the
// divisor, PyTorch's count_include_pad=True) for average.
Tensor max_pool2d(const Tensor& x, int kernel, int stride, int padding = 0);
Tensor avg_pool2d(const Tensor& x, int kernel, int stride, int padding = 0);
// x (N, C, H, W) -> (N, C)
Tensor global_avg_pool(const Tensor& x);

// a, b of the same shape
Tensor add(const Tensor& a, const Tensor& b);
// xs (N, Ci, H, W) -> (N, sum Ci, H, W)
Tensor concat_channels(const std::vector<Tensor>& xs);
// Same values in a new shape (numel must match).
Tensor reshape(const Tensor& x, const Shape& shape);
// (N, ...) -> (N, prod ...)
Tensor flatten(const Tensor& x);

// y = x * s[c] with c the index along `axis`: x (..., C, ...), s (C).
Tensor scale_channels(const Tensor& x, const Tensor& s, int axis);

// logits (N, K), labels in [0, K) -> mean over the batch of softmax cross-entropy,
// with the target (1 - eps) on the label and eps / K spread on every class.
Tensor cross_entropy(const Tensor& logits, const std::vector<int32_t>& labels,
                     float label_smoothing = 0.0f);

}  // namespace qf
