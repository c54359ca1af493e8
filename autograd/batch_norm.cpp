// Batch normalization over the channel axis of NCHW images or (N, C) rows.
//
// Letters: N batch, C channels, S = H*W spatial positions (1 for 2-D input),
// M = N*S values per channel. Channel c's values sit in N blocks of S floats,
// block n starting at (n*C + c)*S.
//
// training: y = gamma * xhat + beta, xhat = (x - mean) * invstd, with the
// batch mean and biased variance of each channel; the running statistics move
// toward the batch's (unbiased variance, as PyTorch).
// eval: the same with the running statistics, a per-channel affine map.
#include <cmath>
#include <stdexcept>
#include <vector>

#include "autograd/ops.h"

namespace qf {

namespace {

struct BnDims {
    int64_t N, C, S;
};

BnDims bn_dims(const Tensor& x, const Tensor& gamma, const Tensor& beta,
               const Tensor& running_mean, const Tensor& running_var) {
    if (x.ndim() != 2 && x.ndim() != 4)
        throw std::invalid_argument("batch_norm: x must be (N, C, H, W) or (N, C), got " +
                                    shape_str(x.shape()));
    BnDims d{x.dim(0), x.dim(1), x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1};
    auto check = [&](const Tensor& t, const char* name, bool optional) {
        if (!t.defined()) {
            if (optional) return;
            throw std::invalid_argument(std::string("batch_norm: ") + name + " is undefined");
        }
        if (t.ndim() != 1 || t.dim(0) != d.C)
            throw std::invalid_argument(std::string("batch_norm: ") + name + " of shape " +
                                        shape_str(t.shape()) + " does not match x of shape " +
                                        shape_str(x.shape()) + " (expected (" +
                                        std::to_string(d.C) + "))");
    };
    check(gamma, "gamma", true);
    check(beta, "beta", true);
    check(running_mean, "running_mean", false);
    check(running_var, "running_var", false);
    return d;
}

}  // namespace

// x (N, C, H, W) or (N, C); gamma, beta (C) or undefined (1 and 0);
// running_mean, running_var (C) -> y of x's shape
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  Tensor& running_mean, Tensor& running_var, bool training, float momentum,
                  float eps) {
    const BnDims d = bn_dims(x, gamma, beta, running_mean, running_var);
    const int64_t N = d.N, C = d.C, S = d.S, M = N * S;
    if (training && M < 2)
        throw std::invalid_argument("batch_norm: training needs more than one value per channel, x is " +
                                    shape_str(x.shape()));

    Tensor out = Tensor::empty(x.shape());
    // Per-channel statistics kept for the backward: the mean and 1/sqrt(var + eps)
    // that normalized x (batch ones in training, running ones in eval).
    std::vector<float> mean(C), invstd(C);

    const float* inp = x.data();
    float* outp = out.data();
    const float* gammap = gamma.defined() ? gamma.data() : nullptr;
    const float* betap = beta.defined() ? beta.data() : nullptr;
    float* rmean = running_mean.data();
    float* rvar = running_var.data();

#pragma omp parallel for schedule(static) if (N * C * S > 4096)
    for (int64_t c = 0; c < C; c++) {
        float mu, istd;
        if (training) {
            // Pass 1: sums shifted by the channel's first value, so that the
            // variance does not cancel catastrophically when |mean| >> std.
            const float shift = inp[c * S];
            // Each row of S values is summed in float (vectorized), rows in double.
            double sum = 0, sumsq = 0;
            for (int64_t n = 0; n < N; n++) {
                const float* xc = inp + (n * C + c) * S;
                float row_sum = 0, row_sumsq = 0;
#pragma omp simd reduction(+ : row_sum, row_sumsq)
                for (int64_t s = 0; s < S; s++) {
                    const float v = xc[s] - shift;
                    row_sum += v;
                    row_sumsq += v * v;
                }
                sum += row_sum;
                sumsq += row_sumsq;
            }
            const double m = sum / M;
            const double var = std::max(0.0, sumsq / M - m * m);  // biased
            mu = (float)(shift + m);
            istd = (float)(1.0 / std::sqrt(var + eps));
            rmean[c] = (1.0f - momentum) * rmean[c] + momentum * mu;
            rvar[c] = (float)((1.0 - momentum) * rvar[c] + momentum * var * M / (M - 1));
        } else {
            mu = rmean[c];
            istd = (float)(1.0 / std::sqrt((double)rvar[c] + eps));
        }
        mean[c] = mu;
        invstd[c] = istd;
        // Pass 2: y = x * scale + bias with the affine map folded in.
        const float g = gammap ? gammap[c] : 1.0f;
        const float scale = g * istd;
        const float bias = (betap ? betap[c] : 0.0f) - mu * scale;
        for (int64_t n = 0; n < N; n++) {
            const float* xc = inp + (n * C + c) * S;
            float* yc = outp + (n * C + c) * S;
#pragma omp simd
            for (int64_t s = 0; s < S; s++) yc[s] = xc[s] * scale + bias;
        }
    }

    if (needs_grad({&x, &gamma, &beta})) {
        // x is captured (not xhat) so the saved state is only 2*C floats; the
        // backward recomputes xhat on the fly.
        record("batch_norm", out, [x = x, gamma = gamma, beta = beta, out, N, C, S, M, training,
                                   mean = std::move(mean), invstd = std::move(invstd)]() mutable {
            const float* dout = out.grad();
            const float* inp = x.data();
            const bool want_dx = x.requires_grad();
            float* dinp = want_dx ? x.grad() : nullptr;
            float* dgamma = gamma.defined() && gamma.requires_grad() ? gamma.grad() : nullptr;
            float* dbeta = beta.defined() && beta.requires_grad() ? beta.grad() : nullptr;
            const float* gammap = gamma.defined() ? gamma.data() : nullptr;
#pragma omp parallel for schedule(static) if (N * C * S > 4096)
            for (int64_t c = 0; c < C; c++) {
                const float mu = mean[c], istd = invstd[c];
                // Pass 1: sum(dy) = dbeta and sum(dy * xhat) = dgamma.
                double sum_dy = 0, sum_dy_xhat = 0;
                for (int64_t n = 0; n < N; n++) {
                    const float* xc = inp + (n * C + c) * S;
                    const float* dyc = dout + (n * C + c) * S;
                    float part_dy = 0, part_dy_xhat = 0;  // one row in float, rows summed in double
#pragma omp simd reduction(+ : part_dy, part_dy_xhat)
                    for (int64_t s = 0; s < S; s++) {
                        part_dy += dyc[s];
                        part_dy_xhat += dyc[s] * (xc[s] - mu);
                    }
                    sum_dy += part_dy;
                    sum_dy_xhat += (double)part_dy_xhat * istd;
                }
                if (dgamma) dgamma[c] += (float)sum_dy_xhat;
                if (dbeta) dbeta[c] += (float)sum_dy;
                if (!want_dx) continue;
                const float g = gammap ? gammap[c] : 1.0f;
                // Pass 2. Training: the batch statistics depend on x, so
                //   dx = g*istd * (dy - mean(dy) - xhat * mean(dy*xhat)).
                // Eval: the statistics are constants, dx = g*istd * dy.
                const float k = g * istd;
                const float mean_dy = training ? (float)(sum_dy / M) : 0.0f;
                const float mean_dy_xhat = training ? (float)(sum_dy_xhat / M) : 0.0f;
                for (int64_t n = 0; n < N; n++) {
                    const float* xc = inp + (n * C + c) * S;
                    const float* dyc = dout + (n * C + c) * S;
                    float* dxc = dinp + (n * C + c) * S;
#pragma omp simd
                    for (int64_t s = 0; s < S; s++) {
                        const float xhat = (xc[s] - mu) * istd;
                        dxc[s] += k * (dyc[s] - mean_dy - xhat * mean_dy_xhat);
                    }
                }
            }
        });
    }
    return out;
}

}  // namespace qf
