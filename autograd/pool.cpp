// Pooling: max, average and global average, forward and backward side by
// side. Letters: N batch, C channels, H W input size, OH OW output size,
// k kernel, s stride, p padding. Every (n, c) plane is independent, so
// OpenMP splits the N*C planes; no two threads write the same plane.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/ops.h"

namespace qf {

namespace {

struct PoolDims {
    int64_t planes, H, W, OH, OW, k, s, p;
};

PoolDims pool_dims(const char* op, const Tensor& x, int kernel, int stride, int padding) {
    if (!x.defined() || x.ndim() != 4)
        throw std::invalid_argument(std::string(op) + ": x " +
                                    (x.defined() ? shape_str(x.shape()) : "undefined") +
                                    " must be (N, C, H, W)");
    // PyTorch's limit: a window must never lie entirely in the padding.
    if (kernel < 1 || stride < 1 || padding < 0 || padding > kernel / 2)
        throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(kernel) +
                                    ", stride " + std::to_string(stride) + ", padding " +
                                    std::to_string(padding) +
                                    ": need kernel >= 1, stride >= 1, 0 <= padding <= kernel/2");
    PoolDims d;
    d.planes = x.dim(0) * x.dim(1), d.H = x.dim(2), d.W = x.dim(3);
    d.k = kernel, d.s = stride, d.p = padding;
    if (d.H + 2 * d.p < d.k || d.W + 2 * d.p < d.k)
        throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(kernel) +
                                    " does not fit x " + shape_str(x.shape()) + " with padding " +
                                    std::to_string(padding));
    d.OH = (d.H + 2 * d.p - d.k) / d.s + 1;
    d.OW = (d.W + 2 * d.p - d.k) / d.s + 1;
    return d;
}

// ---- max pool ---------------------------------------------------------------

// Keeps the running maximum of a window: a tap replaces it when larger, or
// when it is a NaN, unless a NaN is already in (PyTorch's rule: a NaN wins
// and stays; the first of equal values wins). Branch-free: on real
// activations "is this tap larger" is a coin toss.
inline void keep_max(float v, int32_t i, float& best, int32_t& best_i) {
    const bool take = !(v <= best) && best == best;  // best == best: not a NaN
    best = take ? v : best;
    best_i = take ? i : best_i;
}

// x (planes, H, W) -> out (planes, OH, OW), argmax (planes, OH, OW): the index
// within its input plane of the element each output took.
void max_pool_forward(const float* x, float* out, int32_t* argmax, const PoolDims& d) {
    const bool two_by_two = d.k == 2 && d.s == 2 && d.p == 0;  // the common case, unrolled
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < d.planes; pl++) {
        const float* xp = x + pl * d.H * d.W;
        float* op = out + pl * d.OH * d.OW;
        int32_t* ap = argmax + pl * d.OH * d.OW;
        if (two_by_two) {
            // Independent windows side by side: vectorized across ow (a
            // scalar chain of compare-and-select per window is latency bound).
            for (int64_t oh = 0; oh < d.OH; oh++) {
                const float* r0 = xp + 2 * oh * d.W;
                const float* r1 = r0 + d.W;
                const int32_t i0 = int32_t(2 * oh * d.W), i1 = int32_t(i0 + d.W);
#pragma omp simd
                for (int64_t ow = 0; ow < d.OW; ow++) {
                    const int32_t c = int32_t(2 * ow);
                    float best = r0[c];
                    int32_t best_i = i0 + c;
                    keep_max(r0[c + 1], i0 + c + 1, best, best_i);
                    keep_max(r1[c], i1 + c, best, best_i);
                    keep_max(r1[c + 1], i1 + c + 1, best, best_i);
                    op[oh * d.OW + ow] = best;
                    ap[oh * d.OW + ow] = best_i;
                }
            }
            continue;
        }
        for (int64_t oh = 0; oh < d.OH; oh++) {
            // The window's rows inside the input (never empty: padding <= kernel / 2).
            const int64_t h0 = std::max<int64_t>(oh * d.s - d.p, 0), h1 = std::min(oh * d.s - d.p + d.k, d.H);
            for (int64_t ow = 0; ow < d.OW; ow++) {
                const int64_t w0 = std::max<int64_t>(ow * d.s - d.p, 0), w1 = std::min(ow * d.s - d.p + d.k, d.W);
                int32_t best_i = int32_t(h0 * d.W + w0);
                float best = xp[best_i];
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = ih == h0 ? w0 + 1 : w0; iw < w1; iw++)
                        keep_max(xp[ih * d.W + iw], int32_t(ih * d.W + iw), best, best_i);
                op[oh * d.OW + ow] = best;
                ap[oh * d.OW + ow] = best_i;
            }
        }
    }
}

// dout (planes, OH, OW) -> dx (planes, H, W) += dout at each argmax
void max_pool_backward(const float* dout, const int32_t* argmax, float* dx, const PoolDims& d) {
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < d.planes; pl++) {
        float* dxp = dx + pl * d.H * d.W;
        const int64_t o0 = pl * d.OH * d.OW;
        for (int64_t o = o0; o < o0 + d.OH * d.OW; o++) dxp[argmax[o]] += dout[o];
    }
}

// ---- average pool -----------------------------------------------------------

// x (planes, H, W) -> out (planes, OH, OW); the divisor is always k*k
// (padding counts as zeros, PyTorch's count_include_pad=True).
void avg_pool_forward(const float* x, float* out, const PoolDims& d) {
    const float inv = 1.0f / (float)(d.k * d.k);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < d.planes; pl++) {
        const float* xp = x + pl * d.H * d.W;
        for (int64_t oh = 0; oh < d.OH; oh++)
            for (int64_t ow = 0; ow < d.OW; ow++) {
                float s = 0;
                for (int64_t kh = 0; kh < d.k; kh++) {
                    const int64_t ih = oh * d.s - d.p + kh;
                    if (ih < 0 || ih >= d.H) continue;
                    for (int64_t kw = 0; kw < d.k; kw++) {
                        const int64_t iw = ow * d.s - d.p + kw;
                        if (iw >= 0 && iw < d.W) s += xp[ih * d.W + iw];
                    }
                }
                out[(pl * d.OH + oh) * d.OW + ow] = s * inv;
            }
    }
}

// dout (planes, OH, OW) -> dx (planes, H, W) += dout / (k*k) over each window
void avg_pool_backward(const float* dout, float* dx, const PoolDims& d) {
    const float inv = 1.0f / (float)(d.k * d.k);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < d.planes; pl++) {
        float* dxp = dx + pl * d.H * d.W;
        for (int64_t oh = 0; oh < d.OH; oh++)
            for (int64_t ow = 0; ow < d.OW; ow++) {
                const float g = dout[(pl * d.OH + oh) * d.OW + ow] * inv;
                for (int64_t kh = 0; kh < d.k; kh++) {
                    const int64_t ih = oh * d.s - d.p + kh;
                    if (ih < 0 || ih >= d.H) continue;
                    for (int64_t kw = 0; kw < d.k; kw++) {
                        const int64_t iw = ow * d.s - d.p + kw;
                        if (iw >= 0 && iw < d.W) dxp[ih * d.W + iw] += g;
                    }
                }
            }
    }
}

// ---- global average pool ----------------------------------------------------

// x (planes, HW) -> out (planes)
void global_avg_pool_forward(const float* x, float* out, int64_t planes, int64_t HW) {
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        float s = 0;
        for (int64_t i = 0; i < HW; i++) s += x[pl * HW + i];
        out[pl] = s / (float)HW;
    }
}

// dout (planes) -> dx (planes, HW) += dout / HW
void global_avg_pool_backward(const float* dout, float* dx, int64_t planes, int64_t HW) {
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float g = dout[pl] / (float)HW;
        for (int64_t i = 0; i < HW; i++) dx[pl * HW + i] += g;
    }
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int padding) {
    const PoolDims d = pool_dims("max_pool2d", x, kernel, stride, padding);
    Tensor out = Tensor::empty({x.dim(0), x.dim(1), d.OH, d.OW});
    const bool grad = needs_grad({&x});
    // The argmax indices live only as long as the backward that reads them.
    std::vector<int32_t> argmax(out.numel());
    max_pool_forward(x.data(), out.data(), argmax.data(), d);
    if (grad) {
        // x = x: a non-const copy of the handle, whose grad() the backward fills.
        record("max_pool2d", out, [x = x, out, d, argmax = std::move(argmax)]() mutable {
            max_pool_backward(out.grad(), argmax.data(), x.grad(), d);
        });
    }
    return out;
}

Tensor avg_pool2d(const Tensor& x, int kernel, int stride, int padding) {
    const PoolDims d = pool_dims("avg_pool2d", x, kernel, stride, padding);
    Tensor out = Tensor::empty({x.dim(0), x.dim(1), d.OH, d.OW});
    avg_pool_forward(x.data(), out.data(), d);
    if (needs_grad({&x})) {
        record("avg_pool2d", out, [x = x, out, d]() mutable {
            avg_pool_backward(out.grad(), x.grad(), d);
        });
    }
    return out;
}

Tensor global_avg_pool(const Tensor& x) {
    if (!x.defined() || x.ndim() != 4 || x.dim(2) * x.dim(3) == 0)
        throw std::invalid_argument("global_avg_pool: x " +
                                    (x.defined() ? shape_str(x.shape()) : std::string("undefined")) +
                                    " must be (N, C, H, W) with H*W > 0");
    const int64_t planes = x.dim(0) * x.dim(1), HW = x.dim(2) * x.dim(3);
    Tensor out = Tensor::empty({x.dim(0), x.dim(1)});
    global_avg_pool_forward(x.data(), out.data(), planes, HW);
    if (needs_grad({&x})) {
        record("global_avg_pool", out, [x = x, out, planes, HW]() mutable {
            global_avg_pool_backward(out.grad(), x.grad(), planes, HW);
        });
    }
    return out;
}

}  // namespace qf
