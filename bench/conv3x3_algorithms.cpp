// The int8 3x3 stride-1 convolution on its two kernels, side by side in one
// process on one thread: the GEMM on the padded input and exact Winograd
// F(2x2, 3x3) (infer/kernels/conv2d.h). Shapes: resnet20's three stages on
// 28x28 Fashion-MNIST, batch 64, and a few more channel counts; random
// weights in [-50, 50] and inputs. Each shape alternates the two kernels
// `reps` times and prints the medians and their ratio; Conv2d's choice
// (kWinogradMinInChannels) should follow the ratio.
//   build/bench/conv3x3_algorithms [reps]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "infer/kernels/conv2d.h"

using namespace qf::infer;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 21;
    const int batch = 64;
    omp_set_num_threads(1);
    std::printf("batch %d, 1 thread, median of %d runs each, ms per call\n", batch, reps);
    std::printf("%-8s %-6s %-7s %9s %9s %8s %s\n", "in_c", "out_c", "size", "gemm", "winograd", "speedup", "chosen");
    struct Shape { int c, k, hw; };
    for (Shape s : {Shape{8, 8, 28}, Shape{16, 16, 28}, Shape{32, 32, 14}, Shape{64, 64, 7}, Shape{24, 24, 14}, Shape{48, 48, 14},
                    Shape{128, 128, 7}}) {
        Conv2dParams p;
        p.in_h = p.in_w = s.hw;
        p.in_c = s.c;
        p.out_c = s.k;
        p.kernel_h = p.kernel_w = 3;
        p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 1;
        p.input_zero_point = -128;  // after a ReLU
        p.multipliers = std::vector<QuantizedMultiplier>(size_t(s.k), quantize_multiplier(0.0005));
        p.output = {-128, -128, 127};
        std::mt19937 rng(1);
        std::vector<int8_t> weights(size_t(s.k) * 9 * s.c), input(size_t(batch) * s.hw * s.hw * s.c);
        std::vector<int8_t> output(size_t(batch) * s.hw * s.hw * s.k);
        for (int8_t& w : weights) w = int8_t(int(rng() % 101) - 50);
        for (int8_t& x : input) x = int8_t(int(rng() % 256) - 128);
        const std::vector<int32_t> bias(size_t(s.k), 0);
        const Conv2d gemm(p, weights.data(), bias.data(), Conv2d::Winograd::never);
        const Conv2d winograd(p, weights.data(), bias.data(), Conv2d::Winograd::whenever_exact);
        const Conv2d chosen(p, weights.data(), bias.data());
        std::vector<double> t_gemm, t_winograd;
        for (int rep = 0; rep < reps; ++rep)
            for (const Conv2d* conv : {&gemm, &winograd}) {
                const auto t0 = std::chrono::steady_clock::now();
                conv->run(batch, input.data(), output.data());
                const double ms = 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                (conv == &gemm ? t_gemm : t_winograd).push_back(ms);
            }
        const double g = median(t_gemm), w = median(t_winograd);
        std::printf("%-8d %-6d %-7s %9.3f %9.3f %7.2fx %s\n", s.c, s.k,
                    (std::to_string(s.hw) + "x" + std::to_string(s.hw)).c_str(), g, w, g / w,
                    chosen.uses_winograd() ? "winograd" : "gemm");
    }
}
