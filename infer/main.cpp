// infer MODEL --data DIR_OR_IDX [--labels IDX_LABELS] [--batch N] [--threads N] [--profile]
//                               [--compare FP32_CHECKPOINT]
// infer MODEL --image FILE [--top K]
//
// Runs an int8 model file (docs/int8-format.md) with integers only:
//  --data   top-1/top-5 accuracy, images/s and the median batch latency over
//           an IDX images file (labels beside it: "images-idx3" in the name
//           becomes "labels-idx1", else --labels) or an image folder
//           (root/<class>/*.png ...; images resized and center-cropped to the
//           model's input, in the model's class order);
//  --image  the top-k classes of one image, which must have the model's
//           input size (a colour image is refused by a grayscale model).
// Exit codes: 0 done, 1 a bad model, dataset or image (the message says
// what), 2 a bad command line.
//  --compare  the fp32 checkpoint evaluated on the same data, batch and
//           threads, printed beside the int8 model (infer/compare.h: the
//           train binary runs it, since infer/ must not link the engine).
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <thread>

#include "data/image_io.h"
#include "data/loader.h"
#include "infer/compare.h"
#include "infer/label_rank.h"
#include "infer/model.h"

using namespace qf;

namespace {

struct Options {
    std::string model, data, labels, image, compare;
    int batch = 64, threads = 0, top = 5;
    bool profile = false;
};

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string shape_string(int c, int h, int w) {
    return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

data::TransformOptions model_transforms(const infer::InputSpec& in) {
    data::TransformOptions t;
    t.mean = in.mean;
    t.std = in.std;
    return t;
}

// The IDX labels file of --data: --labels, or the images file's name with
// "images-idx3" replaced by "labels-idx1".
std::string idx_labels(const Options& opt) {
    if (!opt.labels.empty()) return opt.labels;
    const size_t at = opt.data.rfind("images-idx3");
    if (at == std::string::npos)
        fail("--labels is needed: cannot derive the labels file from " + opt.data + " (no \"images-idx3\" in its name)");
    std::string labels = opt.data;
    return labels.replace(at, std::string("images-idx3").size(), "labels-idx1");
}

// The dataset --data names, producing images as the model's input expects.
std::unique_ptr<data::Dataset> open_dataset(const Options& opt, const infer::Model& model) {
    const infer::InputSpec& in = model.input();
    std::unique_ptr<data::Dataset> dataset;
    if (std::filesystem::is_directory(opt.data)) {
        if (in.height != in.width) fail("image folders give square images; the model expects " + shape_string(in.channels, in.height, in.width));
        if (in.channels != 1 && in.channels != 3) fail("image folders give 1 or 3 channels; the model expects " + std::to_string(in.channels));
        data::ImageFolderOptions folder;
        folder.channels = in.channels;
        folder.transforms = model_transforms(in);
        folder.transforms.size = folder.transforms.resize_shorter = in.height;
        auto images = std::make_unique<data::ImageFolderDataset>(opt.data, folder);
        if (images->num_classes() != model.num_classes())
            fail(opt.data + " has " + std::to_string(images->num_classes()) + " class folders; the model has " +
                 std::to_string(model.num_classes()) + " classes");
        if (images->class_names() != model.class_names())
            std::cerr << "infer: warning: the class folders' names differ from the model's class names; "
                         "labels follow the folders' sorted order\n";
        dataset = std::move(images);
    } else {
        const std::string labels = idx_labels(opt);
        data::IdxOptions idx;
        idx.transforms = model_transforms(in);
        idx.class_names = model.class_names();
        dataset = std::make_unique<data::IdxDataset>(opt.data, labels, idx);
    }
    if (dataset->channels() != in.channels || dataset->height() != in.height || dataset->width() != in.width)
        fail(opt.data + ": images are " + shape_string(dataset->channels(), dataset->height(), dataset->width()) +
             "; the model expects " + shape_string(in.channels, in.height, in.width));
    return dataset;
}

void print_profile(const infer::Model& model, int64_t batches) {
    const auto& ops = model.profile();
    double total = 0;
    for (const auto& op : ops) total += op.seconds;
    std::printf("\n%-4s %-28s %-16s %12s %8s\n", "op", "name", "type", "ms/batch", "share");
    for (size_t i = 0; i < ops.size(); ++i)
        std::printf("%-4zu %-28s %-16s %12.4f %7.1f%%\n", i, ops[i].name.c_str(), ops[i].type.c_str(),
                    1e3 * ops[i].seconds / double(std::max<int64_t>(batches, 1)),
                    total > 0 ? 100 * ops[i].seconds / total : 0.0);
    std::printf("%-4s %-28s %-16s %12.4f\n", "", "total", "", 1e3 * total / double(std::max<int64_t>(batches, 1)));
}

struct Evaluation {
    double top1 = 0, topk = 0, images_per_s = 0, median_batch_ms = 0;
    int top_k = 5;
};

Evaluation evaluate(const Options& opt, infer::Model& model) {
    const std::unique_ptr<data::Dataset> dataset = open_dataset(opt, model);
    data::LoaderOptions loader_options;
    loader_options.batch_size = opt.batch;
    loader_options.shuffle = false;
    loader_options.train = false;
    // A decoding thread beside a team that already holds every core preempts
    // one of its threads, and every op's barrier then waits for it: on the
    // 2-core machine resnet20 at batch 64 ran at ~400 images/s instead of
    // ~2100. Then decode between batches instead.
    if (omp_get_max_threads() >= int(std::thread::hardware_concurrency())) loader_options.num_workers = 0;
    data::DataLoader loader(*dataset, loader_options);
    loader.start_epoch(0);

    const int classes = model.num_classes(), top_k = std::min(5, classes);
    const bool progress = isatty(STDERR_FILENO);
    const int64_t batches = loader.batches_per_epoch();
    model.set_profiling(opt.profile);
    int64_t images = 0, top1 = 0, topk = 0, batch_index = 0;
    double run_seconds = 0;
    std::vector<double> latencies;
    data::Batch batch;
    while (loader.next(batch)) {
        const auto start = std::chrono::steady_clock::now();
        const std::span<const float> logits = model.run(batch.images.data(), int(batch.n));
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        run_seconds += seconds;
        latencies.push_back(seconds);
        for (int64_t i = 0; i < batch.n; ++i) {
            const float* row = logits.data() + i * classes;
            const int32_t label = batch.labels[size_t(i)];
            const int rank = qf::infer::label_rank(row, classes, label);
            top1 += rank == 0;
            topk += rank < top_k;
        }
        images += batch.n;
        if (progress)
            std::fprintf(stderr, "\r[%lld/%lld] top-1 %.2f%%", (long long)++batch_index, (long long)batches,
                         100.0 * double(top1) / double(images));
    }
    if (progress) std::fprintf(stderr, "\r%60s\r", "");
    if (images == 0) fail(opt.data + ": no images");

    std::sort(latencies.begin(), latencies.end());
    const Evaluation e{100.0 * double(top1) / double(images), 100.0 * double(topk) / double(images),
                       double(images) / run_seconds, 1e3 * latencies[latencies.size() / 2], top_k};
    std::printf("data: %s (%lld images)\n", opt.data.c_str(), (long long)images);
    std::printf("top-1: %.2f%%  top-%d: %.2f%%\n", e.top1, top_k, e.topk);
    std::printf("speed: %.1f images/s, batch %d latency %.3f ms (median of %zu batches), %d threads\n",
                e.images_per_s, opt.batch, e.median_batch_ms, latencies.size(), omp_get_max_threads());
    if (opt.profile) print_profile(model, int64_t(latencies.size()));
    return e;
}

// --compare: the fp32 checkpoint on the same data, batch and threads.
void compare(const Options& opt, const Evaluation& int8) {
    std::printf("\nfp32: evaluating %s (train --eval-only)...\n", opt.compare.c_str());
    std::fflush(stdout);
    const bool idx = !std::filesystem::is_directory(opt.data);
    const infer::Fp32Evaluation fp32 = infer::evaluate_fp32_checkpoint(
        {opt.compare, opt.data, idx ? idx_labels(opt) : "", opt.batch, omp_get_max_threads()});
    std::printf("fp32: %lld images evaluated by %s\n", (long long)fp32.images, fp32.train_binary.c_str());
    std::printf("\n%-6s %8s %8s %12s %16s\n", "", "top-1 %", "top-5 %", "images/s", "batch latency ms");
    std::printf("%-6s %8.2f %8.2f %12.1f %16.3f\n", "fp32", fp32.top1, fp32.top5, fp32.images_per_s,
                fp32.median_batch_ms);
    std::printf("%-6s %8.2f %8.2f %12.1f %16.3f\n", "int8", int8.top1, int8.topk, int8.images_per_s,
                int8.median_batch_ms);
    std::printf("int8 - fp32: %+.2f top-1 points; int8 / fp32 speed: %.2fx (batch %d, %d threads)\n",
                int8.top1 - fp32.top1, int8.images_per_s / fp32.images_per_s, opt.batch, omp_get_max_threads());
}

// The normalized C x H x W floats of one image file, which must have the
// model's size; a grayscale model refuses a colour image.
std::vector<float> load_image(const std::string& path, const infer::InputSpec& in) {
    data::Image image;
    std::vector<uint8_t> bytes;
    const data::DecodeLimits limits;
    data::read_file_bytes(path, limits.max_file_bytes, bytes);
    data::decode_image(bytes.data(), bytes.size(), 3, limits, path, image);
    if (image.width != in.width || image.height != in.height)
        fail(path + ": image is " + std::to_string(image.width) + "x" + std::to_string(image.height) +
             " (width x height); the model expects " + std::to_string(in.width) + "x" + std::to_string(in.height));
    if (in.channels == 1) {
        for (size_t i = 0; i < image.pixels.size(); i += 3)
            if (image.pixels[i] != image.pixels[i + 1] || image.pixels[i] != image.pixels[i + 2])
                fail(path + ": a colour image; the model expects 1 channel (grayscale)");
        data::decode_image(bytes.data(), bytes.size(), 1, limits, path, image);
    } else if (in.channels != 3) {
        fail("the model expects " + std::to_string(in.channels) + " channels; image files give 1 or 3");
    }
    std::vector<float> chw(size_t(in.channels) * in.height * in.width);
    std::mt19937 unused_rng;
    data::TransformScratch scratch;
    const data::ImageView view{image.pixels.data(), image.width, image.height, image.channels};
    data::apply_transforms(view, model_transforms(in), false, unused_rng, in.height, in.width, chw.data(), scratch);
    return chw;
}

int classify(const Options& opt, infer::Model& model) {
    const std::vector<float> image = load_image(opt.image, model.input());
    const std::span<const float> logits = model.run(image.data(), 1);
    std::vector<int> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
    // Softmax of the dequantized logits, for reading only.
    const float max_logit = logits[size_t(order[0])];
    double sum = 0;
    for (float l : logits) sum += std::exp(double(l - max_logit));
    std::printf("%s:\n", opt.image.c_str());
    for (int i = 0; i < std::min<int>(opt.top, int(order.size())); ++i) {
        const int c = order[size_t(i)];
        std::printf("  %d. %-20s logit %8.4f  p %.4f\n", i + 1, model.class_names()[size_t(c)].c_str(),
                    logits[size_t(c)], std::exp(double(logits[size_t(c)] - max_logit)) / sum);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"qforge infer: runs an int8 model (docs/int8-format.md) with integers only"};
    Options opt;
    app.add_option("model", opt.model, "the int8 model file")->required();
    app.add_option("--data", opt.data, "IDX images file or image folder root to evaluate on");
    app.add_option("--labels", opt.labels, "IDX labels file (default: derived from an images-idx3 name)");
    app.add_option("--batch", opt.batch, "images per batch")->check(CLI::Range(1, 1 << 16));
    app.add_option("--threads", opt.threads, "OpenMP threads for the kernels (default: OpenMP's)")
        ->check(CLI::Range(1, 1024));
    app.add_flag("--profile", opt.profile, "print the time of each op");
    app.add_option("--image", opt.image, "classify one image file and print its top classes");
    app.add_option("--top", opt.top, "classes printed for --image")->check(CLI::Range(1, 1 << 16));
    app.add_option("--compare", opt.compare,
                   "with --data: also evaluate this fp32 checkpoint (by the train binary) on the same data, "
                   "batch and threads, and print both side by side");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (!opt.compare.empty() && opt.data.empty()) {
        std::cerr << "infer: --compare needs --data\n";
        return 2;
    }
    if (opt.data.empty() == opt.image.empty()) {
        std::cerr << "infer: give exactly one of --data and --image\n" << app.help();
        return 2;
    }
    try {
        if (opt.threads > 0) omp_set_num_threads(opt.threads);
        infer::Model model = infer::Model::load(opt.model);
        const infer::InputSpec& in = model.input();
        std::printf("model: %s (%d ops, input %s, %d classes)\n", opt.model.c_str(), model.num_ops(),
                    shape_string(in.channels, in.height, in.width).c_str(), model.num_classes());
        if (!opt.image.empty()) return classify(opt, model);
        const Evaluation e = evaluate(opt, model);
        if (!opt.compare.empty()) compare(opt, e);
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "infer: " << e.what() << "\n";
        return 1;
    }
}
