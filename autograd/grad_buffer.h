// Backwards that hand their output's gradient buffer to their input.
//
// An elementwise op's backward normally zero-fills its input's gradient
// (Tensor::grad()) and adds into it: dx = 0 + f(dy). When the input has no
// gradient yet, it may instead compute f(dy) in place in the output's
// gradient buffer and move that buffer to the input: one pass over memory
// instead of three (zero-fill, read dy, read-modify-write dx), and one buffer
// fewer. This leans on the tape's rule (autograd/tensor.cpp backward()): an
// intermediate's gradient is read by nobody after its producer's backward ran
// (the tape hands it back to the pool right then). The loss keeps its
// gradient; it holds one element, below kMinHandedElements, so it is never
// taken. (backward(out, dout) from a non-scalar result of that size or more
// may leave `out` without its gradient: read the inputs' gradients only.)
//
// Results are those of the zero-filled path bit for bit as long as the op
// writes f(dy) + 0.0f (so a -0 becomes +0, as 0 + -0 does). Users: relu,
// relu6 (activation.cpp), add (shape_ops.cpp), scale_channels, and the
// straight-through backward of fake_quantize (quant/fake_quant.cpp).
#pragma once
#include <bit>
#include <cstdint>
#include <utility>

#include "autograd/tensor.h"

namespace qf {

// Small tensors keep the plain path: nothing to save there.
constexpr int64_t kMinHandedElements = 1 << 14;

// Whether the backward of an op x -> out (same number of elements) may work
// in out's gradient buffer and then hand it to x.
inline bool can_hand_grad(const Tensor& out, const Tensor& x) {
    return x.requires_grad() && !x.has_grad() && out.has_grad() && out.numel() == x.numel() &&
           out.numel() >= kMinHandedElements && !out.same(x);
}

// Moves out's gradient buffer (now holding dx) to x.
inline void hand_grad(Tensor& out, Tensor& x) {
    x.storage()->grad = std::move(out.storage()->grad);
    out.storage()->grad.clear();
}

// The backward of an elementwise op x -> out whose dx is dy or 0 element by
// element: dx[i] = keep(i) ? dy[i] : 0, computed in out's gradient buffer and
// handed to x when can_hand_grad(out, x), else added to x's gradient. keep
// must be pure (it runs in parallel, vectorized). In place, dx = keep ? dy +
// 0 : +0, which is what 0 + (keep ? dy : 0) gives; the select is a mask on
// the bits, as GCC (under its default -ftrapping-math) sinks the + 0 into a
// float select's branch and leaves the loop scalar and branchy.
template <class Keep>
void masked_backward(Tensor& out, Tensor& x, Keep keep) {
    constexpr int64_t kParallelMin = 1 << 15;  // below it a parallel region costs more than it saves
    const int64_t n = x.numel();
    if (can_hand_grad(out, x)) {
        float* d = out.grad();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
        for (int64_t i = 0; i < n; i++) {
            const uint32_t mask = keep(i) ? ~0u : 0u;
            d[i] = std::bit_cast<float>(std::bit_cast<uint32_t>(d[i] + 0.0f) & mask);
        }
        hand_grad(out, x);
        return;
    }
    const float* dy = out.grad();
    float* dx = x.grad();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) dx[i] += keep(i) ? dy[i] : 0.0f;
}

}  // namespace qf
