#include "train/datasets.h"

#include "data/idx.h"
#include "data/image_folder.h"

namespace qf::train {

namespace {
data::TransformOptions transforms_of(const DataConfig& d, bool idx) {
    data::TransformOptions t;
    // IDX images keep their size unless a different one is asked for.
    t.size = (idx && d.image_size == 28) ? 0 : d.image_size;
    t.resize_shorter = d.resize;
    t.crop = d.random_resized_crop ? data::CropMode::random_resized : data::CropMode::center;
    t.scale_min = (float)d.crop_scale[0];
    t.scale_max = (float)d.crop_scale[1];
    t.horizontal_flip = d.hflip;
    t.mean.assign(d.mean.begin(), d.mean.end());
    t.std.assign(d.std.begin(), d.std.end());
    return t;
}

// The first `limit` samples of an image folder would all be of the first
// classes (files are listed class by class), so a limit takes evenly spaced ones.
class EvenSubset : public data::Dataset {
public:
    EvenSubset(std::unique_ptr<data::Dataset> base, int64_t count) : base_(std::move(base)), count_(count) {}
    int64_t size() const override { return count_; }
    const std::vector<std::string>& class_names() const override { return base_->class_names(); }
    int channels() const override { return base_->channels(); }
    int height() const override { return base_->height(); }
    int width() const override { return base_->width(); }
    int32_t label(int64_t i) const override { return base_->label(source(i)); }
    bool load(int64_t i, float* out, std::mt19937& rng, bool train) const override {
        return base_->load(source(i), out, rng, train);
    }

private:
    int64_t source(int64_t i) const { return i * base_->size() / count_; }
    std::unique_ptr<data::Dataset> base_;
    int64_t count_;
};

std::unique_ptr<data::Dataset> image_folder(const std::string& root, const data::ImageFolderOptions& o,
                                            int64_t limit) {
    auto ds = std::make_unique<data::ImageFolderDataset>(root, o);
    if (limit <= 0 || limit >= ds->size()) return ds;
    return std::make_unique<EvenSubset>(std::move(ds), limit);
}

data::ImageFolderOptions folder_options(const DataConfig& d) {
    data::ImageFolderOptions o;
    o.channels = d.channels;
    o.transforms = transforms_of(d, false);
    o.on_bad_image = d.on_bad_image == BadImagePolicy::Fail ? data::BadImagePolicy::fail
                                                             : data::BadImagePolicy::skip;
    return o;
}
}  // namespace

Datasets make_datasets(const Config& cfg) {
    const DataConfig& d = cfg.data;
    Datasets out;
    if (d.format == DataFormat::Idx) {
        data::IdxOptions o;
        o.transforms = transforms_of(d, true);
        o.class_names = data::fashion_mnist_class_names();
        if (cfg.model.num_classes != (int)o.class_names.size()) o.class_names.clear();
        o.limit = d.limit_train;
        out.train = std::make_unique<data::IdxDataset>(d.train_images, d.train_labels, o);
        o.limit = d.limit_test;
        out.test = std::make_unique<data::IdxDataset>(d.test_images, d.test_labels, o);
    } else {
        if (d.train_dir.empty() || d.val_dir.empty())
            throw ConfigError("data.format is folder: data.train_dir and data.val_dir must be set");
        out.train = image_folder(d.train_dir, folder_options(d), d.limit_train);
        out.test = image_folder(d.val_dir, folder_options(d), d.limit_test);
    }
    for (const data::Dataset* ds : {out.train.get(), out.test.get()}) {
        if (ds->channels() != cfg.model.in_channels)
            throw ConfigError("the data has " + std::to_string(ds->channels()) +
                              " channels but model.in_channels is " + std::to_string(cfg.model.in_channels));
        if (ds->num_classes() > cfg.model.num_classes)
            throw ConfigError("the data has " + std::to_string(ds->num_classes()) +
                              " classes but model.num_classes is " + std::to_string(cfg.model.num_classes));
    }
    return out;
}

}  // namespace qf::train
