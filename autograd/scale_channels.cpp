// scale_channels: y = x * s[c], c the index along `axis`. QAT uses it to fold
// BatchNorm's scale into conv weights (axis 0) and to take it back out of the
// conv output (axis 1). The backward works in the output's gradient buffer
// when it can (grad_buffer.h).
#include <stdexcept>

#include "autograd/grad_buffer.h"
#include "autograd/ops.h"

namespace qf {

namespace {
// x seen as (outer, C, inner) around the axis.
struct Layout {
    int64_t outer = 1, C = 1, inner = 1;
};

Layout layout_of(const Tensor& x, int axis) {
    Layout l;
    for (int i = 0; i < x.ndim(); i++) {
        if (i < axis) l.outer *= x.dim(i);
        else if (i == axis) l.C = x.dim(i);
        else l.inner *= x.dim(i);
    }
    return l;
}
}  // namespace

// x (..., C at axis, ...), s (C) -> y (shape of x)
Tensor scale_channels(const Tensor& x, const Tensor& s, int axis) {
    if (axis < 0 || axis >= x.ndim() || s.ndim() != 1 || s.dim(0) != x.dim(axis))
        throw std::invalid_argument("scale_channels: s " + shape_str(s.shape()) +
                                    " must hold one value per index of axis " + std::to_string(axis) +
                                    " of x " + shape_str(x.shape()));
    const Layout l = layout_of(x, axis);
    Tensor out = Tensor::empty(x.shape());
    const float* xp = x.data();
    const float* sp = s.data();
    float* op = out.data();
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() > (1 << 15))
    for (int64_t o = 0; o < l.outer; o++)
        for (int64_t c = 0; c < l.C; c++) {
            const int64_t base = (o * l.C + c) * l.inner;
            const float k = sp[c];
#pragma omp simd
            for (int64_t i = 0; i < l.inner; i++) op[base + i] = xp[base + i] * k;
        }
    if (needs_grad({&x, &s})) {
        record("scale_channels", out, [x = x, s = s, out, l]() mutable {
            // ds[c] = sum over the channel of dy * x, first: dx may then
            // overwrite dy (in place, grad_buffer.h).
            if (s.requires_grad()) {
                const float* dy = out.grad();
                float* ds = s.grad();
                const float* xp = x.data();
#pragma omp parallel for schedule(static)
                for (int64_t c = 0; c < l.C; c++) {
                    double acc = 0;
                    for (int64_t o = 0; o < l.outer; o++) {
                        const int64_t base = (o * l.C + c) * l.inner;
                        for (int64_t i = 0; i < l.inner; i++) acc += (double)dy[base + i] * xp[base + i];
                    }
                    ds[c] += (float)acc;
                }
            }
            // dx = dy * s[c]: in place, dx = dy * s[c] + 0 (as 0 + dy * s[c]
            // would round); else dx += dy * s[c].
            if (x.requires_grad()) {
                const bool in_place = can_hand_grad(out, x);
                const float* dy = out.grad();
                float* dx = in_place ? out.grad() : x.grad();
                const float* sp = s.data();
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() > (1 << 15))
                for (int64_t o = 0; o < l.outer; o++)
                    for (int64_t c = 0; c < l.C; c++) {
                        const int64_t base = (o * l.C + c) * l.inner;
                        const float k = sp[c];
                        if (in_place) {
#pragma omp simd
                            for (int64_t i = 0; i < l.inner; i++) dx[base + i] = dx[base + i] * k + 0.0f;
                        } else {
                            for (int64_t i = 0; i < l.inner; i++) dx[base + i] += dy[base + i] * k;
                        }
                    }
                if (in_place) hand_grad(out, x);
            }
        });
    }
    return out;
}

}  // namespace qf
