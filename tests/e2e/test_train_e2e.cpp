// End to end through the Trainer: the smoke config trains above chance, a
// run stopped mid-epoch and resumed ends with the same weights bit for bit,
// and a diverging run stops at the first non-finite loss keeping its last
// good checkpoint.
#include <doctest/doctest.h>

#include <filesystem>

#include "format/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

using namespace qf;
using namespace qf::train;

namespace {
Config smoke(const std::string& out_dir, std::vector<std::string> overrides = {}) {
    overrides.push_back("out_dir=" + out_dir);
    std::filesystem::remove_all(out_dir);
    return load_config("configs/smoke.json", overrides);
}

// The model and optimizer tensors of a checkpoint (its metadata names the
// run and so differs between runs).
std::map<std::string, std::vector<float>> tensors_of(const std::string& path) {
    safetensors::File f = safetensors::read(path);
    std::map<std::string, std::vector<float>> out;
    for (const auto& [name, info] : f.tensors) out[name] = f.floats(name);
    return out;
}
}  // namespace

TEST_CASE("smoke config trains above chance, and a resumed run equals an uninterrupted one") {
    TrainSummary full = Trainer(smoke("runs/test_e2e_full")).run();
    CHECK(full.final_eval.images == 512);
    CHECK(full.final_eval.top1 > 50.0);  // chance is 10%

    TrainSummary first = Trainer(smoke("runs/test_e2e_resume", {"train.stop_after_steps=20"})).run();
    CHECK(first.stopped_early);
    CHECK(read_checkpoint_info("runs/test_e2e_resume/last.safetensors").step_in_epoch == 20);
    TrainSummary rest = Trainer(smoke("runs/test_e2e_resume2", {"train.resume=runs/test_e2e_resume/last.safetensors"})).run();
    CHECK(rest.steps == full.steps);

    auto a = tensors_of("runs/test_e2e_full/last.safetensors");
    auto b = tensors_of("runs/test_e2e_resume2/last.safetensors");
    REQUIRE(a.size() == b.size());
    for (const auto& [name, values] : a) {
        CAPTURE(name);
        CHECK(values == b.at(name));  // bit for bit
    }
    CHECK(rest.final_eval.top1 == full.final_eval.top1);
}

TEST_CASE("a diverging run stops at the first non-finite loss and keeps its last checkpoint") {
    Config cfg = smoke("runs/test_e2e_nan", {"optimizer.lr=100", "train.checkpoint_every_steps=1",
                                             "optimizer.momentum=0.99"});
    Trainer t(cfg);
    std::string message;
    try {
        t.run();
    } catch (const NonFiniteLossError& e) {
        message = e.what();
    }
    REQUIRE(!message.empty());
    CHECK(message.find("at step") != std::string::npos);
    CHECK(message.find("runs/test_e2e_nan/last.safetensors") != std::string::npos);
    // The checkpoint on disk is whole and loads into a fresh model.
    Trainer fresh(cfg);
    CHECK_NOTHROW(load_checkpoint("runs/test_e2e_nan/last.safetensors", "lenet", fresh.model(), nullptr));
}

TEST_CASE("QAT from the fp32 checkpoint: validation is the int8 graph, which infer loads, in parity") {
    if (!std::filesystem::exists("runs/test_e2e_full/last.safetensors"))
        Trainer(smoke("runs/test_e2e_full")).run();
    for (const char* recipe : {"quant.learned_ranges=none", "quant.learned_ranges=lsq"}) {
        CAPTURE(recipe);
        Config cfg = smoke("runs/test_e2e_qat", {"quant.enabled=true", "quant.init_checkpoint=runs/test_e2e_full/last.safetensors",
                                                 "train.epochs=1", "optimizer.lr=0.001", "quant.freeze_bn_after_steps=16",
                                                 "quant.freeze_ranges_after_steps=24", recipe});
        TrainSummary s = Trainer(cfg).run();
        CHECK(s.final_eval.top1 > 50.0);
        REQUIRE(s.int8_model == "runs/test_e2e_qat/model.int8.safetensors");
        infer::Model int8 = infer::Model::load(s.int8_model);
        EvalResult again = evaluate_int8(int8, *make_datasets(cfg).test, 256, 1);
        CHECK(again.top1 == s.final_eval.top1);  // the reported accuracy is the file's

        Config resumed = cfg;
        resumed.train.resume = "runs/test_e2e_qat/last.safetensors";
        quant::ParityReport p = Trainer(resumed).parity();
        CHECK(p.top1_agreement() >= 99.8);
        CHECK(p.within_one() >= 99.0);
    }
}
