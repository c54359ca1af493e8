// train CONFIG.json [dotted.key=value ...] [--resume CHECKPOINT] [--eval-only]
//
// Trains the model a JSON config describes (configs/, docs/config.md) and
// writes checkpoints, metrics and the resolved config to its out_dir.
// Exit codes: 0 done, 1 a runtime failure (data, checkpoint, I/O),
// 2 bad config or command line, 3 the loss stopped being finite.
//
// Under `mpirun -np N train CONFIG.json` the N ranks train data-parallel
// (docs/distributed.md); rank 0 alone prints and writes.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "format/safetensors.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/trainer.h"

using namespace qf::train;

namespace {
// Reports an error and ends the job with `code`. With several ranks the
// others may be waiting in a collective for this one, so the whole job is
// ended (MPI_Abort); the pause first lets a rank that failed the same way
// print its own message (say, the config key it differs in).
int fail(int code, const std::string& message) {
    if (dist::size() == 1) {
        std::cerr << "train: " << message << "\n";
        return code;
    }
    std::cerr << "train (rank " << dist::rank() << " of " << dist::size() << "): " << message << std::endl;
    std::this_thread::sleep_for(std::chrono::seconds(1));
    dist::abort(code);
}
}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"qforge train: trains a model from a JSON config"};
    std::string config_path, resume;
    std::vector<std::string> overrides;
    bool eval_only = false, reference = false, parity = false;
    app.add_option("config", config_path, "the JSON config file (see docs/config.md)");
    app.add_option("overrides", overrides, "dotted.key=value overrides of config keys");
    app.add_option("--resume", resume, "continue from this checkpoint (same as train.resume=PATH)");
    app.add_flag("--eval-only", eval_only, "evaluate the checkpoint given by --resume and stop");
    app.add_flag("--parity", parity,
                 "QAT: compare the fake-quant model of --resume with its int8 graph on the test set");
    app.add_flag("--config-reference", reference, "print the reference of every config key (Markdown)");
    try {
        app.parse(argc, argv);
        dist::init(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    } catch (const dist::DistributedError& e) {
        std::cerr << "train: " << e.what() << "\n";
        return 1;
    }
    struct Finalize {
        ~Finalize() { dist::finalize(); }
    } finalize_on_return;
    // Rank 0 alone prints progress and results; every rank reports its errors.
    if (!dist::is_root() && !std::freopen("/dev/null", "w", stdout)) std::cout.setstate(std::ios::failbit);
    if (reference) {
        std::cout << config_reference_markdown();
        return 0;
    }
    if (config_path.empty()) {
        std::cerr << "train: a config file is required (try configs/smoke.json)\n" << app.help();
        return 2;
    }
    try {
        if (!resume.empty()) overrides.push_back("train.resume=" + resume);
        if (eval_only) overrides.push_back("train.eval_only=true");
        Config cfg = load_config(config_path, overrides);
        if (parity && dist::size() > 1)
            throw ConfigError("--parity runs in one process: start it without mpirun");
        Trainer trainer(cfg);
        if (parity) {
            const qf::quant::ParityReport r = trainer.parity();
            std::cout << r.summary() << "per quantization point:\n" << r.per_point();
            return 0;
        }
        std::cout << "model " << cfg.model.arch << ": " << qf::nn::count_parameters(trainer.model())
                  << " parameters; out_dir " << cfg.out_dir << "\n";
        TrainSummary s = trainer.run();
        std::cout << "test top-1 " << s.final_eval.top1 << "%, top-5 " << s.final_eval.top5 << "% on "
                  << s.final_eval.images << " images\n";
        if (cfg.train.eval_only)  // `infer --compare` reads this line
            std::printf("eval speed: %.1f images/s, batch %lld latency %.3f ms (median of %lld batches), %d threads\n",
                        s.final_eval.images_per_s, (long long)cfg.train.eval_batch_size, s.final_eval.median_batch_ms,
                        (long long)s.final_eval.batches, omp_get_max_threads());
        if (!s.int8_model.empty()) std::cout << "(accuracy of the int8 graph) wrote " << s.int8_model << "\n";
        if (!cfg.train.eval_only)
            std::cout << "wrote " << s.checkpoint << ", " << cfg.out_dir << "/metrics.jsonl, "
                      << cfg.out_dir << "/config.resolved.json\n";
    } catch (const ConfigError& e) {
        return fail(2, e.what());
    } catch (const NonFiniteLossError& e) {
        return fail(3, e.what());
    } catch (const std::exception& e) {
        return fail(1, e.what());
    }
    return 0;
}
