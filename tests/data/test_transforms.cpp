#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "data/transforms.h"

using namespace qf::data;

namespace {

// A w x h image with channels c whose pixel (x, y, ch) is x + 10 y + 100 ch.
std::vector<uint8_t> ramp(int w, int h, int c) {
    std::vector<uint8_t> px(size_t(w * h * c));
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int ch = 0; ch < c; ++ch) px[size_t((y * w + x) * c + ch)] = uint8_t(x + 10 * y + 100 * ch);
    return px;
}

// The transform's output as pixel values 0..255 (no normalization set).
std::vector<int> run(const std::vector<uint8_t>& px, int w, int h, int c, const TransformOptions& o, bool train,
                     int out_h, int out_w, uint32_t seed = 0) {
    std::mt19937 rng(seed);
    TransformScratch scratch;
    std::vector<float> out(size_t(c * out_h * out_w));
    apply_transforms({px.data(), w, h, c}, o, train, rng, out_h, out_w, out.data(), scratch);
    std::vector<int> values;
    for (float v : out) values.push_back(int(std::lround(v * 255.0f)));
    return values;
}

}  // namespace

TEST_CASE("transforms: identity writes CHW") {
    auto px = ramp(4, 3, 3);
    auto out = run(px, 4, 3, 3, {}, false, 3, 4);
    // channel 1, row 2, column 3
    CHECK(out[size_t(1 * 12 + 2 * 4 + 3)] == 3 + 20 + 100);
    CHECK(out[0] == 0);
}

TEST_CASE("transforms: normalization per channel and broadcast") {
    std::vector<uint8_t> px = {255, 0, 51};  // one RGB pixel
    TransformOptions o;
    o.mean = {0.5f, 0.0f, 0.2f};
    o.std = {0.5f, 1.0f, 0.1f};
    std::mt19937 rng(0);
    TransformScratch scratch;
    float out[3];
    apply_transforms({px.data(), 1, 1, 3}, o, false, rng, 1, 1, out, scratch);
    CHECK(out[0] == doctest::Approx(1.0f));
    CHECK(out[1] == doctest::Approx(0.0f));
    CHECK(out[2] == doctest::Approx(0.0f).epsilon(1e-5));
    o.mean = {0.2860f};
    o.std = {0.3530f};
    apply_transforms({px.data(), 1, 1, 3}, o, false, rng, 1, 1, out, scratch);
    CHECK(out[1] == doctest::Approx(-0.2860f / 0.3530f));
}

TEST_CASE("transforms: center crop and zero padding") {
    auto px = ramp(6, 4, 1);
    auto out = run(px, 6, 4, 1, {}, false, 2, 2);  // crop starts at (2, 1)
    CHECK(out == std::vector<int>{12, 13, 22, 23});
    out = run(px, 6, 4, 1, {}, false, 6, 8);  // larger than the image: padded by 1 each side
    CHECK(out[0] == 0);
    CHECK(out[size_t(1 * 8 + 1)] == 0);  // (x=1, y=1) is source (0, 0)
    CHECK(out[size_t(2 * 8 + 2)] == 11);
    CHECK(out[size_t(5 * 8 + 7)] == 0);
}

TEST_CASE("transforms: horizontal flip happens about half the time, only in training") {
    auto px = ramp(5, 1, 1);
    TransformOptions o;
    o.horizontal_flip = true;
    int flipped = 0;
    for (uint32_t seed = 0; seed < 200; ++seed) {
        auto out = run(px, 5, 1, 1, o, true, 1, 5, seed);
        if (out == std::vector<int>{4, 3, 2, 1, 0})
            ++flipped;
        else
            CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
        CHECK(run(px, 5, 1, 1, o, false, 1, 5, seed) == std::vector<int>{0, 1, 2, 3, 4});
    }
    CHECK(flipped > 70);
    CHECK(flipped < 130);
}

TEST_CASE("transforms: random crop with padding stays in range and varies") {
    auto px = ramp(8, 8, 1);
    TransformOptions o;
    o.crop = CropMode::random;
    o.padding = 2;
    std::set<std::vector<int>> seen;
    for (uint32_t seed = 0; seed < 100; ++seed) {
        auto out = run(px, 8, 8, 1, o, true, 8, 8, seed);
        seen.insert(out);
        // A shifted copy: each row is consecutive source pixels or padding.
        for (int y = 0; y < 8; ++y)
            for (int x = 1; x < 8; ++x) {
                int a = out[size_t(y * 8 + x - 1)], b = out[size_t(y * 8 + x)];
                if (a != 0 && b != 0) CHECK(b == a + 1);
            }
    }
    CHECK(seen.size() > 10);
    // Evaluation ignores the random crop.
    CHECK(run(px, 8, 8, 1, o, false, 8, 8) == run(px, 8, 8, 1, {}, false, 8, 8));
}

TEST_CASE("transforms: resize the shorter side, then center crop") {
    // A constant image keeps its value under resizing.
    std::vector<uint8_t> px(size_t(40 * 20 * 3), 77);
    TransformOptions o;
    o.resize_shorter = 10;
    auto out = run(px, 40, 20, 3, o, false, 8, 8);
    for (int v : out) CHECK(v == 77);
    // Halving 1-pixel stripes blurs them towards their mean (stb's Mitchell
    // filter is not a plain box average, hence the tolerance).
    std::vector<uint8_t> stripes(size_t(8 * 8));
    for (int i = 0; i < 64; ++i) stripes[size_t(i)] = (i % 2) ? 200 : 100;
    o.resize_shorter = 4;
    out = run(stripes, 8, 8, 1, o, false, 4, 4);
    for (int v : out) CHECK(std::abs(v - 150) <= 15);
}

TEST_CASE("transforms: random resized crop") {
    std::vector<uint8_t> px(size_t(64 * 48 * 3), 200);
    TransformOptions o;
    o.size = 16;
    o.crop = CropMode::random_resized;
    for (uint32_t seed = 0; seed < 20; ++seed) {
        auto out = run(px, 64, 48, 3, o, true, 16, 16, seed);
        for (int v : out) CHECK(v == 200);  // never reads outside the image
    }
    // A ramp: different seeds crop different regions.
    auto r = ramp(20, 20, 1);
    std::set<std::vector<int>> seen;
    for (uint32_t seed = 0; seed < 20; ++seed) seen.insert(run(r, 20, 20, 1, o, true, 16, 16, seed));
    CHECK(seen.size() > 10);
    // Impossible ratio range: falls back to the central crop.
    o.ratio_min = o.ratio_max = 50.0f;
    auto out = run(r, 20, 20, 1, o, true, 16, 16);
    CHECK(out.size() == 256);
}

TEST_CASE("transforms: invalid options name the field") {
    TransformOptions o;
    o.mean = {0.1f, 0.2f};
    CHECK_THROWS_WITH_AS(validate(o, 3), doctest::Contains("mean needs 1 or 3 values, got 2"), std::invalid_argument);
    o = {};
    o.std = {0.0f};
    CHECK_THROWS_WITH_AS(validate(o, 1), doctest::Contains("std values must be > 0"), std::invalid_argument);
    o = {};
    o.scale_min = 0.5f;
    o.scale_max = 0.2f;
    CHECK_THROWS_WITH_AS(validate(o, 1), doctest::Contains("scale range"), std::invalid_argument);
    o = {};
    o.crop = CropMode::random_resized;
    CHECK_THROWS_WITH_AS(validate(o, 1), doctest::Contains("needs size > 0"), std::invalid_argument);
    CHECK(crop_mode_from_name("random_resized") == CropMode::random_resized);
    CHECK_THROWS_WITH_AS(crop_mode_from_name("middle"), doctest::Contains("expected center, random or random_resized"),
                         std::invalid_argument);
}
