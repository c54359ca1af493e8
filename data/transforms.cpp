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

// Resizing goes through stb_image_resize (the v0.97 Debian ships), whose setup
// of a downsampled axis takes time proportional to input x output pixels on
// that axis: stbir__normalize_downsample_coefficients rescans the input from
// its start for every output pixel. Long images hit it: 16 x 26115 resized
// to 9 x 14690 took 0.28 s (over 10 s under the fuzzer's ASan), 65536 x 10 to
// 58982 x 9 took 3 s. So stbir is asked only for the output pixels we use,
// in tiles of at most resize_tile pixels a side, each made from just the
// input span that reaches it; that keeps the cost linear in the input. Up to
// box_threshold times down, the pixels are stbir_resize_uint8's whole-image
// result up to float rounding (tests/data/test_transforms.cpp compares them).
constexpr int resize_tile = 512;

// Past box_threshold times down, stbir still spends its filter's full width
// on every input pixel, plus a margin of 2 output pixels' worth of input past
// each edge (8192 x 8192 to 9 x 9 took 1.1 s), so whole blocks are averaged
// first (box_reduce), down to 4-6 times the output size: one integer add per
// input value (the same resize then took 0.16 s). The Mitchell filter still
// spans 16 or more block averages, so it blurs much as it would have: within
// one level on smooth images (up to 15 on white noise, a different weighting).
constexpr int box_threshold = 8;

// The block size along an axis of in_size pixels resized to out_size.
int box_factor(int in_size, int out_size) {
    return int64_t(in_size) > int64_t(box_threshold) * out_size ? in_size / (4 * out_size) : 1;
}

// Averages whole kx x ky blocks of the width x height image at `src` (rows
// stride bytes apart), per channel, rounding halves up, into `out`: a
// ceil(width / kx) x ceil(height / ky) image whose last column and row
// average what is left over (partial blocks).
void box_reduce(const uint8_t* src, int width, int height, int stride, int channels, int kx, int ky,
                std::vector<uint8_t>& out) {
    const int out_width = (width + kx - 1) / kx, out_height = (height + ky - 1) / ky;
    out.resize(size_t(out_width) * out_height * channels);
    std::vector<uint64_t> sums(size_t(out_width) * channels);
    for (int by = 0; by < out_height; ++by) {
        std::fill(sums.begin(), sums.end(), 0);
        const int y_end = std::min(height, (by + 1) * ky);
        for (int y = by * ky; y < y_end; ++y) {
            const uint8_t* row = src + size_t(y) * stride;
            for (int bx = 0, x = 0; bx < out_width; ++bx) {
                uint64_t* sum = &sums[size_t(bx) * channels];
                for (const int x_end = std::min(width, x + kx); x < x_end; ++x)
                    for (int c = 0; c < channels; ++c) sum[c] += row[size_t(x) * channels + c];
            }
        }
        for (int bx = 0; bx < out_width; ++bx) {
            const uint64_t area = uint64_t(std::min(kx, width - bx * kx)) * (y_end - by * ky);
            for (int c = 0; c < channels; ++c)
                out[(size_t(by) * out_width + bx) * channels + c] =
                    uint8_t((sums[size_t(bx) * channels + c] + area / 2) / area);
        }
    }
}

// An axis of in_size pixels scaled by `scale` (output pixels per input
// pixel): the input pixels [first, first + count) that reach outputs
// [out_first, out_first + out_count), and the shift that makes stbir place
// them there.
struct Span {
    int first, count;
    float shift;
};

Span input_span(int in_size, float scale, int out_first, int out_count) {
    // stbir's default filters (Catmull-Rom up, Mitchell down) reach 2 pixels
    // from a centre: 2 output pixels downsampling, 2 input pixels upsampling.
    // Four input pixels more spare us stbir's rounding. Pixels past the image
    // edge are clamped by stbir, as in the whole-image resize.
    const double first = std::floor((out_first - 2.0) / scale) - 4;
    const double end = std::ceil((out_first + out_count + 2.0) / scale) + 4;
    const int lo = int(std::max(0.0, first)), hi = int(std::min(double(in_size), end));
    // stbir maps input x (from the span's start) to output x * scale - shift.
    return {lo, hi - lo, float(out_first - double(lo) * scale)};
}

// Writes into scratch.resized the window [x, x + w) x [y, y + h) of `region`
// (width x height pixels, rows src_stride bytes apart) resized to full_width x
// full_height, as a w x h image.
ImageView resize_window(const uint8_t* region, int width, int height, int src_stride, int channels,
                        int full_width, int full_height, int x, int y, int w, int h,
                        TransformScratch& scratch) {
    // Output pixels per input pixel, as stbir_resize_uint8 computes them.
    float scale_x = float(full_width) / float(width), scale_y = float(full_height) / float(height);
    const int kx = box_factor(width, full_width), ky = box_factor(height, full_height);
    if (kx > 1 || ky > 1) {
        box_reduce(region, width, height, src_stride, channels, kx, ky, scratch.reduced);
        region = scratch.reduced.data();
        width = (width + kx - 1) / kx;
        height = (height + ky - 1) / ky;
        src_stride = width * channels;
        // Block i spans input [i k, (i + 1) k): its centre lands where the
        // whole-image resize puts that point.
        scale_x *= float(kx);
        scale_y *= float(ky);
    }
    std::vector<uint8_t>& out = scratch.resized;
    out.resize(size_t(w) * h * channels);
    const int out_stride = w * channels;
    for (int ty = 0; ty < h; ty += resize_tile) {
        const int th = std::min(resize_tile, h - ty);
        const Span sy = input_span(height, scale_y, y + ty, th);
        for (int tx = 0; tx < w; tx += resize_tile) {
            const int tw = std::min(resize_tile, w - tx);
            const Span sx = input_span(width, scale_x, x + tx, tw);
            const uint8_t* in = region + size_t(sy.first) * src_stride + size_t(sx.first) * channels;
            if (!stbir_resize_subpixel(in, sx.count, sy.count, src_stride,
                                       out.data() + size_t(ty) * out_stride + size_t(tx) * channels, tw, th,
                                       out_stride, STBIR_TYPE_UINT8, channels, STBIR_ALPHA_CHANNEL_NONE, 0,
                                       STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP, STBIR_FILTER_DEFAULT,
                                       STBIR_FILTER_DEFAULT, STBIR_COLORSPACE_LINEAR, nullptr, scale_x, scale_y,
                                       sx.shift, sy.shift))
                throw std::runtime_error("image resize failed (out of memory?)");
        }
    }
    return {out.data(), w, h, channels};
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
        img = resize_window(region, r.width, r.height, stride, src.channels, out_width, out_height, 0, 0,
                            out_width, out_height, scratch);
    } else {
        // The size after resizing the shorter side, if that is asked for.
        int width = src.width, height = src.height;
        const int shorter = std::min(src.width, src.height);
        const bool resize = o.resize_shorter > 0 && shorter != o.resize_shorter;
        if (resize) {
            const double factor = double(o.resize_shorter) / shorter;
            width = std::max(1, int(std::lround(src.width * factor)));
            height = std::max(1, int(std::lround(src.height * factor)));
        }
        const int range_x = width + 2 * o.padding - out_width;
        const int range_y = height + 2 * o.padding - out_height;
        if (train && o.crop == CropMode::random && range_x >= 0 && range_y >= 0) {
            x0 = int(uniform_below(rng, uint32_t(range_x + 1))) - o.padding;
            y0 = int(uniform_below(rng, uint32_t(range_y + 1))) - o.padding;
        } else {
            // Floor division, so an image smaller than the crop is padded
            // evenly with the odd pixel on the same side as a larger one.
            x0 = int(std::floor((width - out_width) / 2.0));
            y0 = int(std::floor((height - out_height) / 2.0));
        }
        if (resize) {
            // Resize only the part of the image the crop takes; the rest of
            // the crop (if any) is padding.
            int wx0 = std::clamp(x0, 0, width), wx1 = std::clamp(x0 + out_width, 0, width);
            int wy0 = std::clamp(y0, 0, height), wy1 = std::clamp(y0 + out_height, 0, height);
            if (wx1 <= wx0 || wy1 <= wy0) wx1 = wx0, wy1 = wy0;  // all padding
            img = resize_window(src.pixels, src.width, src.height, stride, src.channels, width, height, wx0,
                                wy0, wx1 - wx0, wy1 - wy0, scratch);
            x0 -= wx0;
            y0 -= wy0;
        }
    }
    const bool flip = train && o.horizontal_flip && uniform_unit(rng) < 0.5f;
    write_normalized(img, x0, y0, flip, out_width, out_height, o, out_chw);
}

}  // namespace qf::data
