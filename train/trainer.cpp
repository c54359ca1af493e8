#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "autograd/gemm.h"
#include "train/checkpoint.h"
#include "infer/label_rank.h"
#include "train/metrics.h"

namespace qf::train {

namespace {
// Counts the samples whose label is the top-1 / among the top-5 logits
// (argmax's tie rule: infer/label_rank.h).
void count_correct(const Tensor& logits, const std::vector<int32_t>& labels, int64_t& top1,
                   int64_t& top5) {
    const int64_t n = logits.dim(0), k = logits.dim(1);
    for (int64_t i = 0; i < n; i++) {
        const int rank = infer::label_rank(logits.data() + i * k, (int)k, labels[i]);
        top1 += rank == 0;
        top5 += rank < 5;
    }
}

Tensor images_of(data::Batch& b) {
    return Tensor::from({b.n, b.c, b.h, b.w}, std::move(b.images));
}

EvalResult evaluate_with(const data::Dataset& dataset, int64_t batch_size, int workers,
                         const std::function<Tensor(data::Batch&)>& logits_of);
}  // namespace

EvalResult evaluate_model(nn::Module& model, const data::Dataset& dataset, int64_t batch_size,
                          int workers) {
    const bool was_training = model.training();
    model.eval();
    EvalResult r = evaluate_with(dataset, batch_size, workers,
                                 [&](data::Batch& b) { return model.forward(images_of(b)); });
    model.train(was_training);
    return r;
}

EvalResult evaluate_int8(infer::Model& model, const data::Dataset& dataset, int64_t batch_size,
                         int workers) {
    return evaluate_with(dataset, batch_size, workers, [&](data::Batch& b) {
        std::span<const float> logits = model.run(b.images.data(), (int)b.n);
        return Tensor::from({b.n, (int64_t)model.num_classes()}, std::vector<float>(logits.begin(), logits.end()));
    });
}

quant::QatOptions qat_options(const QuantConfig& q) {
    quant::QatOptions o;
    o.weight = {.bits = q.weight_bits, .symmetric = q.weight_symmetric, .is_signed = true,
                .per_channel = q.weight_per_channel, .axis = 0, .narrow_range = q.weight_narrow_range};
    o.activation = {.bits = q.activation_bits, .symmetric = q.activation_symmetric};
    o.observer = quant::parse_observer_kind(q.observer);
    o.learned = quant::parse_learned_ranges(q.learned_ranges);
    o.weight_bits_per_layer = parse_bits_per_name(q.weight_bits_per_layer, "quant.weight_bits_per_layer");
    o.activation_bits_per_point = parse_bits_per_name(q.activation_bits_per_point, "quant.activation_bits_per_point");
    return o;
}

void for_each_batch_in_order(const data::Dataset& dataset, int64_t batch_size, int workers,
                             const std::function<bool(data::Batch&)>& fn) {
    data::LoaderOptions lo;
    lo.batch_size = batch_size;
    lo.shuffle = false;
    lo.train = false;
    lo.num_workers = workers;
    data::DataLoader loader(dataset, lo);
    loader.start_epoch(0);
    data::Batch batch;
    while (loader.next(batch) && fn(batch)) {
    }
}

namespace {
// Runs `logits_of` over the whole dataset in order and scores it.
EvalResult evaluate_with(const data::Dataset& dataset, int64_t batch_size, int workers,
                         const std::function<Tensor(data::Batch&)>& logits_of) {
    NoGrad no_grad;
    EvalResult r;
    int64_t top1 = 0, top5 = 0;
    double loss_sum = 0, forward_seconds = 0;
    std::vector<double> batch_seconds;
    for_each_batch_in_order(dataset, batch_size, workers, [&](data::Batch& batch) {
        std::vector<int32_t> labels = batch.labels;
        const auto start = std::chrono::steady_clock::now();
        Tensor logits = logits_of(batch);
        batch_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        forward_seconds += batch_seconds.back();
        loss_sum += cross_entropy(logits, labels).item() * (double)labels.size();
        count_correct(logits, labels, top1, top5);
        r.images += (int64_t)labels.size();
        return true;
    });
    if (r.images > 0) {
        r.loss = loss_sum / (double)r.images;
        r.top1 = 100.0 * (double)top1 / (double)r.images;
        r.top5 = 100.0 * (double)top5 / (double)r.images;
        r.images_per_s = (double)r.images / forward_seconds;
        std::sort(batch_seconds.begin(), batch_seconds.end());
        r.median_batch_ms = 1e3 * batch_seconds[batch_seconds.size() / 2];
        r.batches = (int64_t)batch_seconds.size();
    }
    return r;
}
}  // namespace

Trainer::Trainer(Config cfg) : cfg_(std::move(cfg)) {
    check_same_config(cfg_);
    const bool parallel = dist::size() > 1;
    if (parallel && cfg_.train.batch_size < dist::size())
        throw ConfigError("'train.batch_size' is " + std::to_string(cfg_.train.batch_size) +
                          ", the global batch of all ranks; with " + std::to_string(dist::size()) +
                          " ranks it must be at least " + std::to_string(dist::size()));
    if (parallel && cfg_.quant.enabled && (cfg_.quant.observer == "percentile" || cfg_.quant.observer == "mse"))
        throw ConfigError("'quant.observer' is \"" + cfg_.quant.observer +
                          "\": its histogram holds one rank's data, which data-parallel training does not "
                          "combine across ranks; use minmax or moving_average with more than one rank");
    if (cfg_.threads > 0) set_num_threads(cfg_.threads);
    data_ = make_datasets(cfg_);
    nn::ModelSpec spec{cfg_.model.arch, cfg_.model.num_classes, cfg_.model.in_channels,
                       data_.train->height()};
    model_ = nn::build_model(spec, (uint32_t)cfg_.seed);
    if (cfg_.quant.enabled) {
        // Rank 0 reads it; run() copies rank 0's state to the others.
        if (!cfg_.quant.init_checkpoint.empty() && dist::is_root())
            load_checkpoint(cfg_.quant.init_checkpoint, cfg_.model.arch, *model_, nullptr);
        try {
            model_ = quant::prepare_qat(model_, qat_options(cfg_.quant));
        } catch (const quant::QuantError& e) {
            throw ConfigError(std::string("quant: ") + e.what());
        }
        qat_schedule_ = {cfg_.quant.freeze_bn_after_steps, cfg_.quant.freeze_ranges_after_steps};
    }
    optimizer_ = make_optimizer(cfg_.optimizer, model_->parameters());

    data::LoaderOptions lo;
    lo.batch_size = cfg_.train.batch_size;
    lo.shuffle = true;
    lo.drop_last = false;
    lo.train = true;
    lo.seed = cfg_.seed;
    lo.num_workers = cfg_.data.workers;
    lo.prefetch_batches = cfg_.data.prefetch;
    lo.shard_rank = dist::rank();
    lo.shard_count = dist::size();
    train_loader_ = std::make_unique<data::DataLoader>(*data_.train, lo);
    schedule_ = std::make_unique<LrSchedule>(cfg_.schedule, cfg_.optimizer.lr, cfg_.train.epochs,
                                             train_loader_->batches_per_epoch());
    checkpoint_path_ = cfg_.out_dir + "/last.safetensors";
    if (parallel) {
        gradient_sum_ = std::make_unique<GradientSum>(*model_, cfg_.distributed);
        if (cfg_.distributed.sync_bn) sync_bn_ = std::make_unique<SyncBatchNorm>();
        if (cfg_.quant.enabled) reduce_observer_ranges(*model_);
    }
}

CheckpointInfo Trainer::resume() {
    // Rank 0 reads the file (on several hosts the others may not see it);
    // run() copies the state to the others. The position is in global
    // batches, so any number of ranks continues it.
    CheckpointInfo at;
    if (dist::is_root())
        at = load_checkpoint(cfg_.train.resume, cfg_.model.arch, *model_,
                             cfg_.train.eval_only ? nullptr : optimizer_.get());
    int64_t position[3] = {at.epoch, at.step_in_epoch, at.global_step};
    dist::broadcast(position, 3);
    at.epoch = position[0], at.step_in_epoch = position[1], at.global_step = position[2];
    global_step_ = at.global_step;
    last_checkpoint_ = cfg_.train.resume;
    std::cout << "resumed from " << cfg_.train.resume << " at epoch " << at.epoch + 1 << ", batch "
              << at.step_in_epoch << "\n";
    return at;
}

quant::ParityReport Trainer::parity() {
    if (!cfg_.quant.enabled)
        throw ConfigError("parity compares the fake-quant model with its int8 graph: set quant.enabled=true");
    if (!cfg_.train.resume.empty()) resume();
    infer::Model int8(freeze_int8(), cfg_.model.arch + " (int8)");
    return measure_parity(*model_, int8, *data_.test, cfg_.train.eval_batch_size, cfg_.data.workers);
}

quant::ParityReport measure_parity(nn::Sequential& qat_model, infer::Model& int8_model,
                                   const data::Dataset& dataset, int64_t batch_size, int workers) {
    quant::ParityChecker check(qat_model, int8_model);
    for_each_batch_in_order(dataset, batch_size, workers, [&](data::Batch& b) {
        check.add_batch(b.images.data(), (int)b.n);
        return true;
    });
    return check.report();
}

EvalResult Trainer::evaluate() {
    if (!cfg_.quant.enabled)
        return evaluate_model(*model_, *data_.test, cfg_.train.eval_batch_size, cfg_.data.workers);
    infer::Model int8(freeze_int8(), cfg_.model.arch + " (int8)");
    return evaluate_int8(int8, *data_.test, cfg_.train.eval_batch_size, cfg_.data.workers);
}

infer::ModelSpec Trainer::freeze_int8() const {
    const data::Dataset& d = *data_.train;
    quant::FreezeInput in{d.channels(), d.height(), d.width(),
                          std::vector<float>(cfg_.data.mean.begin(), cfg_.data.mean.end()),
                          std::vector<float>(cfg_.data.std.begin(), cfg_.data.std.end()), d.class_names()};
    return quant::freeze(*model_, in);
}

void Trainer::write_metrics(const nlohmann::json& record) {
    if (metrics_) metrics_->write(record);
}

void Trainer::write_checkpoint(int64_t epoch, int64_t step_in_epoch) {
    if (!dist::is_root()) return;
    CheckpointInfo info{cfg_.model.arch, epoch, step_in_epoch, global_step_,
                        config_to_json(cfg_).dump()};
    save_checkpoint(checkpoint_path_, *model_, optimizer_.get(), info);
    last_checkpoint_ = checkpoint_path_;
}

TrainSummary Trainer::run() {
    const bool root = dist::is_root();
    if (root) std::filesystem::create_directories(cfg_.out_dir);
    int64_t start_epoch = 0, skip = 0;
    if (!cfg_.train.resume.empty()) {
        CheckpointInfo at = resume();
        start_epoch = at.epoch;
        skip = at.step_in_epoch;
    }
    broadcast_state(*model_, cfg_.train.eval_only ? nullptr : optimizer_.get());
    TrainSummary summary;
    if (cfg_.train.eval_only) {
        if (root) summary.final_eval = evaluate();
        return summary;
    }
    if (root) {
        save_config(cfg_, cfg_.out_dir + "/config.resolved.json");
        // A resumed run appends to the metrics of the run it continues.
        metrics_ = std::make_unique<MetricsLog>(cfg_.out_dir + "/metrics.jsonl", start_epoch > 0 || skip > 0);
    }
    const int64_t per_epoch = train_loader_->batches_per_epoch();
    if (skip >= per_epoch) start_epoch++, skip = 0;
    for (int64_t epoch = start_epoch; epoch < cfg_.train.epochs; epoch++) {
        if (!train_epoch(epoch, skip)) {
            std::cout << "stopped after " << steps_this_run_ << " steps (train.stop_after_steps); resume with --resume "
                      << checkpoint_path_ << "\n";
            summary.stopped_early = true;
            break;
        }
        skip = 0;
        // Rank 0 evaluates (QAT: freezes the int8 graph) and writes; the others wait.
        if (root) {
            EvalResult e = evaluate();
            std::cout << "epoch " << epoch + 1 << "/" << cfg_.train.epochs << ": test loss " << e.loss
                      << ", top-1 " << e.top1 << "%, top-5 " << e.top5 << "%\n";
            write_metrics({{"event", "eval"}, {"epoch", epoch + 1}, {"step", global_step_},
                           {"test_loss", e.loss}, {"test_top1", e.top1}, {"test_top5", e.top5}});
            write_checkpoint(epoch + 1, 0);
            summary.final_eval = e;
        }
        dist::wait_for_all();
    }
    if (cfg_.quant.enabled && !summary.stopped_early && root) {
        summary.int8_model = cfg_.out_dir + "/model.int8.safetensors";
        infer::write_model(freeze_int8(), summary.int8_model);
    }
    summary.steps = global_step_;
    summary.checkpoint = last_checkpoint_;
    summary.train_images_per_s = images_per_s_;
    return summary;
}

bool Trainer::train_epoch(int64_t epoch, int64_t skip_batches) {
    const int64_t per_epoch = train_loader_->batches_per_epoch();
    train_loader_->start_epoch(epoch, skip_batches);
    model_->train();
    Progress progress("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(cfg_.train.epochs),
                      per_epoch, skip_batches, cfg_.train.log_every, stdout_is_terminal());
    data::Batch batch;
    int64_t step_in_epoch = skip_batches;
    int64_t images = 0, correct = 0, top5 = 0;
    double loss_sum = 0;
    const int64_t comm_bytes_before = dist::bytes_communicated(), steps_before = steps_this_run_;
    while (train_loader_->next(batch)) {
        std::vector<int32_t> labels = batch.labels;
        const int64_t n = batch.n;
        // The global batch's size, and how many ranks have no part of it.
        double sizes[2] = {(double)n, n == 0 ? 1.0 : 0.0};
        dist::allreduce_sum(sizes, 2);
        const int64_t n_global = (int64_t)sizes[0];
        if (sizes[1] > 0) {
            // A rank without images cannot run forward (nor SyncBN's sums):
            // the ranks pass over this batch together.
            if (dist::is_root())
                std::cerr << "warning: batch " << step_in_epoch + 1 << " of epoch " << epoch + 1 << " left "
                          << (int64_t)sizes[1] << " rank(s) without images; no rank trains on it\n";
            step_in_epoch++;
            continue;
        }
        if (cfg_.quant.enabled) {
            const std::string switched = qat_schedule_.apply(*model_, global_step_);
            if (!switched.empty()) {
                progress.finish();
                std::cout << switched << "\n";
                write_metrics({{"event", "qat"}, {"step", global_step_}, {"message", switched}});
            }
        }
        Tensor logits = gradient_sum_ ? gradient_sum_->forward(*model_, images_of(batch))
                                      : model_->forward(images_of(batch));
        Tensor loss = cross_entropy(logits, labels, (float)cfg_.train.label_smoothing);
        int64_t batch_correct = 0, batch_top5 = 0;
        count_correct(logits, labels, batch_correct, batch_top5);
        // Loss and accuracy of the global batch: every rank sees the same
        // loss, so all of them stop together when it is not finite.
        double stats[3] = {(double)loss.item() * (double)n, (double)batch_correct, (double)batch_top5};
        dist::allreduce_sum(stats, 3);
        const float loss_value = dist::size() == 1 ? loss.item() : (float)(stats[0] / (double)n_global);
        if (!std::isfinite(loss_value)) {
            clear_tape();
            throw NonFiniteLossError(
                "the loss became " + std::string(std::isnan(loss_value) ? "NaN" : "infinite") +
                " at step " + std::to_string(global_step_ + 1) + " (epoch " + std::to_string(epoch + 1) +
                ", batch " + std::to_string(step_in_epoch + 1) + "); training stopped" +
                (last_checkpoint_.empty() ? " before any checkpoint was written"
                                          : "; the last good checkpoint is " + last_checkpoint_));
        }
        optimizer_->zero_grad();
        // This rank's share of the global batch's mean loss (data_parallel.h).
        backward(loss, {(float)n / (float)n_global});
        if (gradient_sum_) gradient_sum_->finish();
        const double lr = schedule_->lr(global_step_);
        optimizer_->step(lr);
        global_step_++;
        step_in_epoch++;

        correct += (int64_t)stats[1];
        top5 += (int64_t)stats[2];
        images += n_global;
        loss_sum += (double)loss_value * (double)n_global;
        progress.update(step_in_epoch, n_global, loss_sum / (double)images, (double)correct / (double)images, lr);
        images_per_s_ = progress.images_per_second();
        if (cfg_.train.log_every > 0 && step_in_epoch % cfg_.train.log_every == 0) {
            nlohmann::json record = {{"event", "train"}, {"epoch", epoch + 1}, {"step", global_step_},
                                     {"loss", loss_sum / (double)images}, {"top1", 100.0 * correct / (double)images},
                                     {"lr", lr}, {"images_per_s", images_per_s_}};
            if (gradient_sum_) {
                // What one rank handed to collectives per step this epoch, and
                // the time it spent waiting for the gradient sums to finish.
                const double steps = (double)(steps_this_run_ + 1 - steps_before);
                record["ranks"] = dist::size();
                record["comm_bytes_per_step"] = (double)(dist::bytes_communicated() - comm_bytes_before) / steps;
                record["gradient_bytes_per_step"] = gradient_sum_->bytes_per_step();
                record["gradient_wait_s_total"] = gradient_sum_->wait_seconds();
            }
            write_metrics(record);
        }
        if (cfg_.train.checkpoint_every_steps > 0 && global_step_ % cfg_.train.checkpoint_every_steps == 0 &&
            step_in_epoch < per_epoch)
            write_checkpoint(epoch, step_in_epoch);
        if (++steps_this_run_ == cfg_.train.stop_after_steps) {
            write_checkpoint(epoch, step_in_epoch);
            progress.finish();
            return false;
        }
    }
    progress.finish();
    return true;
}

}  // namespace qf::train
