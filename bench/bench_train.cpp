// Training-speed benchmark: images/s of full training steps (forward,
// cross-entropy, backward, SGD with momentum) on random data, per reference
// model, with the peak RSS of the process. bench/torch_train.py measures
// PyTorch the same way and prints the same RESULT line; bench/train_speed.sh
// runs both side by side.
//
//   bench_train [--model lenet|resnet20|mbv2] [--batch 128] [--warmup 3]
//               [--steps 20] [--threads 2] [--seed 0] [--profile] [--qat]
//   bench_train --list-state --model NAME   (names and shapes, for the test
//                                            against bench/torch_models.py)
//
// Without --model every model runs, each in a forked child process so that
// the peak RSS of one does not hide in another's.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/gemm.h"
#include "autograd/ops.h"
#include "bench/profile.h"
#include "nn/models.h"
#include "quant/qat.h"
#include "train/optimizer.h"

using namespace qf;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
    std::vector<std::string> models = nn::model_archs();
    int batch = 128;
    int warmup = 3;
    int steps = 20;
    int threads = 2;
    uint32_t seed = 0;
    bool profile = false;
    bool list_state = false;
    bool qat = false;  // time a QAT step (prepare_qat with 8-bit defaults) instead
};

double peak_rss_mb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;  // kilobytes on Linux
}

// Minor page faults so far: each is a fresh page of memory touched for the
// first time, so many per step mean buffers returned to the OS and re-mapped.
long page_faults() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Batch {
    Tensor images;
    std::vector<int32_t> labels;
};

// Normal(0, 1) images of 1x28x28 and uniform labels, drawn from `seed`: the
// speed of a step does not depend on the values.
Batch random_batch(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    Batch b{Tensor::randn({n, 1, 28, 28}, rng), {}};
    std::uniform_int_distribution<int32_t> label(0, 9);
    for (int i = 0; i < n; i++) b.labels.push_back(label(rng));
    return b;
}

int list_state(const std::string& arch) {
    auto model = nn::build_model({arch, 10, 1, 28}, 0);
    for (const auto& t : model->state()) {
        std::string shape;
        for (int64_t d : t.tensor.shape()) shape += (shape.empty() ? "" : "x") + std::to_string(d);
        std::printf("%s %s\n", t.name.c_str(), shape.c_str());
    }
    return 0;
}

int run_model(const std::string& arch, const Options& opt) {
    set_num_threads(opt.threads);
    auto build = [&] {
        auto m = nn::build_model({arch, 10, 1, 28}, opt.seed);
        if (opt.qat) m = quant::prepare_qat(m, quant::QatOptions{});
        m->train();
        return m;
    };
    auto model = build();
    // The optimizer the train binary uses, with DESIGN's fp32 recipe (the
    // OptimizerConfig defaults: SGD, momentum 0.9, weight decay 5e-4).
    const train::OptimizerConfig recipe;
    auto sgd = train::make_optimizer(recipe, model->parameters());
    const Batch batch = random_batch(opt.batch, opt.seed + 1);

    OpProfile profile;
    if (opt.profile) check_profiled_forward(*model, *build(), batch.images);

    std::vector<double> step_ms;
    float loss_value = 0.0f;
    long faults_at_start = 0;
    for (int i = 0; i < opt.warmup + opt.steps; i++) {
        const bool timed = i >= opt.warmup;
        if (i == opt.warmup) faults_at_start = page_faults();
        OpProfile* prof = opt.profile && timed ? &profile : nullptr;
        const auto t0 = Clock::now();
        sgd->zero_grad();
        Tensor loss;
        if (prof) {
            prof->begin_step();
            Tensor logits = profiled_forward(*model, batch.images, *prof);
            loss = prof->time("cross_entropy", [&] { return cross_entropy(logits, batch.labels); });
            prof->forward_done();
            backward(loss);
            prof->backward_done();
            sgd->step(recipe.lr);
            prof->step_done();
        } else {
            loss = cross_entropy(model->forward(batch.images), batch.labels);
            backward(loss);
            sgd->step(recipe.lr);
        }
        const double ms = ms_since(t0);
        loss_value = loss.item();
        if (!std::isfinite(loss_value)) {
            std::fprintf(stderr, "bench_train: %s: loss is %f at step %d\n", arch.c_str(), loss_value, i);
            return 1;
        }
        if (timed) step_ms.push_back(ms);
    }

    const double med = median(step_ms);
    const double best = *std::min_element(step_ms.begin(), step_ms.end());
    const double faults_per_step = double(page_faults() - faults_at_start) / opt.steps;
    std::printf("%s: batch %d, %d threads, %d timed steps after %d warmup: median %.1f ms/step "
                "(best %.1f), %.0f img/s, peak RSS %.0f MB, %.0f page faults/step, last loss %.3f\n",
                arch.c_str(), opt.batch, opt.threads, opt.steps, opt.warmup, med, best,
                opt.batch * 1000.0 / med, peak_rss_mb(), faults_per_step, loss_value);
    if (opt.profile) {
        std::printf("(profiled steps: markers and timers add a little to every op)\n");
        profile.print(opt.steps);
    }
    // One line for scripts; torch_train.py prints the same keys.
    std::printf("RESULT framework=qforge model=%s batch=%d threads=%d steps=%d median_ms=%.3f "
                "img_per_s=%.1f best_ms=%.3f peak_rss_mb=%.1f page_faults_per_step=%.0f profile=%d\n",
                arch.c_str(), opt.batch, opt.threads, opt.steps, med, opt.batch * 1000.0 / med, best,
                peak_rss_mb(), faults_per_step, (int)opt.profile);
    std::fflush(stdout);
    return 0;
}

// Each model in its own child process: its own peak RSS, and a crash in one
// model does not take the others with it.
int run_in_child(const std::string& arch, const Options& opt) {
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        int rc = 1;
        try {
            rc = run_model(arch, opt);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "bench_train: %s: %s\n", arch.c_str(), e.what());
        }
        std::fflush(stdout);
        _exit(rc);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    std::fprintf(stderr, "bench_train: %s: child died with signal %d\n", arch.c_str(), WTERMSIG(status));
    return 1;
}

int parse_int(const char* flag, const char* value, int min) {
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || v < min || v > 1000000)
        throw std::invalid_argument(std::string(flag) + ": expected an integer >= " +
                                    std::to_string(min) + ", got '" + value + "'");
    return (int)v;
}

Options parse_args(int argc, char** argv) {
    Options opt;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++i];
        };
        if (a == "--model") {
            const std::string m = value();
            const auto& archs = nn::model_archs();
            if (std::find(archs.begin(), archs.end(), m) == archs.end())
                throw std::invalid_argument("--model: unknown model '" + m + "' (lenet, resnet20, mbv2)");
            opt.models = {m};
        } else if (a == "--batch") {
            opt.batch = parse_int("--batch", value(), 1);
        } else if (a == "--warmup") {
            opt.warmup = parse_int("--warmup", value(), 0);
        } else if (a == "--steps") {
            opt.steps = parse_int("--steps", value(), 1);
        } else if (a == "--threads") {
            opt.threads = parse_int("--threads", value(), 1);
        } else if (a == "--seed") {
            opt.seed = (uint32_t)parse_int("--seed", value(), 0);
        } else if (a == "--profile") {
            opt.profile = true;
        } else if (a == "--list-state") {
            opt.list_state = true;
        } else if (a == "--qat") {
            opt.qat = true;
        } else if (a == "-h" || a == "--help") {
            std::printf("usage: bench_train [--model lenet|resnet20|mbv2] [--batch 128] [--warmup 3] "
                        "[--steps 20] [--threads 2] [--seed 0] [--profile] [--list-state] [--qat]\n");
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown argument '" + a + "' (try --help)");
        }
    }
    if (opt.list_state && opt.models.size() != 1)
        throw std::invalid_argument("--list-state needs --model");
    return opt;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options opt = parse_args(argc, argv);
        if (opt.list_state) return list_state(opt.models[0]);
        if (opt.models.size() == 1) return run_model(opt.models[0], opt);
        int failures = 0;
        for (const auto& m : opt.models) failures += run_in_child(m, opt) != 0;
        return failures ? 1 : 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_train: %s\n", e.what());
        return 2;
    }
}
