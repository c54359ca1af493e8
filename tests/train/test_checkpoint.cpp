// Checkpoints (save, load, refusal of mismatched or damaged files) and the
// metrics log and progress display.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "format/safetensors.h"
#include "train/checkpoint.h"
#include "train/metrics.h"

using namespace qf;
using namespace qf::train;
namespace fs = std::filesystem;

namespace {

// A linear layer with a BatchNorm-like buffer: enough to have parameters
// with and without decay and a buffer, under a child's dotted names.
class TinyLayer : public nn::Module {
public:
    TinyLayer(int out, int in, float value) {
        weight = register_parameter("weight", Tensor::full({out, in}, value));
        bias = register_parameter("bias", Tensor::full({out}, value), /*decay=*/false);
        running_mean = register_buffer("running_mean", Tensor::full({out}, value));
    }
    Tensor forward(const Tensor& x) override { return x; }
    std::string kind() const override { return "TinyLayer"; }
    Tensor weight, bias, running_mean;
};

class TinyNet : public nn::Module {
public:
    TinyNet(int hidden, float value) { fc = register_module("fc", std::make_shared<TinyLayer>(hidden, 2, value)); }
    Tensor forward(const Tensor& x) override { return fc->forward(x); }
    std::string kind() const override { return "TinyNet"; }
    std::shared_ptr<TinyLayer> fc;
};

// A file name in the temporary folder, removed at the end of the test.
struct TempPath {
    explicit TempPath(const std::string& name)
        : path((fs::temp_directory_path() / ("qf_test_" + std::to_string(getpid()) + "_" + name)).string()) {}
    ~TempPath() { std::remove(path.c_str()); }
    std::string path;
};

std::vector<std::vector<float>> values_of(const nn::Module& m) {
    std::vector<std::vector<float>> v;
    for (const nn::NamedTensor& t : m.state()) v.push_back(t.tensor.values());
    return v;
}

// A model and SGD state after one step, saved at epoch 1, step 2 of it.
void save_trained(const std::string& path, TinyNet& net, Optimizer& opt) {
    for (nn::NamedTensor& p : net.parameters()) std::fill(p.tensor.grad(), p.tensor.grad() + p.tensor.numel(), 0.25f);
    opt.step(0.1);
    save_checkpoint(path, net, &opt, {"tiny", 1, 2, 7, R"({"seed": 3})"});
}

}  // namespace

TEST_CASE("checkpoint: save and load restore model, optimizer and position") {
    TempPath file("roundtrip.safetensors");
    TinyNet saved(3, 0.5f);
    auto saved_opt = make_optimizer(OptimizerConfig{}, saved.parameters());
    save_trained(file.path, saved, *saved_opt);

    TinyNet loaded(3, -1.0f);
    auto loaded_opt = make_optimizer(OptimizerConfig{}, loaded.parameters());
    CheckpointInfo info = load_checkpoint(file.path, "tiny", loaded, loaded_opt.get());
    CHECK(values_of(loaded) == values_of(saved));
    REQUIRE(loaded_opt->state().size() == saved_opt->state().size());
    for (size_t i = 0; i < saved_opt->state().size(); i++)
        CHECK(loaded_opt->state()[i].tensor.values() == saved_opt->state()[i].tensor.values());
    CHECK(loaded_opt->step_count() == 1);
    CHECK(info.arch == "tiny");
    CHECK(info.epoch == 1);
    CHECK(info.step_in_epoch == 2);
    CHECK(info.global_step == 7);
    CHECK(info.config_json == R"({"seed": 3})");
    CHECK(read_checkpoint_info(file.path).global_step == 7);

    safetensors::File raw = safetensors::read(file.path);
    CHECK(raw.has("model.fc.weight"));
    CHECK(raw.has("model.fc.running_mean"));
    CHECK(raw.has("optim.fc.weight.momentum"));
    CHECK(raw.meta("format_version") == "1");

    // Without an optimizer (evaluation), its state in the file is ignored.
    TinyNet eval_only(3, 0.0f);
    load_checkpoint(file.path, "tiny", eval_only, nullptr);
    CHECK(values_of(eval_only) == values_of(saved));
}

TEST_CASE("checkpoint: another architecture's checkpoint is refused, naming the tensor, model untouched") {
    TempPath file("other_arch.safetensors");
    TinyNet narrow(3, 0.5f);
    auto narrow_opt = make_optimizer(OptimizerConfig{}, narrow.parameters());
    save_trained(file.path, narrow, *narrow_opt);

    TinyNet wide(5, -1.0f);
    auto wide_opt = make_optimizer(OptimizerConfig{}, wide.parameters());
    auto before = values_of(wide);
    CHECK_THROWS_WITH_AS(load_checkpoint(file.path, "wide", wide, wide_opt.get()),
                         ("checkpoint " + file.path +
                          ": tensor 'model.fc.weight' has shape (3, 2), the model (wide) expects (5, 2)"
                          " (the checkpoint is of tiny)")
                             .c_str(),
                         CheckpointError);
    CHECK(values_of(wide) == before);
    CHECK(wide_opt->step_count() == 0);
}

TEST_CASE("checkpoint: missing and extra tensors are refused, and so is another optimizer's state") {
    TempPath file("names.safetensors");
    TinyNet net(3, 0.5f);
    auto sgd = make_optimizer(OptimizerConfig{}, net.parameters());
    save_trained(file.path, net, *sgd);

    // A model with one more tensor than the file.
    class Bigger : public TinyNet {
    public:
        Bigger() : TinyNet(3, 0.0f) { extra = register_parameter("extra", Tensor::zeros({1})); }
        Tensor extra;
    } bigger;
    CHECK_THROWS_WITH_AS(load_checkpoint(file.path, "tiny", bigger, nullptr),
                         doctest::Contains("tensor 'model.extra' (1) of the model (tiny) is missing"),
                         CheckpointError);

    // A file with a tensor the model does not have.
    safetensors::File original = safetensors::read(file.path);
    safetensors::Writer w;
    for (const auto& [name, t] : original.tensors) w.add_f32(name, t.shape, original.floats(name));
    w.add_f32("model.fc.surplus", {2}, {1, 2});
    for (const auto& [k, v] : original.metadata) w.set_metadata(k, v);
    w.write(file.path);
    TinyNet fresh(3, 0.0f);
    CHECK_THROWS_WITH_AS(load_checkpoint(file.path, "tiny", fresh, nullptr),
                         doctest::Contains("tensor 'model.fc.surplus' (2) is not in the model (tiny)"),
                         CheckpointError);
    CHECK(values_of(fresh) == values_of(TinyNet(3, 0.0f)));

    OptimizerConfig adamw_cfg;
    adamw_cfg.name = OptimizerKind::AdamW;
    TinyNet other(3, 0.0f);
    save_trained(file.path, net, *sgd);
    auto adamw = make_optimizer(adamw_cfg, other.parameters());
    CHECK_THROWS_WITH_AS(load_checkpoint(file.path, "tiny", other, adamw.get()),
                         doctest::Contains("the optimizer state is of sgd, this run uses adamw"), CheckpointError);
}

TEST_CASE("checkpoint: truncated, missing and foreign files are refused with the path named") {
    TempPath file("truncated.safetensors");
    TinyNet net(3, 0.5f);
    auto opt = make_optimizer(OptimizerConfig{}, net.parameters());
    save_trained(file.path, net, *opt);
    fs::resize_file(file.path, fs::file_size(file.path) - 5);

    TinyNet target(3, -1.0f);
    auto before = values_of(target);
    CHECK_THROWS_WITH_AS(load_checkpoint(file.path, "tiny", target, nullptr),
                         doctest::Contains(("checkpoint " + file.path + ": ").c_str()), CheckpointError);
    CHECK(values_of(target) == before);

    CHECK_THROWS_WITH_AS(load_checkpoint("no/such/file.safetensors", "tiny", target, nullptr),
                         doctest::Contains("checkpoint no/such/file.safetensors: cannot open"), CheckpointError);

    safetensors::Writer foreign;  // a safetensors file that is not a checkpoint
    foreign.add_f32("model.fc.weight", {3, 2}, std::vector<float>(6, 1.0f));
    foreign.write(file.path);
    CHECK_THROWS_WITH_AS(load_checkpoint(file.path, "tiny", target, nullptr),
                         doctest::Contains("metadata 'format' is missing"), CheckpointError);
    CHECK(values_of(target) == before);
}

TEST_CASE("metrics: one flushed JSON object per line, appended on resume") {
    TempPath file("metrics.jsonl");
    {
        MetricsLog log(file.path, false);
        log.write({{"kind", "train"}, {"step", 1}, {"loss", 2.5}});
        // Readable before the log is closed: each line is flushed.
        std::ifstream early(file.path);
        std::string first;
        std::getline(early, first);
        CHECK(nlohmann::json::parse(first)["loss"] == 2.5);
    }
    {
        MetricsLog log(file.path, true);
        log.write({{"kind", "eval"}, {"acc", 0.9}});
    }
    std::ifstream in(file.path);
    std::vector<nlohmann::json> records;
    for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
    REQUIRE(records.size() == 2);
    CHECK(records[1]["kind"] == "eval");
    CHECK_THROWS_WITH(MetricsLog("no/such/dir/m.jsonl", false), doctest::Contains("no/such/dir/m.jsonl"));
}

TEST_CASE("progress: plain lines every log_every steps, or one line redrawn on a terminal") {
    CHECK(format_duration(42) == "0:42");
    CHECK(format_duration(723) == "12:03");
    CHECK(format_duration(3723) == "1:02:03");
    CHECK(format_duration(-1) == "?");

    auto run = [](bool terminal, int64_t first_step) {
        std::FILE* out = std::tmpfile();
        Progress p("epoch 1/3", 10, first_step, 4, terminal, out);
        for (int64_t s = first_step + 1; s <= 10; s++) p.update(s, 32, 0.5, 0.75, 0.05);
        p.finish();
        std::string text(4096, '\0');
        std::rewind(out);
        text.resize(std::fread(text.data(), 1, text.size(), out));
        std::fclose(out);
        return text;
    };
    std::string plain = run(false, 0);
    CHECK(std::count(plain.begin(), plain.end(), '\n') == 3);  // steps 4, 8 and the last
    CHECK(plain.find("epoch 1/3 [ 4/10]  loss 0.5000  acc  75.00%  lr 0.05") == 0);
    CHECK(plain.find("img/s  ETA ") != std::string::npos);
    CHECK(plain.find('\r') == std::string::npos);

    std::string resumed = run(false, 6);  // a run resumed mid-epoch logs from where it stands
    CHECK(resumed.find("[ 8/10]") != std::string::npos);
    CHECK(resumed.find("[ 4/10]") == std::string::npos);

    std::string terminal = run(true, 0);
    CHECK(terminal.find('\r') == 0);
    CHECK(terminal.find("[10/10]") != std::string::npos);  // the last step is always drawn
    CHECK(std::count(terminal.begin(), terminal.end(), '\n') == 1);
    CHECK(terminal.back() == '\n');
}
