#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "train/config.h"

using namespace qf::train;

namespace {
Config parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
    return parse_config_text(text, "cfg.json", overrides);
}
}  // namespace

TEST_CASE("config: an empty object gives the fp32 recipe of DESIGN.md") {
    Config c = parse("{}");
    CHECK(c == Config{});
    CHECK(c.seed == 0);
    CHECK(c.train.batch_size == 128);
    CHECK(c.train.epochs == 3);
    CHECK(c.optimizer.name == OptimizerKind::Sgd);
    CHECK(c.optimizer.lr == 0.05);
    CHECK(c.optimizer.momentum == 0.9);
    CHECK(c.optimizer.weight_decay == 5e-4);
    CHECK(c.schedule.name == ScheduleKind::Cosine);
    CHECK(c.schedule.final_lr == 0.0);
    CHECK(c.data.hflip);
    CHECK_FALSE(c.data.random_resized_crop);
    CHECK(c.data.mean == std::vector<double>{0.2860});
    CHECK(c.data.std == std::vector<double>{0.3530});
    CHECK(c.data.train_images == "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    CHECK(c.data.test_labels == "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz");
}

TEST_CASE("config: every section parses into its typed struct") {
    Config c = parse(R"({
        "seed": 7, "threads": 2, "out_dir": "runs/x",
        "model": {"arch": "resnet20", "num_classes": 10, "in_channels": 3},
        "data": {"format": "folder", "train_dir": "a", "val_dir": "b", "channels": 3,
                 "image_size": 32, "resize": 36, "mean": [0.1, 0.2, 0.3], "std": [0.5],
                 "hflip": false, "random_resized_crop": true, "crop_scale": [0.25, 1],
                 "workers": 3, "prefetch": 4, "on_bad_image": "fail", "limit_train": 1000},
        "train": {"epochs": 5, "batch_size": 64, "label_smoothing": 0.1, "eval_only": true,
                  "resume": "runs/x/last.safetensors", "checkpoint_every_steps": 100},
        "optimizer": {"name": "adamw", "lr": 0.001, "betas": [0.8, 0.99], "eps": 1e-6,
                      "decay_bn_and_bias": false},
        "schedule": {"name": "step", "milestones": [2, 4], "gamma": 0.5, "warmup_epochs": 0.5}
    })");
    CHECK(c.seed == 7);
    CHECK(c.out_dir == "runs/x");
    CHECK(c.model.arch == "resnet20");
    CHECK(c.data.format == DataFormat::Folder);
    CHECK(c.data.mean == std::vector<double>{0.1, 0.2, 0.3});
    CHECK(c.data.crop_scale == std::vector<double>{0.25, 1.0});
    CHECK(c.data.on_bad_image == BadImagePolicy::Fail);
    CHECK(c.data.limit_train == 1000);
    CHECK(c.train.eval_only);
    CHECK(c.train.checkpoint_every_steps == 100);
    CHECK(c.optimizer.name == OptimizerKind::AdamW);
    CHECK(c.optimizer.betas == std::vector<double>{0.8, 0.99});
    CHECK_FALSE(c.optimizer.decay_bn_and_bias);
    CHECK(c.schedule.name == ScheduleKind::Step);
    CHECK(c.schedule.milestones == std::vector<int>{2, 4});
    CHECK(c.schedule.warmup_epochs == 0.5);
    CHECK(std::string(to_string(c.schedule.name)) == "step");
    CHECK(std::string(to_string(c.optimizer.name)) == "adamw");
}

TEST_CASE("config: malformed JSON names the file, line and column") {
    CHECK_THROWS_WITH_AS(parse("{\n  \"seed\": 1,\n  \"model\": {\"arch\": }\n}"),
                         doctest::Contains("cfg.json: malformed JSON: parse error at line 3, column"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(""), doctest::Contains("malformed JSON"), ConfigError);
    // A number beyond double's range is a config error too (found by fuzz_config).
    CHECK_THROWS_WITH_AS(parse(R"({"seed": 666e66666666})"), doctest::Contains("number overflow"), ConfigError);
    CHECK_THROWS_AS(parse_config_text("{}", "cfg.json", {"seed=1e999"}), ConfigError);
    CHECK_THROWS_WITH_AS(parse("[1, 2]"), doctest::Contains("must be a JSON object"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"seed": 1, "seed": 2})"), doctest::Contains("'seed' appears twice"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(std::string(100, '[') + std::string(100, ']')),
                         doctest::Contains("nested deeper"), ConfigError);
}

TEST_CASE("config: an unknown key is named with the closest valid key") {
    CHECK_THROWS_WITH_AS(parse(R"({"optimizer": {"learning_rate": 0.1}})"),
                         "unknown key 'optimizer.learning_rate' in cfg.json; did you mean 'optimizer.lr'?",
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"optimzer": {"lr": 0.1}})"),
                         "unknown key 'optimzer' in cfg.json; did you mean 'optimizer'?", ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"train": {"batchsize": 3}})"),
                         doctest::Contains("did you mean 'train.batch_size'?"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"model": {"zzzzzzzz": 1}})"),
                         doctest::Contains("valid keys of 'model': model.arch, model.num_classes"),
                         ConfigError);
}

TEST_CASE("config: wrong types, ranges and choices name key, value and expectation") {
    CHECK_THROWS_WITH_AS(parse(R"({"optimizer": {"lr": "fast"}})"),
                         "cfg.json: 'optimizer.lr' is \"fast\", expected a number in [0, 100]", ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"train": {"batch_size": 12.5}})"),
                         "cfg.json: 'train.batch_size' is 12.5, expected an integer in [1, 65536]", ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"train": {"batch_size": 0}})"),
                         doctest::Contains("'train.batch_size' is 0, expected an integer in [1, 65536]"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"seed": 99999999999999999999})"),
                         doctest::Contains("'seed' is"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"limit_train": -1}})"),
                         "cfg.json: 'data.limit_train' is -1, expected an integer >= 0", ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"optimizer": {"momentum": 1.5}})"),
                         "cfg.json: 'optimizer.momentum' is 1.5, expected a number in [0, 1]", ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"hflip": 1}})"),
                         "cfg.json: 'data.hflip' is 1, expected true or false", ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"model": {"arch": "resnet18"}})"),
                         "cfg.json: 'model.arch' is \"resnet18\", expected one of lenet, resnet20, mbv2",
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"schedule": {"name": 3}})"),
                         doctest::Contains("expected one of cosine, step, constant"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"std": [0.5, 0]}})"),
                         doctest::Contains("'data.std[1]' is 0, expected a number in [1e-06, 1000]"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"optimizer": {"betas": [0.9]}})"),
                         doctest::Contains("'optimizer.betas' is [0.9], expected an array of 2 numbers"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"model": 3})"),
                         doctest::Contains("'model' is 3, expected an object"), ConfigError);
}

TEST_CASE("config: keys are checked against each other") {
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"channels": 3, "mean": [0.5, 0.5, 0.5]}})"),
                         doctest::Contains("'data.channels' is 3 but 'model.in_channels' is 1"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"mean": [0.5, 0.5]}})"),
                         doctest::Contains("'data.mean' has 2 values"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"crop_scale": [0.9, 0.1]}})"),
                         doctest::Contains("min <= max"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"schedule": {"milestones": [3, 2]}})"),
                         doctest::Contains("strictly increasing"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"optimizer": {"nesterov": true, "momentum": 0}})"),
                         doctest::Contains("Nesterov needs momentum > 0"), ConfigError);
    CHECK_THROWS_WITH_AS(parse(R"({"data": {"format": "folder"}})"),
                         doctest::Contains("'data.val_dir' is empty"), ConfigError);
}

TEST_CASE("config: command-line overrides are validated like the file") {
    Config c = parse("{}", {"optimizer.lr=0.1", "model.arch=resnet20", "data.mean=[0.5]",
                            "train.eval_only=true", "out_dir=runs/a=b", "schedule={\"name\": \"constant\"}"});
    CHECK(c.optimizer.lr == 0.1);
    CHECK(c.model.arch == "resnet20");
    CHECK(c.data.mean == std::vector<double>{0.5});
    CHECK(c.train.eval_only);
    CHECK(c.out_dir == "runs/a=b");
    CHECK(c.schedule.name == ScheduleKind::Constant);

    CHECK_THROWS_WITH_AS(parse("{}", {"optimizer.lr=fast"}),
                         "override 'optimizer.lr=fast': 'optimizer.lr' is \"fast\", expected a number in [0, 100]",
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse("{}", {"optimizer.learning_rate=0.1"}),
                         "unknown key 'optimizer.learning_rate' in override 'optimizer.learning_rate=0.1'; "
                         "did you mean 'optimizer.lr'?",
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse("{}", {"optimizer.lr"}), doctest::Contains("expected dotted.key=value"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(parse("{}", {"=3"}), doctest::Contains("expected dotted.key=value"), ConfigError);
    CHECK_THROWS_WITH_AS(parse("{}", {"model=lenet"}), doctest::Contains("expected an object"), ConfigError);
    // Cross-key checks run after all overrides, so their order does not matter.
    Config rgb = parse("{}", {"data.channels=3", "model.in_channels=3"});
    CHECK(rgb.data.channels == 3);
    CHECK_THROWS_WITH_AS(parse("{}", {"data.channels=3"}), doctest::Contains("with its overrides"), ConfigError);
}

TEST_CASE("config: per-layer bit widths parse, and bad entries name the key") {
    Config c = parse("{}", {"quant.weight_bits_per_layer=1.conv1:4,11:6", "quant.activation_bits_per_point=input:7"});
    const auto w = parse_bits_per_name(c.quant.weight_bits_per_layer, "quant.weight_bits_per_layer");
    CHECK(w == std::map<std::string, int>{{"1.conv1", 4}, {"11", 6}});
    CHECK(parse_bits_per_name("", "k").empty());
    for (const char* bad : {"1.conv1", "1.conv1:9", "1.conv1:1", ":4", "1.conv1:x", "a:4,a:5"}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS(parse("{}", {std::string("quant.weight_bits_per_layer=") + bad}),
                             doctest::Contains("quant.weight_bits_per_layer"), ConfigError);
    }
}

TEST_CASE("config: the resolved config round-trips through JSON and a file") {
    Config c = parse(R"({"model": {"arch": "mbv2"}, "schedule": {"milestones": [1, 2]}})", {"seed=42"});
    nlohmann::json j = config_to_json(c);
    CHECK(j["model"]["arch"] == "mbv2");
    CHECK(j["optimizer"]["name"] == "sgd");
    CHECK(j["seed"] == 42);
    CHECK(parse(j.dump()) == c);

    std::string path = "build-train-config-test.json";
    save_config(c, path);
    CHECK(load_config(path) == c);
    std::remove(path.c_str());
    CHECK_THROWS_WITH_AS(load_config("no/such/config.json"), doctest::Contains("no/such/config.json"),
                         ConfigError);
}

TEST_CASE("config: docs/config.md is the generated reference") {
    // Regenerate with `train --config-reference > docs/config.md`, or
    // QF_REGENERATE_DOCS=1 test_train -tc='config: docs*' from the repository root.
    std::string generated = config_reference_markdown();
    if (std::getenv("QF_REGENERATE_DOCS")) std::ofstream("docs/config.md") << generated;
    std::ifstream file("docs/config.md");
    REQUIRE_MESSAGE(file, "docs/config.md is missing (run from the repository root)");
    std::stringstream committed;
    committed << file.rdbuf();
    CHECK_MESSAGE(committed.str() == generated,
                  "docs/config.md is out of date: regenerate it with `train --config-reference > docs/config.md`");
    for (const ConfigKey& k : config_keys()) CHECK(generated.find("`" + k.path + "`") != std::string::npos);
}
