#include <doctest/doctest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>

#include "data/image_folder.h"
#include "data/image_io.h"
#include "tests/data/temp_dir.h"

using namespace qf::data;
using qf::data::testing::TempDir;
namespace fs = std::filesystem;

namespace {

Image solid(int w, int h, int c, std::vector<uint8_t> color) {
    Image img{w, h, c, {}};
    for (int i = 0; i < w * h; ++i) img.pixels.insert(img.pixels.end(), color.begin(), color.end());
    return img;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::vector<uint8_t> bytes;
    read_file_bytes(path, size_t(1) << 20, bytes);
    return bytes;
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(v >> shift));
}

// A PNG that is only a signature, an IHDR declaring width x height RGB, and
// IEND: valid as far as any header reader can tell, with no pixel data.
std::vector<uint8_t> png_header_only(uint32_t width, uint32_t height) {
    std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    std::vector<uint8_t> ihdr = {'I', 'H', 'D', 'R'};
    put_be32(ihdr, width);
    put_be32(ihdr, height);
    ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, no filter, no interlace
    put_be32(png, 13);
    png.insert(png.end(), ihdr.begin(), ihdr.end());
    put_be32(png, uint32_t(crc32(0, ihdr.data(), unsigned(ihdr.size()))));
    put_be32(png, 0);
    png.insert(png.end(), {'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82});
    return png;
}

// root/cat: an RGB PNG 30x20, a JPEG 17x33, a grayscale PNG 25x25 (".PNG");
// root/dog: a BMP 12x12 and a grayscale JPEG; plus things to ignore.
void make_tree(const TempDir& dir) {
    fs::create_directories(dir.path() / "root/cat");
    fs::create_directories(dir.path() / "root/dog");
    fs::create_directories(dir.path() / "root/.hidden");
    write_image(dir / "root/cat/a.png", solid(30, 20, 3, {255, 0, 0}));
    write_image(dir / "root/cat/b.jpg", solid(17, 33, 3, {0, 0, 255}));
    write_image(dir / "root/cat/c_gray.PNG", solid(25, 25, 1, {128}));
    write_image(dir / "root/dog/d.bmp", solid(12, 12, 3, {0, 255, 0}));
    write_image(dir / "root/dog/e.jpeg", solid(40, 9, 1, {10}));
    write_bytes(dir / "root/dog/notes.txt", {'h', 'i'});
    write_bytes(dir / "root/stray.png", {1, 2, 3});
}

ImageFolderOptions options_with_size(int size, int channels = 3) {
    ImageFolderOptions o;
    o.channels = channels;
    o.transforms.size = size;
    return o;
}

std::vector<float> load(const ImageFolderDataset& ds, int64_t index, bool expect_ok = true) {
    std::vector<float> out(size_t(ds.channels() * ds.height() * ds.width()));
    std::mt19937 rng(0);
    CHECK(ds.load(index, out.data(), rng, false) == expect_ok);
    return out;
}

}  // namespace

TEST_CASE("image folder: classes, files, sizes and channel conversion") {
    TempDir dir;
    make_tree(dir);
    ImageFolderDataset ds(dir / "root", options_with_size(8));
    CHECK(ds.class_names() == std::vector<std::string>{"cat", "dog"});
    REQUIRE(ds.size() == 5);
    CHECK(fs::path(ds.path(2)).filename() == "c_gray.PNG");
    CHECK(ds.label(2) == 0);
    CHECK(ds.label(3) == 1);
    CHECK(ds.channels() == 3);

    auto red = load(ds, 0);  // 30x20 center-cropped: pure red
    CHECK(red[0] == doctest::Approx(1.0f));
    CHECK(red[64] == doctest::Approx(0.0f));
    auto blue = load(ds, 1);  // JPEG: approximately blue
    CHECK(blue[0] < 0.05f);
    CHECK(blue[128] > 0.95f);
    auto gray = load(ds, 2);  // grayscale replicated to 3 channels
    CHECK(gray[0] == doctest::Approx(128 / 255.0f));
    CHECK(gray[64] == doctest::Approx(128 / 255.0f));
    CHECK(gray[128] == doctest::Approx(128 / 255.0f));
    auto green = load(ds, 3);  // BMP
    CHECK(green[64] == doctest::Approx(1.0f));

    ImageFolderDataset gray_ds(dir / "root", options_with_size(8, 1));
    auto red_as_gray = load(gray_ds, 0);
    CHECK(red_as_gray.size() == 64);
    CHECK(red_as_gray[0] > 0.2f);  // luminance of pure red
    CHECK(red_as_gray[0] < 0.4f);
}

TEST_CASE("image folder: resize and random resized crop on images of any size") {
    TempDir dir;
    make_tree(dir);
    ImageFolderOptions o = options_with_size(16);
    o.transforms.resize_shorter = 18;
    o.transforms.crop = CropMode::random_resized;
    o.transforms.horizontal_flip = true;
    ImageFolderDataset ds(dir / "root", o);
    std::vector<float> out(3 * 16 * 16);
    for (int64_t i = 0; i < ds.size(); ++i)
        for (bool train : {false, true}) {
            std::mt19937 rng{uint32_t(i)};
            REQUIRE(ds.load(i, out.data(), rng, train));
            for (float v : out) REQUIRE((v >= -0.01f && v <= 1.01f));
        }
}

TEST_CASE("image folder: missing or empty dataset folder, class without images") {
    TempDir dir;
    CHECK_THROWS_WITH_AS(ImageFolderDataset(dir / "nowhere", options_with_size(8)),
                         doctest::Contains("nowhere not found"), std::runtime_error);
    fs::create_directories(dir.path() / "empty");
    CHECK_THROWS_WITH_AS(ImageFolderDataset(dir / "empty", options_with_size(8)),
                         doctest::Contains("is empty: expected one sub-folder per class"), std::runtime_error);
    make_tree(dir);
    fs::create_directories(dir.path() / "root/eel");
    write_bytes(dir / "root/eel/readme.md", {'x'});
    CHECK_THROWS_WITH_AS(ImageFolderDataset(dir / "root", options_with_size(8)),
                         doctest::Contains("root/eel has no images"), std::runtime_error);
    CHECK_THROWS_WITH_AS(ImageFolderDataset(dir / "root", options_with_size(0)),
                         doctest::Contains("transforms.size must be > 0"), std::invalid_argument);
    CHECK(bad_image_policy_from_name("fail") == BadImagePolicy::fail);
    CHECK_THROWS_WITH_AS(bad_image_policy_from_name("ignore"), doctest::Contains("expected skip or fail"),
                         std::invalid_argument);
}

TEST_CASE("image folder: corrupt and truncated images are skipped and counted, or fail") {
    TempDir dir;
    make_tree(dir);
    write_bytes(dir / "root/cat/garbage.png", {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
    std::vector<uint8_t> png = read_bytes(dir / "root/cat/a.png");
    png.resize(png.size() * 2 / 3);
    write_bytes(dir / "root/cat/truncated.png", png);
    write_bytes(dir / "root/cat/zero.jpg", {});

    ImageFolderOptions o = options_with_size(8);
    std::vector<std::string> warnings;
    o.warn = [&](const std::string& w) { warnings.push_back(w); };
    ImageFolderDataset ds(dir / "root", o);
    REQUIRE(ds.size() == 8);
    CHECK(ds.path(3) == dir / "root/cat/garbage.png");
    load(ds, 3, false);
    load(ds, 3, false);  // warned once only
    load(ds, 4, false);
    load(ds, 5, false);
    load(ds, 0, true);
    CHECK(ds.bad_image_count() == 3);
    REQUIRE(warnings.size() == 3);
    CHECK(warnings[0].find("garbage.png") != std::string::npos);
    CHECK(warnings[1].find("truncated.png: corrupt or truncated") != std::string::npos);
    CHECK(warnings[2].find("zero.jpg: empty file") != std::string::npos);

    o.on_bad_image = BadImagePolicy::fail;
    ImageFolderDataset strict(dir / "root", o);
    std::vector<float> out(3 * 8 * 8);
    std::mt19937 rng(0);
    CHECK_THROWS_WITH_AS(strict.load(4, out.data(), rng, false), doctest::Contains("truncated.png"), ImageError);
}

TEST_CASE("image decoding: an absurd declared size is refused before decoding") {
    Image out;
    DecodeLimits limits;
    std::vector<uint8_t> huge = png_header_only(100000, 100000);
    CHECK_THROWS_WITH_AS(decode_image(huge.data(), huge.size(), 3, limits, "huge.png", out),
                         doctest::Contains("huge.png: declared size absurd"), ImageError);
    // Within stb's own limits but over our pixel cap (1e8 > 2^26).
    std::vector<uint8_t> big = png_header_only(10000, 10000);
    CHECK_THROWS_WITH_AS(decode_image(big.data(), big.size(), 3, limits, "big.png", out),
                         doctest::Contains("declared size absurd (10000x10000"), ImageError);
    // Under the cap the same header reaches the decoder, which finds no data.
    std::vector<uint8_t> small = png_header_only(4, 4);
    CHECK_THROWS_WITH_AS(decode_image(small.data(), small.size(), 3, limits, "small.png", out),
                         doctest::Contains("corrupt or truncated"), ImageError);
    // The cap applies to a real image too, and so does the file-size cap.
    TempDir dir;
    write_image(dir / "ok.png", solid(30, 20, 3, {1, 2, 3}));
    std::vector<uint8_t> ok = read_bytes(dir / "ok.png");
    limits.max_pixels = 599;
    CHECK_THROWS_WITH_AS(decode_image(ok.data(), ok.size(), 3, limits, "ok.png", out),
                         doctest::Contains("30x20 is over the cap of 599 pixels"), ImageError);
    limits.max_pixels = 600;
    decode_image(ok.data(), ok.size(), 3, limits, "ok.png", out);
    CHECK(out.width == 30);
    CHECK(out.pixels[2] == 3);
    limits.max_file_bytes = 10;
    CHECK_THROWS_WITH_AS(decode_image(ok.data(), ok.size(), 3, limits, "ok.png", out),
                         doctest::Contains("over the limit of 10"), ImageError);
    CHECK_THROWS_WITH_AS(read_file_bytes(dir / "ok.png", 10, ok), doctest::Contains("over the limit of 10"), ImageError);

    // Through the dataset: skipped like any bad image.
    fs::create_directories(dir.path() / "root/a");
    write_bytes(dir / "root/a/huge.png", huge);
    std::vector<std::string> warnings;
    ImageFolderOptions o = options_with_size(8);
    o.warn = [&](const std::string& w) { warnings.push_back(w); };
    ImageFolderDataset ds(dir / "root", o);
    load(ds, 0, false);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("declared size absurd") != std::string::npos);
}

TEST_CASE("image decoding: inputs that hit stb 2.27 bugs (found by fuzzing) are refused") {
    TempDir dir;
    write_image(dir / "ok.jpg", solid(8, 8, 3, {9, 9, 9}));
    std::vector<uint8_t> jpeg = read_bytes(dir / "ok.jpg");
    // A DHT segment right after SOI whose 16 code counts add up to 510.
    std::vector<uint8_t> dht = {0xff, 0xc4, 0x00, 0x13, 0x00, 0xff, 0xff};
    dht.resize(4 + 0x13, 0);
    jpeg.insert(jpeg.begin() + 2, dht.begin(), dht.end());
    Image out;
    CHECK_THROWS_WITH_AS(decode_image(jpeg.data(), jpeg.size(), 3, {}, "dht.jpg", out),
                         doctest::Contains("dht.jpg: corrupt JPEG (a Huffman table declares 510 symbols"), ImageError);

    // A PNG whose IDAT declares 2 GB that are not there: refused without
    // stb allocating them.
    std::vector<uint8_t> png = png_header_only(4, 4);
    std::vector<uint8_t> idat = {0x7f, 0xff, 0xff, 0xf0, 'I', 'D', 'A', 'T', 0x78, 0x9c};
    png.insert(png.end() - 12, idat.begin(), idat.end());
    CHECK_THROWS_WITH_AS(decode_image(png.data(), png.size(), 3, {}, "idat.png", out),
                         doctest::Contains("idat.png: corrupt or truncated image (outofmem)"), ImageError);

    // A good PNG with an empty IDAT chunk put before its data (stb would
    // memcpy to NULL): refused by name.
    write_image(dir / "ok.png", solid(8, 8, 3, {9, 9, 9}));
    std::vector<uint8_t> empty_first = read_bytes(dir / "ok.png");
    std::vector<uint8_t> empty_idat;
    put_be32(empty_idat, 0);
    const uint8_t type[4] = {'I', 'D', 'A', 'T'};
    empty_idat.insert(empty_idat.end(), type, type + 4);
    put_be32(empty_idat, uint32_t(crc32(0, type, 4)));
    empty_first.insert(empty_first.begin() + 8 + 25, empty_idat.begin(), empty_idat.end());  // after IHDR
    CHECK_THROWS_WITH_AS(decode_image(empty_first.data(), empty_first.size(), 3, {}, "empty.png", out),
                         doctest::Contains("empty.png: unsupported PNG (its first IDAT chunk is empty)"), ImageError);
    std::vector<uint8_t> good = read_bytes(dir / "ok.png");
    CHECK_NOTHROW(decode_image(good.data(), good.size(), 3, {}, "ok.png", out));
}

TEST_CASE("image writing: unknown extension") {
    TempDir dir;
    CHECK_THROWS_WITH_AS(write_image(dir / "x.gif", solid(2, 2, 1, {0})), doctest::Contains("unknown image extension"),
                         ImageError);
    CHECK(has_image_extension("a.JPeG"));
    CHECK_FALSE(has_image_extension("a.gif"));
    CHECK_FALSE(has_image_extension("png"));
}
