#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>

#include <stb_image_resize.h>

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

// The transforms resize only the crop they take, in tiles (data/transforms.cpp):
// the pixels must be those of stb's whole-image resize, up to float rounding.
TEST_CASE("transforms: resizing only the crop matches stb's whole-image resize") {
    struct Case {
        int w, h, c, shorter, out_h, out_w;
    } cases[] = {
        {1300, 700, 3, 600, 600, 1114},  // downsampled; the crop is the whole image: 3 x 2 tiles
        {1300, 700, 3, 600, 224, 224},   // a central window
        {1300, 700, 1, 650, 700, 500},   // taller than the image: padded top and bottom
        {200, 150, 1, 700, 600, 600},    // upsampled
        {3000, 40, 3, 33, 33, 2475},     // long: 2475 x 33, whole
    };
    for (const Case& k : cases) {
        CAPTURE(k.w);
        CAPTURE(k.out_w);
        std::vector<uint8_t> px(size_t(k.w) * k.h * k.c);
        std::mt19937 gen(7);
        for (int y = 0; y < k.h; ++y)  // a gradient, blocks and noise
            for (int x = 0; x < k.w; ++x)
                for (int ch = 0; ch < k.c; ++ch)
                    px[(size_t(y) * k.w + x) * k.c + ch] =
                        uint8_t((x + 2 * y) / 8 + ((x / 13 + y / 9) % 2) * 90 + gen() % 40 + ch * 20);
        const double factor = double(k.shorter) / std::min(k.w, k.h);
        const int rw = int(std::lround(k.w * factor)), rh = int(std::lround(k.h * factor));
        std::vector<uint8_t> full(size_t(rw) * rh * k.c);
        REQUIRE(stbir_resize_uint8(px.data(), k.w, k.h, 0, full.data(), rw, rh, 0, k.c));
        TransformOptions o;
        o.resize_shorter = k.shorter;
        auto out = run(px, k.w, k.h, k.c, o, false, k.out_h, k.out_w);
        const int x0 = int(std::floor((rw - k.out_w) / 2.0)), y0 = int(std::floor((rh - k.out_h) / 2.0));
        int worst = 0, differ = 0, compared = 0;
        for (int ch = 0; ch < k.c; ++ch)
            for (int y = 0; y < k.out_h; ++y)
                for (int x = 0; x < k.out_w; ++x) {
                    const int v = out[(size_t(ch) * k.out_h + y) * k.out_w + x];
                    const int sx = x0 + x, sy = y0 + y;
                    if (sx < 0 || sy < 0 || sx >= rw || sy >= rh) {
                        CHECK(v == 0);  // padding
                        continue;
                    }
                    const int d = std::abs(v - full[(size_t(sy) * rw + sx) * k.c + ch]);
                    worst = std::max(worst, d);
                    differ += d != 0;
                    ++compared;
                }
        CHECK(worst <= 1);
        CHECK(differ * 1000 <= compared);  // at most 0.1% off by one
    }
}

// stb_image_resize's setup of a downsampled axis costs input x output pixels:
// a 65536 x 10 image resized to 58982 x 9 took 3 s before the transforms
// resized only the crop.
TEST_CASE("transforms: long thin images resize quickly and in place") {
    const auto start = std::chrono::steady_clock::now();
    TransformOptions eval;
    eval.resize_shorter = 9;
    TransformOptions crop;
    crop.size = 8;
    crop.crop = CropMode::random_resized;
    struct Case {
        int w, h, c;
    } cases[] = {{65536, 10, 3}, {10, 65536, 1}, {16000, 1, 1}, {1, 16000, 1}, {16000, 2, 3}, {2, 16000, 3}};
    for (const Case& k : cases) {
        CAPTURE(k.w);
        CAPTURE(k.h);
        // Constant images stay constant.
        std::vector<uint8_t> px(size_t(k.w) * k.h * k.c, 77);
        for (int v : run(px, k.w, k.h, k.c, eval, false, 8, 8)) CHECK(v == 77);
        for (int v : run(px, k.w, k.h, k.c, crop, true, 8, 8)) CHECK(v == 77);
        // Halves 40 | 220 along the long side: the centre crop straddles the
        // split, dark before it, bright after, nothing shifted.
        const bool wide = k.w > k.h;
        for (int y = 0; y < k.h; ++y)
            for (int x = 0; x < k.w; ++x)
                for (int ch = 0; ch < k.c; ++ch)
                    px[(size_t(y) * k.w + x) * k.c + ch] = ((wide ? 2 * x : 2 * y) < (wide ? k.w : k.h)) ? 40 : 220;
        auto out = run(px, k.w, k.h, k.c, eval, false, 8, 8);
        for (int ch = 0; ch < k.c; ++ch)
            for (int i = 0; i < 8; ++i) {  // i across the long side, j along it
                auto at = [&](int j) { return out[(size_t(ch) * 8 + (wide ? i : j)) * 8 + (wide ? j : i)]; };
                CHECK(at(0) < 130);
                CHECK(at(7) > 130);
                for (int j = 1; j < 8; ++j) CHECK(at(j) >= at(j - 1));
            }
    }
    // The downsampled ones are sharp away from the split: a Mitchell filter
    // reaches 2 output pixels, and the split is 4 pixels into the crop.
    std::vector<uint8_t> halves(size_t(65536) * 10 * 3);
    for (int y = 0; y < 10; ++y)
        for (int x = 0; x < 65536; ++x)
            for (int ch = 0; ch < 3; ++ch) halves[(size_t(y) * 65536 + x) * 3 + ch] = x < 32768 ? 40 : 220;
    auto out = run(halves, 65536, 10, 3, eval, false, 8, 8);  // 58982 x 9, crop x from 29487
    for (int ch = 0; ch < 3; ++ch)
        for (int y = 0; y < 8; ++y) {
            const int* row = &out[(size_t(ch) * 8 + y) * 8];
            CHECK(row[0] == 40);
            CHECK(row[1] == 40);
            CHECK(row[6] == 220);
            CHECK(row[7] == 220);
        }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(seconds < 1.0);  // 0.02 s; 32 s with the whole-image resize (a busy 2-core machine)
}

// Past 8x down the transforms average whole blocks (to 4-6x the output size)
// before stb's Mitchell filter: the result stays a smooth local average.
TEST_CASE("transforms: large downscales average blocks first") {
    const int w = 4096, h = 2048;  // to 16 x 8: 256x down, 64 x 64 blocks, then 4x
    TransformOptions o;
    o.resize_shorter = 8;
    auto image = [&](auto value) {
        std::vector<uint8_t> px(size_t(w) * h * 3);
        for (int y = 0; y < h; ++y)
            for (int x = 0; x < w; ++x)
                for (int c = 0; c < 3; ++c) px[(size_t(y) * w + x) * 3 + c] = uint8_t(value(x, y, c));
        return px;
    };
    auto at = [](const std::vector<int>& out, int c, int y, int x) { return out[(size_t(c) * 8 + y) * 16 + x]; };

    auto constant = image([](int, int, int c) { return 77 + c; });
    auto out = run(constant, w, h, 3, o, false, 8, 16);
    for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 8; ++y)
            for (int x = 0; x < 16; ++x) CHECK(at(out, c, y, x) == 77 + c);

    // Left and right halves stay apart: the filter reaches 2 output pixels.
    auto halves = image([](int x, int, int) { return x < w / 2 ? 40 : 220; });
    out = run(halves, w, h, 3, o, false, 8, 16);
    for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 8; ++y) {
            for (int x = 0; x < 6; ++x) CHECK(at(out, c, y, x) == 40);
            for (int x = 10; x < 16; ++x) CHECK(at(out, c, y, x) == 220);
            // rising, but for Mitchell's slight ringing (39 and 221 either side)
            for (int x = 1; x < 16; ++x) CHECK(at(out, c, y, x) >= at(out, c, y, x - 1) - 1);
        }

    // A ramp comes out as the plain average of each 256 x 256 block, away
    // from the image edges (which stb clamps).
    auto ramp_image = image([](int x, int y, int c) { return x / 32 + y / 16 + c; });
    out = run(ramp_image, w, h, 3, o, false, 8, 16);
    for (int c = 0; c < 3; ++c)
        for (int y = 2; y < 6; ++y)
            for (int x = 2; x < 14; ++x) {
                // mean of x / 32 over a block of 256 x is 8 x + 3.5; of y / 16, 16 y + 7.5
                const double mean = (8 * x + 3.5) + (16 * y + 7.5) + c;
                CHECK(std::abs(at(out, c, y, x) - mean) <= 1);
            }
    // The centre window alone (what a center crop resizes) is the same pixels.
    auto window = run(ramp_image, w, h, 3, o, false, 4, 4);
    for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 4; ++y)
            for (int x = 0; x < 4; ++x) CHECK(window[(size_t(c) * 4 + y) * 4 + x] == at(out, c, y + 2, x + 6));
}

// A random crop can fall wholly into the padding: nothing is resized then.
TEST_CASE("transforms: a random crop all in the padding") {
    std::vector<uint8_t> px(size_t(20 * 20), 77);
    TransformOptions o;
    o.resize_shorter = 10;
    o.crop = CropMode::random;
    o.padding = 100;
    int all_padding = 0;
    for (uint32_t seed = 0; seed < 100; ++seed) {
        auto out = run(px, 20, 20, 1, o, true, 8, 8, seed);
        int image = 0;
        for (int v : out) {
            CHECK((v == 0 || v == 77));
            image += v == 77;
        }
        all_padding += image == 0;
    }
    CHECK(all_padding > 50);
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
