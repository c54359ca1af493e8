// sensitivity CONFIG.json [dotted.key=value ...] [--checkpoint FP32 | --qat-checkpoint QAT]
//             [--batches N] [--eval-images N] [--out report.md]
//
// The per-layer sensitivity report of a quantized model (quant/sensitivity.h):
// for each quantization point in graph order, the SQNR and cosine similarity
// of its activation against the fp32 model's (its own error and the error
// accumulated up to it), the fraction of values its range clips, the SQNR of
// the layer's weight, and the test accuracy with only that layer left in
// float. The worst layers are flagged.
//
// The quantized model is either
//   --checkpoint FP32 (or quant.init_checkpoint): post-training quantized
//     with the config's quant and ptq sections, as `quantize` does (BN
//     folding, equalization, bias correction, calibration; train/ptq.h), or
//   --qat-checkpoint QAT: a QAT run's checkpoint (the config must be that
//     run's, with its quant section), as `train --eval-only` loads it.
// Statistics use the first --batches batches (data eval_batch_size) of the
// test set; the accuracy columns the first --eval-images test images (all by
// default; one test-set pass per layer: lenet ~1 min on 2 cores, resnet20
// ~35 passes, so limit it there: see docs/sensitivity.md).
// Exit codes: 0 done, 1 a runtime failure (data, checkpoint, quantization,
// I/O), 2 bad config or command line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "autograd/gemm.h"
#include "quant/sensitivity.h"
#include "train/checkpoint.h"
#include "train/ptq.h"

using namespace qf;
using namespace qf::train;

namespace {
// Up to `images` test images in order, in batches of `batch_size`.
std::vector<quant::LabeledBatch> test_batches(const data::Dataset& test, int64_t batch_size, int64_t images,
                                              int workers) {
    std::vector<quant::LabeledBatch> out;
    if (images <= 0) return out;
    int64_t have = 0;
    for_each_batch_in_order(test, batch_size, workers, [&](data::Batch& b) {
        const int64_t n = std::min<int64_t>(b.n, images - have);
        b.images.resize(size_t(n * b.c * b.h * b.w));
        b.labels.resize(size_t(n));
        out.push_back({Tensor::from({n, b.c, b.h, b.w}, std::move(b.images)), std::move(b.labels)});
        have += n;
        return have < images;
    });
    return out;
}

// The calibrated fake-quant model of an fp32 checkpoint (train/ptq.h), and
// a line with the checkpoint's own fp32 accuracy (the report's fp32 column
// is the model after folding, equalization and bias correction: the bias
// correction changes the float function on purpose).
std::shared_ptr<nn::Sequential> post_training_quantized(const Config& cfg, bool evaluate_fp32, std::string& note) {
    PtqResult r = run_ptq(cfg, {.evaluate_fp32 = evaluate_fp32, .log = &std::cerr, .calibrate_only = true});
    if (evaluate_fp32) {
        char line[200];
        std::snprintf(line, sizeof line, "the checkpoint itself (before folding, equalization, bias correction): "
                      "fp32 top-1 %.2f%% on %lld test images\n", r.fp32.top1, (long long)r.fp32.images);
        note = line;
    }
    return r.qat_model;
}

// A QAT run's checkpoint, loaded into the QAT model its config describes.
std::shared_ptr<nn::Sequential> qat_checkpoint(const Config& cfg, const std::string& path, int image_size) {
    auto fp32 = nn::build_model({cfg.model.arch, cfg.model.num_classes, cfg.model.in_channels, image_size},
                                (uint32_t)cfg.seed);
    quant::QatOptions options;
    try {
        options = qat_options(cfg.quant);
        options.validate();
    } catch (const quant::QuantError& e) {
        throw ConfigError(std::string("quant: ") + e.what());
    }
    auto qat = quant::prepare_qat(fp32, options);
    try {
        load_checkpoint(path, cfg.model.arch, *qat, nullptr);
    } catch (const CheckpointError& e) {
        throw CheckpointError(std::string(e.what()) +
                              " (--qat-checkpoint takes the checkpoint of a QAT run, with that run's config; "
                              "for an fp32 checkpoint use --checkpoint)");
    }
    return qat;
}

// Writes `text` to `path` atomically (temporary file, then rename).
void write_file(const std::string& path, const std::string& text) {
    const std::filesystem::path p(path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp);
        f << text;
        f.flush();
        if (!f) throw std::runtime_error("cannot write " + tmp);
    }
    std::filesystem::rename(tmp, path);
}
}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"qforge sensitivity: per-layer quantization error and accuracy with each layer left in float"};
    std::string config_path, checkpoint, qat_ckpt, out;
    std::vector<std::string> overrides;
    int64_t batches = 4, eval_images = -1;
    app.add_option("config", config_path, "the JSON config file (see docs/config.md)");
    app.add_option("overrides", overrides, "dotted.key=value overrides of config keys");
    app.add_option("--checkpoint", checkpoint, "an fp32 checkpoint to post-training quantize (= quant.init_checkpoint)");
    app.add_option("--qat-checkpoint", qat_ckpt, "a QAT run's checkpoint (the config must be that run's)");
    app.add_option("--batches", batches, "test batches (data eval_batch_size each) for the SQNR/clipping statistics")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
    app.add_option("--eval-images", eval_images,
                   "test images for the accuracy columns (default: all; 0 skips them)")
        ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
    app.add_option("--out", out, "also write the report as markdown to this file");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (config_path.empty()) {
        std::cerr << "sensitivity: a config file is required, e.g.\n"
                     "  sensitivity configs/lenet.json --checkpoint runs/lenet/last.safetensors\n"
                  << app.help();
        return 2;
    }
    if (!checkpoint.empty() && !qat_ckpt.empty()) {
        std::cerr << "sensitivity: --checkpoint (fp32, quantized here) and --qat-checkpoint (already quantized) "
                     "exclude each other; give one\n";
        return 2;
    }
    try {
        if (!checkpoint.empty()) overrides.push_back("quant.init_checkpoint=" + checkpoint);
        const Config cfg = load_config(config_path, overrides);
        if (qat_ckpt.empty() && cfg.quant.init_checkpoint.empty())
            throw ConfigError("no model to analyse: give --checkpoint FP32 (or quant.init_checkpoint=PATH) to "
                              "post-training quantize, or --qat-checkpoint QAT");
        // A missing or unreadable checkpoint fails before the data loads.
        read_checkpoint_info(qat_ckpt.empty() ? cfg.quant.init_checkpoint : qat_ckpt);
        if (cfg.threads > 0) set_num_threads(cfg.threads);
        Datasets data = make_datasets(cfg);
        if (data.test->size() == 0) throw std::runtime_error("the test set of " + config_path + " has no images");

        std::string note;
        auto qat = qat_ckpt.empty() ? post_training_quantized(cfg, eval_images != 0, note)
                                    : qat_checkpoint(cfg, qat_ckpt, data.train->height());
        const int64_t bs = cfg.train.eval_batch_size;
        const auto stats = test_batches(*data.test, bs, batches * bs, cfg.data.workers);
        const auto eval = test_batches(*data.test, bs, eval_images < 0 ? data.test->size() : eval_images,
                                       cfg.data.workers);
        quant::SensitivityOptions options;
        options.progress = [](const std::string& line) { std::cerr << line << "\n"; };
        const quant::SensitivityReport report = quant::measure_sensitivity(*qat, stats, eval, options);

        const std::string source = qat_ckpt.empty() ? "PTQ of " + cfg.quant.init_checkpoint : "QAT checkpoint " + qat_ckpt;
        const std::string title = cfg.model.arch + ", " + source + " (config " + config_path + ")";
        std::cout << "sensitivity of " << title << "\n" << note << report.to_text();
        if (!out.empty()) {
            write_file(out, "# Sensitivity: " + title + "\n\n" + (note.empty() ? "" : "- " + note) +
                                report.to_markdown());
            std::cout << "wrote " << out << "\n";
        }
        return 0;
    } catch (const ConfigError& e) {
        std::cerr << "sensitivity: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sensitivity: " << e.what() << "\n";
        return 1;
    }
}
