// Inference-speed benchmark of one engine on one model, in its own process
// (so that its peak RSS is its own): qforge's int8 graph (infer::Model, the
// path of the `infer` binary) or qforge's fp32 engine (nn::build_model, the
// fp32 checkpoint, forward in eval mode under NoGrad). bench/torch_infer.py
// prints the same RESULT line for PyTorch; bench/infer_speed.sh runs them
// all side by side and prints the ratios.
//
//   bench_infer --int8 MODEL.int8.safetensors [options]
//   bench_infer --fp32 CHECKPOINT --arch lenet|resnet20|mbv2 [options]
//   options: [--batch 64] [--threads 2] [--warmup 5] [--min-runs 20]
//            [--seconds 2] [--profile]
//
// Inputs are fixed random normalized 1x28x28 images (speed does not depend
// on the pixels). Each timed run is one batch; it runs at least --min-runs
// batches and at least --seconds, and prints the median and best latency.
// --profile (int8 only) prints the per-op times of the int8 graph.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/gemm.h"
#include "autograd/tensor.h"
#include "infer/model.h"
#include "nn/models.h"
#include "train/checkpoint.h"

using namespace qf;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
    std::string int8_path, fp32_path, arch;
    int batch = 64, threads = 2, warmup = 5, min_runs = 20;
    double seconds = 2.0;
    bool profile = false;
};

double peak_rss_mb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // kilobytes on Linux
}

std::vector<float> random_images(int batch) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
    std::vector<float> images(size_t(batch) * 28 * 28);
    for (float& x : images) x = (pixel(rng) - 0.2860f) / 0.3530f;  // DESIGN.md's normalization
    return images;
}

// Runs `step` warmup + timed times; returns the latencies of the timed runs (ms).
template <class Step>
std::vector<double> time_runs(const Options& opt, Step step) {
    for (int i = 0; i < opt.warmup; ++i) step();
    std::vector<double> ms;
    const auto start = Clock::now();
    while (int(ms.size()) < opt.min_runs ||
           std::chrono::duration<double>(Clock::now() - start).count() < opt.seconds) {
        const auto t0 = Clock::now();
        step();
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    return ms;
}

void report(const char* engine, const std::string& model, const Options& opt, std::vector<double> ms,
            float checksum) {
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2], best = ms.front();
    std::printf("qforge %s %s: batch %d, %d threads, %zu runs: median %.3f ms (%.0f img/s), best %.3f ms, "
                "peak RSS %.1f MB (checksum %.3f)\n",
                engine, model.c_str(), opt.batch, opt.threads, ms.size(), median, opt.batch * 1000.0 / median,
                best, peak_rss_mb(), double(checksum));
    std::printf("RESULT framework=qforge engine=%s model=%s batch=%d threads=%d runs=%zu median_ms=%.4f "
                "img_s=%.1f best_ms=%.4f peak_rss_mb=%.1f\n",
                engine, model.c_str(), opt.batch, opt.threads, ms.size(), median, opt.batch * 1000.0 / median,
                best, peak_rss_mb());
}

int run_int8(const Options& opt) {
    infer::Model model = infer::Model::load(opt.int8_path);
    const std::vector<float> images = random_images(opt.batch);
    float checksum = 0;
    auto ms = time_runs(opt, [&] { checksum = model.run(images.data(), opt.batch)[0]; });
    if (opt.profile) {
        model.set_profiling(true);
        time_runs(opt, [&] { model.run(images.data(), opt.batch); });
        double total = 0;
        for (const auto& op : model.profile()) total += op.seconds;
        std::printf("per-op profile (int8, batch %d, %d threads, ms per batch):\n", opt.batch, opt.threads);
        for (const auto& op : model.profile())
            std::printf("  %-28s %-18s %8.3f ms %5.1f%%\n", op.name.c_str(), op.type.c_str(),
                        op.calls ? 1000.0 * op.seconds / double(op.calls) : 0.0, 100.0 * op.seconds / total);
    }
    std::string name = opt.arch.empty() ? opt.int8_path : opt.arch;
    report("int8", name, opt, std::move(ms), checksum);
    return 0;
}

int run_fp32(const Options& opt) {
    auto model = nn::build_model({opt.arch, 10, 1, 28}, 0);
    train::load_checkpoint(opt.fp32_path, opt.arch, *model, nullptr);
    model->eval();
    NoGrad no_grad;
    std::vector<float> images = random_images(opt.batch);
    const Tensor x = Tensor::from({opt.batch, 1, 28, 28}, images);
    float checksum = 0;
    auto ms = time_runs(opt, [&] { checksum = model->forward(x).data()[0]; });
    report("fp32", opt.arch, opt, std::move(ms), checksum);
    return 0;
}

int parse_int(const std::string& name, const std::string& v, int min) {
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n < min || n > 1 << 20) throw std::invalid_argument(name + ": bad value '" + v + "'");
    return int(n);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Options opt;
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
                return argv[++i];
            };
            if (a == "--int8") opt.int8_path = value();
            else if (a == "--fp32") opt.fp32_path = value();
            else if (a == "--arch") opt.arch = value();
            else if (a == "--batch") opt.batch = parse_int(a, value(), 1);
            else if (a == "--threads") opt.threads = parse_int(a, value(), 1);
            else if (a == "--warmup") opt.warmup = parse_int(a, value(), 0);
            else if (a == "--min-runs") opt.min_runs = parse_int(a, value(), 1);
            else if (a == "--seconds") opt.seconds = std::stod(value());
            else if (a == "--profile") opt.profile = true;
            else throw std::invalid_argument("unknown argument '" + a + "'");
        }
        if (opt.int8_path.empty() == opt.fp32_path.empty())
            throw std::invalid_argument("give exactly one of --int8 MODEL and --fp32 CHECKPOINT --arch NAME");
        if (!opt.fp32_path.empty() && opt.arch.empty()) throw std::invalid_argument("--fp32 needs --arch");
        set_num_threads(opt.threads);  // OpenMP and BLIS, for both engines
        return opt.int8_path.empty() ? run_fp32(opt) : run_int8(opt);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_infer: %s\n", e.what());
        return 1;
    }
}
