// Post-training quantization end to end (train/ptq.h): the smoke config's
// fp32 model quantized per channel stays within 2 points of fp32, the file
// written loads with infer::Model and scores the same; per-tensor asymmetric
// weights work too; a missing checkpoint, another architecture's checkpoint
// and a scheme the int8 kernels cannot run fail clearly and write nothing.
#include <doctest/doctest.h>

#include <filesystem>
#include <sstream>

#include "train/checkpoint.h"
#include "train/datasets.h"
#include "train/ptq.h"
#include "train/trainer.h"

using namespace qf;
using namespace qf::train;

namespace {
Config smoke(const std::string& out_dir, std::vector<std::string> overrides = {}) {
    overrides.push_back("out_dir=" + out_dir);
    std::filesystem::remove_all(out_dir);
    return load_config("configs/smoke.json", overrides);
}

// The smoke model trained once per test run (about 20 s).
const std::string& fp32_checkpoint() {
    static const std::string path = [] {
        TrainSummary s = Trainer(smoke("runs/test_ptq_fp32")).run();
        REQUIRE(s.final_eval.top1 > 50.0);
        return s.checkpoint;
    }();
    return path;
}

Config ptq_config(const std::string& out_dir, std::vector<std::string> overrides = {}) {
    overrides.push_back("quant.init_checkpoint=" + fp32_checkpoint());
    return smoke(out_dir, overrides);
}

// What run_ptq throws, or "" when it did not.
template <class Error>
std::string error_of(const Config& cfg) {
    std::ostringstream log;
    try {
        run_ptq(cfg, {.evaluate_fp32 = false, .log = &log});
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST_CASE("PTQ per channel: int8 within 2 points of fp32, and the written file scores the same") {
    Config cfg = ptq_config("runs/test_ptq_pc");  // defaults: symmetric per-channel, CLE, empirical BC
    std::ostringstream log;
    PtqResult r = run_ptq(cfg, {.log = &log});
    MESSAGE(log.str());
    CHECK(r.fp32.images == 512);
    CHECK(r.int8.images == 512);
    CHECK(r.folded_layers == 2);
    CHECK(r.equalized_pairs == 1);  // conv1 -> (max pool) -> conv2
    CHECK(r.bias_corrected_layers == 2);
    CHECK(r.int8.top1 >= r.fp32.top1 - 2.0);
    CHECK(log.str().find("fold: 2 conv+BN layers") != std::string::npos);

    REQUIRE(r.int8_model == "runs/test_ptq_pc/model.int8.safetensors");
    infer::Model loaded = infer::Model::load(r.int8_model);
    Datasets data = make_datasets(cfg);
    EvalResult again = evaluate_int8(loaded, *data.test, cfg.train.eval_batch_size, cfg.data.workers);
    CHECK(again.top1 == r.int8.top1);
    CHECK(again.top5 == r.int8.top5);
}

TEST_CASE("PTQ calibrate_only: the calibrated fake-quant model, nothing frozen or written") {
    Config cfg = ptq_config("runs/test_ptq_calibrate_only");
    std::ostringstream log;
    PtqResult r = run_ptq(cfg, {.evaluate_fp32 = false, .log = &log, .calibrate_only = true});
    REQUIRE(r.qat_model);
    CHECK(!r.qat_model->training());
    CHECK(r.int8.images == 0);
    CHECK(r.int8_model.empty());
    CHECK(!std::filesystem::exists("runs/test_ptq_calibrate_only/model.int8.safetensors"));
    CHECK(log.str().find("calibration:") != std::string::npos);
    // its points are calibrated: the fake-quant model runs and scores
    Datasets data = make_datasets(cfg);
    CHECK(evaluate_model(*r.qat_model, *data.test, cfg.train.eval_batch_size, cfg.data.workers).top1 > 50.0);
}

TEST_CASE("PTQ with asymmetric per-tensor weights, analytic bias correction") {
    Config cfg = ptq_config("runs/test_ptq_pt", {"quant.weight_symmetric=false", "quant.weight_per_channel=false",
                                                "ptq.bias_correction=analytic"});
    std::ostringstream log;
    PtqResult r = run_ptq(cfg, {.log = &log});
    MESSAGE(log.str());
    CHECK(r.int8.top1 >= r.fp32.top1 - 3.0);
    // Analytic correction needs BN statistics of the input: conv1 reads the
    // model input, conv2 a max pool; both are skipped and said so.
    CHECK(r.bias_corrected_layers == 0);
    CHECK(r.bias_correction_skipped == 2);
    CHECK(std::filesystem::exists("runs/test_ptq_pt/model.int8.safetensors"));
}

TEST_CASE("PTQ bad input: clear errors, nothing written") {
    SUBCASE("no checkpoint given") {
        Config cfg = smoke("runs/test_ptq_bad");
        const std::string e = error_of<ConfigError>(cfg);
        CHECK(e.find("quant.init_checkpoint") != std::string::npos);
    }
    SUBCASE("the checkpoint does not exist") {
        Config cfg = smoke("runs/test_ptq_bad", {"quant.init_checkpoint=runs/test_ptq_bad_nope.safetensors"});
        const std::string e = error_of<CheckpointError>(cfg);
        CHECK(e.find("runs/test_ptq_bad_nope.safetensors") != std::string::npos);
    }
    SUBCASE("a checkpoint of another architecture") {
        Config cfg = ptq_config("runs/test_ptq_bad", {"model.arch=resnet20"});
        const std::string e = error_of<CheckpointError>(cfg);
        MESSAGE(e);
        CHECK(e.find("tensor '") != std::string::npos);
        CHECK(e.find("resnet20") != std::string::npos);
        CHECK(e.find("lenet") != std::string::npos);
    }
    SUBCASE("a scheme the int8 kernels cannot run") {
        Config cfg = ptq_config("runs/test_ptq_bad");
        cfg.quant.weight_bits = 9;  // past the config's own check
        const std::string e = error_of<ConfigError>(cfg);
        MESSAGE(e);
        CHECK(e.find("quant.weight") != std::string::npos);
    }
    SUBCASE("learned ranges") {
        Config cfg = ptq_config("runs/test_ptq_bad", {"quant.learned_ranges=lsq"});
        CHECK(error_of<ConfigError>(cfg).find("quant.learned_ranges") != std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists("runs/test_ptq_bad"));
}
