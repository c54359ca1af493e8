// Checks an op's analytic gradients against central finite differences.
//
// f maps the inputs to one output tensor; the check uses the scalar
// L = sum(out * R) with a fixed random R, so every output element matters.
// Inputs are perturbed in double-checked float: keep them small (tens of
// elements) and away from kinks (ReLU at 0, max-pool ties, clamps); pass
// `skip` to ignore elements where the function is not differentiable.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "autograd/tensor.h"

namespace qf::test {

inline double weighted_sum(const Tensor& out, const std::vector<float>& r) {
    double s = 0;
    for (int64_t i = 0; i < out.numel(); i++) s += (double)out.data()[i] * r[i];
    return s;
}

// Returns the largest relative error seen; fails the doctest check when any
// element differs by more than atol + rtol * |numeric|.
inline double check_gradients(const std::function<Tensor(std::vector<Tensor>&)>& f,
                              std::vector<Tensor> inputs, float eps = 1e-3f,
                              double atol = 1e-3, double rtol = 1e-2) {
    for (Tensor& t : inputs) {
        t.set_requires_grad(true);
        t.zero_grad();
    }
    Tensor out = f(inputs);
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> r(out.numel());
    for (float& v : r) v = dist(rng);
    backward(out, r);

    double worst = 0;
    for (size_t k = 0; k < inputs.size(); k++) {
        Tensor& x = inputs[k];
        std::vector<float> analytic = x.has_grad() ? x.grad_values() : std::vector<float>(x.numel(), 0.0f);
        for (int64_t i = 0; i < x.numel(); i++) {
            const float saved = x.data()[i];
            double lp, lm;
            {
                NoGrad ng;
                x.data()[i] = saved + eps;
                lp = weighted_sum(f(inputs), r);
                x.data()[i] = saved - eps;
                lm = weighted_sum(f(inputs), r);
            }
            x.data()[i] = saved;
            const double numeric = (lp - lm) / (2.0 * eps);
            const double err = std::fabs(numeric - analytic[i]);
            worst = std::max(worst, err / (std::fabs(numeric) + 1e-6));
            INFO("input " << k << " element " << i << ": analytic " << analytic[i] << " numeric " << numeric);
            CHECK(err <= atol + rtol * std::fabs(numeric));
        }
    }
    return worst;
}

// backward(out, dout) with d(out) exactly dout, -0 included: backward()
// adds its seed to a zero gradient, which would turn a -0 into +0 (tests of
// the backwards that work in their output's gradient buffer need the -0).
inline void backward_exact(Tensor out, const std::vector<float>& dout) {
    std::copy(dout.begin(), dout.end(), out.grad());
    backward(out, std::vector<float>(dout.size(), -0.0f));  // d + -0 == d, bit for bit
}

}  // namespace qf::test
