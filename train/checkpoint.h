// Training checkpoints: the model's state, the optimizer's state and where
// training stood, in one safetensors file written atomically.
//
// Example:
//   save_checkpoint(out_dir + "/last.safetensors", *model, optimizer.get(),
//                   {cfg.model.arch, epoch, step_in_epoch, global_step, config_json});
//   CheckpointInfo at = load_checkpoint(path, cfg.model.arch, *model, optimizer.get());
//   loader.start_epoch(at.epoch, at.step_in_epoch);
//
// Layout: the model's parameters and buffers as F32 tensors "model.<name>",
// the optimizer's buffers as "optim.<name>", and string metadata: format,
// format_version, arch, epoch, step_in_epoch, global_step, optimizer,
// optimizer_steps and config (the resolved config JSON).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "nn/module.h"
#include "train/optimizer.h"

namespace qf::train {

constexpr int kCheckpointFormatVersion = 1;

// Anything wrong with a checkpoint file; the message starts "checkpoint PATH: ".
struct CheckpointError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Where training stood when the checkpoint was taken, and what it came from.
struct CheckpointInfo {
    std::string arch;           // model.arch of the run
    int64_t epoch = 0;          // epoch to continue in, from 0 (after the last batch of epoch e: e + 1)
    int64_t step_in_epoch = 0;  // batches of that epoch already trained
    int64_t global_step = 0;    // optimizer steps since training began
    std::string config_json;    // the resolved config of the run
};

// Writes the checkpoint atomically (temp file, fsync, rename). `optimizer`
// may be null (a model-only checkpoint). Throws CheckpointError.
void save_checkpoint(const std::string& path, const nn::Module& model, const Optimizer* optimizer,
                     const CheckpointInfo& info);

// Copies a checkpoint's state into `model` (and `optimizer`, unless null:
// then the checkpoint's optimizer state is ignored). Every tensor of the
// model (and optimizer) must be in the file with the same shape, and the
// file may hold nothing else; the first mismatch is named in the error,
// along with `arch`, the architecture the caller built. Everything is
// checked before anything is copied: on error the model and optimizer are
// untouched. Throws CheckpointError.
CheckpointInfo load_checkpoint(const std::string& path, const std::string& arch, nn::Module& model,
                               Optimizer* optimizer);

// The metadata alone (what a resume or an eval-only run needs to know first).
CheckpointInfo read_checkpoint_info(const std::string& path);

}  // namespace qf::train
