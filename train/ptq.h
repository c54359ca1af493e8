// Post-training quantization: a trained fp32 checkpoint becomes the int8
// graph, without training (the `quantize` binary).
//
// Example:
//   Config cfg = load_config("configs/lenet.json",
//                            {"quant.init_checkpoint=runs/lenet/last.safetensors",
//                             "out_dir=runs/lenet_ptq"});
//   PtqResult r = run_ptq(cfg);   // writes runs/lenet_ptq/model.int8.safetensors
//   std::cout << r.fp32.top1 << " -> " << r.int8.top1 << "\n";
//
// The pipeline (quant/ does the work; this file strings it together):
//   1. load quant.init_checkpoint into the model of model.arch; evaluate it
//      on the test set (the fp32 figure);
//   2. fold every conv+BN in place (quant/fold_batch_norm.h);
//   3. ptq.equalize: cross-layer equalization (quant/cross_layer_equalize.h);
//   4. ptq.bias_correction: empirical (on the calibration batches) or
//      analytic (data-free) correction of the bias shift that quantizing the
//      weights causes (quant/bias_correction.h), with the weight scheme of the
//      quant section;
//   5. prepare_qat on the folded model (its BNs are the exact "add b'" form,
//      so the QAT fold is the identity), BN frozen, training mode without
//      gradients: ptq.calibration_batches training batches (no augmentation,
//      shuffled with the config's seed) pass through, and the activation
//      observers (quant.observer) set the ranges;
//   6. freeze to the int8 graph (quant/freeze.h), evaluate it on the test set
//      and write it to out_dir/model.int8.safetensors (atomically).
//
// Bad input fails before anything is written: a scheme the int8 kernels
// cannot run or learned ranges (PTQ trains nothing) throw ConfigError; a
// missing quant.init_checkpoint ConfigError; an unreadable checkpoint or one
// of another architecture CheckpointError naming the tensor.
#pragma once
#include <iosfwd>
#include <string>

#include "infer/model_format.h"
#include "train/config.h"
#include "train/trainer.h"

namespace qf::train {

struct PtqOptions {
    bool evaluate_fp32 = true;  // false: skip the fp32 test pass (PtqResult::fp32 stays empty)
    bool evaluate_fake_quant = false;  // also score the calibrated fake-quant model (PtqResult::fake_quant)
    bool parity = false;  // also compare the fake-quant forward with the int8 graph (PtqResult::parity)
    std::ostream* log = nullptr;  // stage messages; null = std::cout
    // Stop after step 5 (and the fake-quant evaluation, if asked for): no
    // freeze, no int8 evaluation, nothing written; PtqResult::qat_model is
    // the calibrated model (the sensitivity report analyses it).
    bool calibrate_only = false;
};

struct PtqResult {
    infer::ModelSpec int8_spec;  // the frozen int8 graph
    EvalResult fp32;             // the checkpoint as loaded, before folding (images == 0 if skipped)
    EvalResult int8;             // the int8 graph on the test set (argmax's tie rule, infer/label_rank.h)
    EvalResult fake_quant;       // the fake-quant simulation, if asked for (images == 0 if not)
    quant::ParityReport parity;  // if asked for (images == 0 if not)
    std::string int8_model;      // where it was written
    // The calibrated fake-quant model of step 5 (eval mode; shares the
    // folded fp32 model's tensors).
    std::shared_ptr<nn::Sequential> qat_model;
    int folded_layers = 0;
    int equalized_pairs = 0;     // 0 when ptq.equalize is off
    int bias_corrected_layers = 0;
    int bias_correction_skipped = 0;
};

// Runs the pipeline above for `cfg` (quant.* and ptq.* sections; quant.enabled
// is ignored). Throws ConfigError, CheckpointError, quant::QuantError or
// std::runtime_error (data, I/O) with a message naming the setting or file.
PtqResult run_ptq(const Config& cfg, const PtqOptions& options = {});

}  // namespace qf::train
