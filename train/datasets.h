// Builds the training and evaluation datasets that a config describes.
#pragma once
#include <memory>

#include "data/dataset.h"
#include "train/config.h"

namespace qf::train {

struct Datasets {
    std::unique_ptr<data::Dataset> train;
    std::unique_ptr<data::Dataset> test;
};

// Throws std::runtime_error naming the file or folder that cannot be used,
// or ConfigError when the data does not fit the model section.
Datasets make_datasets(const Config& cfg);

}  // namespace qf::train
