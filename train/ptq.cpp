#include "train/ptq.h"

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "autograd/gemm.h"
#include "infer/model.h"
#include "quant/bias_correction.h"
#include "quant/cross_layer_equalize.h"
#include "quant/fake_quant.h"
#include "quant/fold_batch_norm.h"
#include "quant/freeze.h"
#include "quant/observer.h"
#include "quant/qat.h"
#include "train/checkpoint.h"
#include "train/datasets.h"

namespace qf::train {

namespace {
// The quant section as QatOptions, or a ConfigError saying which setting
// PTQ (or the int8 kernels) cannot use.
quant::QatOptions ptq_options(const QuantConfig& q) {
    quant::QatOptions o;
    try {
        o = qat_options(q);
        o.validate();
    } catch (const quant::QuantError& e) {
        throw ConfigError(std::string("quant: ") + e.what());
    }
    if (o.learned != quant::LearnedRanges::none)
        throw ConfigError("quant.learned_ranges is \"" + q.learned_ranges +
                          "\": learned ranges need training (QAT); PTQ takes its ranges from observers, "
                          "so set quant.learned_ranges=none");
    if (q.init_checkpoint.empty())
        throw ConfigError("quant.init_checkpoint is empty: PTQ quantizes a trained fp32 checkpoint; "
                          "set quant.init_checkpoint=PATH (e.g. runs/lenet/last.safetensors)");
    return o;
}

// The first `count` batches of the training set, without augmentation, in a
// shuffled order (seeded by the config) so that every class is seen.
std::vector<Tensor> calibration_batches(const data::Dataset& train, const Config& cfg, int64_t count) {
    data::LoaderOptions lo;
    lo.batch_size = cfg.train.batch_size;
    lo.shuffle = true;
    lo.train = false;
    lo.seed = cfg.seed;
    lo.num_workers = cfg.data.workers;
    lo.prefetch_batches = cfg.data.prefetch;
    data::DataLoader loader(train, lo);
    loader.start_epoch(0);
    std::vector<Tensor> batches;
    data::Batch b;
    while ((int64_t)batches.size() < count && loader.next(b))
        batches.push_back(Tensor::from({b.n, b.c, b.h, b.w}, std::move(b.images)));
    return batches;
}

// Quantize-dequantize a layer's weight with its scheme from its own min/max,
// exactly as the QAT model's WeightQuant (and so freeze) will.
quant::QuantizeWeights weight_quantizer(const quant::QatOptions& options) {
    return [options](const std::string& layer, const Tensor& w) {
        NoGrad ng;
        const quant::QuantScheme scheme = options.weight_scheme(layer);
        quant::MinMaxObserver obs("weight", scheme);
        obs.observe(w);
        Tensor q = quant::fake_quantize(w, obs.qparams(), scheme, "weight");
        return std::vector<float>(q.data(), q.data() + q.numel());
    };
}

std::string accuracy(const EvalResult& r) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(2) << "top-1 " << r.top1 << "%, top-5 " << r.top5 << "% on "
      << r.images << " images";
    return s.str();
}
}  // namespace

PtqResult run_ptq(const Config& cfg, const PtqOptions& options) {
    std::ostream& log = options.log ? *options.log : std::cout;
    const quant::QatOptions qopts = ptq_options(cfg.quant);
    read_checkpoint_info(cfg.quant.init_checkpoint);  // a missing or foreign file fails before the data loads
    if (cfg.threads > 0) set_num_threads(cfg.threads);
    PtqResult r;

    // 1. The fp32 model as trained.
    Datasets data = make_datasets(cfg);
    nn::ModelSpec spec{cfg.model.arch, cfg.model.num_classes, cfg.model.in_channels, data.train->height()};
    std::shared_ptr<nn::Sequential> model = nn::build_model(spec, (uint32_t)cfg.seed);
    // A checkpoint of another arch fails here, naming the first tensor that does not fit.
    load_checkpoint(cfg.quant.init_checkpoint, cfg.model.arch, *model, nullptr);
    log << "ptq: " << cfg.model.arch << " from " << cfg.quant.init_checkpoint << "; weights "
        << quant::to_string(qopts.weight) << ", activations " << quant::to_string(qopts.activation) << "\n";
    for (const auto& [layer, bits] : qopts.weight_bits_per_layer)
        log << "ptq: weights of '" << layer << "': " << bits << " bits\n";
    for (const auto& [point, bits] : qopts.activation_bits_per_point)
        log << "ptq: activations at '" << point << "': " << bits << " bits\n";
    model->eval();
    if (options.evaluate_fp32) {
        r.fp32 = evaluate_model(*model, *data.test, cfg.train.eval_batch_size, cfg.data.workers);
        log << "ptq: fp32 " << accuracy(r.fp32) << "\n";
    }
    std::vector<Tensor> batches = calibration_batches(*data.train, cfg, cfg.ptq.calibration_batches);

    // 2. BN folding (in place: the model now computes act(conv(x, w') + b')).
    std::vector<quant::FoldedConv> layers = quant::fold_batch_norms(*model);
    r.folded_layers = (int)layers.size();
    log << "ptq: fold: " << layers.size() << " conv+BN layers folded\n";

    // 3. Cross-layer equalization.
    if (cfg.ptq.equalize) {
        const quant::CleResult cle = quant::cross_layer_equalize(layers);
        r.equalized_pairs = (int)cle.pairs.size();
        log << "ptq: CLE: " << cle.pairs.size() << " pairs, " << cle.sweeps << " sweeps, "
            << (cle.converged ? "converged" : "not converged") << " (last max |s - 1| "
            << cle.last_max_change << ")\n";
    } else {
        log << "ptq: CLE: off\n";
    }

    // 4. Bias correction with the weight scheme.
    if (cfg.ptq.bias_correction != "none") {
        const quant::QuantizeWeights quantize = weight_quantizer(qopts);
        const quant::BiasCorrectionResult bc =
            cfg.ptq.bias_correction == "empirical"
                ? quant::empirical_bias_correction(*model, layers, quantize, batches)
                : quant::analytic_bias_correction(layers, quantize);
        for (const auto& added : bc.added) r.bias_corrected_layers += !added.empty();
        r.bias_correction_skipped = (int)bc.skipped.size();
        log << "ptq: bias correction (" << cfg.ptq.bias_correction << "): " << r.bias_corrected_layers
            << " layers corrected, " << bc.skipped.size() << " skipped";
        for (const std::string& s : bc.skipped) log << "\n  skipped " << s;
        log << "\n";
    } else {
        log << "ptq: bias correction: off\n";
    }

    // 5. Calibration of the activation ranges on the fake-quant model.
    std::shared_ptr<nn::Sequential> qat;
    try {
        qat = quant::prepare_qat(model, qopts);
    } catch (const quant::QuantError& e) {
        throw ConfigError(std::string("quant: ") + e.what());
    }
    qat->train();
    quant::QatSchedule{.freeze_bn_after = 0}.apply(*qat, 0);
    int64_t images = 0;
    {
        NoGrad ng;
        for (const Tensor& x : batches) {
            qat->forward(x);
            images += x.dim(0);
        }
    }
    qat->eval();
    log << "ptq: calibration: " << batches.size() << " batches, " << images << " training images ("
        << cfg.quant.observer << " observer)"
        << ((int64_t)batches.size() < cfg.ptq.calibration_batches ? " (all the training set has)" : "") << "\n";

    if (options.evaluate_fake_quant) {
        r.fake_quant = evaluate_model(*qat, *data.test, cfg.train.eval_batch_size, cfg.data.workers);
        log << "ptq: fake-quant simulation " << accuracy(r.fake_quant) << "\n";
    }
    r.qat_model = qat;
    if (options.calibrate_only) return r;

    // 6. Freeze, evaluate the int8 graph, write it.
    const data::Dataset& d = *data.train;
    quant::FreezeInput in{d.channels(), d.height(), d.width(),
                          std::vector<float>(cfg.data.mean.begin(), cfg.data.mean.end()),
                          std::vector<float>(cfg.data.std.begin(), cfg.data.std.end()), d.class_names()};
    r.int8_spec = quant::freeze(*qat, in);
    infer::Model int8(r.int8_spec, cfg.model.arch + " (int8)");
    r.int8 = evaluate_int8(int8, *data.test, cfg.train.eval_batch_size, cfg.data.workers);
    log << "ptq: int8 " << accuracy(r.int8) << "\n";
    if (options.parity) {
        r.parity = measure_parity(*qat, int8, *data.test, cfg.train.eval_batch_size, cfg.data.workers);
        log << "ptq: " << r.parity.summary();
    }

    std::filesystem::create_directories(cfg.out_dir);
    r.int8_model = cfg.out_dir + "/model.int8.safetensors";
    infer::write_model(r.int8_spec, r.int8_model);
    save_config(cfg, cfg.out_dir + "/ptq_config.resolved.json");
    return r;
}

}  // namespace qf::train
