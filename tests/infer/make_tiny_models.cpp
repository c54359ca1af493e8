// make_tiny_models DIR
//
// Writes what infer_e2e.sh runs the `infer` CLI on into DIR: the lenet-like
// model of tiny_models.h (lenet.safetensors, input 1x12x12, 10 classes),
// tiny IDX files and PNG images for it, an image folder, and broken inputs
// (models, a dataset and images of the wrong size, a colour image).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "data/image_io.h"
#include "tiny_models.h"

using namespace qf::infer;

namespace {

constexpr int kSide = 12, kImages = 37;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
}

// A plain (uncompressed) IDX file of unsigned bytes.
void write_idx(const std::string& path, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& values) {
    std::vector<uint8_t> bytes = {0, 0, 0x08, uint8_t(dims.size())};
    for (uint32_t d : dims)
        for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(uint8_t(d >> shift));
    bytes.insert(bytes.end(), values.begin(), values.end());
    write_bytes(path, bytes);
}

qf::data::Image random_image(std::mt19937_64& rng, int width, int height, int channels) {
    qf::data::Image image{width, height, channels, std::vector<uint8_t>(size_t(width) * height * channels)};
    for (uint8_t& p : image.pixels) p = uint8_t(rng() % 256);
    return image;
}

void write_e2e_inputs(const std::filesystem::path& dir, const ModelSpec& lenet) {
    std::mt19937_64 rng(11);
    std::vector<uint8_t> pixels(size_t(kImages) * kSide * kSide), labels(kImages);
    for (uint8_t& p : pixels) p = uint8_t(rng() % 256);
    for (int i = 0; i < kImages; ++i) labels[size_t(i)] = uint8_t(i % 10);
    write_idx(dir / "tiny-images-idx3-ubyte", {kImages, kSide, kSide}, pixels);
    write_idx(dir / "tiny-labels-idx1-ubyte", {kImages}, labels);
    write_idx(dir / "other-images", {kImages, kSide, kSide}, pixels);  // no derivable labels name
    std::vector<uint8_t> big(size_t(kImages) * 28 * 28, 0);
    write_idx(dir / "big-images-idx3-ubyte", {kImages, 28, 28}, big);
    write_idx(dir / "big-labels-idx1-ubyte", {kImages}, labels);

    qf::data::write_image((dir / "good.png").string(), random_image(rng, kSide, kSide, 1));
    qf::data::write_image((dir / "big.png").string(), random_image(rng, 20, kSide, 1));
    qf::data::write_image((dir / "colour.png").string(), random_image(rng, kSide, kSide, 3));
    for (int c = 0; c < 10; ++c) {
        const std::filesystem::path folder = dir / "folder" / ("class_" + std::to_string(c));
        std::filesystem::create_directories(folder);
        for (int i = 0; i < 2; ++i)
            qf::data::write_image((folder / (std::to_string(i) + ".png")).string(), random_image(rng, kSide, kSide, 1));
    }

    // Broken models.
    const std::vector<uint8_t> good = model_to_bytes(lenet);
    write_bytes(dir / "truncated.safetensors", std::vector<uint8_t>(good.begin(), good.end() - 64));
    std::vector<uint8_t> past_end = good;
    past_end[6] = 1;  // header length now about 2^48
    write_bytes(dir / "header_past_end.safetensors", past_end);
    qf::safetensors::File file = qf::safetensors::parse(good, "lenet");
    qf::safetensors::Writer writer;
    for (auto& [key, value] : file.metadata) writer.set_metadata(key, value);
    for (auto& [name, t] : file.tensors) writer.add(name, t.dtype, t.shape, file.data.data() + t.offset, t.nbytes);
    writer.set_metadata("format_version", "7");
    writer.write((dir / "bad_version.safetensors").string());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_tiny_models DIR\n");
        return 2;
    }
    try {
        const std::filesystem::path dir = argv[1];
        std::filesystem::create_directories(dir);
        std::mt19937_64 rng(10);
        const ModelSpec lenet = test::lenet_like_model(rng, kSide, kSide);
        write_model(lenet, (dir / "lenet.safetensors").string());
        write_e2e_inputs(dir, lenet);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "make_tiny_models: %s\n", e.what());
        return 1;
    }
}
