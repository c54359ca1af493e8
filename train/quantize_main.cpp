// quantize CONFIG.json [dotted.key=value ...] [--checkpoint FP32.safetensors] [--skip-fp32]
//
// Post-training quantization (train/ptq.h): quantizes the fp32 checkpoint
// named by quant.init_checkpoint with the config's quant and ptq sections,
// prints the fp32 and int8 test accuracy and writes the int8 model to
// out_dir/model.int8.safetensors. The last line is machine-readable:
//   RESULT arch=lenet fp32_top1=90.44 fp32_top5=99.88 int8_top1=90.35 int8_top5=99.88 model=PATH
// (ties of the logits go to the first class, as torch.argmax: infer/label_rank.h)
// (fp32_* are "nan" with --skip-fp32). With --parity a second line follows:
//   PARITY arch=lenet same_top1=99.99 within_one_step=99.999
// Exit codes: 0 done, 1 a runtime failure (data, checkpoint, quantization,
// I/O), 2 bad config or command line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "train/checkpoint.h"
#include "train/ptq.h"

using namespace qf::train;

int main(int argc, char** argv) {
    CLI::App app{"qforge quantize: post-training quantization of an fp32 checkpoint to the int8 graph"};
    std::string config_path, checkpoint;
    std::vector<std::string> overrides;
    bool skip_fp32 = false, fake_quant = false, parity = false;
    app.add_option("config", config_path, "the JSON config file (see docs/config.md)");
    app.add_option("overrides", overrides, "dotted.key=value overrides of config keys");
    app.add_option("--checkpoint", checkpoint, "the fp32 checkpoint (same as quant.init_checkpoint=PATH)");
    app.add_flag("--skip-fp32", skip_fp32, "do not evaluate the fp32 checkpoint");
    app.add_flag("--eval-fake-quant", fake_quant, "also evaluate the fake-quant simulation (a diagnostic)");
    app.add_flag("--parity", parity,
                 "also compare the fake-quant forward with the int8 graph on the test set: top-1 agreement, "
                 "logits within 1 step, the first layer where they part");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (config_path.empty()) {
        std::cerr << "quantize: a config file is required, e.g.\n"
                     "  quantize configs/lenet.json quant.init_checkpoint=runs/lenet/last.safetensors\n"
                  << app.help();
        return 2;
    }
    try {
        if (!checkpoint.empty()) overrides.push_back("quant.init_checkpoint=" + checkpoint);
        Config cfg = load_config(config_path, overrides);
        PtqResult r = run_ptq(cfg, {.evaluate_fp32 = !skip_fp32, .evaluate_fake_quant = fake_quant, .parity = parity});
        if (!skip_fp32)
            std::printf("fp32: top-1 %.2f%%, top-5 %.2f%% on %lld images\n", r.fp32.top1, r.fp32.top5,
                        (long long)r.fp32.images);
        std::printf("int8: top-1 %.2f%%, top-5 %.2f%% on %lld images\n", r.int8.top1, r.int8.top5,
                    (long long)r.int8.images);
        std::printf("wrote %s\n", r.int8_model.c_str());
        const auto fmt = [&](double v) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.2f", v);
            return skip_fp32 ? std::string("nan") : std::string(buf);
        };
        std::printf("RESULT arch=%s fp32_top1=%s fp32_top5=%s int8_top1=%.2f int8_top5=%.2f model=%s\n",
                    cfg.model.arch.c_str(), fmt(r.fp32.top1).c_str(), fmt(r.fp32.top5).c_str(), r.int8.top1,
                    r.int8.top5, r.int8_model.c_str());
        if (parity)
            std::printf("PARITY arch=%s same_top1=%.2f within_one_step=%.3f\n", cfg.model.arch.c_str(),
                        r.parity.top1_agreement(), r.parity.within_one());
        return 0;
    } catch (const ConfigError& e) {
        std::cerr << "quantize: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "quantize: " << e.what() << "\n";
        return 1;
    }
}
