#include "infer/model.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "infer/kernels/qs8_add.h"
#include "infer/kernels/qs8_pooling.h"
#include "infer/kernels/reference/reference.h"
#include "infer/overloaded.h"
#include "infer/quantize.h"

namespace qf::infer {

namespace {

// Largest activation per image (elements); far above any real model's, low
// enough that the sizes of a batch stay well inside int64 and memory.
constexpr int64_t kMaxValueElements = int64_t(1) << 26;

std::string shape_string(int h, int w, int c) {
    return std::to_string(h) + "x" + std::to_string(w) + "x" + std::to_string(c);
}

}  // namespace

Model Model::load(const std::string& path) {
    try {
        return Model(parse_model(safetensors::read(path)), path);
    } catch (const safetensors::FormatError& e) {
        throw ModelError(e.what());  // already names the file
    }
}

Model Model::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
    try {
        return Model(parse_model(safetensors::parse(std::move(bytes), name)), name);
    } catch (const safetensors::FormatError& e) {
        throw ModelError(e.what());
    }
}

Model::Model(const ModelSpec& spec, const std::string& name)
    : input_(spec.input), output_(spec.output), class_names_(spec.class_names) {
    if (const std::string error = input_spec_error(input_); !error.empty())
        throw ModelError(name + ": graph input: " + error);
    if (!(output_.scale > 0) || !std::isfinite(output_.scale))
        throw ModelError(name + ": graph output: scale must be positive, got " + std::to_string(output_.scale));
    std::map<int, int> value_index;  // value id -> index into values_
    values_.push_back({input_.height, input_.width, input_.channels, input_.zero_point});
    value_index[kModelInputValue] = 0;
    for (size_t i = 0; i < spec.ops.size(); ++i) add_step(spec.ops[i], i, name, value_index);

    auto fail = [&](const std::string& what) { throw ModelError(name + ": graph output: " + what); };
    auto it = value_index.find(output_.value);
    if (it == value_index.end()) fail("value " + std::to_string(output_.value) + " is not defined by any op");
    output_index_ = it->second;
    const Value& logits = values_[size_t(output_index_)];
    if (logits.h != 1 || logits.w != 1)
        fail("value " + std::to_string(output_.value) + " is " + shape_string(logits.h, logits.w, logits.c) +
             ", not 1x1xclasses");
    if (output_.zero_point != logits.zero_point)
        fail("zero point " + std::to_string(output_.zero_point) + " differs from its op's output zero point " +
             std::to_string(logits.zero_point));
    num_classes_ = logits.c;
    if (!class_names_.empty() && int(class_names_.size()) != num_classes_)
        fail(std::to_string(class_names_.size()) + " class names for " + std::to_string(num_classes_) + " logits");
    if (class_names_.empty())
        for (int c = 0; c < num_classes_; ++c) class_names_.push_back(std::to_string(c));
    plan_buffers(false);
    reset_profile();
}

void Model::keep_op_outputs() {
    keep_op_outputs_ = true;
    plan_buffers(true);
}

// Liveness over the step order, greedy: a value's buffer is free again after
// the last step that reads it (the logits: never). A step's output takes a
// free buffer before its own inputs are released, so no op writes over what
// it reads. Only values of equal size per image share a buffer: image b of
// every value then lies at the same bytes, so the threads of the batch split
// (run_quantized), each on its own images, never touch each other's.
void Model::plan_buffers(bool keep_all) {
    const size_t n = values_.size();
    std::vector<int> root(n);  // whose buffer a value reads: its own, or (flatten) its input's
    for (size_t v = 0; v < n; ++v) root[v] = values_[v].alias >= 0 ? root[size_t(values_[v].alias)] : int(v);
    std::vector<size_t> last_read(n, 0);  // step index; a value no step reads dies at its own step
    for (size_t s = 0; s < steps_.size(); ++s) {
        last_read[size_t(root[size_t(steps_[s].output)])] = s;
        for (int v : steps_[s].inputs) last_read[size_t(root[size_t(v)])] = s;
    }
    last_read[size_t(root[size_t(output_index_)])] = steps_.size();

    buffer_elements_.clear();
    std::vector<int> free_buffers;
    auto take = [&](Value& v) {
        for (size_t i = 0; i < free_buffers.size(); ++i)
            if (buffer_elements_[size_t(free_buffers[i])] == v.elements()) {
                v.buffer = free_buffers[i];
                free_buffers.erase(free_buffers.begin() + std::ptrdiff_t(i));
                return;
            }
        v.buffer = int(buffer_elements_.size());
        buffer_elements_.push_back(v.elements());
    };
    take(values_[0]);
    for (size_t s = 0; s < steps_.size(); ++s) {
        Value& out = values_[size_t(steps_[s].output)];
        if (out.alias >= 0)
            out.buffer = values_[size_t(root[size_t(steps_[s].output)])].buffer;
        else
            take(out);
        if (keep_all) continue;
        std::vector<int> done = steps_[s].inputs;
        done.push_back(steps_[s].output);
        for (int v : done) {
            const int r = root[size_t(v)];
            const int b = values_[size_t(r)].buffer;
            if (last_read[size_t(r)] == s &&
                std::find(free_buffers.begin(), free_buffers.end(), b) == free_buffers.end())
                free_buffers.push_back(b);
        }
    }
    buffers_.assign(buffer_elements_.size(), {});
    capacity_ = 0;
}

void Model::add_step(const OpSpec& op, size_t index, const std::string& name, std::map<int, int>& value_index) {
    const std::string where =
        name + ": op " + std::to_string(index) + " '" + op.name + "' (" + op_type_name(op.op) + "): ";
    auto fail = [&](const std::string& what) { throw ModelError(where + what); };

    const size_t arity = std::holds_alternative<AddSpec>(op.op) ? 2 : std::holds_alternative<ConcatSpec>(op.op) ? 0 : 1;
    if (arity && op.inputs.size() != arity)
        fail("takes " + std::to_string(arity) + " input(s), got " + std::to_string(op.inputs.size()));
    if (op.inputs.empty()) fail("has no inputs");
    std::vector<int> inputs;
    for (int id : op.inputs) {
        auto it = value_index.find(id);
        if (it == value_index.end()) fail("input value " + std::to_string(id) + " is not defined before this op");
        inputs.push_back(it->second);
    }
    if (value_index.count(op.output)) fail("output value " + std::to_string(op.output) + " is already defined");
    const Value in = values_[size_t(inputs[0])];  // a copy: values_ grows below

    Value out;
    Kernel kernel;
    auto check_input_channels = [&](int64_t expected, const char* what) {
        if (in.c != expected)
            fail("input is " + shape_string(in.h, in.w, in.c) + " but the " + what + " expect " +
                 std::to_string(expected) + " channels");
    };
    try {
        std::visit(
            Overloaded{
                [&](const Conv2dSpec& c) {
                    check_input_channels(int64_t(c.in_c_per_group) * c.groups, "weights (in_c_per_group x groups)");
                    Conv2dParams p;
                    p.in_h = in.h, p.in_w = in.w, p.in_c = in.c;
                    p.out_c = c.out_c, p.kernel_h = c.kernel_h, p.kernel_w = c.kernel_w;
                    p.stride_h = c.window.stride_h, p.stride_w = c.window.stride_w;
                    p.pad_top = c.window.pad_top, p.pad_left = c.window.pad_left;
                    p.pad_bottom = c.window.pad_bottom, p.pad_right = c.window.pad_right;
                    p.groups = c.groups;
                    p.input_zero_point = in.zero_point;
                    p.weight_zero_points = c.weight_zero_points;
                    p.multipliers = c.multipliers;
                    p.output = c.output;
                    if (c.weights.size() != size_t(c.out_c) * p.weights_per_out_channel() ||
                        (!c.bias.empty() && c.bias.size() != size_t(c.out_c)))
                        fail("weights or bias do not match the weights' shape");
                    Conv2d conv(p, c.weights.data(), c.bias.empty() ? nullptr : c.bias.data());  // validates
                    out = {p.out_h(), p.out_w(), p.out_c, p.output.zero_point};
                    kernel = std::move(conv);
                },
                [&](const FullyConnectedSpec& f) {
                    if (in.h != 1 || in.w != 1)
                        fail("input is " + shape_string(in.h, in.w, in.c) +
                             "; fully_connected reads a 1x1xC value (flatten or pool first)");
                    check_input_channels(f.in_features, "weights");
                    if (f.weights.size() != size_t(f.out_features) * f.in_features ||
                        (!f.bias.empty() && f.bias.size() != size_t(f.out_features)))
                        fail("weights or bias do not match the weights' shape");
                    FullyConnectedParams p;
                    p.in_features = f.in_features, p.out_features = f.out_features;
                    p.input_zero_point = in.zero_point;
                    p.weight_zero_points = f.weight_zero_points;
                    p.multipliers = f.multipliers;
                    p.output = f.output;
                    FullyConnected fc(p, f.weights.data(), f.bias.empty() ? nullptr : f.bias.data());
                    out = {1, 1, f.out_features, p.output.zero_point};
                    kernel = std::move(fc);
                },
                [&](const AddSpec& a) {
                    const Value& other = values_[size_t(inputs[1])];
                    if (other.h != in.h || other.w != in.w || other.c != in.c)
                        fail("inputs differ in shape: " + shape_string(in.h, in.w, in.c) + " and " +
                             shape_string(other.h, other.w, other.c));
                    AddParams p{in.zero_point, other.zero_point, a.input1_multiplier, a.input2_multiplier,
                                a.output_multiplier, a.output};
                    validate(p);
                    out = {in.h, in.w, in.c, p.output.zero_point};
                    kernel = p;
                },
                [&](const ConcatSpec& c) {
                    if (c.multipliers.size() != inputs.size())
                        fail(std::to_string(c.multipliers.size()) + " multipliers for " +
                             std::to_string(inputs.size()) + " inputs");
                    ConcatParams p;
                    p.h = in.h, p.w = in.w;
                    p.output_zero_point = c.output_zero_point;
                    int64_t channels = 0;
                    for (size_t i = 0; i < inputs.size(); ++i) {
                        const Value& v = values_[size_t(inputs[i])];
                        if (v.h != in.h || v.w != in.w)
                            fail("input " + std::to_string(i) + " is " + shape_string(v.h, v.w, v.c) +
                                 ", input 0 is " + shape_string(in.h, in.w, in.c) + ": heights and widths must match");
                        p.inputs.push_back({v.c, v.zero_point, c.multipliers[i]});
                        channels += v.c;
                    }
                    if (channels * in.h * in.w > kMaxValueElements) fail("output too large");
                    validate(p);
                    out = {in.h, in.w, int(channels), p.output_zero_point};
                    kernel = p;
                },
                [&](const MaxPoolSpec& m) {
                    PoolParams p;
                    p.in_h = in.h, p.in_w = in.w, p.channels = in.c;
                    p.kernel_h = m.kernel_h, p.kernel_w = m.kernel_w;
                    p.stride_h = m.window.stride_h, p.stride_w = m.window.stride_w;
                    p.pad_top = m.window.pad_top, p.pad_left = m.window.pad_left;
                    p.pad_bottom = m.window.pad_bottom, p.pad_right = m.window.pad_right;
                    p.input_zero_point = in.zero_point;
                    p.output = {in.zero_point, m.qmin, m.qmax};
                    validate_max_pool(p);
                    out = {p.out_h(), p.out_w(), in.c, in.zero_point};
                    kernel = MaxPool{p};
                },
                [&](const AvgPoolSpec& a) {
                    PoolParams p;
                    p.in_h = in.h, p.in_w = in.w, p.channels = in.c;
                    p.kernel_h = a.kernel_h, p.kernel_w = a.kernel_w;
                    p.stride_h = a.window.stride_h, p.stride_w = a.window.stride_w;
                    p.pad_top = a.window.pad_top, p.pad_left = a.window.pad_left;
                    p.pad_bottom = a.window.pad_bottom, p.pad_right = a.window.pad_right;
                    p.input_zero_point = in.zero_point;
                    p.multiplier = a.multiplier;
                    p.output = a.output;
                    validate_average_pool(p);
                    out = {p.out_h(), p.out_w(), in.c, p.output.zero_point};
                    kernel = AveragePool{p};
                },
                [&](const GlobalAvgPoolSpec& g) {
                    const PoolParams p =
                        global_average_pool_params(in.h, in.w, in.c, in.zero_point, g.multiplier, g.output);
                    validate_average_pool(p);
                    out = {1, 1, in.c, p.output.zero_point};
                    kernel = AveragePool{p};
                },
                [&](const FlattenSpec&) {
                    out = {1, 1, int(in.elements()), in.zero_point, inputs[0]};  // same bytes, new shape
                    kernel = Flatten{};
                },
            },
            op.op);
    } catch (const ParamError& e) {
        fail(e.what());
    }
    if (out.elements() > kMaxValueElements)
        fail("output " + shape_string(out.h, out.w, out.c) + " is too large");
    value_index[op.output] = int(values_.size());
    steps_.push_back({op.name, op_type_name(op.op), inputs, int(values_.size()), std::move(kernel)});
    values_.push_back(out);
}

int64_t Model::activation_elements() const {
    int64_t total = 0;
    for (int64_t e : buffer_elements_) total += e;
    return total;
}

void Model::ensure_capacity(int batch) {
    if (batch <= capacity_) return;
    for (size_t b = 0; b < buffers_.size(); ++b) buffers_[b].resize(size_t(buffer_elements_[b]) * batch);
    input_nchw_.resize(size_t(values_[0].elements()) * batch);
    logits_.resize(size_t(num_classes_) * batch);
    capacity_ = batch;
}

void Model::run_step(const Step& step, int first, int count) {
    // Every value is batch-major: image b of value v starts at b * elements.
    auto data = [&](int value) {
        const Value& v = values_[size_t(value)];
        return buffers_[size_t(v.buffer)].data() + int64_t(first) * v.elements();
    };
    const int8_t* in = data(step.inputs[0]);
    int8_t* out = data(step.output);
    std::visit(Overloaded{
                   [&](const Conv2d& conv) { conv.run(count, in, out); },
                   [&](const FullyConnected& fc) { fc.run(count, in, out); },
                   [&](const AddParams& p) {
                       qs8_add(p, values_[size_t(step.output)].elements() * count, in, data(step.inputs[1]), out);
                   },
                   [&](const ConcatParams& p) {
                       std::vector<const int8_t*> inputs;
                       for (int v : step.inputs) inputs.push_back(data(v));
                       reference::concat(p, count, inputs.data(), out);
                   },
                   [&](const MaxPool& m) { qs8_max_pool(m.params, count, in, out); },
                   [&](const AveragePool& a) { qs8_average_pool(a.params, count, in, out); },
                   [&](const Flatten&) {},  // the output shares the input's buffer
               },
               step.kernel);
}

std::span<const int8_t> Model::run_quantized(const float* images_nchw, int batch) {
    if (batch < 1) throw std::invalid_argument("Model::run: batch must be at least 1, got " + std::to_string(batch));
    ensure_capacity(batch);
    // The only float before the logits: quantize, then NCHW -> NHWC.
    const int channels = input_.channels;
    const int64_t pixels = int64_t(input_.height) * input_.width;
    int8_t* nhwc = buffers_[size_t(values_[0].buffer)].data();
    int8_t* nchw = channels == 1 ? nhwc : input_nchw_.data();  // one channel: the layouts coincide
    quantize(images_nchw, pixels * channels * batch, float(input_.scale), input_.zero_point, nchw, input_.qmin,
             input_.qmax);
    if (channels > 1)
        for (int b = 0; b < batch; ++b)
            for (int c = 0; c < channels; ++c)
                for (int64_t i = 0; i < pixels; ++i)
                    nhwc[(b * pixels + i) * channels + c] = nchw[(int64_t(b) * channels + c) * pixels + i];

    // A batch of several images per thread is split into whole images: each
    // thread runs the whole graph on a run of images, with no barrier between
    // ops (the kernels' own parallel regions, nested inside this one, run on
    // the calling thread). One op at a time over the batch made every op wait
    // for its slowest thread, 30+ times per batch. The runs are handed out as
    // threads ask, each a share of what is left (OpenMP's "guided"): on a
    // shared machine one thread is often slowed, and equal halves left the
    // other waiting for it at the end. Each image's arithmetic is the same
    // either way, so are its outputs, bit for bit. Profiling times ops, so it
    // runs them one at a time.
    const int threads = omp_get_max_threads();
    if (!profiling_ && threads > 1 && batch >= kMinImagesPerThread * threads) {
        std::atomic<int> next_image{0};
#pragma omp parallel num_threads(threads)
        {
            const int n = omp_get_num_threads();
            for (;;) {
                int first = next_image.load(), count = 0;
                do {
                    if (first >= batch) break;
                    count = std::min(batch - first, std::max(kMinImagesPerRun, (batch - first) / (2 * n)));
                } while (!next_image.compare_exchange_weak(first, first + count));
                if (first >= batch) break;
                for (const Step& step : steps_) run_step(step, first, count);
            }
        }
    } else {
        for (size_t s = 0; s < steps_.size(); ++s) {
            if (!profiling_) {
                run_step(steps_[s], 0, batch);
                continue;
            }
            const auto start = std::chrono::steady_clock::now();
            run_step(steps_[s], 0, batch);
            profile_[s].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            ++profile_[s].calls;
        }
    }
    return {buffers_[size_t(values_[size_t(output_index_)].buffer)].data(), size_t(num_classes_) * batch};
}

std::span<const float> Model::run(const float* images_nchw, int batch) {
    const std::span<const int8_t> q = run_quantized(images_nchw, batch);
    dequantize(q.data(), int64_t(q.size()), float(output_.scale), output_.zero_point, logits_.data());
    return {logits_.data(), q.size()};
}

void Model::reset_profile() {
    profile_.assign(steps_.size(), {});
    for (size_t s = 0; s < steps_.size(); ++s) profile_[s].name = steps_[s].name, profile_[s].type = steps_[s].type;
}

}  // namespace qf::infer
