// Per-sample transforms: 8-bit HWC image in, normalized float CHW out.
//
// Training (train = true):
//   crop = random_resized: a random region (area fraction in [scale_min,
//          scale_max] of the image, aspect ratio in [ratio_min, ratio_max],
//          log-uniform, torchvision's recipe) resized to size x size;
//   crop = random:  resize the shorter side to resize_shorter (if set), pad
//          `padding` zero pixels on every side, take a random size x size crop;
//   crop = center:  as in evaluation;
//   then, with horizontal_flip, mirror with probability 1/2.
// Evaluation (train = false): resize the shorter side to resize_shorter (if
// set), then the center size x size crop (zero-padded if the image is smaller).
// Finally each channel becomes (pixel / 255 - mean[c]) / std[c].
//
// All randomness comes from the rng passed in, which the loader seeds per
// sample, so the result never depends on which thread ran it.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace qf::data {

enum class CropMode { center, random, random_resized };
// "center", "random", "random_resized"; throws std::invalid_argument naming the valid ones.
CropMode crop_mode_from_name(const std::string& name);
const char* crop_mode_name(CropMode mode);

struct TransformOptions {
    int size = 0;             // output height = width; 0 keeps the source size (IDX data only)
    int resize_shorter = 0;   // resize so the shorter side has this many pixels; 0: never
    CropMode crop = CropMode::center;  // how training crops; evaluation always crops the center
    int padding = 0;          // zero border added before a random crop
    float scale_min = 0.08f, scale_max = 1.0f;        // random_resized: area fraction range
    float ratio_min = 3.0f / 4, ratio_max = 4.0f / 3;  // random_resized: width/height range
    bool horizontal_flip = false;  // training only, probability 1/2
    std::vector<float> mean;  // per channel, or one for all; empty: 0
    std::vector<float> std;   // per channel, or one for all; empty: 1
};

// Throws std::invalid_argument naming the field and the value expected.
void validate(const TransformOptions& options, int channels);

// A read-only view of an 8-bit HWC image.
struct ImageView {
    const uint8_t* pixels = nullptr;
    int width = 0, height = 0, channels = 0;
};

// Buffers reused across calls so steady-state loading does not allocate.
struct TransformScratch {
    std::vector<uint8_t> resized;
    std::vector<uint8_t> reduced;  // block averages taken before a large downscale
};

// Writes the transformed `src` as channels x out_height x out_width floats to
// out_chw. src.channels is the output channel count. Options must be valid.
void apply_transforms(const ImageView& src, const TransformOptions& options, bool train,
                      std::mt19937& rng, int out_height, int out_width, float* out_chw,
                      TransformScratch& scratch);

}  // namespace qf::data
