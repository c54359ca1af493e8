// linear: forward and backward side by side. Letters: N batch, IN input
// features, OUT output features. The weight is (OUT, IN) as in PyTorch, so
// every product is one GEMM over the whole batch.
#include <stdexcept>
#include <string>

#include "autograd/gemm.h"
#include "autograd/ops.h"

namespace qf {

namespace {

// x (N, IN), w (OUT, IN), b (OUT) or null -> out (N, OUT) = x @ w^T + b
void linear_forward(const float* x, const float* w, const float* b, float* out, int64_t N,
                    int64_t IN, int64_t OUT) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < OUT; o++) out[n * OUT + o] = b ? b[o] : 0.0f;
    sgemm(false, true, N, OUT, IN, 1.0f, x, IN, w, IN, 1.0f, out, OUT);
}

// dout (N, OUT) -> dx (N, IN) +=, dw (OUT, IN) +=, db (OUT) +=; each may be null.
void linear_backward(const float* x, const float* w, const float* dout, float* dx, float* dw,
                     float* db, int64_t N, int64_t IN, int64_t OUT) {
    if (dx) sgemm(false, false, N, IN, OUT, 1.0f, dout, OUT, w, IN, 1.0f, dx, IN);   // dout @ w
    if (dw) sgemm(true, false, OUT, IN, N, 1.0f, dout, OUT, x, IN, 1.0f, dw, IN);    // dout^T @ x
    if (db)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < OUT; o++) db[o] += dout[n * OUT + o];
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
    if (!x.defined() || !w.defined()) throw std::invalid_argument("linear: x and weight must be defined");
    if (x.ndim() != 2 || w.ndim() != 2 || x.dim(1) != w.dim(1))
        throw std::invalid_argument("linear: x " + shape_str(x.shape()) + " must be (N, IN) and weight " +
                                    shape_str(w.shape()) + " (OUT, IN)");
    if (b.defined() && (b.ndim() != 1 || b.dim(0) != w.dim(0)))
        throw std::invalid_argument("linear: bias " + shape_str(b.shape()) + " does not match weight " +
                                    shape_str(w.shape()));
    const int64_t N = x.dim(0), IN = x.dim(1), OUT = w.dim(0);
    Tensor out = Tensor::empty({N, OUT});
    linear_forward(x.data(), w.data(), b.defined() ? b.data() : nullptr, out.data(), N, IN, OUT);

    if (needs_grad({&x, &w, &b})) {
        // x = x: a non-const copy of each handle, whose grad() the backward fills.
        record("linear", out, [x = x, w = w, b = b, out, N, IN, OUT]() mutable {
            linear_backward(x.data(), w.data(), out.grad(), x.requires_grad() ? x.grad() : nullptr,
                            w.requires_grad() ? w.grad() : nullptr,
                            b.defined() && b.requires_grad() ? b.grad() : nullptr, N, IN, OUT);
        });
    }
    return out;
}

}  // namespace qf
