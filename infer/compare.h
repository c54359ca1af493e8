// The fp32 half of `infer MODEL --data D --compare CHECKPOINT`: the fp32
// checkpoint evaluated on the same data, batch and threads, so the two
// models' accuracy and speed print side by side.
//
// infer/ never links the training engine (DESIGN.md), so the fp32 model is
// run by the `train` binary in its own process: `train CONFIG --eval-only
// --resume CHECKPOINT` with the config the checkpoint carries in its
// metadata and the data, batch size and threads overridden to infer's. Its
// "test top-1" and "eval speed" lines are read back. The binary is
// $QF_TRAIN_BINARY, else ../train/train beside this executable, else `train`
// on PATH.
#pragma once
#include <cstdint>
#include <string>

namespace qf::infer {

struct Fp32Evaluation {
    double top1 = 0, top5 = 0;  // percent
    double images_per_s = 0, median_batch_ms = 0;
    int64_t images = 0;
    std::string train_binary;  // what ran it
};

struct CompareRequest {
    std::string checkpoint;   // the fp32 checkpoint (train's safetensors)
    std::string data;         // infer's --data: an IDX images file or a class-folder root
    std::string labels;       // the IDX labels file (for IDX data)
    int batch = 64;
    int threads = 1;
};

// Throws std::runtime_error naming the checkpoint, the binary or the output
// line that was missing.
Fp32Evaluation evaluate_fp32_checkpoint(const CompareRequest& request);

}  // namespace qf::infer
