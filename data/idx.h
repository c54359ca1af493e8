// IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain, and
// a Dataset over an images file plus a labels file.
//
// An IDX file is: two zero bytes, a type byte (0x08 = unsigned byte, the only
// type these datasets use), the number of dimensions, each dimension as a
// big-endian uint32, then the values row-major. Images are N x rows x cols,
// labels are N.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace qf::data {

struct IdxArray {
    std::vector<int64_t> dims;
    std::vector<uint8_t> values;  // product(dims) bytes
};

// Reads and validates a whole IDX file of unsigned bytes. zlib reads a plain
// file as it is, so ".gz" is optional. Throws std::runtime_error naming the
// file and what is wrong (magic, type, dimensions, truncation, trailing bytes).
IdxArray read_idx(const std::string& path);

// T-shirt_top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Ankle_boot
const std::vector<std::string>& fashion_mnist_class_names();

struct IdxOptions {
    TransformOptions transforms;  // size 0 keeps 28x28
    // Names of the classes, label order; empty: "0", "1", ... up to the
    // largest label present.
    std::vector<std::string> class_names;
    int64_t limit = 0;  // use only the first `limit` samples; 0: all
};

class IdxDataset : public Dataset {
public:
    // Throws std::runtime_error for a bad file, mismatched image and label
    // counts, or a label outside class_names.
    IdxDataset(const std::string& images_path, const std::string& labels_path, IdxOptions options = {});

    int64_t size() const override { return count_; }
    const std::vector<std::string>& class_names() const override { return class_names_; }
    int channels() const override { return 1; }
    int height() const override { return out_height_; }
    int width() const override { return out_width_; }
    int32_t label(int64_t index) const override { return labels_[size_t(index)]; }
    bool load(int64_t index, float* out_chw, std::mt19937& rng, bool train) const override;

private:
    IdxOptions options_;
    int64_t count_ = 0;
    int rows_ = 0, cols_ = 0, out_height_ = 0, out_width_ = 0;
    std::vector<uint8_t> pixels_;  // count x rows x cols
    std::vector<int32_t> labels_;
    std::vector<std::string> class_names_;
};

}  // namespace qf::data
