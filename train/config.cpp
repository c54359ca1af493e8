#include "train/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>

#include "format/safetensors.h"

namespace qf::train {

using json = nlohmann::json;

namespace {

// A config is at most section.key deep, plus arrays; anything much deeper is
// garbage, and refusing it keeps the recursive dump() of error messages safe.
constexpr int kMaxJsonDepth = 16;

// A value as it appears in messages: its JSON text, shortened.
std::string show(const json& v) {
    std::string s = v.dump();
    return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

[[noreturn]] void fail_value(const std::string& where, const std::string& key, const json& value,
                             const std::string& expected) {
    throw ConfigError(where + ": '" + key + "' is " + show(value) + ", expected " + expected);
}

std::string show_number(double x) {
    char text[32];
    std::snprintf(text, sizeof text, "%.10g", x);  // 100 rather than JSON's 100.0
    return text;
}

std::string range_text(int64_t lo, int64_t hi) {
    if (hi == std::numeric_limits<int64_t>::max()) return ">= " + std::to_string(lo);
    return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

std::string range_text(double lo, double hi) {
    return "[" + show_number(lo) + ", " + show_number(hi) + "]";
}

int64_t read_integer(const json& v, int64_t lo, int64_t hi, const std::string& key,
                     const std::string& where) {
    std::string range = range_text(lo, hi);
    std::string expected = "an integer " + (range[0] == '[' ? "in " + range : range);
    if (!v.is_number_integer()) fail_value(where, key, v, expected);
    if (v.is_number_unsigned() && v.get<uint64_t>() > (uint64_t)std::numeric_limits<int64_t>::max())
        fail_value(where, key, v, expected);
    int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail_value(where, key, v, expected);
    return x;
}

double read_number(const json& v, double lo, double hi, const std::string& key,
                   const std::string& where) {
    std::string expected = "a number in " + range_text(lo, hi);
    if (!v.is_number()) fail_value(where, key, v, expected);
    double x = v.get<double>();
    if (!(x >= lo && x <= hi)) fail_value(where, key, v, expected);
    return x;
}

// ---- row helpers: each makes one ConfigKey --------------------------------------

// The config names of a choice's values, paired with the values.
template <class T>
using Names = std::vector<std::pair<std::string, T>>;

// FIELD(optimizer.lr) is an accessor of that member, for const and non-const
// Configs alike, so that each row names its member once.
#define FIELD(member) [](auto& c) -> auto& { return c.member; }

template <class Access>
ConfigKey integer(std::string path, Access field, int64_t lo, int64_t hi, std::string meaning) {
    ConfigKey k{path, "integer", range_text(lo, hi), std::move(meaning), {}, {}, {}};
    k.get = [field](const Config& c) { return json(field(c)); };
    k.set = [field, lo, hi, path](Config& c, const json& v, const std::string& where) {
        using T = std::remove_reference_t<decltype(field(c))>;
        field(c) = static_cast<T>(read_integer(v, lo, hi, path, where));
    };
    return k;
}

template <class Access>
ConfigKey number(std::string path, Access field, double lo, double hi, std::string meaning) {
    ConfigKey k{path, "number", range_text(lo, hi), std::move(meaning), {}, {}, {}};
    k.get = [field](const Config& c) { return json(field(c)); };
    k.set = [field, lo, hi, path](Config& c, const json& v, const std::string& where) {
        field(c) = read_number(v, lo, hi, path, where);
    };
    return k;
}

template <class Access>
ConfigKey boolean(std::string path, Access field, std::string meaning) {
    ConfigKey k{path, "boolean", "true, false", std::move(meaning), {}, {}, {}};
    k.get = [field](const Config& c) { return json(field(c)); };
    k.set = [field, path](Config& c, const json& v, const std::string& where) {
        if (!v.is_boolean()) fail_value(where, path, v, "true or false");
        field(c) = v.get<bool>();
    };
    return k;
}

template <class Access>
ConfigKey string(std::string path, Access field, std::string meaning) {
    ConfigKey k{path, "string", "any", std::move(meaning), {}, {}, {}};
    k.get = [field](const Config& c) { return json(field(c)); };
    k.set = [field, path](Config& c, const json& v, const std::string& where) {
        if (!v.is_string()) fail_value(where, path, v, "a string");
        field(c) = v.get<std::string>();
    };
    return k;
}

// One of a fixed set of names, stored as the enum value (or string) paired with each.
template <class T, class Access>
ConfigKey choice(std::string path, Access field, Names<T> options,
                 std::string meaning) {
    std::string names;
    for (const auto& [name, value] : options) names += (names.empty() ? "" : ", ") + name;
    ConfigKey k{path, "string", names, std::move(meaning), {}, {}, {}};
    k.get = [field, options](const Config& c) {
        for (const auto& [name, value] : options)
            if (value == field(c)) return json(name);
        return json(nullptr);  // unreachable: set() stores only listed values
    };
    k.set = [field, options, names, path](Config& c, const json& v, const std::string& where) {
        if (v.is_string())
            for (const auto& [name, value] : options)
                if (name == v.get<std::string>()) {
                    field(c) = value;
                    return;
                }
        fail_value(where, path, v, "one of " + names);
    };
    return k;
}

template <class Access>
ConfigKey name_choice(std::string path, Access field, const std::vector<std::string>& names,
                      std::string meaning) {
    std::vector<std::pair<std::string, std::string>> options;
    for (const std::string& n : names) options.emplace_back(n, n);
    return choice<std::string>(std::move(path), field, std::move(options), std::move(meaning));
}

// An array of min_count..max_count numbers (integers when T is integral), each in [lo, hi].
template <class T, class Access>
ConfigKey list(std::string path, Access field, size_t min_count, size_t max_count, double lo,
               double hi, std::string meaning) {
    constexpr bool integral = std::is_integral_v<T>;
    std::string count = min_count == max_count ? std::to_string(min_count)
                                               : std::to_string(min_count) + " to " + std::to_string(max_count);
    std::string each = integral ? range_text((int64_t)lo, (int64_t)hi) : range_text(lo, hi);
    ConfigKey k{path, integral ? "array of integers" : "array of numbers",
                count + " values, each in " + each, std::move(meaning), {}, {}, {}};
    k.get = [field](const Config& c) { return json(field(c)); };
    k.set = [=](Config& c, const json& v, const std::string& where) {
        if (!v.is_array() || v.size() < min_count || v.size() > max_count)
            fail_value(where, path, v, "an array of " + count + (integral ? " integers" : " numbers"));
        std::vector<T> values;
        for (size_t i = 0; i < v.size(); i++) {
            std::string element = path + "[" + std::to_string(i) + "]";
            if constexpr (integral)
                values.push_back((T)read_integer(v[i], (int64_t)lo, (int64_t)hi, element, where));
            else
                values.push_back(read_number(v[i], lo, hi, element, where));
        }
        field(c) = std::move(values);
    };
    return k;
}

ConfigKey with_aliases(ConfigKey k, std::vector<std::string> aliases) {
    k.aliases = std::move(aliases);
    return k;
}

constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

// The names of enum values: used by the key table and by to_string().
const Names<DataFormat> kDataFormats = {{"idx", DataFormat::Idx}, {"folder", DataFormat::Folder}};
const Names<BadImagePolicy> kBadImagePolicies = {{"skip", BadImagePolicy::Skip}, {"fail", BadImagePolicy::Fail}};
const Names<OptimizerKind> kOptimizers = {{"sgd", OptimizerKind::Sgd}, {"adamw", OptimizerKind::AdamW}};
const Names<ScheduleKind> kSchedules = {
    {"cosine", ScheduleKind::Cosine}, {"step", ScheduleKind::Step}, {"constant", ScheduleKind::Constant}};

template <class T>
const char* name_of(const Names<T>& names, T value) {
    for (const auto& [name, v] : names)
        if (v == value) return name.c_str();
    return "?";
}

}  // namespace

// ---- the tables ---------------------------------------------------------------

const std::vector<ConfigSection>& config_sections() {
    static const std::vector<ConfigSection> sections = {
        {"", "seed, threads and the output folder"},
        {"model", "the network to build"},
        {"data", "the dataset, augmentation and loading"},
        {"train", "the training loop"},
        {"optimizer", "the parameter update"},
        {"schedule", "the learning rate over time"},
        {"quant", "quantization-aware training and the quantization schemes"},
        {"ptq", "post-training quantization (the quantize tool)"},
        {"distributed", "data-parallel training under mpirun (docs/distributed.md)"},
    };
    return sections;
}

const std::vector<ConfigKey>& config_keys() {
    static const std::vector<ConfigKey> keys = {
        integer("seed", FIELD(seed), 0, 4294967295, "random seed of weights, shuffling and augmentation"),
        integer("threads", FIELD(threads), 0, 1024, "OpenMP threads; 0 = OpenMP's default (OMP_NUM_THREADS or all cores)"),
        string("out_dir", FIELD(out_dir), "folder of checkpoints, metrics.jsonl and the resolved config"),

        with_aliases(name_choice("model.arch", FIELD(model.arch), {"lenet", "resnet20", "mbv2"},
                                 "network architecture (DESIGN.md, reference workloads)"),
                     {"architecture", "name", "type"}),
        integer("model.num_classes", FIELD(model.num_classes), 2, 100000, "outputs of the last layer"),
        integer("model.in_channels", FIELD(model.in_channels), 1, 4, "input channels; must equal data.channels"),

        choice<DataFormat>("data.format", FIELD(data.format), kDataFormats,
                           "idx: MNIST-style IDX files; folder: root/<class>/<image> trees"),
        string("data.train_images", FIELD(data.train_images), "idx: training images (.gz or plain)"),
        string("data.train_labels", FIELD(data.train_labels), "idx: training labels"),
        string("data.test_images", FIELD(data.test_images), "idx: test images, evaluated after each epoch"),
        string("data.test_labels", FIELD(data.test_labels), "idx: test labels"),
        string("data.train_dir", FIELD(data.train_dir), "folder: root of the training class folders"),
        string("data.val_dir", FIELD(data.val_dir), "folder: root of the validation class folders (same class names)"),
        integer("data.channels", FIELD(data.channels), 1, 3, "images are converted to 1 (gray) or 3 (RGB) channels"),
        integer("data.image_size", FIELD(data.image_size), 8, 1024, "side of the square network input, in pixels"),
        integer("data.resize", FIELD(data.resize), 0, 4096, "folder: shorter side before the (center or random) crop; 0 = resize straight to image_size"),
        list<double>("data.mean", FIELD(data.mean), 1, 4, -1000, 1000, "normalization mean per channel (or one for all), on pixels scaled to [0, 1]"),
        list<double>("data.std", FIELD(data.std), 1, 4, 1e-6, 1000, "normalization standard deviation per channel (or one for all)"),
        boolean("data.hflip", FIELD(data.hflip), "random horizontal flip of training images"),
        boolean("data.random_resized_crop", FIELD(data.random_resized_crop), "random-resized-crop of training images (evaluation center-crops)"),
        list<double>("data.crop_scale", FIELD(data.crop_scale), 2, 2, 0.01, 1, "[min, max] area fraction of random_resized_crop"),
        integer("data.workers", FIELD(data.workers), 0, 64, "decoding threads; 0 decodes on the training thread"),
        integer("data.prefetch", FIELD(data.prefetch), 1, 64, "batches prepared ahead of the training loop"),
        choice<BadImagePolicy>("data.on_bad_image", FIELD(data.on_bad_image), kBadImagePolicies,
                               "a corrupt or oversized image: skip it (counted, with a warning) or stop"),
        integer("data.limit_train", FIELD(data.limit_train), 0, kNoLimit, "use only the first N training images; 0 = all"),
        integer("data.limit_test", FIELD(data.limit_test), 0, kNoLimit, "use only the first N test/validation images; 0 = all"),

        with_aliases(integer("train.epochs", FIELD(train.epochs), 1, 100000, "passes over the training set"),
                     {"num_epochs", "epoch"}),
        with_aliases(integer("train.batch_size", FIELD(train.batch_size), 1, 65536, "training batch size"),
                     {"batch", "bs"}),
        integer("train.eval_batch_size", FIELD(train.eval_batch_size), 1, 65536, "evaluation batch size"),
        number("train.label_smoothing", FIELD(train.label_smoothing), 0, 1, "label smoothing of the cross-entropy loss"),
        integer("train.log_every", FIELD(train.log_every), 1, 1000000, "steps between log lines (when not on a terminal) and metrics records"),
        integer("train.checkpoint_every_steps", FIELD(train.checkpoint_every_steps), 0, kNoLimit, "also checkpoint every N steps; 0 = at the end of each epoch only"),
        integer("train.stop_after_steps", FIELD(train.stop_after_steps), 0, kNoLimit, "end the run after N optimizer steps, checkpointing first as an interrupted run would; 0 = never"),
        boolean("train.eval_only", FIELD(train.eval_only), "evaluate the weights of train.resume (or the initial ones) and stop"),
        string("train.resume", FIELD(train.resume), "checkpoint to continue from exactly; empty = start fresh"),

        choice<OptimizerKind>("optimizer.name", FIELD(optimizer.name), kOptimizers,
                              "sgd: SGD with momentum (PyTorch semantics); adamw: AdamW"),
        with_aliases(number("optimizer.lr", FIELD(optimizer.lr), 0, 100, "peak learning rate; the schedule scales it"),
                     {"learning_rate", "base_lr"}),
        number("optimizer.momentum", FIELD(optimizer.momentum), 0, 1, "sgd: momentum; 0 = plain SGD"),
        boolean("optimizer.nesterov", FIELD(optimizer.nesterov), "sgd: Nesterov momentum (needs momentum > 0)"),
        with_aliases(number("optimizer.weight_decay", FIELD(optimizer.weight_decay), 0, 10,
                            "sgd: L2 penalty added to the gradient; adamw: decoupled decay"),
                     {"wd", "decay"}),
        boolean("optimizer.decay_bn_and_bias", FIELD(optimizer.decay_bn_and_bias), "false exempts biases and BatchNorm gamma/beta from weight decay"),
        list<double>("optimizer.betas", FIELD(optimizer.betas), 2, 2, 0, 0.999999, "adamw: decay rates of the first and second moments"),
        number("optimizer.eps", FIELD(optimizer.eps), 0, 1, "adamw: added to the denominator"),

        choice<ScheduleKind>("schedule.name", FIELD(schedule.name), kSchedules,
                             "cosine: per-step cosine decay to final_lr; step: times gamma at each milestone; constant"),
        number("schedule.warmup_epochs", FIELD(schedule.warmup_epochs), 0, 1000, "linear warmup over this many epochs (fractions allowed); 0 = none"),
        list<int>("schedule.milestones", FIELD(schedule.milestones), 0, 100, 1, 100000, "step: increasing epochs at which the lr is multiplied by gamma"),
        number("schedule.gamma", FIELD(schedule.gamma), 0, 1, "step: factor applied at each milestone"),
        number("schedule.final_lr", FIELD(schedule.final_lr), 0, 100, "cosine: learning rate at the end of the last epoch"),

        boolean("quant.enabled", FIELD(quant.enabled), "train with fake quantization (QAT); validation runs the frozen int8 graph"),
        string("quant.init_checkpoint", FIELD(quant.init_checkpoint), "fp32 checkpoint whose weights QAT (or PTQ) starts from; empty = from scratch"),
        integer("quant.weight_bits", FIELD(quant.weight_bits), 2, 8, "bits of weights"),
        boolean("quant.weight_symmetric", FIELD(quant.weight_symmetric), "weights symmetric (zero point fixed) or asymmetric"),
        boolean("quant.weight_per_channel", FIELD(quant.weight_per_channel), "one scale per output channel (else one per tensor)"),
        boolean("quant.weight_narrow_range", FIELD(quant.weight_narrow_range), "drop the lowest level: [-127, 127] at 8 bits"),
        integer("quant.activation_bits", FIELD(quant.activation_bits), 2, 8, "bits of activations"),
        boolean("quant.activation_symmetric", FIELD(quant.activation_symmetric), "activations symmetric or asymmetric (per tensor)"),
        name_choice("quant.observer", FIELD(quant.observer), {"minmax", "moving_average", "percentile", "mse"},
                    "how activation ranges are observed"),
        name_choice("quant.learned_ranges", FIELD(quant.learned_ranges), {"none", "lsq", "pact"},
                    "learned ranges: LSQ step sizes (weights and activations) or PACT clipping (ReLU outputs)"),
        integer("quant.freeze_bn_after_steps", FIELD(quant.freeze_bn_after_steps), -1, kNoLimit,
                "QAT: use BN running statistics (folded) from this step of the run on; -1 = never"),
        integer("quant.freeze_ranges_after_steps", FIELD(quant.freeze_ranges_after_steps), -1, kNoLimit,
                "QAT: stop updating weight and activation ranges from this step on (learned LSQ and PACT ranges keep learning); -1 = never"),
        string("quant.weight_bits_per_layer", FIELD(quant.weight_bits_per_layer),
               "mixed precision: \"LAYER:BITS,...\" overrides quant.weight_bits for named layers (\"1.conv1:4,11:6\"); "
               "names as in the checkpoint; empty = none"),
        string("quant.activation_bits_per_point", FIELD(quant.activation_bits_per_point),
               "mixed precision: \"POINT:BITS,...\" overrides quant.activation_bits at named quantization points "
               "(\"input\", \"1.conv1.out\", \"1.out\" for a block's output); empty = none"),

        integer("ptq.calibration_batches", FIELD(ptq.calibration_batches), 1, 100000, "training batches the observers see"),
        boolean("ptq.equalize", FIELD(ptq.equalize), "cross-layer equalization of conv pairs before quantizing"),
        name_choice("ptq.bias_correction", FIELD(ptq.bias_correction), {"none", "empirical", "analytic"},
                    "bias correction of quantized weights: with data, from BN statistics, or none"),

        boolean("distributed.sync_bn", FIELD(distributed.sync_bn), "BN batch statistics over the global batch (all ranks) instead of each rank's part"),
        number("distributed.bucket_mb", FIELD(distributed.bucket_mb), 0.001, 1024, "gradients are summed across ranks in buckets of about this many megabytes"),
        boolean("distributed.overlap", FIELD(distributed.overlap), "start summing a bucket as soon as backward has finished its gradients (else after backward)"),
    };
    return keys;
}

#undef FIELD


const char* to_string(DataFormat v) { return name_of(kDataFormats, v); }
const char* to_string(BadImagePolicy v) { return name_of(kBadImagePolicies, v); }
const char* to_string(OptimizerKind v) { return name_of(kOptimizers, v); }
const char* to_string(ScheduleKind v) { return name_of(kSchedules, v); }

// ---- looking keys up ----------------------------------------------------------------

namespace {

const ConfigKey* find_key(const std::string& path) {
    for (const ConfigKey& k : config_keys())
        if (k.path == path) return &k;
    return nullptr;
}

bool is_section(const std::string& path) {
    if (path.empty()) return false;
    for (const ConfigSection& s : config_sections())
        if (s.name == path) return true;
    return false;
}

// The section part of a dotted key: "optimizer" for "optimizer.lr", "" for "seed".
std::string section_of(const std::string& path) {
    size_t dot = path.rfind('.');
    return dot == std::string::npos ? "" : path.substr(0, dot);
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++) row[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); j++) {
            size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
            diagonal = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitute});
        }
    }
    return row[b.size()];
}

// "unknown key 'optimizer.learning_rate' in cfg.json; did you mean 'optimizer.lr'?"
// The suggestion is the closest key or section by edit distance, where the
// keys' aliases ("optimizer.learning_rate") count as spellings of their key.
// With nothing close, the message lists the keys of the section instead.
std::string unknown_key_message(const std::string& path, const std::string& where) {
    std::vector<std::pair<std::string, std::string>> spellings;  // (spelling, key it means)
    for (const ConfigSection& s : config_sections())
        if (!s.name.empty()) spellings.emplace_back(s.name, s.name);
    for (const ConfigKey& k : config_keys()) {
        spellings.emplace_back(k.path, k.path);
        std::string section = section_of(k.path);
        for (const std::string& alias : k.aliases)
            spellings.emplace_back(section.empty() ? alias : section + "." + alias, k.path);
    }
    size_t best = std::numeric_limits<size_t>::max();
    std::string suggestion;
    for (const auto& [spelling, key] : spellings) {
        size_t d = edit_distance(path, spelling);
        if (d < best) best = d, suggestion = key;
    }
    std::string message = "unknown key '" + path + "' in " + where;
    if (best <= std::max<size_t>(2, path.size() / 3)) return message + "; did you mean '" + suggestion + "'?";

    std::string section = section_of(path), valid;
    for (const ConfigKey& k : config_keys())
        if (section_of(k.path) == section) valid += (valid.empty() ? "" : ", ") + k.path;
    if (section.empty())
        for (const ConfigSection& s : config_sections())
            if (!s.name.empty()) valid += ", " + s.name;
    return message + "; valid keys" + (section.empty() ? "" : " of '" + section + "'") + ": " + valid;
}

// Parses JSON text, refusing duplicate keys (JSON parsers silently keep one of
// them) and nesting deeper than kMaxJsonDepth. Syntax errors come out as
// json::parse_error for the caller to word.
json parse_json(const std::string& text, const std::string& where) {
    std::vector<std::set<std::string>> keys_of_open_objects;
    auto check = [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth > kMaxJsonDepth)
            throw ConfigError(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        if (event == json::parse_event_t::object_start) keys_of_open_objects.emplace_back();
        if (event == json::parse_event_t::object_end && !keys_of_open_objects.empty())
            keys_of_open_objects.pop_back();
        if (event == json::parse_event_t::key && !keys_of_open_objects.empty() &&
            !keys_of_open_objects.back().insert(parsed.get<std::string>()).second)
            throw ConfigError(where + ": key '" + parsed.get<std::string>() + "' appears twice in one object");
        return true;
    };
    return json::parse(text, check);
}

// Stores every key of `object`, a JSON object found at section `prefix`.
void apply_object(Config& cfg, const json& object, const std::string& prefix, const std::string& where) {
    for (const auto& [name, value] : object.items()) {
        std::string path = prefix.empty() ? name : prefix + "." + name;
        if (const ConfigKey* key = find_key(path)) {
            key->set(cfg, value, where);
        } else if (is_section(path)) {
            if (!value.is_object()) fail_value(where, path, value, "an object (the '" + path + "' section)");
            apply_object(cfg, value, path, where);
        } else {
            throw ConfigError(unknown_key_message(path, where));
        }
    }
}

}  // namespace

// ---- parsing --------------------------------------------------------------------

Config parse_config_text(const std::string& text, const std::string& source,
                         const std::vector<std::string>& overrides) {
    json document;
    try {
        document = parse_json(text, source);
    } catch (const json::exception& e) {
        // what() is "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
        // or "[json.exception.out_of_range.406] number overflow parsing '1e999'".
        std::string what = e.what();
        size_t bracket = what.find("] ");
        throw ConfigError(source + ": malformed JSON: " +
                          (bracket == std::string::npos ? what : what.substr(bracket + 2)));
    }
    if (!document.is_object())
        throw ConfigError(source + ": the config must be a JSON object ({...}), got " + show(document));
    Config cfg;
    apply_object(cfg, document, "", source);
    for (const std::string& o : overrides) apply_override(cfg, o);
    check_config(cfg, overrides.empty() ? source : source + " with its overrides");
    return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw ConfigError("cannot open config file " + path);
    std::ostringstream text;
    text << file.rdbuf();
    if (file.bad()) throw ConfigError("cannot read config file " + path);
    return parse_config_text(text.str(), path, overrides);
}

void apply_override(Config& cfg, const std::string& override_text) {
    std::string where = "override '" + override_text + "'";
    size_t eq = override_text.find('=');
    if (eq == std::string::npos || eq == 0)
        throw ConfigError(where + ": expected dotted.key=value, e.g. optimizer.lr=0.1");
    std::string path = override_text.substr(0, eq), text = override_text.substr(eq + 1);
    // The value is JSON when it parses as JSON ("0.1", "true", "[1, 2]"),
    // otherwise the text itself (so model.arch=resnet20 needs no quotes).
    json value;
    try {
        value = parse_json(text, where);
    } catch (const json::exception&) {  // not JSON (or a number out of range): the text itself
        value = text;
    }
    if (const ConfigKey* key = find_key(path)) {
        key->set(cfg, value, where);
    } else if (is_section(path)) {
        if (!value.is_object()) fail_value(where, path, value, "an object (the '" + path + "' section)");
        apply_object(cfg, value, path, where);
    } else {
        throw ConfigError(unknown_key_message(path, where));
    }
}

std::map<std::string, int> parse_bits_per_name(const std::string& text, const std::string& key) {
    std::map<std::string, int> bits;
    std::stringstream entries(text);
    for (std::string entry; std::getline(entries, entry, ',');) {
        const size_t colon = entry.rfind(':');
        const std::string name = colon == std::string::npos ? "" : entry.substr(0, colon);
        const std::string value = colon == std::string::npos ? "" : entry.substr(colon + 1);
        const bool digits = !value.empty() && value.size() <= 2 &&
                            std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (name.empty() || !digits || std::stoi(value) < 2 || std::stoi(value) > 8)
            throw ConfigError("'" + key + "': entry '" + entry + "' is not NAME:BITS with BITS in [2, 8] (e.g. \"1.conv1:4\")");
        if (!bits.emplace(name, std::stoi(value)).second)
            throw ConfigError("'" + key + "': '" + name + "' appears twice");
    }
    return bits;
}

void check_config(const Config& cfg, const std::string& source) {
    auto fail = [&](const std::string& what) { throw ConfigError(source + ": " + what); };
    parse_bits_per_name(cfg.quant.weight_bits_per_layer, "quant.weight_bits_per_layer");
    parse_bits_per_name(cfg.quant.activation_bits_per_point, "quant.activation_bits_per_point");
    const DataConfig& d = cfg.data;
    if (d.channels != cfg.model.in_channels)
        fail("'data.channels' is " + std::to_string(d.channels) + " but 'model.in_channels' is " +
             std::to_string(cfg.model.in_channels) + "; they must be equal");
    for (const auto& [name, values] : {std::pair{"data.mean", &d.mean}, std::pair{"data.std", &d.std}})
        if (values->size() != 1 && values->size() != (size_t)d.channels)
            fail("'" + std::string(name) + "' has " + std::to_string(values->size()) +
                 " values, expected 1 or one per channel (data.channels = " + std::to_string(d.channels) + ")");
    if (d.crop_scale[0] > d.crop_scale[1])
        fail("'data.crop_scale' is " + show(json(d.crop_scale)) + ", expected [min, max] with min <= max");
    if (d.resize != 0 && d.resize < d.image_size)
        fail("'data.resize' is " + std::to_string(d.resize) + ", expected 0 or at least data.image_size (" +
             std::to_string(d.image_size) + ") so that the crop fits");
    if (d.format == DataFormat::Folder) {
        if (d.val_dir.empty()) fail("'data.val_dir' is empty; data.format folder needs it");
        if (d.train_dir.empty() && !cfg.train.eval_only)
            fail("'data.train_dir' is empty; data.format folder needs it for training");
    }
    if (cfg.out_dir.empty()) fail("'out_dir' is empty, expected a folder name");
    if (cfg.optimizer.nesterov && cfg.optimizer.momentum <= 0)
        fail("'optimizer.nesterov' is true but 'optimizer.momentum' is 0; Nesterov needs momentum > 0");
    const std::vector<int>& m = cfg.schedule.milestones;
    for (size_t i = 1; i < m.size(); i++)
        if (m[i] <= m[i - 1])
            fail("'schedule.milestones' is " + show(json(m)) + ", expected strictly increasing epochs");
    if (cfg.schedule.warmup_epochs > cfg.train.epochs)
        fail("'schedule.warmup_epochs' is " + show_number(cfg.schedule.warmup_epochs) +
             ", longer than 'train.epochs' (" + std::to_string(cfg.train.epochs) + ")");
}

// ---- writing ----------------------------------------------------------------------

json config_to_json(const Config& cfg) {
    json out = json::object();
    for (const ConfigKey& k : config_keys()) {
        std::string pointer = "/" + k.path;
        std::replace(pointer.begin(), pointer.end(), '.', '/');
        out[json::json_pointer(pointer)] = k.get(cfg);
    }
    return out;
}

void save_config(const Config& cfg, const std::string& path) {
    std::string text = config_to_json(cfg).dump(2) + "\n";
    try {
        safetensors::write_file_atomic(path, std::vector<uint8_t>(text.begin(), text.end()));
    } catch (const std::exception& e) {
        throw ConfigError("cannot write the resolved config: " + std::string(e.what()));
    }
}

std::string config_reference_markdown() {
    const Config defaults;
    std::ostringstream md;
    md << "# Configuration reference\n\n"
          "<!-- Generated from the key table in train/config.cpp by `train --config-reference`;\n"
          "     tests/train/test_config.cpp checks that this file matches it. Edit the table, not this file. -->\n\n"
          "A config is a JSON object of the sections below; every key is optional and\n"
          "defaults to the fp32 recipe of DESIGN.md. Unknown keys, values of the wrong\n"
          "type and values outside the allowed range are errors. Any key can be\n"
          "overridden on the command line as `dotted.key=value`, for example\n"
          "`train cfg.json optimizer.lr=0.1 model.arch=resnet20 data.mean=[0.5]`\n"
          "(the value is read as JSON when it parses as JSON, otherwise as a string).\n"
          "The resolved config is saved beside the checkpoints.\n";
    for (const ConfigSection& s : config_sections()) {
        md << "\n## " << (s.name.empty() ? "Top level" : "`" + s.name + "`") << ": " << s.meaning << "\n\n"
           << "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
        for (const ConfigKey& k : config_keys())
            if (section_of(k.path) == s.name)
                md << "| `" << k.path << "` | " << k.type << " | `" << k.get(defaults).dump() << "` | "
                   << k.allowed << " | " << k.meaning << " |\n";
    }
    return md.str();
}

}  // namespace qf::train
