#include <doctest/doctest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>

#include "data/idx.h"
#include "tests/data/temp_dir.h"

using namespace qf::data;
using qf::data::testing::TempDir;

namespace {

// The bytes of an IDX file of unsigned bytes with these dimensions.
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& values) {
    std::vector<uint8_t> out = {0, 0, 0x08, uint8_t(dims.size())};
    for (uint32_t d : dims)
        for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(d >> shift));
    out.insert(out.end(), values.begin(), values.end());
    return out;
}

void write_plain(const std::string& path, const std::vector<uint8_t>& bytes) {
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
    std::fclose(f);
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f);
    REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
    gzclose(f);
}

std::vector<uint8_t> read_all(const std::string& path) {
    std::vector<uint8_t> bytes(std::filesystem::file_size(path));
    FILE* f = std::fopen(path.c_str(), "rb");
    REQUIRE(f);
    REQUIRE(std::fread(bytes.data(), 1, bytes.size(), f) == bytes.size());
    std::fclose(f);
    return bytes;
}

// 5 images of 3x4 with distinct pixels, labels 0..4 mod 3.
struct SmallIdx {
    std::vector<uint8_t> pixels, labels;
    SmallIdx() {
        for (int i = 0; i < 5 * 3 * 4; ++i) pixels.push_back(uint8_t(i * 4));
        for (int i = 0; i < 5; ++i) labels.push_back(uint8_t(i % 3));
    }
    std::vector<uint8_t> images_file() const { return idx_bytes({5, 3, 4}, pixels); }
    std::vector<uint8_t> labels_file() const { return idx_bytes({5}, labels); }
};

void check_round_trip(const IdxDataset& ds, const SmallIdx& src) {
    CHECK(ds.size() == 5);
    CHECK(ds.channels() == 1);
    CHECK(ds.height() == 3);
    CHECK(ds.width() == 4);
    CHECK(ds.num_classes() == 3);
    CHECK(ds.class_names()[2] == "2");
    std::mt19937 rng(0);
    std::vector<float> out(12);
    for (int i = 0; i < 5; ++i) {
        CHECK(ds.label(i) == src.labels[size_t(i)]);
        REQUIRE(ds.load(i, out.data(), rng, false));
        for (int p = 0; p < 12; ++p) CHECK(out[size_t(p)] == doctest::Approx(src.pixels[size_t(i * 12 + p)] / 255.0f));
    }
}

}  // namespace

TEST_CASE("idx: round trip, plain and gzip") {
    TempDir dir;
    SmallIdx src;
    write_plain(dir / "img", src.images_file());
    write_plain(dir / "lab", src.labels_file());
    write_gz(dir / "img.gz", src.images_file());
    write_gz(dir / "lab.gz", src.labels_file());

    IdxArray raw = read_idx(dir / "img.gz");
    CHECK(raw.dims == std::vector<int64_t>{5, 3, 4});
    CHECK(raw.values == src.pixels);

    check_round_trip(IdxDataset(dir / "img", dir / "lab"), src);
    check_round_trip(IdxDataset(dir / "img.gz", dir / "lab.gz"), src);
    check_round_trip(IdxDataset(dir / "img.gz", dir / "lab"), src);
}

TEST_CASE("idx: limit, class names and normalization") {
    TempDir dir;
    SmallIdx src;
    write_gz(dir / "img.gz", src.images_file());
    write_gz(dir / "lab.gz", src.labels_file());
    IdxOptions options;
    options.limit = 2;
    options.class_names = {"a", "b", "c", "d"};
    options.transforms.mean = {0.5f};
    options.transforms.std = {0.25f};
    IdxDataset ds(dir / "img.gz", dir / "lab.gz", options);
    CHECK(ds.size() == 2);
    CHECK(ds.num_classes() == 4);
    std::mt19937 rng(0);
    std::vector<float> out(12);
    ds.load(1, out.data(), rng, false);
    CHECK(out[0] == doctest::Approx((src.pixels[12] / 255.0f - 0.5f) / 0.25f));

    options.class_names = {"a", "b"};  // label 2 has no name
    options.limit = 0;
    CHECK_THROWS_WITH_AS(IdxDataset(dir / "img.gz", dir / "lab.gz", options),
                         doctest::Contains("label 2 but only 2 class names"), std::runtime_error);
}

TEST_CASE("idx: bad files are refused with the file named") {
    TempDir dir;
    SmallIdx src;
    write_gz(dir / "img.gz", src.images_file());
    write_gz(dir / "lab.gz", src.labels_file());

    SUBCASE("missing file") {
        CHECK_THROWS_WITH_AS(read_idx(dir / "nope.gz"), doctest::Contains("nope.gz: cannot open"), std::runtime_error);
    }
    SUBCASE("truncated data, plain and gzip") {
        std::vector<uint8_t> bytes = src.images_file();
        bytes.resize(bytes.size() - 7);
        write_plain(dir / "short", bytes);
        write_gz(dir / "short.gz", bytes);
        CHECK_THROWS_WITH_AS(read_idx(dir / "short"), doctest::Contains("short: truncated IDX data"), std::runtime_error);
        CHECK_THROWS_WITH_AS(read_idx(dir / "short.gz"), doctest::Contains("truncated IDX data"), std::runtime_error);
    }
    SUBCASE("truncated gzip stream") {
        std::vector<uint8_t> gz = read_all(dir / "img.gz");
        gz.resize(gz.size() / 2);
        write_plain(dir / "cut.gz", gz);
        CHECK_THROWS_WITH_AS(read_idx(dir / "cut.gz"), doctest::Contains("cut.gz"), std::runtime_error);
    }
    SUBCASE("truncated header") {
        write_plain(dir / "hdr", {0, 0, 8, 3, 0, 0});
        CHECK_THROWS_WITH_AS(read_idx(dir / "hdr"), doctest::Contains("truncated IDX header"), std::runtime_error);
    }
    SUBCASE("bad magic and type") {
        std::vector<uint8_t> bytes = src.images_file();
        bytes[0] = 0x1f;
        write_plain(dir / "magic", bytes);
        CHECK_THROWS_WITH_AS(read_idx(dir / "magic"), doctest::Contains("not an IDX file"), std::runtime_error);
        bytes = src.images_file();
        bytes[2] = 0x0d;  // float
        write_plain(dir / "float", bytes);
        CHECK_THROWS_WITH_AS(read_idx(dir / "float"), doctest::Contains("not supported"), std::runtime_error);
    }
    SUBCASE("trailing bytes") {
        std::vector<uint8_t> bytes = src.labels_file();
        bytes.push_back(1);
        write_plain(dir / "long", bytes);
        CHECK_THROWS_WITH_AS(read_idx(dir / "long"), doctest::Contains("trailing bytes"), std::runtime_error);
    }
    SUBCASE("a zero dimension, an absurd header") {
        write_plain(dir / "zero", idx_bytes({0, 3, 4}, {}));
        CHECK_THROWS_WITH_AS(read_idx(dir / "zero"), doctest::Contains("dimension 0 is 0"), std::runtime_error);
        write_plain(dir / "huge", idx_bytes({0xffffffffu, 0xffffffffu, 2}, {1, 2, 3}));
        CHECK_THROWS_WITH_AS(read_idx(dir / "huge"), doctest::Contains("more than 2^32"), std::runtime_error);
    }
    SUBCASE("image and label counts differ") {
        write_gz(dir / "lab4.gz", idx_bytes({4}, {0, 1, 2, 0}));
        CHECK_THROWS_WITH_AS(IdxDataset(dir / "img.gz", dir / "lab4.gz"),
                             doctest::Contains("holds 5 images but"), std::runtime_error);
    }
    SUBCASE("files swapped") {
        CHECK_THROWS_WITH_AS(IdxDataset(dir / "lab.gz", dir / "img.gz"),
                             doctest::Contains("expected an images file"), std::runtime_error);
    }
}

TEST_CASE("idx: the installed Fashion-MNIST test set") {
    const std::string root = "/usr/share/datasets/fashion-mnist/";
    if (!std::filesystem::exists(root + "t10k-images-idx3-ubyte.gz")) {
        MESSAGE("Fashion-MNIST not installed; skipped");
        return;
    }
    IdxOptions options;
    options.class_names = fashion_mnist_class_names();
    IdxDataset ds(root + "t10k-images-idx3-ubyte.gz", root + "t10k-labels-idx1-ubyte.gz", options);
    CHECK(ds.size() == 10000);
    CHECK(ds.height() == 28);
    CHECK(ds.width() == 28);
    CHECK(ds.num_classes() == 10);
    CHECK(ds.label(0) == 9);  // the first test image is an ankle boot
}
