// An ImageNet-style dataset: root/<class>/<image>.{jpg,jpeg,png,bmp}.
//
// Classes are the sub-folders of root, sorted by name (label = position);
// images within a class are sorted by file name. Images may have any size and
// be grayscale or colour: they are converted to `channels` channels, then
// transformed (TransformOptions; size must be set, since a batch needs one
// shape). Decoding goes through data/image_io.h's defensive wrapper.
#pragma once
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image_io.h"
#include "data/transforms.h"

namespace qf::data {

// What to do with an image that cannot be read or decoded.
enum class BadImagePolicy {
    skip,  // warn once per file, count it, leave it out of its batch
    fail,  // throw (the loader passes the message to the caller)
};
// "skip" or "fail"; throws std::invalid_argument otherwise.
BadImagePolicy bad_image_policy_from_name(const std::string& name);

struct ImageFolderOptions {
    int channels = 3;  // 1 (grayscale) or 3 (RGB)
    TransformOptions transforms;
    BadImagePolicy on_bad_image = BadImagePolicy::skip;
    DecodeLimits limits;
    // Receives each skipped image's warning; empty: printed to stderr.
    std::function<void(const std::string&)> warn;
};

class ImageFolderDataset : public Dataset {
public:
    // Lists the folder. Throws std::runtime_error for a missing or empty
    // dataset folder or a class folder without images, std::invalid_argument
    // for bad options.
    ImageFolderDataset(const std::string& root, ImageFolderOptions options = {});

    int64_t size() const override { return int64_t(files_.size()); }
    const std::vector<std::string>& class_names() const override { return class_names_; }
    int channels() const override { return options_.channels; }
    int height() const override { return options_.transforms.size; }
    int width() const override { return options_.transforms.size; }
    int32_t label(int64_t index) const override { return labels_[size_t(index)]; }
    bool load(int64_t index, float* out_chw, std::mt19937& rng, bool train) const override;

    const std::string& path(int64_t index) const { return files_[size_t(index)]; }
    // How many distinct files were skipped as bad so far.
    int64_t bad_image_count() const;

private:
    // Records a skipped file; warns the first time it is seen.
    void skip_bad_image(int64_t index, const std::string& message) const;

    std::string root_;
    ImageFolderOptions options_;
    std::vector<std::string> class_names_;
    std::vector<std::string> files_;
    std::vector<int32_t> labels_;
    mutable std::mutex bad_mutex_;
    mutable std::set<int64_t> bad_indices_;
};

}  // namespace qf::data
