// Bad model files: each is refused with a ModelError naming the file, the op
// and what is wrong, before anything runs; none crashes. The files start
// from a valid model (tiny_models.h) with one thing broken.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "infer/model.h"
#include "tiny_models.h"

using namespace qf::infer;
using namespace qf::infer::test;
using json = nlohmann::json;
using qf::safetensors::DType;

namespace {

// A model file taken apart: its graph JSON and its tensors, editable, and
// put back together by bytes().
struct RawModel {
    std::map<std::string, std::string> metadata;
    json graph;
    struct Tensor {
        DType dtype;
        std::vector<int64_t> shape;
        std::vector<uint8_t> bytes;
    };
    std::map<std::string, Tensor> tensors;

    explicit RawModel(const ModelSpec& m) {
        const qf::safetensors::File file = qf::safetensors::parse(model_to_bytes(m), "raw");
        metadata = file.metadata;
        graph = json::parse(metadata.at("graph"));
        for (auto& [name, t] : file.tensors)
            tensors[name] = {t.dtype, t.shape,
                             std::vector<uint8_t>(file.data.begin() + long(t.offset), file.data.begin() + long(t.offset + t.nbytes))};
    }
    json& op(size_t i) { return graph["ops"][i]; }
    std::vector<uint8_t> bytes() const {
        qf::safetensors::Writer writer;
        for (auto& [key, value] : metadata) writer.set_metadata(key, value);
        writer.set_metadata("graph", graph.dump());
        for (auto& [name, t] : tensors) writer.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
        return writer.bytes();
    }
};

RawModel residual() {
    std::mt19937_64 rng(7);
    return RawModel(residual_model(rng));
}

// The message loading `bytes` fails with ("" if it loads).
std::string load_error(std::vector<uint8_t> bytes) {
    try {
        Model::from_bytes(std::move(bytes), "bad.safetensors");
    } catch (const ModelError& e) {
        return e.what();
    }
    return "";
}

void check_error(const std::vector<uint8_t>& bytes, std::initializer_list<const char*> parts) {
    const std::string message = load_error(bytes);
    INFO("message: " << message);
    REQUIRE(!message.empty());
    CHECK(message.rfind("bad.safetensors: ", 0) == 0);  // names the file first
    for (const char* part : parts) CHECK(message.find(part) != std::string::npos);
}

void set_int32(RawModel::Tensor& t, size_t i, int32_t v) { std::memcpy(t.bytes.data() + 4 * i, &v, 4); }

void put_u64(std::vector<uint8_t>& bytes, uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = uint8_t(v >> (8 * i));
}

}  // namespace

TEST_CASE("the unmodified model loads") { CHECK(load_error(residual().bytes()) == ""); }

TEST_CASE("file-level damage: truncation, header length, offsets") {
    const std::vector<uint8_t> good = residual().bytes();
    SUBCASE("truncated file") {
        check_error(std::vector<uint8_t>(good.begin(), good.end() - 100), {"outside"});
        check_error(std::vector<uint8_t>(good.begin(), good.begin() + 5), {"too short"});
    }
    SUBCASE("header length past the end") {
        std::vector<uint8_t> bytes = good;
        put_u64(bytes, good.size());
        check_error(bytes, {"header length", "past the end"});
    }
    SUBCASE("overlapping and out-of-bounds offsets") {
        uint64_t header_len = 0;
        for (int i = 7; i >= 0; --i) header_len = header_len << 8 | good[size_t(i)];
        json header = json::parse(good.begin() + 8, good.begin() + 8 + long(header_len));
        auto rebuild = [&](const json& h) {
            std::string text = h.dump();
            while (text.size() % 8) text += ' ';
            std::vector<uint8_t> bytes(8 + text.size());
            put_u64(bytes, text.size());
            std::memcpy(bytes.data() + 8, text.data(), text.size());
            bytes.insert(bytes.end(), good.begin() + 8 + long(header_len), good.end());
            return bytes;
        };
        json overlap = header;
        overlap["ops.0.bias"]["data_offsets"] = overlap["ops.0.M0"]["data_offsets"];
        overlap["ops.0.bias"]["shape"] = overlap["ops.0.M0"]["shape"];
        check_error(rebuild(overlap), {"overlap"});
        json outside = header;
        outside["ops.5.weights"]["data_offsets"] = {1u << 30, (1u << 30) + 80};
        check_error(rebuild(outside), {"ops.5.weights", "outside"});
    }
    SUBCASE("a missing file names it") {
        try {
            Model::load("/nonexistent/model.safetensors");
            FAIL("loaded");
        } catch (const ModelError& e) {
            CHECK(std::string(e.what()).find("/nonexistent/model.safetensors") != std::string::npos);
        }
    }
}

TEST_CASE("format and version") {
    RawModel m = residual();
    SUBCASE("not a model") {
        m.metadata.erase("format");
        check_error(m.bytes(), {"no 'format'"});
    }
    SUBCASE("other format") {
        m.metadata["format"] = "qforge-fp32";
        check_error(m.bytes(), {"qforge-fp32"});
    }
    SUBCASE("unknown version") {
        m.metadata["format_version"] = "1";
        check_error(m.bytes(), {"version '1'", "freeze"});
    }
    SUBCASE("graph not JSON") {
        m.metadata["graph"] = "{";
        qf::safetensors::Writer writer;  // bytes() would overwrite the graph: write by hand
        for (auto& [key, value] : m.metadata) writer.set_metadata(key, value);
        for (auto& [name, t] : m.tensors) writer.add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
        check_error(writer.bytes(), {"not valid JSON"});
    }
}

TEST_CASE("ops: types, fields, tensors") {
    RawModel m = residual();
    SUBCASE("unknown op type") {
        m.op(4)["type"] = "softmax";
        check_error(m.bytes(), {"op 4 'pool' (softmax)", "unknown op type 'softmax'"});
    }
    SUBCASE("unknown field") {
        m.op(0)["dilation"] = 2;
        check_error(m.bytes(), {"op 0 'stem' (conv2d)", "unknown field 'dilation'"});
    }
    SUBCASE("missing field") {
        m.op(0).erase("groups");
        check_error(m.bytes(), {"op 0", "missing field 'groups'"});
    }
    SUBCASE("field of the wrong type") {
        m.op(0)["stride"] = {1.5, 1};
        check_error(m.bytes(), {"op 0", "not an integer"});
    }
    SUBCASE("wrong dtype") {
        auto& w = m.tensors["ops.2.weights"];
        w.dtype = DType::U8;
        check_error(m.bytes(), {"op 2 'block.project' (conv2d)", "dtype U8, expected I8"});
    }
    SUBCASE("wrong bias shape") {
        auto& b = m.tensors["ops.0.bias"];
        b.shape = {7};
        b.bytes.resize(28);
        check_error(m.bytes(), {"op 0", "'bias' has shape (7), expected (8)"});
    }
    SUBCASE("missing tensor") {
        m.tensors.erase("ops.5.M0");
        check_error(m.bytes(), {"op 5 'fc'", "ops.5.M0", "not in the file"});
    }
    SUBCASE("unused tensor") {
        m.tensors["stray"] = {DType::I8, {1}, {0}};
        check_error(m.bytes(), {"'stray' is not used"});
    }
    SUBCASE("weights that do not fit the input's channels") {
        auto& w = m.tensors["ops.2.weights"];  // 1x1 conv 8 -> 8: make it read 4 channels
        w.shape = {8, 1, 1, 4};
        w.bytes.resize(32);
        check_error(m.bytes(), {"op 2", "expect 4 channels"});
    }
    SUBCASE("groups that do not divide") {
        m.op(1)["groups"] = 3;
        check_error(m.bytes(), {"op 1 'block.depthwise'", "channels"});
    }
}

TEST_CASE("multipliers, zero points, ranges") {
    RawModel m = residual();
    SUBCASE("shift out of range") {
        set_int32(m.tensors["ops.0.shift"], 3, 31);
        check_error(m.bytes(), {"op 0 'stem'", "output channel 3", "shift 31", "not a valid multiplier"});
    }
    SUBCASE("M0 below 2^30") {
        set_int32(m.tensors["ops.5.M0"], 0, 12345);
        check_error(m.bytes(), {"op 5 'fc'", "M0 12345"});
    }
    SUBCASE("add multiplier") {
        m.op(3)["input1_multiplier"] = {1 << 30, 1};  // valid, but add needs it below 1
        check_error(m.bytes(), {"op 3 'block.add' (add)", "below 1"});
        m.op(3)["input1_multiplier"] = {-5, 0};
        check_error(m.bytes(), {"op 3", "M0 -5"});
    }
    SUBCASE("zero point out of int8") {
        m.op(0)["output_zero_point"] = 200;
        check_error(m.bytes(), {"op 0", "'output_zero_point' is 200, outside [-128, 127]"});
    }
    SUBCASE("weight zero point out of int8") {
        set_int32(m.tensors["ops.2.weight_zero_points"], 0, -129);
        check_error(m.bytes(), {"op 2", "weight zero point -129"});
    }
    SUBCASE("clamp range inverted") {
        m.op(1)["qmin"] = 50;
        m.op(1)["qmax"] = 10;
        check_error(m.bytes(), {"op 1", "qmin 50 > qmax 10"});
    }
    SUBCASE("accumulator overflow") {
        set_int32(m.tensors["ops.5.bias"], 2, 2147400000);
        check_error(m.bytes(), {"op 5", "overflow"});
    }
    SUBCASE("input quantization") {
        m.graph["input"]["scale"] = 0;
        check_error(m.bytes(), {"graph input", "'scale' must be positive"});
        m.graph["input"]["scale"] = 0.02;
        m.graph["input"]["std"] = {1, 1};
        check_error(m.bytes(), {"graph input", "'std'"});
        m.graph["input"]["std"] = {0.5};
        m.graph["input"]["zero_point"] = 127;
        m.graph["input"]["qmax"] = 100;
        check_error(m.bytes(), {"graph input", "inconsistent"});
    }
}

TEST_CASE("graph structure") {
    RawModel m = residual();
    SUBCASE("value used before it is defined") {
        m.op(1)["inputs"] = {4};
        check_error(m.bytes(), {"op 1", "input value 4 is not defined before this op"});
    }
    SUBCASE("value defined twice") {
        m.op(2)["output"] = 1;
        check_error(m.bytes(), {"op 2", "output value 1 is already defined"});
    }
    SUBCASE("wrong arity") {
        m.op(3)["inputs"] = {1};
        check_error(m.bytes(), {"op 3", "takes 2 input(s)"});
    }
    SUBCASE("add of different shapes") {
        m.op(3)["inputs"] = {1, 0};
        check_error(m.bytes(), {"op 3", "inputs differ in shape"});
    }
    SUBCASE("fully connected on an unflattened value") {
        m.op(5)["inputs"] = {4};
        check_error(m.bytes(), {"op 5", "fully_connected reads a 1x1xC value"});
    }
    SUBCASE("output value") {
        m.graph["output"]["value"] = 4;
        check_error(m.bytes(), {"graph output", "not 1x1xclasses"});
        m.graph["output"]["value"] = 99;
        check_error(m.bytes(), {"graph output", "value 99 is not defined"});
        m.graph["output"]["value"] = 6;
        m.graph["output"]["zero_point"] = 4;
        check_error(m.bytes(), {"graph output", "zero point 4 differs"});
    }
    SUBCASE("class names") {
        m.graph["class_names"] = {"a", "b"};
        check_error(m.bytes(), {"2 class names for 10 logits"});
    }
    SUBCASE("kernel larger than the image") {
        RawModel::Tensor& w = m.tensors["ops.2.weights"];
        w.shape = {8, 10, 1, 8};  // 10 rows on a 9-row image, no padding
        w.bytes.resize(8 * 10 * 8);
        check_error(m.bytes(), {"op 2", "kernel larger than the padded input"});
    }
}

TEST_CASE("no truncation and no flipped byte crashes the loader") {
    const std::vector<uint8_t> good = residual().bytes();
    for (size_t n = 0; n < good.size(); n += 7) load_error(std::vector<uint8_t>(good.begin(), good.begin() + long(n)));
    for (size_t i = 0; i < good.size(); i += 5) {
        std::vector<uint8_t> bytes = good;
        bytes[i] ^= uint8_t(1u << (i % 8));
        try {
            Model model = Model::from_bytes(bytes, "flipped");
            std::vector<float> image(size_t(model.input().channels) * model.input().height * model.input().width, 0.5f);
            model.run(image.data(), 1);  // whatever loads must run
        } catch (const ModelError&) {
        }
    }
}
