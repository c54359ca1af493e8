// Ops that add tensors or move values without computing on them: add,
// concat_channels, reshape, flatten. Storage is contiguous and owns its shape,
// so reshape and flatten copy (one memcpy) rather than alias.
#include <cstring>
#include <stdexcept>

#include "autograd/grad_buffer.h"
#include "autograd/ops.h"

namespace qf {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

// dst[i] += src[i] for i < n
void accumulate(float* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}
}  // namespace

// ---- add ----------------------------------------------------------------------

// a, b (same shape) -> a + b (that shape)
Tensor add(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape())
        throw std::invalid_argument("add: shapes " + shape_str(a.shape()) + " and " +
                                    shape_str(b.shape()) + " differ");
    const int64_t n = a.numel();
    Tensor out = Tensor::empty(a.shape());
    const float* ap = a.data();
    const float* bp = b.data();
    float* outp = out.data();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) outp[i] = ap[i] + bp[i];

    if (needs_grad({&a, &b})) {
        // When a and b are the same tensor (x + x) both accumulations land in
        // the one gradient, giving 2 * dout. Otherwise one input may take
        // dout's buffer (grad_buffer.h), after the other added dout to its own.
        record("add", out, [a = a, b = b, out, n]() mutable {
            const bool distinct = !a.same(b);
            Tensor* taker = distinct && can_hand_grad(out, a)   ? &a
                            : distinct && can_hand_grad(out, b) ? &b
                                                                : nullptr;
            for (Tensor* t : {&a, &b})
                if (t != taker && t->requires_grad()) accumulate(t->grad(), out.grad(), n);
            if (taker) masked_backward(out, *taker, [](int64_t) { return true; });
        });
    }
    return out;
}

// ---- concat_channels ----------------------------------------------------------

// xs[k] (N, Ck, ...) with the same N and trailing dims -> (N, sum Ck, ...).
// Letters: inner = product of the dims after the channel, so input k's row n
// is Ck*inner contiguous floats, landing at offset[k]*inner in output row n.
Tensor concat_channels(const std::vector<Tensor>& xs) {
    if (xs.empty()) throw std::invalid_argument("concat_channels: no inputs");
    const Shape& first = xs[0].shape();
    if (first.size() < 2)
        throw std::invalid_argument("concat_channels: inputs need a channel axis, got " + shape_str(first));
    int64_t total_channels = 0;
    for (const Tensor& x : xs) {
        bool ok = x.ndim() == (int)first.size() && x.dim(0) == first[0];
        for (size_t i = 2; ok && i < first.size(); i++) ok = x.dim((int)i) == first[i];
        if (!ok)
            throw std::invalid_argument("concat_channels: shape " + shape_str(x.shape()) +
                                        " does not match " + shape_str(first) +
                                        " outside the channel axis");
        total_channels += x.dim(1);
    }
    const int64_t N = first[0];
    const int64_t inner = shape_numel(first) / std::max<int64_t>(1, first[0] * first[1]);
    Shape out_shape = first;
    out_shape[1] = total_channels;
    Tensor out = Tensor::empty(out_shape);
    const int64_t out_row = total_channels * inner;

    std::vector<int64_t> offset(xs.size());  // first output channel of each input
    for (size_t k = 0, c = 0; k < xs.size(); c += xs[k].dim(1), k++) offset[k] = (int64_t)c;

    float* outp = out.data();
#pragma omp parallel for schedule(static) if (N * out_row > kParallelMin)
    for (int64_t n = 0; n < N; n++)
        for (size_t k = 0; k < xs.size(); k++) {
            const int64_t row = xs[k].dim(1) * inner;
            std::memcpy(outp + n * out_row + offset[k] * inner, xs[k].data() + n * row,
                        row * sizeof(float));
        }

    bool any_requires_grad = false;
    for (const Tensor& x : xs) any_requires_grad |= x.requires_grad();
    if (grad_enabled() && any_requires_grad) {
        record("concat_channels", out, [xs = xs, offset = std::move(offset), out, N, inner, out_row]() mutable {
            const float* dout = out.grad();
            // One input at a time: the same tensor may appear twice in xs.
            for (size_t k = 0; k < xs.size(); k++) {
                if (!xs[k].requires_grad()) continue;
                const int64_t row = xs[k].dim(1) * inner;
                float* dx = xs[k].grad();
                const float* src = dout + offset[k] * inner;
#pragma omp parallel for schedule(static) if (N * row > kParallelMin)
                for (int64_t n = 0; n < N; n++)
                    for (int64_t i = 0; i < row; i++) dx[n * row + i] += src[n * out_row + i];
            }
        });
    }
    return out;
}

// ---- reshape, flatten ---------------------------------------------------------

namespace {
// The copy with a new shape behind reshape and flatten; `op` names the caller.
Tensor copy_with_shape(const char* op, const Tensor& x, const Shape& shape) {
    const int64_t n = x.numel();
    Tensor out = Tensor::empty(shape);
    std::memcpy(out.data(), x.data(), n * sizeof(float));
    if (needs_grad({&x})) {
        record(op, out, [x = x, out, n]() mutable { accumulate(x.grad(), out.grad(), n); });
    }
    return out;
}
}  // namespace

// x (any shape) -> the same values in `shape`; one dim may be -1 (inferred).
Tensor reshape(const Tensor& x, const Shape& shape) {
    Shape resolved = shape;
    int inferred = -1;
    int64_t known = 1;
    for (size_t i = 0; i < shape.size(); i++) {
        if (shape[i] == -1 && inferred < 0) {
            inferred = (int)i;
        } else if (shape[i] < 0) {
            throw std::invalid_argument("reshape: bad target shape " + shape_str(shape) + " for " +
                                        shape_str(x.shape()));
        } else {
            known *= shape[i];
        }
    }
    if (inferred >= 0 && known > 0 && x.numel() % known == 0) resolved[inferred] = x.numel() / known;
    if ((inferred >= 0 && resolved[inferred] < 0) || shape_numel(resolved) != x.numel())
        throw std::invalid_argument("reshape: cannot view " + shape_str(x.shape()) + " as " +
                                    shape_str(shape));
    return copy_with_shape("reshape", x, resolved);
}

// x (N, ...) -> (N, product of the rest)
Tensor flatten(const Tensor& x) {
    if (x.ndim() < 1) throw std::invalid_argument("flatten: x of shape " + shape_str(x.shape()) + " has no batch axis");
    int64_t rest = 1;
    for (int i = 1; i < x.ndim(); i++) rest *= x.dim(i);
    return copy_with_shape("flatten", x, {x.dim(0), rest});
}

}  // namespace qf
