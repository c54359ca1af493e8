#include "infer/model_format.h"

#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>

#include "infer/overloaded.h"

namespace qf::infer {

using json = nlohmann::json;
using safetensors::DType;

namespace {

// Bounds that keep every size the loader computes far from int overflow; a
// real model is orders of magnitude below each.
constexpr int64_t kMaxSide = 1 << 16;           // kernel, stride, padding, image side
constexpr int64_t kMaxInputElements = 1 << 24;  // channels * height * width of the input
constexpr int64_t kMaxValueId = 1 << 30;
constexpr int64_t kMaxTensorElements = int64_t(1) << 30;

// The names of the ops, index = OpAttributes::index().
constexpr const char* kOpTypeNames[] = {"conv2d",  "fully_connected", "add",             "concat",
                                        "max_pool", "avg_pool",       "global_avg_pool", "flatten"};
static_assert(std::size(kOpTypeNames) == std::variant_size_v<OpAttributes>);

// ---------------------------------------------------------------- writing

json multiplier_json(QuantizedMultiplier m) { return json::array({m.M0, m.shift}); }

json window_json(const Window& w) {
    return {{"stride", {w.stride_h, w.stride_w}}, {"padding", {w.pad_top, w.pad_left, w.pad_bottom, w.pad_right}}};
}

void put_output_range(json& op, const OutputRange& out) {
    op["output_zero_point"] = out.zero_point;
    op["qmin"] = out.min;
    op["qmax"] = out.max;
}

// The tensors of a conv or FC op, added to `writer` as "ops.<index>.<role>".
void put_layer_tensors(json& op, safetensors::Writer& writer, size_t index, std::vector<int64_t> weight_shape,
                       const std::vector<int8_t>& weights, std::vector<int32_t> bias,
                       const std::vector<int32_t>& weight_zero_points,
                       const std::vector<QuantizedMultiplier>& multipliers) {
    const std::string prefix = "ops." + std::to_string(index) + ".";
    const int64_t out = weight_shape[0];
    if (bias.empty()) bias.assign(size_t(out), 0);
    std::vector<int32_t> M0, shift;
    for (QuantizedMultiplier m : multipliers) {
        M0.push_back(m.M0);
        shift.push_back(m.shift);
    }
    writer.add(prefix + "weights", DType::I8, weight_shape, weights.data(), weights.size());
    writer.add(prefix + "bias", DType::I32, {int64_t(bias.size())}, bias.data(), bias.size() * 4);
    writer.add(prefix + "weight_zero_points", DType::I32, {int64_t(weight_zero_points.size())},
               weight_zero_points.data(), weight_zero_points.size() * 4);
    writer.add(prefix + "M0", DType::I32, {int64_t(M0.size())}, M0.data(), M0.size() * 4);
    writer.add(prefix + "shift", DType::I32, {int64_t(shift.size())}, shift.data(), shift.size() * 4);
    op["tensors"] = {{"weights", prefix + "weights"},
                     {"bias", prefix + "bias"},
                     {"weight_zero_points", prefix + "weight_zero_points"},
                     {"M0", prefix + "M0"},
                     {"shift", prefix + "shift"}};
}

json op_json(const OpSpec& spec, size_t index, safetensors::Writer& writer) {
    json op = {{"type", op_type_name(spec.op)}, {"name", spec.name}, {"inputs", spec.inputs}, {"output", spec.output}};
    std::visit(Overloaded{
                   [&](const Conv2dSpec& c) {
                       op.update(window_json(c.window));
                       op["groups"] = c.groups;
                       put_output_range(op, c.output);
                       put_layer_tensors(op, writer, index, {c.out_c, c.kernel_h, c.kernel_w, c.in_c_per_group},
                                         c.weights, c.bias, c.weight_zero_points, c.multipliers);
                   },
                   [&](const FullyConnectedSpec& f) {
                       put_output_range(op, f.output);
                       put_layer_tensors(op, writer, index, {f.out_features, f.in_features}, f.weights, f.bias,
                                         f.weight_zero_points, f.multipliers);
                   },
                   [&](const AddSpec& a) {
                       op["input1_multiplier"] = multiplier_json(a.input1_multiplier);
                       op["input2_multiplier"] = multiplier_json(a.input2_multiplier);
                       op["output_multiplier"] = multiplier_json(a.output_multiplier);
                       put_output_range(op, a.output);
                   },
                   [&](const ConcatSpec& c) {
                       op["multipliers"] = json::array();
                       for (QuantizedMultiplier m : c.multipliers) op["multipliers"].push_back(multiplier_json(m));
                       op["output_zero_point"] = c.output_zero_point;
                   },
                   [&](const MaxPoolSpec& p) {
                       op["kernel"] = {p.kernel_h, p.kernel_w};
                       op.update(window_json(p.window));
                       op["qmin"] = p.qmin;
                       op["qmax"] = p.qmax;
                   },
                   [&](const AvgPoolSpec& p) {
                       op["kernel"] = {p.kernel_h, p.kernel_w};
                       op.update(window_json(p.window));
                       op["multiplier"] = multiplier_json(p.multiplier);
                       put_output_range(op, p.output);
                   },
                   [&](const GlobalAvgPoolSpec& p) {
                       op["multiplier"] = multiplier_json(p.multiplier);
                       put_output_range(op, p.output);
                   },
                   [&](const FlattenSpec&) {},
               },
               spec.op);
    return op;
}

// ---------------------------------------------------------------- reading

// Reads the fields of one JSON object, each checked for type and range;
// finish() then refuses any field nobody asked for (a misspelt attribute
// must not be silently ignored). Errors name the file and `where`.
class Fields {
public:
    Fields(const json& object, std::string path, std::string where)
        : object_(object), path_(std::move(path)), where_(std::move(where)) {
        if (!object_.is_object()) fail("is not a JSON object");
    }

    [[noreturn]] void fail(const std::string& what) const { throw ModelError(path_ + ": " + where_ + ": " + what); }

    bool has(const std::string& key) const { return object_.contains(key); }

    const json& field(const std::string& key) {
        auto it = object_.find(key);
        if (it == object_.end()) fail("missing field '" + key + "'");
        read_.insert(key);
        return *it;
    }

    int64_t integer(const json& j, const std::string& what, int64_t lo, int64_t hi) const {
        if (!j.is_number_integer()) fail(what + " is " + j.dump() + ", not an integer");
        // JSON reads non-negative integers as unsigned: compare those as unsigned.
        const bool in_range = j.is_number_unsigned()
                                  ? j.get<uint64_t>() <= uint64_t(hi) && int64_t(j.get<uint64_t>()) >= lo
                                  : j.get<int64_t>() >= lo && j.get<int64_t>() <= hi;
        if (!in_range)
            fail(what + " is " + j.dump() + ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        return j.get<int64_t>();
    }
    int64_t integer(const std::string& key, int64_t lo, int64_t hi) { return integer(field(key), "'" + key + "'", lo, hi); }
    int32_t int8_value(const std::string& key) { return int32_t(integer(key, -128, 127)); }

    std::vector<int64_t> integers(const std::string& key, size_t count, int64_t lo, int64_t hi) {
        const json& j = field(key);
        if (!j.is_array() || j.size() != count)
            fail("'" + key + "' is " + j.dump() + ", not an array of " + std::to_string(count) + " integers");
        std::vector<int64_t> v;
        for (const json& e : j) v.push_back(integer(e, "an element of '" + key + "'", lo, hi));
        return v;
    }

    double number(const json& j, const std::string& what) const {
        if (!j.is_number() || !std::isfinite(j.get<double>())) fail(what + " is " + j.dump() + ", not a finite number");
        return j.get<double>();
    }
    double positive_number(const std::string& key) {
        const double v = number(field(key), "'" + key + "'");
        if (!(v > 0)) fail("'" + key + "' must be positive, got " + std::to_string(v));
        return v;
    }

    std::string string(const std::string& key) {
        const json& j = field(key);
        if (!j.is_string()) fail("'" + key + "' is " + j.dump() + ", not a string");
        return j.get<std::string>();
    }

    // [M0, shift], checked with is_valid_quantized_multiplier.
    QuantizedMultiplier multiplier(const json& j, const std::string& what) const {
        if (!j.is_array() || j.size() != 2) fail(what + " is " + j.dump() + ", not [M0, shift]");
        const QuantizedMultiplier m{int32_t(integer(j[0], what + " M0", INT32_MIN, INT32_MAX)),
                                    int(integer(j[1], what + " shift", INT32_MIN, INT32_MAX))};
        check_multiplier(m, what);
        return m;
    }
    QuantizedMultiplier multiplier(const std::string& key) { return multiplier(field(key), "'" + key + "'"); }

    void check_multiplier(QuantizedMultiplier m, const std::string& what) const {
        if (!is_valid_quantized_multiplier(m.M0, m.shift))
            fail(what + " (M0 " + std::to_string(m.M0) + ", shift " + std::to_string(m.shift) +
                 ") is not a valid multiplier: M0 must be in [2^30, 2^31) with shift in [" +
                 std::to_string(kMinShift) + ", " + std::to_string(kMaxShift) + "], or both 0");
    }

    OutputRange output_range() {
        OutputRange out{int8_value("output_zero_point"), int8_value("qmin"), int8_value("qmax")};
        if (out.min > out.max) fail("qmin " + std::to_string(out.min) + " > qmax " + std::to_string(out.max));
        return out;
    }

    Window window() {
        Window w;
        const auto stride = integers("stride", 2, 1, kMaxSide);
        const auto padding = integers("padding", 4, 0, kMaxSide);
        w.stride_h = int(stride[0]), w.stride_w = int(stride[1]);
        w.pad_top = int(padding[0]), w.pad_left = int(padding[1]);
        w.pad_bottom = int(padding[2]), w.pad_right = int(padding[3]);
        return w;
    }

    void finish() const {
        for (auto& [key, value] : object_.items())
            if (!read_.count(key)) fail("unknown field '" + key + "'");
    }

private:
    const json& object_;
    std::string path_, where_;
    std::set<std::string> read_;
};

// Reads the tensors an op names, checking dtype and shape, and records which
// tensors of the file were used.
class TensorReader {
public:
    explicit TensorReader(const safetensors::File& file) : file_(file) {}

    template <class T>
    std::vector<T> read(Fields& op, const json& names, const std::string& role, const std::vector<int64_t>& shape) {
        const DType dtype = std::is_same_v<T, int8_t> ? DType::I8 : DType::I32;
        const safetensors::TensorInfo& t = lookup(op, names, role);
        if (t.dtype != dtype)
            op.fail("tensor '" + role + "' has dtype " + safetensors::dtype_name(t.dtype) + ", expected " +
                    safetensors::dtype_name(dtype));
        if (t.shape != shape) op.fail("tensor '" + role + "' has shape " + shape_string(t.shape) + ", expected " + shape_string(shape));
        std::vector<T> v(t.nbytes / sizeof(T));
        if (t.nbytes) std::memcpy(v.data(), file_.data.data() + t.offset, t.nbytes);
        return v;
    }

    // The shape of a tensor, each dimension checked to lie in [1, kMaxTensorElements].
    std::vector<int64_t> shape_of(Fields& op, const json& names, const std::string& role, size_t rank) {
        const safetensors::TensorInfo& t = lookup(op, names, role);
        if (t.shape.size() != rank)
            op.fail("tensor '" + role + "' has shape " + shape_string(t.shape) + ", expected " + std::to_string(rank) +
                    " dimensions");
        int64_t elements = 1;
        for (int64_t d : t.shape) {
            if (d < 1) op.fail("tensor '" + role + "' has an empty dimension: " + shape_string(t.shape));
            elements *= d;  // cannot overflow: safetensors caps elements at 2^40
        }
        if (elements > kMaxTensorElements) op.fail("tensor '" + role + "' is too large");
        return t.shape;
    }

    void check_all_used() const {
        for (auto& [name, info] : file_.tensors)
            if (!used_.count(name)) throw ModelError(file_.path + ": tensor '" + name + "' is not used by any op");
    }

private:
    const safetensors::TensorInfo& lookup(Fields& op, const json& names, const std::string& role) {
        if (!names.contains(role) || !names[role].is_string()) op.fail("'tensors' does not name its '" + role + "' tensor");
        const std::string name = names[role].get<std::string>();
        auto it = file_.tensors.find(name);
        if (it == file_.tensors.end()) op.fail("tensor '" + name + "' (" + role + ") is not in the file");
        used_.insert(name);
        return it->second;
    }
    static std::string shape_string(const std::vector<int64_t>& shape) {
        std::string s = "(";
        for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
        return s + ")";
    }

    const safetensors::File& file_;
    std::set<std::string> used_;
};

// The per-channel tensors shared by conv and FC: bias [out], and weight zero
// points, M0 and shift with 1 or `out` elements each.
template <class Spec>
void read_layer_tensors(Fields& op, TensorReader& tensors, const json& names, int64_t out, Spec& spec) {
    spec.bias = tensors.read<int32_t>(op, names, "bias", {out});
    auto per_channel_count = [&](const std::string& role) {
        const int64_t n = tensors.shape_of(op, names, role, 1)[0];
        if (n != 1 && n != out)
            op.fail("tensor '" + role + "' has " + std::to_string(n) + " elements for " + std::to_string(out) +
                    " output channels (need 1 or one per channel)");
        return n;
    };
    const int64_t zero_points = per_channel_count("weight_zero_points");
    spec.weight_zero_points = tensors.read<int32_t>(op, names, "weight_zero_points", {zero_points});
    for (int32_t z : spec.weight_zero_points)
        if (z < -128 || z > 127) op.fail("weight zero point " + std::to_string(z) + " outside [-128, 127]");
    const int64_t channels = per_channel_count("M0");
    const auto M0 = tensors.read<int32_t>(op, names, "M0", {channels});
    const auto shift = tensors.read<int32_t>(op, names, "shift", {channels});
    spec.multipliers.clear();
    for (size_t c = 0; c < M0.size(); ++c) {
        spec.multipliers.push_back({M0[c], shift[c]});
        op.check_multiplier(spec.multipliers.back(), "multiplier of output channel " + std::to_string(c));
    }
    for (auto& [role, name] : names.items())
        if (role != "weights" && role != "bias" && role != "weight_zero_points" && role != "M0" && role != "shift")
            op.fail("'tensors' names an unknown role '" + role + "'");
}

OpAttributes read_op_attributes(const std::string& type, Fields& op, TensorReader& tensors) {
    if (type == "conv2d" || type == "fully_connected") {
        const json& names = op.field("tensors");
        if (!names.is_object()) op.fail("'tensors' is not an object");
        if (type == "fully_connected") {
            FullyConnectedSpec f;
            const auto shape = tensors.shape_of(op, names, "weights", 2);
            f.out_features = int(shape[0]), f.in_features = int(shape[1]);
            f.weights = tensors.read<int8_t>(op, names, "weights", shape);
            read_layer_tensors(op, tensors, names, shape[0], f);
            f.output = op.output_range();
            return f;
        }
        Conv2dSpec c;
        const auto shape = tensors.shape_of(op, names, "weights", 4);
        if (shape[1] > kMaxSide || shape[2] > kMaxSide) op.fail("kernel too large");
        c.out_c = int(shape[0]), c.kernel_h = int(shape[1]), c.kernel_w = int(shape[2]), c.in_c_per_group = int(shape[3]);
        c.weights = tensors.read<int8_t>(op, names, "weights", shape);
        read_layer_tensors(op, tensors, names, shape[0], c);
        c.window = op.window();
        c.groups = int(op.integer("groups", 1, kMaxSide));
        c.output = op.output_range();
        return c;
    }
    if (type == "add") {
        AddSpec a;
        a.input1_multiplier = op.multiplier("input1_multiplier");
        a.input2_multiplier = op.multiplier("input2_multiplier");
        a.output_multiplier = op.multiplier("output_multiplier");
        a.output = op.output_range();
        return a;
    }
    if (type == "concat") {
        ConcatSpec c;
        const json& multipliers = op.field("multipliers");
        if (!multipliers.is_array()) op.fail("'multipliers' is not an array");
        for (size_t i = 0; i < multipliers.size(); ++i)
            c.multipliers.push_back(op.multiplier(multipliers[i], "multiplier of input " + std::to_string(i)));
        c.output_zero_point = op.int8_value("output_zero_point");
        return c;
    }
    if (type == "max_pool" || type == "avg_pool") {
        const auto kernel = op.integers("kernel", 2, 1, kMaxSide);
        const Window window = op.window();
        if (type == "max_pool") {
            MaxPoolSpec p{int(kernel[0]), int(kernel[1]), window, op.int8_value("qmin"), op.int8_value("qmax")};
            if (p.qmin > p.qmax) op.fail("qmin " + std::to_string(p.qmin) + " > qmax " + std::to_string(p.qmax));
            return p;
        }
        return AvgPoolSpec{int(kernel[0]), int(kernel[1]), window, op.multiplier("multiplier"), op.output_range()};
    }
    if (type == "global_avg_pool") return GlobalAvgPoolSpec{op.multiplier("multiplier"), op.output_range()};
    if (type == "flatten") return FlattenSpec{};
    op.fail("unknown op type '" + type + "'");
}

InputSpec read_input(Fields& in) {
    InputSpec input;
    const auto shape = in.integers("shape", 3, 1, kMaxSide);
    input.channels = int(shape[0]), input.height = int(shape[1]), input.width = int(shape[2]);
    input.scale = in.number(in.field("scale"), "'scale'");
    input.zero_point = in.int8_value("zero_point");
    input.qmin = in.int8_value("qmin");
    input.qmax = in.int8_value("qmax");
    auto floats = [&](const std::string& key) {
        const json& j = in.field(key);
        if (!j.is_array()) in.fail("'" + key + "' is not an array");
        std::vector<float> v;
        for (const json& e : j) {
            const double x = in.number(e, "an element of '" + key + "'");
            if (std::abs(x) > 1e30) in.fail("'" + key + "' holds " + e.dump());
            v.push_back(float(x));
        }
        return v;
    };
    input.mean = floats("mean");
    input.std = floats("std");
    if (const std::string error = input_spec_error(input); !error.empty()) in.fail(error);
    in.finish();
    return input;
}

}  // namespace

const char* op_type_name(const OpAttributes& op) { return kOpTypeNames[op.index()]; }

std::string input_spec_error(const InputSpec& in) {
    if (in.channels < 1 || in.height < 1 || in.width < 1 || in.channels > kMaxSide || in.height > kMaxSide ||
        in.width > kMaxSide || int64_t(in.channels) * in.height * in.width > kMaxInputElements)
        return "shape " + std::to_string(in.channels) + "x" + std::to_string(in.height) + "x" +
               std::to_string(in.width) + " is empty or too large";
    if (!(in.scale > 0) || !std::isfinite(in.scale)) return "'scale' must be positive, got " + std::to_string(in.scale);
    if (in.qmin < -128 || in.qmax > 127 || in.qmin > in.qmax || in.zero_point < in.qmin || in.zero_point > in.qmax)
        return "zero point " + std::to_string(in.zero_point) + " and range [" + std::to_string(in.qmin) + ", " +
               std::to_string(in.qmax) + "] are inconsistent (need -128 <= qmin <= zero point <= qmax <= 127)";
    for (const auto* v : {&in.mean, &in.std})
        if (v->size() != 1 && v->size() != size_t(in.channels))
            return std::string(v == &in.mean ? "'mean'" : "'std'") + " has " + std::to_string(v->size()) +
                   " values for " + std::to_string(in.channels) + " channels (need 1 or one per channel)";
    for (float x : in.mean)
        if (!std::isfinite(x)) return "'mean' holds a non-finite value";
    for (float x : in.std)
        if (!(x > 0) || !std::isfinite(x)) return "'std' holds " + std::to_string(x) + ", not a positive number";
    return "";
}

int ModelSpec::add_op(std::string name, std::vector<int> inputs, OpAttributes op) {
    int output = kModelInputValue;
    for (const OpSpec& o : ops) output = std::max(output, o.output);
    ops.push_back({std::move(name), std::move(inputs), output + 1, std::move(op)});
    return output + 1;
}

std::vector<uint8_t> model_to_bytes(const ModelSpec& model) {
    safetensors::Writer writer;
    const InputSpec& in = model.input;
    json graph;
    graph["input"] = {{"shape", {in.channels, in.height, in.width}},
                      {"scale", in.scale},
                      {"zero_point", in.zero_point},
                      {"qmin", in.qmin},
                      {"qmax", in.qmax},
                      {"mean", in.mean},
                      {"std", in.std}};
    graph["ops"] = json::array();
    for (size_t i = 0; i < model.ops.size(); ++i) graph["ops"].push_back(op_json(model.ops[i], i, writer));
    graph["output"] = {{"value", model.output.value}, {"scale", model.output.scale}, {"zero_point", model.output.zero_point}};
    graph["class_names"] = model.class_names;
    writer.set_metadata("format", kModelFormat);
    writer.set_metadata("format_version", kModelFormatVersion);
    writer.set_metadata("graph", graph.dump());
    return writer.bytes();
}

void write_model(const ModelSpec& model, const std::string& path) {
    safetensors::write_file_atomic(path, model_to_bytes(model));
}

ModelSpec parse_model(const safetensors::File& file) {
    const std::string& path = file.path;
    auto meta = [&](const std::string& key) -> const std::string& {
        auto it = file.metadata.find(key);
        if (it == file.metadata.end()) throw ModelError(path + ": metadata has no '" + key + "': not a qforge int8 model");
        return it->second;
    };
    if (meta("format") != kModelFormat)
        throw ModelError(path + ": format is '" + meta("format") + "', expected '" + kModelFormat + "'");
    if (meta("format_version") != kModelFormatVersion)
        throw ModelError(path + ": format version '" + meta("format_version") + "' is not supported (this build reads version " +
                         kModelFormatVersion + "; freeze the checkpoint again with this build)");
    json graph;
    try {
        graph = json::parse(meta("graph"));
    } catch (const json::exception& e) {
        throw ModelError(path + ": metadata 'graph' is not valid JSON: " + e.what());
    }

    ModelSpec model;
    Fields top(graph, path, "graph");
    Fields input(top.field("input"), path, "graph input");
    model.input = read_input(input);

    TensorReader tensors(file);
    const json& ops = top.field("ops");
    if (!ops.is_array() || ops.empty()) top.fail("'ops' is not a non-empty array");
    for (size_t i = 0; i < ops.size(); ++i) {
        std::string where = "op " + std::to_string(i);
        if (ops[i].is_object() && ops[i].contains("name") && ops[i]["name"].is_string())
            where += " '" + ops[i]["name"].get<std::string>() + "'";
        if (ops[i].is_object() && ops[i].contains("type") && ops[i]["type"].is_string())
            where += " (" + ops[i]["type"].get<std::string>() + ")";
        Fields op(ops[i], path, where);
        OpSpec spec;
        spec.name = op.string("name");
        const std::string type = op.string("type");
        const json& inputs = op.field("inputs");
        if (!inputs.is_array()) op.fail("'inputs' is not an array");
        for (const json& v : inputs) spec.inputs.push_back(int(op.integer(v, "an input value id", 0, kMaxValueId)));
        spec.output = int(op.integer("output", 0, kMaxValueId));
        spec.op = read_op_attributes(type, op, tensors);
        op.finish();
        model.ops.push_back(std::move(spec));
    }
    tensors.check_all_used();

    Fields output(top.field("output"), path, "graph output");
    model.output.value = int(output.integer("value", 0, kMaxValueId));
    model.output.scale = output.positive_number("scale");
    model.output.zero_point = output.int8_value("zero_point");
    output.finish();

    const json& names = top.field("class_names");
    if (!names.is_array()) top.fail("'class_names' is not an array");
    for (const json& n : names) {
        if (!n.is_string()) top.fail("a class name is " + n.dump() + ", not a string");
        model.class_names.push_back(n.get<std::string>());
    }
    top.finish();
    return model;
}

std::vector<int8_t> fc_weights_chw_to_hwc(const int8_t* weights, int out_features, int channels, int height,
                                          int width) {
    const size_t in_features = size_t(channels) * height * width;
    std::vector<int8_t> reordered(size_t(out_features) * in_features);
    for (int o = 0; o < out_features; ++o)
        for (int c = 0; c < channels; ++c)
            for (int y = 0; y < height; ++y)
                for (int x = 0; x < width; ++x)
                    reordered[o * in_features + (size_t(y) * width + x) * channels + c] =
                        weights[o * in_features + (size_t(c) * height + y) * width + x];
    return reordered;
}

}  // namespace qf::infer
