#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <memory>
#include <stdexcept>

namespace qf::data {

namespace {

// A gzFile that closes itself; gzread also reads a plain file as it is.
class GzReader {
public:
    explicit GzReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
        if (!file_) throw std::runtime_error(path + ": cannot open IDX file");
    }
    ~GzReader() { gzclose(file_); }
    GzReader(const GzReader&) = delete;
    GzReader& operator=(const GzReader&) = delete;

    // Reads up to n bytes; returns how many (fewer only at the end of data).
    size_t read(uint8_t* out, size_t n) {
        size_t total = 0;
        while (total < n) {
            unsigned chunk = unsigned(std::min<size_t>(n - total, size_t(1) << 30));
            int got = gzread(file_, out + total, chunk);
            if (got < 0) {
                int code = 0;
                const char* message = gzerror(file_, &code);
                throw std::runtime_error(path_ + ": corrupt compressed data (" + message + ")");
            }
            if (got == 0) break;
            total += size_t(got);
        }
        return total;
    }

private:
    std::string path_;
    gzFile file_;
};

uint32_t big_endian_u32(const uint8_t* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

// Large enough for any real IDX file, small enough that a corrupt header
// cannot ask for an absurd amount of memory.
constexpr uint64_t max_idx_values = uint64_t(1) << 32;

}  // namespace

IdxArray read_idx(const std::string& path) {
    GzReader reader(path);
    uint8_t magic[4];
    if (reader.read(magic, 4) != 4) throw std::runtime_error(path + ": truncated IDX header");
    if (magic[0] != 0 || magic[1] != 0)
        throw std::runtime_error(path + ": not an IDX file (the magic number must start with two zero bytes)");
    if (magic[2] != 0x08)
        throw std::runtime_error(path + ": IDX value type " + std::to_string(magic[2]) +
                                 " not supported (expected 8, unsigned byte)");
    const int ndims = magic[3];
    if (ndims < 1 || ndims > 4)
        throw std::runtime_error(path + ": IDX file with " + std::to_string(ndims) +
                                 " dimensions (expected 1 to 4)");

    IdxArray array;
    uint64_t count = 1;
    for (int d = 0; d < ndims; ++d) {
        uint8_t word[4];
        if (reader.read(word, 4) != 4) throw std::runtime_error(path + ": truncated IDX header");
        uint32_t dim = big_endian_u32(word);
        if (dim == 0) throw std::runtime_error(path + ": IDX dimension " + std::to_string(d) + " is 0");
        count *= dim;
        if (count > max_idx_values)
            throw std::runtime_error(path + ": IDX header declares more than 2^32 values");
        array.dims.push_back(dim);
    }

    // Grow with the data actually read rather than trusting the header with
    // one huge allocation.
    constexpr size_t chunk = size_t(1) << 20;
    size_t got = 0;
    while (got < count) {
        size_t want = std::min<size_t>(chunk, count - got);
        array.values.resize(got + want);
        size_t n = reader.read(array.values.data() + got, want);
        got += n;
        if (n < want)
            throw std::runtime_error(path + ": truncated IDX data (the header declares " + std::to_string(count) +
                                     " values, the file holds " + std::to_string(got) + ")");
    }
    uint8_t extra;
    if (reader.read(&extra, 1) != 0)
        throw std::runtime_error(path + ": trailing bytes after the " + std::to_string(count) +
                                 " values the IDX header declares");
    return array;
}

const std::vector<std::string>& fashion_mnist_class_names() {
    static const std::vector<std::string> names = {"T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"};
    return names;
}

IdxDataset::IdxDataset(const std::string& images_path, const std::string& labels_path, IdxOptions options)
    : options_(std::move(options)) {
    validate(options_.transforms, 1);
    if (options_.limit < 0) throw std::invalid_argument("idx: limit must be >= 0");

    IdxArray images = read_idx(images_path);
    if (images.dims.size() != 3)
        throw std::runtime_error(images_path + ": expected an images file (3 dimensions: count x rows x cols), got " +
                                 std::to_string(images.dims.size()) + " dimensions");
    IdxArray labels = read_idx(labels_path);
    if (labels.dims.size() != 1)
        throw std::runtime_error(labels_path + ": expected a labels file (1 dimension), got " +
                                 std::to_string(labels.dims.size()) + " dimensions");
    if (images.dims[0] != labels.dims[0])
        throw std::runtime_error(images_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                                 labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
    if (images.dims[1] > 1 << 14 || images.dims[2] > 1 << 14)
        throw std::runtime_error(images_path + ": image size " + std::to_string(images.dims[1]) + "x" +
                                 std::to_string(images.dims[2]) + " is absurd");

    count_ = images.dims[0];
    if (options_.limit > 0) count_ = std::min(count_, options_.limit);
    rows_ = int(images.dims[1]);
    cols_ = int(images.dims[2]);
    out_height_ = options_.transforms.size > 0 ? options_.transforms.size : rows_;
    out_width_ = options_.transforms.size > 0 ? options_.transforms.size : cols_;
    if (options_.transforms.size == 0 && options_.transforms.resize_shorter > 0 &&
        options_.transforms.resize_shorter != std::min(rows_, cols_))
        throw std::invalid_argument("idx: transforms.resize_shorter needs transforms.size > 0");

    images.values.resize(size_t(count_) * rows_ * cols_);
    pixels_ = std::move(images.values);
    pixels_.shrink_to_fit();
    labels_.assign(labels.values.begin(), labels.values.begin() + count_);

    int max_label = 0;
    for (int32_t l : labels_) max_label = std::max(max_label, int(l));
    class_names_ = options_.class_names;
    if (class_names_.empty())
        for (int c = 0; c <= max_label; ++c) class_names_.push_back(std::to_string(c));
    if (max_label >= int(class_names_.size()))
        throw std::runtime_error(labels_path + ": label " + std::to_string(max_label) + " but only " +
                                 std::to_string(class_names_.size()) + " class names");
}

bool IdxDataset::load(int64_t index, float* out_chw, std::mt19937& rng, bool train) const {
    // The scratch buffer is only touched when a transform resizes; each
    // worker thread keeps its own, so steady-state loading does not allocate.
    thread_local TransformScratch scratch;
    ImageView view{pixels_.data() + size_t(index) * rows_ * cols_, cols_, rows_, 1};
    apply_transforms(view, options_.transforms, train, rng, out_height_, out_width_, out_chw, scratch);
    return true;
}

}  // namespace qf::data
