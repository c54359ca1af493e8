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

SumOverProcesses& batch_norm_sync() {
    static SumOverProcesses sum;
    return sum;
}

}  // namespace

void set_batch_norm_sync(SumOverProcesses sum) { batch_norm_sync() = std::move(sum); }

// x (N, C, H, W) or (N, C); gamma, beta (C) or undefined (1 and 0);
// running_mean, running_var (C) -> y of x's shape
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  Tensor& running_mean, Tensor& running_var, bool training, float momentum,
                  float eps, const Tensor& input_scale) {
    const BnDims d = bn_dims(x, gamma, beta, running_mean, running_var);
    if (input_scale.defined() && (input_scale.ndim() != 1 || input_scale.dim(0) != d.C))
        throw std::invalid_argument("batch_norm: input_scale " + shape_str(input_scale.shape()) + " for " +
                                    std::to_string(d.C) + " channels");
    const int64_t N = d.N, C = d.C, S = d.S;
    const SumOverProcesses sync = training ? batch_norm_sync() : SumOverProcesses();
    int64_t M = N * S;  // values per channel the statistics are over (all processes' under sync)

    Tensor out = Tensor::empty(x.shape());
    // Per-channel statistics kept for the backward: the mean and 1/sqrt(var + eps)
    // that normalized x (batch ones in training, running ones in eval).
    // With an input scale s, x * s is what is normalized: xhat = (x*s - m)/sd
    // = (x - m/s) * (s/sd), so these hold m/s and s/sd and every pass below
    // (and the backward, where dx = s * d(x*s)) reads x as it is.
    std::vector<float> mean(C), invstd(C);
    const float* in_scale = input_scale.defined() ? input_scale.data() : nullptr;
    auto scale_of = [&](int64_t c) { return in_scale ? in_scale[c] : 1.0f; };

    const float* inp = x.data();
    float* outp = out.data();
    const float* gammap = gamma.defined() ? gamma.data() : nullptr;
    const float* betap = beta.defined() ? beta.data() : nullptr;
    float* rmean = running_mean.data();
    float* rvar = running_var.data();

    if (training) {
        // Two passes, the mean first and then the sum of squares about it, so
        // that the variance does not cancel when |mean| >> std. Rows of S
        // values are summed in float (vectorized), rows in double. A sample's
        // contribution does not depend on which process holds it, so SyncBN
        // over R processes matches one process with the whole batch (up to
        // the order of the double additions).
        auto channel_sums = [&](auto&& term, double* sums) {
#pragma omp parallel for schedule(static) if (N * C * S > 4096)
            for (int64_t c = 0; c < C; c++) {
                double sum = 0;
                for (int64_t n = 0; n < N; n++) {
                    const float* xc = inp + (n * C + c) * S;
                    float row = 0;
#pragma omp simd reduction(+ : row)
                    for (int64_t s = 0; s < S; s++) row += term(xc[s], c);
                    sum += row;
                }
                sums[c] = sum;
            }
        };
        std::vector<double> sums(C + 1);  // per channel, then the count
        channel_sums([](float v, int64_t) { return v; }, sums.data());
        sums[C] = (double)M;
        if (sync) sync(sums.data(), C + 1);
        M = (int64_t)sums[C];
        if (M < 2)
            throw std::invalid_argument("batch_norm: training needs more than one value per channel, x is " +
                                        shape_str(x.shape()));
        for (int64_t c = 0; c < C; c++) mean[c] = (float)(sums[c] / M);
        channel_sums([&](float v, int64_t c) { return (v - mean[c]) * (v - mean[c]); }, sums.data());
        if (sync) sync(sums.data(), C);
        for (int64_t c = 0; c < C; c++) {
            const double s = scale_of(c);
            const double var = s * s * sums[c] / M;  // biased, of x * s
            invstd[c] = (float)(s / std::sqrt(var + eps));
            rmean[c] = (1.0f - momentum) * rmean[c] + momentum * float(s * mean[c]);
            rvar[c] = (float)((1.0 - momentum) * rvar[c] + momentum * var * M / (M - 1));
        }
    } else {
        for (int64_t c = 0; c < C; c++) {
            const double s = scale_of(c);
            mean[c] = (float)(rmean[c] / s);
            invstd[c] = (float)(s / std::sqrt((double)rvar[c] + eps));
        }
    }

    // Pass 2: y = x * scale + bias with the affine map folded in.
#pragma omp parallel for schedule(static) if (N * C * S > 4096)
    for (int64_t c = 0; c < C; c++) {
        const float g = gammap ? gammap[c] : 1.0f;
        const float scale = g * invstd[c];
        const float bias = (betap ? betap[c] : 0.0f) - mean[c] * scale;
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
        record("batch_norm", out, [x = x, gamma = gamma, beta = beta, out, N, C, S, M, training, sync,
                                   mean = std::move(mean), invstd = std::move(invstd)]() mutable {
            const float* dout = out.grad();
            const float* inp = x.data();
            const bool want_dx = x.requires_grad();
            bool dx_accumulate = true;  // else dx is written, every element (no zero-fill)
            float* dinp = want_dx ? x.grad_for_overwrite(dx_accumulate) : nullptr;
            float* dgamma = gamma.defined() && gamma.requires_grad() ? gamma.grad() : nullptr;
            float* dbeta = beta.defined() && beta.requires_grad() ? beta.grad() : nullptr;
            const float* gammap = gamma.defined() ? gamma.data() : nullptr;
            // Pass 1: sum(dy) = dbeta and sum(dy * xhat) = dgamma, over this
            // process's values (the gradient sum over processes adds the rest).
            std::vector<double> sums(2 * C);
#pragma omp parallel for schedule(static) if (N * C * S > 4096)
            for (int64_t c = 0; c < C; c++) {
                const float mu = mean[c], istd = invstd[c];
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
                sums[c] = sum_dy;
                sums[C + c] = sum_dy_xhat;
            }
            if (!want_dx) return;
            // The batch statistics depend on every process's x: dx needs the sums over all of them.
            if (sync) sync(sums.data(), 2 * C);
#pragma omp parallel for schedule(static) if (N * C * S > 4096)
            for (int64_t c = 0; c < C; c++) {
                const float mu = mean[c], istd = invstd[c];
                const float g = gammap ? gammap[c] : 1.0f;
                // Pass 2. Training: the batch statistics depend on x, so
                //   dx = g*istd * (dy - mean(dy) - xhat * mean(dy*xhat)).
                // Eval: the statistics are constants, dx = g*istd * dy.
                const float k = g * istd;
                const float mean_dy = training ? (float)(sums[c] / M) : 0.0f;
                const float mean_dy_xhat = training ? (float)(sums[C + c] / M) : 0.0f;
                for (int64_t n = 0; n < N; n++) {
                    const float* xc = inp + (n * C + c) * S;
                    const float* dyc = dout + (n * C + c) * S;
                    float* dxc = dinp + (n * C + c) * S;
                    // Onto 0 when not accumulating: the same bits as the
                    // zero-filled path (a -0 becomes +0), without reading dx.
#pragma omp simd
                    for (int64_t s = 0; s < S; s++) {
                        const float xhat = (xc[s] - mu) * istd;
                        dxc[s] = (dx_accumulate ? dxc[s] : 0.0f) + k * (dyc[s] - mean_dy - xhat * mean_dy_xhat);
                    }
                }
            }
        });
    }
    return out;
}

}  // namespace qf
