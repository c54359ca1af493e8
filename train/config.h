// The training configuration: a JSON file parsed once into the typed structs
// below, plus command-line overrides `dotted.key=value`.
//
// Example:
//   Config cfg = load_config("configs/lenet.json", {"optimizer.lr=0.1"});
//   auto model = nn::build_model(cfg.model.arch, cfg.model.num_classes, ...);
//   save_config(cfg, cfg.out_dir + "/config.resolved.json");
//
// Every key is declared once, in the table of config.cpp (config_keys()):
// its dotted name, type, allowed values and meaning. That table drives
// parsing, validation, writing the resolved config and the reference
// docs/config.md, so they cannot drift apart. The defaults are the member
// initializers below (the fp32 recipe of DESIGN.md); the table reads them
// from a default-constructed Config.
//
// Adding a section: a struct here, a member of Config, a row in the section
// list of config.cpp and one row per key in its key table.
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qf::train {

// Anything wrong with a config file or an override. The message names the
// file (or the override), the dotted key, the value and what was expected.
struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ModelConfig {
    std::string arch = "lenet";  // lenet | resnet20 | mbv2 (nn::build_model)
    int num_classes = 10;
    int in_channels = 1;  // must equal data.channels

    bool operator==(const ModelConfig&) const = default;
};

enum class DataFormat { Idx, Folder };
enum class BadImagePolicy { Skip, Fail };

struct DataConfig {
    DataFormat format = DataFormat::Idx;
    // IDX files (format idx), .gz or plain.
    std::string train_images = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
    std::string train_labels = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz";
    std::string test_images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    std::string test_labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
    // Image folders root/<class>/<image> (format folder).
    std::string train_dir;
    std::string val_dir;
    int channels = 1;         // images are converted to 1 (gray) or 3 (RGB) channels
    int image_size = 28;      // side of the square network input
    int resize = 0;           // shorter side before cropping; 0 = resize straight to image_size
    std::vector<double> mean = {0.2860};  // per channel, or one value for all channels
    std::vector<double> std = {0.3530};
    bool hflip = true;                 // random horizontal flip (training only)
    bool random_resized_crop = false;  // training only; evaluation center-crops
    std::vector<double> crop_scale = {0.08, 1.0};  // area fraction range of random_resized_crop
    int workers = 1;   // decoding threads; 0 decodes on the training thread
    int prefetch = 2;  // batches prepared ahead of the training loop
    BadImagePolicy on_bad_image = BadImagePolicy::Skip;
    int64_t limit_train = 0;  // use only the first N training images; 0 = all
    int64_t limit_test = 0;   // likewise for the test/validation images

    bool operator==(const DataConfig&) const = default;
};

struct TrainConfig {
    int epochs = 3;
    int batch_size = 128;
    int eval_batch_size = 256;
    double label_smoothing = 0.0;
    int log_every = 50;                  // steps between plain log lines and metrics records
    int64_t checkpoint_every_steps = 0;  // 0 = checkpoint at the end of each epoch only
    int64_t stop_after_steps = 0;        // end this run after N steps (with a checkpoint); 0 = never
    bool eval_only = false;              // evaluate train.resume (or the initial weights) and stop
    std::string resume;                  // checkpoint to continue from; empty = start fresh

    bool operator==(const TrainConfig&) const = default;
};

enum class OptimizerKind { Sgd, AdamW };

struct OptimizerConfig {
    OptimizerKind name = OptimizerKind::Sgd;
    double lr = 0.05;  // peak learning rate; the schedule scales it
    double momentum = 0.9;              // SGD
    bool nesterov = false;              // SGD
    double weight_decay = 5e-4;         // SGD: L2 added to the gradient; AdamW: decoupled
    bool decay_bn_and_bias = true;      // false exempts biases and BatchNorm gamma/beta
    std::vector<double> betas = {0.9, 0.999};  // AdamW
    double eps = 1e-8;                         // AdamW

    bool operator==(const OptimizerConfig&) const = default;
};

enum class ScheduleKind { Cosine, Step, Constant };

struct ScheduleConfig {
    ScheduleKind name = ScheduleKind::Cosine;
    double warmup_epochs = 0.0;    // linear warmup: lr * (step + 1) / warmup_steps
    std::vector<int> milestones;   // step: epochs at which lr is multiplied by gamma
    double gamma = 0.1;            // step
    double final_lr = 0.0;         // cosine: the lr reached at the end of training

    bool operator==(const ScheduleConfig&) const = default;
};

// Quantization-aware training (quant/qat.h). Off unless enabled.
struct QuantConfig {
    bool enabled = false;             // train with fake-quant (QAT) and validate the int8 graph
    std::string init_checkpoint;      // fp32 checkpoint to start from; empty = from scratch
    int weight_bits = 8;
    bool weight_symmetric = true;
    bool weight_per_channel = true;   // per output channel (depthwise included)
    bool weight_narrow_range = false; // [-127, 127] instead of [-128, 127]
    int activation_bits = 8;
    bool activation_symmetric = false;
    std::string observer = "moving_average";  // minmax | moving_average | percentile | mse
    std::string learned_ranges = "none";      // none | lsq | pact
    int64_t freeze_bn_after_steps = -1;       // steps of this run; -1 = never
    int64_t freeze_ranges_after_steps = -1;
    // Mixed precision, "NAME:BITS,NAME:BITS": weights of named layers
    // ("1.conv1:4"), activations of named quantization points ("1.conv1.out:6").
    std::string weight_bits_per_layer, activation_bits_per_point;

    bool operator==(const QuantConfig&) const = default;
};

// "NAME:BITS,NAME:BITS" (quant.*_bits_per_*) as a map; throws ConfigError
// naming `key` and the entry for bad syntax or bits outside [2, 8].
std::map<std::string, int> parse_bits_per_name(const std::string& text, const std::string& key);

// Post-training quantization of quant.init_checkpoint (the `quantize` tool).
struct PtqConfig {
    int calibration_batches = 16;           // batches of data.train seen by the observers
    bool equalize = true;                   // cross-layer equalization before quantizing
    std::string bias_correction = "empirical";  // none | empirical | analytic

    bool operator==(const PtqConfig&) const = default;
};

// Data-parallel training under mpirun (train/data_parallel.h, docs/distributed.md).
// train.batch_size stays the global batch: each of R ranks takes 1/R of it.
struct DistributedConfig {
    bool sync_bn = false;     // BN statistics over the global batch (else each rank's own part)
    double bucket_mb = 1.0;   // gradients are summed across ranks in buckets of about this size
    bool overlap = true;      // start a bucket's sum while backward goes on (else after backward)

    bool operator==(const DistributedConfig&) const = default;
};

struct Config {
    uint64_t seed = 0;  // weights, shuffling and augmentation all derive from it
    int threads = 0;    // OpenMP threads; 0 = OpenMP's default
    std::string out_dir = "runs/default";  // checkpoints, metrics and resolved config
    ModelConfig model;
    DataConfig data;
    TrainConfig train;
    OptimizerConfig optimizer;
    ScheduleConfig schedule;
    QuantConfig quant;
    PtqConfig ptq;
    DistributedConfig distributed;

    bool operator==(const Config&) const = default;
};

// The names the config uses for enum values ("sgd", "cosine", ...).
const char* to_string(DataFormat v);
const char* to_string(BadImagePolicy v);
const char* to_string(OptimizerKind v);
const char* to_string(ScheduleKind v);

// ---- parsing ----------------------------------------------------------------

// Reads and validates `path`, then applies `overrides` ("dotted.key=value",
// value parsed as JSON when it parses, else taken as a string), then checks
// the keys against each other. Throws ConfigError.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from text in memory; `source` names it in messages.
Config parse_config_text(const std::string& text, const std::string& source,
                         const std::vector<std::string>& overrides = {});
// Applies one "dotted.key=value" override to `cfg`, validated like the file.
// Cross-key checks are left to check_config (overrides may come in any order).
void apply_override(Config& cfg, const std::string& override_text);
// The checks that involve several keys (mean has one value per channel, ...).
void check_config(const Config& cfg, const std::string& source);

// ---- writing ----------------------------------------------------------------

// Every key with its resolved value, nested by section.
nlohmann::json config_to_json(const Config& cfg);
// Writes config_to_json(cfg) to `path` atomically (temp file, fsync, rename).
void save_config(const Config& cfg, const std::string& path);

// The reference of every key (type, default, allowed values, meaning) as
// Markdown: the content of docs/config.md (`train --config-reference`).
std::string config_reference_markdown();

// ---- the key table ------------------------------------------------------------

// One configuration key. Built by the row helpers of config.cpp.
struct ConfigKey {
    std::string path;     // dotted: "optimizer.lr"
    std::string type;     // for the reference: "number", "integer", "string", ...
    std::string allowed;  // for the reference: "[0, 100]", "sgd | adamw", "" = anything
    std::string meaning;  // one line
    // Other names people use for it ("learning_rate"): suggested for typos.
    std::vector<std::string> aliases;
    std::function<nlohmann::json(const Config&)> get;
    // Validates `value` and stores it; throws ConfigError mentioning `where`.
    std::function<void(Config&, const nlohmann::json& value, const std::string& where)> set;
};

struct ConfigSection {
    std::string name;  // "" for the top-level keys
    std::string meaning;
};

const std::vector<ConfigSection>& config_sections();
const std::vector<ConfigKey>& config_keys();

}  // namespace qf::train
