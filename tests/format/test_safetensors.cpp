#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

#include "format/safetensors.h"

using namespace qf::safetensors;

TEST_CASE("safetensors round trip keeps dtypes, shapes, values and metadata") {
    Writer w;
    w.add_f32("a.weight", {2, 3}, {1, 2, 3, 4, 5, 6});
    int8_t q[5] = {-128, -1, 0, 1, 127};
    w.add("q", DType::I8, {5}, q, 5);
    int32_t b[2] = {-7, 1 << 30};
    w.add("b", DType::I32, {2}, b, 8);
    w.set_metadata("format", "qforge");
    File f = parse(w.bytes(), "mem");
    CHECK(f.meta("format") == "qforge");
    CHECK(f.floats("a.weight") == std::vector<float>{1, 2, 3, 4, 5, 6});
    CHECK(f.ptr<int8_t>(f.get("q", DType::I8, {5}))[0] == -128);
    CHECK(f.ptr<int32_t>(f.get("b", DType::I32))[1] == (1 << 30));
    CHECK_THROWS_WITH_AS(f.get("q", DType::F32), doctest::Contains("dtype I8"), FormatError);
    CHECK_THROWS_WITH_AS(f.get("a.weight", DType::F32, {3, 2}), doctest::Contains("shape (2, 3)"), FormatError);
}

TEST_CASE("safetensors reader refuses damaged files with a message") {
    Writer w;
    w.add_f32("x", {4}, {1, 2, 3, 4});
    std::vector<uint8_t> good = w.bytes();

    SUBCASE("truncated") {
        std::vector<uint8_t> b(good.begin(), good.end() - 3);
        CHECK_THROWS_WITH_AS(parse(b, "t"), doctest::Contains("outside"), FormatError);
    }
    SUBCASE("shorter than the length field") {
        CHECK_THROWS_AS(parse({1, 2, 3}, "t"), FormatError);
    }
    SUBCASE("header length past the end") {
        std::vector<uint8_t> b = good;
        b[0] = 0xff;
        b[3] = 0x7f;
        CHECK_THROWS_WITH_AS(parse(b, "t"), doctest::Contains("past the end"), FormatError);
    }
    SUBCASE("header not JSON") {
        std::vector<uint8_t> b = good;
        b[8] = '!';
        CHECK_THROWS_WITH_AS(parse(b, "t"), doctest::Contains("JSON"), FormatError);
    }
}

TEST_CASE("safetensors reader refuses overlapping ranges and bad sizes") {
    auto make = [](const std::string& header, size_t data) {
        std::vector<uint8_t> b(8 + header.size() + data, 0);
        uint64_t n = header.size();
        std::memcpy(b.data(), &n, 8);
        std::memcpy(b.data() + 8, header.data(), header.size());
        return b;
    };
    CHECK_THROWS_WITH_AS(
        parse(make(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "t"),
        doctest::Contains("overlap"), FormatError);
    CHECK_THROWS_WITH_AS(
        parse(make(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "t"),
        doctest::Contains("8 bytes for 3 elements"), FormatError);
    CHECK_THROWS_WITH_AS(
        parse(make(R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4), "t"),
        doctest::Contains("unsupported dtype"), FormatError);
    CHECK_THROWS_WITH_AS(
        parse(make(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "t"),
        doctest::Contains("bad dimension"), FormatError);
}

TEST_CASE("atomic write leaves no temp file and replaces the target") {
    const std::string path = "/tmp/qf_test_atomic.safetensors";
    Writer w;
    w.add_f32("x", {1}, {42});
    w.write(path);
    File f = read(path);
    CHECK(f.floats("x")[0] == 42);
    FILE* tmp = std::fopen((path + ".tmp").c_str(), "rb");
    CHECK(tmp == nullptr);
    if (tmp) std::fclose(tmp);
    std::remove(path.c_str());
    CHECK_THROWS_WITH_AS(read("/nonexistent/x.safetensors"), doctest::Contains("/nonexistent/x.safetensors"), FormatError);
}
