// conv2d's paths (im2col + BLIS GEMM, dx as a convolution of dout, the
// implicit-GEMM kernels at stride 1, forward and dW) against a plain loop in
// double, at one to three threads, on shapes like the reference models'
// (channels past one 4-channel or 16-channel tile, planes wider than one
// 24-column tile, several paddings), and odd ones (ragged tiles, batches
// that do not split evenly).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "autograd/gemm.h"
#include "autograd/ops.h"

using namespace qf;

namespace {

struct Case {
    int64_t N, C, H, W, OC, K;
    int stride, pad;
};

// out (N, OC, OH, OW) = conv(x, w) + b, and the gradients of sum(out * g).
struct Reference {
    std::vector<double> out, dx, dw, db;
};

Reference reference(const Case& c, const std::vector<float>& x, const std::vector<float>& w,
                    const std::vector<float>& b, const std::vector<float>& g, int64_t OH, int64_t OW) {
    Reference r;
    r.out.assign(c.N * c.OC * OH * OW, 0.0);
    r.dx.assign(x.size(), 0.0), r.dw.assign(w.size(), 0.0), r.db.assign(c.OC, 0.0);
    for (int64_t n = 0; n < c.N; n++)
        for (int64_t oc = 0; oc < c.OC; oc++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    const int64_t o = ((n * c.OC + oc) * OH + oh) * OW + ow;
                    double s = b[oc];
                    r.db[oc] += g[o];
                    for (int64_t ci = 0; ci < c.C; ci++)
                        for (int64_t kh = 0; kh < c.K; kh++)
                            for (int64_t kw = 0; kw < c.K; kw++) {
                                const int64_t ih = oh * c.stride - c.pad + kh, iw = ow * c.stride - c.pad + kw;
                                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                                const int64_t xi = ((n * c.C + ci) * c.H + ih) * c.W + iw;
                                const int64_t wi = ((oc * c.C + ci) * c.K + kh) * c.K + kw;
                                s += (double)x[xi] * w[wi];
                                r.dx[xi] += (double)g[o] * w[wi];
                                r.dw[wi] += (double)g[o] * x[xi];
                            }
                    r.out[o] = s;
                }
    return r;
}

void check_close(const float* got, const std::vector<double>& want, const char* what) {
    double worst = 0, scale = 1e-6;
    for (size_t i = 0; i < want.size(); i++) {
        worst = std::max(worst, std::abs(got[i] - want[i]));
        scale = std::max(scale, std::abs(want[i]));
    }
    CAPTURE(what);
    CHECK(worst <= 2e-5 * scale + 1e-5);
}

std::vector<float> vec_grad(Tensor t) {  // a handle: grad() is not const
    return std::vector<float>(t.grad(), t.grad() + t.numel());
}

void check_case(const Case& c, int threads) {
    CAPTURE(c.C);
    CAPTURE(c.OC);
    CAPTURE(c.H);
    CAPTURE(c.K);
    CAPTURE(c.stride);
    CAPTURE(c.pad);
    CAPTURE(threads);
    std::mt19937 rng(11);
    const int64_t OH = (c.H + 2 * c.pad - c.K) / c.stride + 1, OW = (c.W + 2 * c.pad - c.K) / c.stride + 1;
    Tensor x = Tensor::randn({c.N, c.C, c.H, c.W}, rng), w = Tensor::randn({c.OC, c.C, c.K, c.K}, rng, 0.3f);
    Tensor b = Tensor::randn({c.OC}, rng), g = Tensor::randn({c.N, c.OC, OH, OW}, rng);
    for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
    auto vec = [](const Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); };
    const Reference r = reference(c, vec(x), vec(w), vec(b), vec(g), OH, OW);

    const int before = num_threads();
    set_num_threads(threads);
    Tensor out = conv2d(x, w, b, {c.stride, c.pad, 1});
    backward(out, vec(g));
    check_close(out.data(), r.out, "out");
    check_close(x.grad(), r.dx, "dx");
    check_close(w.grad(), r.dw, "dw");
    check_close(b.grad(), r.db, "db");

    // A second run at the same thread count gives the same bits (training
    // --resume relies on it: the summation order may not depend on timing).
    const std::vector<float> dx1 = vec_grad(x), dw1 = vec_grad(w);
    for (Tensor* t : {&x, &w, &b}) t->zero_grad();
    Tensor out2 = conv2d(x, w, b, {c.stride, c.pad, 1});
    backward(out2, vec(g));
    CHECK(std::memcmp(out2.data(), out.data(), out.numel() * sizeof(float)) == 0);
    CHECK(vec_grad(x) == dx1);
    CHECK(vec_grad(w) == dw1);

    // A third, onto the gradients already there (the first two wrote dx into
    // a fresh buffer, this one adds to it): each doubles.
    Tensor out3 = conv2d(x, w, b, {c.stride, c.pad, 1});
    backward(out3, vec(g));
    set_num_threads(before);
    Reference r2 = r;
    for (auto* v : {&r2.dx, &r2.dw})
        for (double& e : *v) e *= 2;
    check_close(x.grad(), r2.dx, "dx added");
    check_close(w.grad(), r2.dw, "dw added");
}

}  // namespace

TEST_CASE("conv2d paths match a plain loop at one to three threads") {
    const Case cases[] = {
        {4, 16, 12, 12, 16, 3, 1, 1},  // resnet20-like, 3 grid tiles per row block
        {4, 8, 7, 7, 12, 3, 1, 1},     // small planes (several images per GEMM)
        {3, 5, 9, 6, 6, 3, 1, 0},      // no padding, OC not a multiple of 4
        {3, 3, 8, 8, 5, 5, 1, 2},      // 5x5
        {2, 1, 10, 10, 7, 3, 1, 1},    // one input channel (a stem)
        {4, 6, 9, 9, 8, 3, 2, 1},      // stride 2 (GEMM and col2im)
        {1, 4, 6, 6, 4, 3, 1, 1},      // batch 1
        {5, 20, 11, 7, 20, 3, 1, 1},   // odd plane, OC past one 16-channel dW tile, 5 images
        {2, 3, 5, 9, 17, 3, 1, 2},     // 3x3 with padding 2, OC 17, K 27 (ragged dW tiles)
        {3, 2, 6, 5, 4, 5, 1, 0},      // 5x5 without padding, a 2x1 output
        {3, 5, 10, 10, 20, 1, 2, 0},   // 1x1 stride 2 (a resnet shortcut), read without padding
        {2, 4, 8, 7, 6, 3, 2, 0},      // stride 2 without padding, odd width
        {2, 3, 9, 11, 5, 3, 3, 1},     // stride 3
        {3, 6, 5, 5, 7, 1, 1, 0},      // 1x1 stride 1: the image is its own column matrix
    };
    for (int threads : {1, 2, 3})
        for (const Case& c : cases) check_case(c, threads);
}
