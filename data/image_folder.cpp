#include "data/image_folder.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace qf::data {

namespace fs = std::filesystem;

BadImagePolicy bad_image_policy_from_name(const std::string& name) {
    if (name == "skip") return BadImagePolicy::skip;
    if (name == "fail") return BadImagePolicy::fail;
    throw std::invalid_argument("unknown on_bad_image \"" + name + "\" (expected skip or fail)");
}

namespace {

// Sorted names of the entries of `dir` that pass `keep`, hidden ones left out.
template <class Keep>
std::vector<std::string> sorted_entries(const fs::path& dir, Keep keep) {
    std::vector<std::string> names;
    std::error_code error;
    for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
        std::string name = it->path().filename().string();
        if (!name.empty() && name[0] != '.' && keep(*it)) names.push_back(name);
    }
    if (error) throw std::runtime_error(dir.string() + ": cannot list (" + error.message() + ")");
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace

ImageFolderDataset::ImageFolderDataset(const std::string& root, ImageFolderOptions options)
    : root_(root), options_(std::move(options)) {
    if (options_.channels != 1 && options_.channels != 3)
        throw std::invalid_argument("image folder: channels must be 1 or 3, got " +
                                    std::to_string(options_.channels));
    validate(options_.transforms, options_.channels);
    if (options_.transforms.size <= 0)
        throw std::invalid_argument("image folder: transforms.size must be > 0 (images of any size "
                                    "are cropped to size x size)");

    std::error_code error;
    if (!fs::is_directory(root, error))
        throw std::runtime_error("dataset folder " + root + " not found (or not a folder)");
    class_names_ = sorted_entries(root, [](const fs::directory_entry& e) {
        std::error_code ignored;
        return e.is_directory(ignored);
    });
    if (class_names_.empty())
        throw std::runtime_error("dataset folder " + root + " is empty: expected one sub-folder per class");

    for (size_t label = 0; label < class_names_.size(); ++label) {
        const fs::path class_dir = fs::path(root) / class_names_[label];
        std::vector<std::string> images = sorted_entries(class_dir, [](const fs::directory_entry& e) {
            std::error_code ignored;
            return e.is_regular_file(ignored) && has_image_extension(e.path().filename().string());
        });
        if (images.empty())
            throw std::runtime_error("class folder " + class_dir.string() +
                                     " has no images (.jpg, .jpeg, .png or .bmp)");
        for (const std::string& name : images) {
            files_.push_back((class_dir / name).string());
            labels_.push_back(int32_t(label));
        }
    }
}

bool ImageFolderDataset::load(int64_t index, float* out_chw, std::mt19937& rng, bool train) const {
    // Per-thread buffers, reused from one image to the next.
    thread_local std::vector<uint8_t> bytes;
    thread_local Image image;
    thread_local TransformScratch scratch;
    const std::string& file = files_[size_t(index)];
    try {
        read_file_bytes(file, options_.limits.max_file_bytes, bytes);
        decode_image(bytes.data(), bytes.size(), options_.channels, options_.limits, file, image);
    } catch (const ImageError& e) {
        if (options_.on_bad_image == BadImagePolicy::fail) throw;
        skip_bad_image(index, e.what());
        return false;
    }
    ImageView view{image.pixels.data(), image.width, image.height, image.channels};
    apply_transforms(view, options_.transforms, train, rng, height(), width(), out_chw, scratch);
    return true;
}

void ImageFolderDataset::skip_bad_image(int64_t index, const std::string& message) const {
    std::lock_guard<std::mutex> lock(bad_mutex_);
    if (!bad_indices_.insert(index).second) return;
    std::string warning = "warning: skipping bad image: " + message;
    if (options_.warn)
        options_.warn(warning);
    else
        std::fprintf(stderr, "%s\n", warning.c_str());
}

int64_t ImageFolderDataset::bad_image_count() const {
    std::lock_guard<std::mutex> lock(bad_mutex_);
    return int64_t(bad_indices_.size());
}

}  // namespace qf::data
