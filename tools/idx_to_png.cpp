// idx_to_png IMAGES LABELS OUTDIR [--limit N] [--force] [--numeric-names]
//
// Writes an IDX dataset (MNIST / Fashion-MNIST, .gz or plain) as an image
// folder, OUTDIR/<class name>/<index>.png: the ImageNet-style form of the same
// data, which ImageFolderDataset reads back. Class names are Fashion-MNIST's
// (T-shirt_top ... Ankle_boot) unless --numeric-names ("0" ... "9").
//
// The images are written into a temporary sibling folder that is renamed to
// OUTDIR at the end, so an interrupted run never leaves a partial OUTDIR that
// looks complete. A non-empty OUTDIR is refused unless --force replaces it.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <unistd.h>

#include "data/idx.h"
#include "data/image_io.h"

namespace fs = std::filesystem;
using namespace qf::data;

namespace {

const char* usage =
    "usage: idx_to_png IMAGES LABELS OUTDIR [--limit N] [--force] [--numeric-names]\n"
    "  writes OUTDIR/<class name>/<index>.png for each image of an IDX dataset\n"
    "  --limit N         only the first N images\n"
    "  --force           replace OUTDIR if it exists and is not empty\n"
    "  --numeric-names   class folders 0..9 instead of Fashion-MNIST's names\n";

struct Arguments {
    std::string images, labels, outdir;
    int64_t limit = 0;
    bool force = false;
    bool numeric_names = false;
};

Arguments parse_arguments(int argc, char** argv) {
    Arguments args;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--force") {
            args.force = true;
        } else if (a == "--numeric-names") {
            args.numeric_names = true;
        } else if (a == "--limit") {
            if (i + 1 >= argc) throw std::invalid_argument("--limit needs a number");
            std::string value = argv[++i];
            char* end = nullptr;
            long long n = std::strtoll(value.c_str(), &end, 10);
            if (value.empty() || *end != '\0' || n < 1)
                throw std::invalid_argument("--limit expects a positive integer, got \"" + value + "\"");
            args.limit = n;
        } else if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            std::exit(0);
        } else if (a.size() > 1 && a[0] == '-') {
            throw std::invalid_argument("unknown option " + a);
        } else {
            positional.push_back(a);
        }
    }
    if (positional.size() != 3)
        throw std::invalid_argument("expected IMAGES LABELS OUTDIR, got " + std::to_string(positional.size()) +
                                    " arguments");
    args.images = positional[0];
    args.labels = positional[1];
    args.outdir = positional[2];
    return args;
}

void run(const Arguments& args) {
    const fs::path outdir = fs::path(args.outdir).lexically_normal();
    if (outdir.filename().empty()) throw std::invalid_argument("OUTDIR must name a folder: " + args.outdir);
    const bool exists = fs::exists(outdir);
    if (exists && !fs::is_directory(outdir)) throw std::runtime_error(outdir.string() + " exists and is not a folder");
    if (exists && !fs::is_empty(outdir) && !args.force)
        throw std::runtime_error(outdir.string() + " is not empty (use --force to replace it)");

    IdxArray images = read_idx(args.images);
    IdxArray labels = read_idx(args.labels);
    if (images.dims.size() != 3)
        throw std::runtime_error(args.images + ": expected an images file (count x rows x cols)");
    if (labels.dims.size() != 1) throw std::runtime_error(args.labels + ": expected a labels file (1 dimension)");
    if (images.dims[0] != labels.dims[0])
        throw std::runtime_error(args.images + " holds " + std::to_string(images.dims[0]) + " images but " +
                                 args.labels + " holds " + std::to_string(labels.dims[0]) + " labels");
    const int rows = int(images.dims[1]), cols = int(images.dims[2]);
    const int64_t count = args.limit > 0 ? std::min(args.limit, images.dims[0]) : images.dims[0];

    std::vector<std::string> names = fashion_mnist_class_names();
    if (args.numeric_names)
        for (size_t c = 0; c < names.size(); ++c) names[c] = std::to_string(c);

    const fs::path staging = outdir.parent_path() /
                             ("." + outdir.filename().string() + ".partial-" + std::to_string(getpid()));
    fs::remove_all(staging);
    try {
        for (const std::string& name : names) fs::create_directories(staging / name);
        Image image{cols, rows, 1, {}};
        for (int64_t i = 0; i < count; ++i) {
            const int label = labels.values[size_t(i)];
            if (label >= int(names.size()))
                throw std::runtime_error(args.labels + ": label " + std::to_string(label) + " at index " +
                                         std::to_string(i) + " has no class name (expected 0 to 9)");
            const uint8_t* first = images.values.data() + size_t(i) * rows * cols;
            image.pixels.assign(first, first + size_t(rows) * cols);
            write_image((staging / names[size_t(label)] / (std::to_string(i) + ".png")).string(), image);
        }
        // Empty class folders (possible with --limit) would be refused by
        // ImageFolderDataset; leave them out.
        for (const std::string& name : names)
            if (fs::is_empty(staging / name)) fs::remove(staging / name);
        if (exists) fs::remove_all(outdir);
        fs::rename(staging, outdir);
    } catch (...) {
        std::error_code ignored;
        fs::remove_all(staging, ignored);
        throw;
    }
    std::printf("wrote %lld images of %dx%d to %s/<class>/<index>.png\n", (long long)count, cols, rows,
                outdir.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        run(parse_arguments(argc, argv));
        return 0;
    } catch (const std::invalid_argument& e) {
        std::fprintf(stderr, "idx_to_png: %s\n%s", e.what(), usage);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "idx_to_png: %s\n", e.what());
        return 1;
    }
}
