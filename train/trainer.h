// The training run that the `train` binary performs: datasets and model
// from the config, the loop (forward, loss, backward, update), per-epoch
// evaluation, metrics, checkpoints and exact resume.
//
// Example:
//   Config cfg = load_config("configs/lenet.json");
//   Trainer t(cfg);
//   TrainSummary s = t.run();   // writes cfg.out_dir/{last.safetensors, metrics.jsonl, ...}
#pragma once
#include <memory>
#include <stdexcept>
#include <string>

#include "data/loader.h"
#include "infer/model.h"
#include "quant/freeze.h"
#include "quant/parity.h"
#include "train/checkpoint.h"
#include "nn/models.h"
#include "train/config.h"
#include "train/data_parallel.h"
#include "train/datasets.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace qf::train {

// The loss became NaN or infinite: training stops, the last checkpoint stays.
struct NonFiniteLossError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct EvalResult {
    double loss = 0;
    double top1 = 0;  // percent
    double top5 = 0;  // percent
    int64_t images = 0;
    // The forward passes alone (no loading, no scoring).
    double images_per_s = 0;
    double median_batch_ms = 0;
    int64_t batches = 0;
};

struct TrainSummary {
    EvalResult final_eval;
    double train_images_per_s = 0;
    int64_t steps = 0;
    std::string checkpoint;  // path of the last checkpoint written
    bool stopped_early = false;  // by train.stop_after_steps
    std::string int8_model;      // QAT: path of the frozen int8 model
};

class Trainer {
public:
    explicit Trainer(Config cfg);
    // Trains (from cfg.train.resume when set) and evaluates after each epoch.
    TrainSummary run();
    // Evaluates the current weights on the test set: the fp32 model, or for
    // QAT the frozen int8 graph (so the reported accuracy is the int8 model's).
    EvalResult evaluate();
    // QAT: the int8 graph of the current weights.
    infer::ModelSpec freeze_int8() const;
    bool quantized() const { return cfg_.quant.enabled; }
    // QAT: compares the fake-quant forward with the frozen int8 graph on the
    // test set (train.resume names the QAT checkpoint).
    quant::ParityReport parity();

    nn::Sequential& model() { return *model_; }
    const Config& config() const { return cfg_; }

private:
    // Loads train.resume into the model (and optimizer unless eval-only).
    CheckpointInfo resume();
    // False when train.stop_after_steps ended the run inside this epoch.
    bool train_epoch(int64_t epoch, int64_t skip_batches);
    // Rank 0 alone writes checkpoints and metrics (no-ops on the others).
    void write_checkpoint(int64_t epoch, int64_t step_in_epoch);
    void write_metrics(const nlohmann::json& record);

    Config cfg_;
    Datasets data_;
    std::shared_ptr<nn::Sequential> model_;
    std::unique_ptr<Optimizer> optimizer_;
    std::unique_ptr<data::DataLoader> train_loader_;
    std::unique_ptr<LrSchedule> schedule_;
    std::unique_ptr<MetricsLog> metrics_;  // rank 0 only
    // Data-parallel runs (more than one rank) only:
    std::unique_ptr<GradientSum> gradient_sum_;
    std::unique_ptr<SyncBatchNorm> sync_bn_;
    quant::QatSchedule qat_schedule_;
    int64_t global_step_ = 0;
    int64_t steps_this_run_ = 0;
    std::string checkpoint_path_;
    std::string last_checkpoint_;  // empty until one is written or resumed from
    double images_per_s_ = 0;
};

// Evaluates `model` (switched to eval mode and back) on `dataset`.
EvalResult evaluate_model(nn::Module& model, const data::Dataset& dataset, int64_t batch_size,
                          int workers);
// Evaluates an int8 graph on `dataset`.
EvalResult evaluate_int8(infer::Model& model, const data::Dataset& dataset, int64_t batch_size,
                         int workers);

// Calls fn(batch) for the batches of `dataset` in order (no shuffling, no
// augmentation) until the end or until fn returns false.
void for_each_batch_in_order(const data::Dataset& dataset, int64_t batch_size, int workers,
                             const std::function<bool(data::Batch&)>& fn);

// Compares the fake-quant forward of `qat_model` with its frozen int8 graph
// on every image of `dataset` (quant/parity.h).
quant::ParityReport measure_parity(nn::Sequential& qat_model, infer::Model& int8_model,
                                   const data::Dataset& dataset, int64_t batch_size, int workers);

// The QAT options a config's quant section describes.
quant::QatOptions qat_options(const QuantConfig& q);

}  // namespace qf::train
