// Element-wise activations: relu(x) = max(x, 0), relu6(x) = min(max(x, 0), 6).
//
// x and y have any shape; n = numel. The backwards read the output, not the
// input: y > 0 exactly where x > 0, and 0 < y < 6 exactly where 0 < x < 6,
// so x need not be kept alive. At the kinks (x = 0, x = 6) the gradient is 0,
// as PyTorch's. The backwards work in the output's gradient buffer when they
// can (grad_buffer.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/grad_buffer.h"
#include "autograd/ops.h"

namespace qf {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
constexpr float kInf = std::numeric_limits<float>::infinity();

// out[i] = f(in[i]) for i < n; with `range`, also its finite min/max.
template <class F>
void map_elements(const float* in, float* out, int64_t n, F f, FiniteMinMax* range) {
    if (!range) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
        for (int64_t i = 0; i < n; i++) out[i] = f(in[i]);
        return;
    }
    // Map a block, then measure it while it is in L1: in one loop GCC
    // if-converted f into masked stores (vmaskmovps, microcoded on AMD), which
    // made this 3x the cost of the plain map.
    constexpr int64_t kBlock = 2048;
    float lo = kInf, hi = -kInf;
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi) if (n > kParallelMin)
    for (int64_t first = 0; first < n; first += kBlock) {
        const int64_t last = std::min(n, first + kBlock);
#pragma omp simd
        for (int64_t i = first; i < last; i++) out[i] = f(in[i]);
        const FiniteMinMax block = finite_min_max(out + first, last - first);
        lo = std::min(lo, block.min);
        hi = std::max(hi, block.max);
    }
    *range = {lo, hi};
}
}  // namespace

// x (any shape) -> y (same shape)
Tensor relu(const Tensor& x, FiniteMinMax* out_range) {
    Tensor out = Tensor::empty(x.shape());
    map_elements(x.data(), out.data(), x.numel(), [](float v) { return v < 0.0f ? 0.0f : v; },  // NaN stays NaN
                 out_range);

    if (needs_grad({&x})) {
        record("relu", out, [x = x, out]() mutable {
            const float* outp = out.data();
            masked_backward(out, x, [outp](int64_t i) { return outp[i] > 0.0f; });
        });
    }
    return out;
}

// x (any shape) -> y (same shape)
Tensor relu6(const Tensor& x, FiniteMinMax* out_range) {
    Tensor out = Tensor::empty(x.shape());
    map_elements(
        x.data(), out.data(), x.numel(),
        [](float v) {
            v = v < 0.0f ? 0.0f : v;  // NaN stays NaN
            return v > 6.0f ? 6.0f : v;
        },
        out_range);

    if (needs_grad({&x})) {
        record("relu6", out, [x = x, out]() mutable {
            const float* outp = out.data();
            masked_backward(out, x, [outp](int64_t i) { return (outp[i] > 0.0f) & (outp[i] < 6.0f); });
        });
    }
    return out;
}

}  // namespace qf
