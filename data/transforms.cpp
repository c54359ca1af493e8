#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <stb_image_resize.h>

#include "data/random.h"

namespace qf::data {

CropMode crop_mode_from_name(const std::string& name) {
    if (name == "center") return CropMode::center;
    if (name == "random") return CropMode::random;
    if (name == "random_resized") return CropMode::random_resized;
    throw std::invalid_argument("unknown crop mode \"" + name +
                                "\" (expected center, random or random_resized)");
}

const char* crop_mode_name(CropMode mode) {
    switch (mode) {
        case CropMode::center: return "center";
        case CropMode::random: return "random";
        case CropMode::random_resized: return "random_resized";
    }
    return "?";
}

void validate(const TransformOptions& o, int channels) {
    auto fail = [](const std::string& what) { throw std::invalid_argument("transforms: " + what); };
    if (o.size < 0 || o.size > 1 << 14) fail("size must be in [0, 16384], got " + std::to_string(o.size));
    if (o.resize_shorter < 0 || o.resize_shorter > 1 << 14)
        fail("resize_shorter must be in [0, 16384], got " + std::to_string(o.resize_shorter));
    if (o.padding < 0 || o.padding > 1 << 10)
        fail("padding must be in [0, 1024], got " + std::to_string(o.padding));
    if (o.crop == CropMode::random_resized && o.size == 0)
        fail("crop random_resized needs size > 0");
    if (!(o.scale_min > 0 && o.scale_min <= o.scale_max && o.scale_max <= 1))
        fail("scale range must satisfy 0 < scale_min <= scale_max <= 1, got [" +
             std::to_string(o.scale_min) + ", " + std::to_string(o.scale_max) + "]");
    if (!(o.ratio_min > 0 && o.ratio_min <= o.ratio_max && std::isfinite(o.ratio_max)))
        fail("ratio range must satisfy 0 < ratio_min <= ratio_max, got [" +
             std::to_string(o.ratio_min) + ", " + std::to_string(o.ratio_max) + "]");
    auto check_per_channel = [&](const std::vector<float>& v, const char* name) {
        if (!v.empty() && v.size() != 1 && v.size() != size_t(channels))
            fail(std::string(name) + " needs 1 or " + std::to_string(channels) + " values, got " +
                 std::to_string(v.size()));
        for (float x : v)
            if (!std::isfinite(x)) fail(std::string(name) + " values must be finite");
    };
    check_per_channel(o.mean, "mean");
    check_per_channel(o.std, "std");
    for (float s : o.std)
        if (!(s > 0)) fail("std values must be > 0, got " + std::to_string(s));
}

namespace {

struct Rect {
    int x, y, width, height;
};

// torchvision's RandomResizedCrop.get_params: ten tries at a random area and
// log-uniform aspect ratio, then a fallback to the largest central crop whose
// ratio is within range.
Rect sample_resized_crop(int width, int height, const TransformOptions& o, std::mt19937& rng) {
    const double area = double(width) * height;
    const float log_ratio_min = std::log(o.ratio_min), log_ratio_max = std::log(o.ratio_max);
    for (int attempt = 0; attempt < 10; ++attempt) {
        double target_area = area * uniform_range(rng, o.scale_min, o.scale_max);
        double ratio = std::exp(uniform_range(rng, log_ratio_min, log_ratio_max));
        int w = int(std::lround(std::sqrt(target_area * ratio)));
        int h = int(std::lround(std::sqrt(target_area / ratio)));
        if (w > 0 && h > 0 && w <= width && h <= height) {
            int x = int(uniform_below(rng, uint32_t(width - w + 1)));
            int y = int(uniform_below(rng, uint32_t(height - h + 1)));
            return {x, y, w, h};
        }
    }
    double in_ratio = double(width) / height;
    int w = width, h = height;
    if (in_ratio < o.ratio_min)
        h = std::max(1, int(std::lround(w / o.ratio_min)));
    else if (in_ratio > o.ratio_max)
        w = std::max(1, int(std::lround(h * o.ratio_max)));
    return {(width - w) / 2, (height - h) / 2, w, h};
}

// Resizes a region of `src` (row stride src_stride bytes) into scratch.
ImageView resize_region(const uint8_t* region, int width, int height, int src_stride, int channels,
                        int out_width, int out_height, std::vector<uint8_t>& scratch) {
    scratch.resize(size_t(out_width) * out_height * channels);
    if (!stbir_resize_uint8(region, width, height, src_stride, scratch.data(), out_width, out_height,
                            0, channels))
        throw std::runtime_error("image resize failed (out of memory?)");
    return {scratch.data(), out_width, out_height, channels};
}

// Crops out_width x out_height starting at (x0, y0) of `img` (pixels outside
// it read as 0), optionally mirrored, and writes normalized floats CHW.
void write_normalized(const ImageView& img, int x0, int y0, bool flip, int out_width,
                      int out_height, const TransformOptions& o, float* out) {
    const int c_count = img.channels;
    for (int c = 0; c < c_count; ++c) {
        const float mean = o.mean.empty() ? 0.0f : o.mean[o.mean.size() == 1 ? 0 : c];
        const float std = o.std.empty() ? 1.0f : o.std[o.std.size() == 1 ? 0 : c];
        const float scale = 1.0f / (255.0f * std), bias = -mean / std;
        for (int y = 0; y < out_height; ++y) {
            float* row_out = out + (size_t(c) * out_height + y) * out_width;
            const int sy = y0 + y;
            if (sy < 0 || sy >= img.height) {
                std::fill(row_out, row_out + out_width, bias);
                continue;
            }
            const uint8_t* row_in = img.pixels + size_t(sy) * img.width * c_count + c;
            for (int x = 0; x < out_width; ++x) {
                const int sx = x0 + (flip ? out_width - 1 - x : x);
                row_out[x] = (sx >= 0 && sx < img.width) ? row_in[size_t(sx) * c_count] * scale + bias : bias;
            }
        }
    }
}

}  // namespace

void apply_transforms(const ImageView& src, const TransformOptions& o, bool train, std::mt19937& rng,
                      int out_height, int out_width, float* out_chw, TransformScratch& scratch) {
    ImageView img = src;
    const int stride = src.width * src.channels;
    int x0 = 0, y0 = 0;
    if (train && o.crop == CropMode::random_resized) {
        Rect r = sample_resized_crop(src.width, src.height, o, rng);
        const uint8_t* region = src.pixels + size_t(r.y) * stride + size_t(r.x) * src.channels;
        img = resize_region(region, r.width, r.height, stride, src.channels, out_width, out_height,
                            scratch.resized);
    } else {
        const int shorter = std::min(src.width, src.height);
        if (o.resize_shorter > 0 && shorter != o.resize_shorter) {
            const double factor = double(o.resize_shorter) / shorter;
            const int w = std::max(1, int(std::lround(src.width * factor)));
            const int h = std::max(1, int(std::lround(src.height * factor)));
            img = resize_region(src.pixels, src.width, src.height, stride, src.channels, w, h,
                                scratch.resized);
        }
        const int range_x = img.width + 2 * o.padding - out_width;
        const int range_y = img.height + 2 * o.padding - out_height;
        if (train && o.crop == CropMode::random && range_x >= 0 && range_y >= 0) {
            x0 = int(uniform_below(rng, uint32_t(range_x + 1))) - o.padding;
            y0 = int(uniform_below(rng, uint32_t(range_y + 1))) - o.padding;
        } else {
            // Floor division, so an image smaller than the crop is padded
            // evenly with the odd pixel on the same side as a larger one.
            x0 = int(std::floor((img.width - out_width) / 2.0));
            y0 = int(std::floor((img.height - out_height) / 2.0));
        }
    }
    const bool flip = train && o.horizontal_flip && uniform_unit(rng) < 0.5f;
    write_normalized(img, x0, y0, flip, out_width, out_height, o, out_chw);
}

}  // namespace qf::data
