// The interface every dataset implements, and what the loader asks of it.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace qf::data {

// A fixed list of labelled samples, each produced as a channels x height x
// width float image (already transformed and normalized).
class Dataset {
public:
    virtual ~Dataset() = default;

    virtual int64_t size() const = 0;
    virtual const std::vector<std::string>& class_names() const = 0;
    int num_classes() const { return static_cast<int>(class_names().size()); }

    // The shape of every sample `load` writes.
    virtual int channels() const = 0;
    virtual int height() const = 0;
    virtual int width() const = 0;

    virtual int32_t label(int64_t index) const = 0;

    // Writes sample `index` to out_chw (channels * height * width floats).
    // `train` turns augmentation on; `rng` is this sample's own random stream
    // (the loader seeds it from seed, epoch and index). Returns false if the
    // sample was skipped (a bad image under on_bad_image = skip); throws for
    // any error it does not skip. Called concurrently from worker threads.
    virtual bool load(int64_t index, float* out_chw, std::mt19937& rng, bool train) const = 0;
};

}  // namespace qf::data
