// fp32 conv2d forward and backward (dx, dW, db) on resnet20's shapes at
// 28x28, batch 128: the median milliseconds of each, per shape, so that a
// change to one conv path can be timed without the noise of a whole step.
//   conv2d_train_shapes [reps] [threads] [only shapes whose name contains this]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "autograd/gemm.h"
#include "autograd/ops.h"

using namespace qf;
using Clock = std::chrono::steady_clock;

namespace {

struct ConvShape {
    const char* name;
    int64_t C, H, OC, K;
    int stride, pad, count;  // count: how many such convs resnet20 has
    bool dx;                 // the stem's input needs no gradient
};

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const int reps = argc > 1 ? std::atoi(argv[1]) : 7;
    set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
    const int64_t N = 128;
    const ConvShape shapes[] = {
        {"stem 1->16 28x28", 1, 28, 16, 3, 1, 1, 1, false},
        {"3x3 16 28x28", 16, 28, 16, 3, 1, 1, 6, true},
        {"3x3 16->32 s2", 16, 28, 32, 3, 2, 1, 1, true},
        {"1x1 16->32 s2", 16, 28, 32, 1, 2, 0, 1, true},
        {"3x3 32 14x14", 32, 14, 32, 3, 1, 1, 5, true},
        {"3x3 32->64 s2", 32, 14, 64, 3, 2, 1, 1, true},
        {"1x1 32->64 s2", 32, 14, 64, 1, 2, 0, 1, true},
        {"3x3 64 7x7", 64, 7, 64, 3, 1, 1, 5, true},
    };
    std::printf("%-18s %5s %9s %9s %12s\n", "shape", "count", "fwd ms", "bwd ms", "x count ms");
    double total = 0;
    for (const ConvShape& s : shapes) {
        if (argc > 3 && std::string(s.name).find(argv[3]) == std::string::npos) continue;
        std::mt19937 rng(1);
        Tensor x = Tensor::randn({N, s.C, s.H, s.H}, rng), w = Tensor::randn({s.OC, s.C, s.K, s.K}, rng, 0.1f);
        x.set_requires_grad(s.dx), w.set_requires_grad(true);
        std::vector<double> fwd, bwd;
        for (int r = 0; r < reps + 1; r++) {
            x.zero_grad(), w.zero_grad();  // as in training: each step's gradients start anew
            auto t0 = Clock::now();
            Tensor out = conv2d(x, w, Tensor(), {s.stride, s.pad, 1});
            const double f = ms_since(t0);
            std::vector<float> g(out.numel(), 0.01f);
            t0 = Clock::now();
            backward(out, g);
            const double b = ms_since(t0);
            if (r > 0) fwd.push_back(f), bwd.push_back(b);  // the first run warms up
        }
        const double f = median(fwd), b = median(bwd);
        total += (f + b) * s.count;
        std::printf("%-18s %5d %9.2f %9.2f %12.2f\n", s.name, s.count, f, b, (f + b) * s.count);
    }
    std::printf("total per resnet20 step: %.1f ms\n", total);
}
