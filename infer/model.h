// The int8 graph: loads a model file (infer/model_format.h), checks it
// against itself, prepares every kernel once, and runs batches with integers
// only between the input quantization and the logits' dequantization.
//
//   qf::infer::Model model = qf::infer::Model::load("lenet.int8.safetensors");
//   // images: batch x C x H x W floats, normalized with model.input().mean/std
//   std::span<const float> logits = model.run(images.data(), batch);  // batch x classes
//
// Loading checks what parse_model() checks plus the graph as a whole: value
// ids defined (once) before use, each op's tensors matching the shape of the
// value it reads (input channels, groups, FC features), shapes consistent
// through the graph, the output value 1x1xclasses with as many class names,
// and every kernel's parameters (validate(), including the int32 accumulator
// bound). Any failure throws ModelError naming the file and the op.
//
// A Model is not safe to run from two threads at once (it owns its
// activation buffers); the kernels themselves use OpenMP.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "infer/kernels/conv2d.h"
#include "infer/kernels/params.h"
#include "infer/model_format.h"

namespace qf::infer {

class Model {
public:
    // Throws ModelError (bad file or graph); the message names `path`.
    static Model load(const std::string& path);
    // The same from bytes in memory; `name` stands for the file in messages.
    static Model from_bytes(std::vector<uint8_t> bytes, const std::string& name);
    // Checks and prepares a model already in memory (`name` for messages).
    explicit Model(const ModelSpec& spec, const std::string& name = "model");

    const InputSpec& input() const { return input_; }
    const OutputSpec& output() const { return output_; }
    const std::vector<std::string>& class_names() const { return class_names_; }
    int num_classes() const { return num_classes_; }
    int num_ops() const { return int(steps_.size()); }
    // Int8 activation elements per image over all buffers (their bytes at batch 1).
    int64_t activation_elements() const;

    // images: batch x C x H x W floats, already normalized (InputSpec's mean
    // and std). Returns batch x num_classes dequantized logits, valid until
    // the next run. Buffers grow to the largest batch seen and are reused.
    std::span<const float> run(const float* images_nchw, int batch);
    // The same, stopping before the dequantization: batch x num_classes int8.
    std::span<const int8_t> run_quantized(const float* images_nchw, int batch);
    // From this many images per OpenMP thread on, run() splits the batch
    // between the threads instead of each op (model.cpp), in runs of at
    // least kMinImagesPerRun images (fewer at the end of the batch).
    static constexpr int kMinImagesPerThread = 4;
    static constexpr int kMinImagesPerRun = 2;

    // Per-op wall time, accumulated over runs while profiling is on.
    struct OpTime {
        std::string name, type;
        double seconds = 0;
        int64_t calls = 0;
    };
    void set_profiling(bool on) { profiling_ = on; }

    // Activations share buffers by default: an op's output reuses the buffer
    // of a value of the same size that no later op reads, so a batch needs
    // the widest cut of the graph, not every activation at once. Parity
    // checks read every op's output after a run (op_output): this gives each
    // value a buffer of its own again. Drops the buffers (the next run
    // allocates them).
    void keep_op_outputs();

    // The output of op `index` from the last run (batch x h x w x c int8,
    // NHWC), for parity checks against the fake-quant model. Needs
    // keep_op_outputs() (std::logic_error without).
    struct OpOutput {
        std::string name;
        int h = 0, w = 0, c = 0;
        int32_t zero_point = 0;
        const int8_t* data = nullptr;
    };
    OpOutput op_output(int index) const {
        if (!keep_op_outputs_) throw std::logic_error("Model::op_output needs keep_op_outputs() before the run");
        const Step& st = steps_.at(size_t(index));
        const Value& v = values_[size_t(st.output)];
        return {st.name, v.h, v.w, v.c, v.zero_point, buffers_[size_t(v.buffer)].data()};
    }
    const std::vector<OpTime>& profile() const { return profile_; }
    void reset_profile();

private:
    // An activation tensor of the graph: h x w x c per image, NHWC.
    struct Value {
        int h = 0, w = 0, c = 0;
        int32_t zero_point = 0;
        int alias = -1;   // flatten: the value whose bytes this one reads under a new shape
        int buffer = -1;  // index into buffers_ (plan_buffers)
        int64_t elements() const { return int64_t(h) * w * c; }
    };
    // The prepared kernel of each op type (fast kernels for conv2d, FC,
    // add and the pools; concat runs the reference kernel).
    struct MaxPool { PoolParams params; };
    struct AveragePool { PoolParams params; };
    struct Flatten {};
    using Kernel = std::variant<Flatten, Conv2d, FullyConnected, AddParams, ConcatParams, MaxPool, AveragePool>;
    struct Step {
        std::string name;
        const char* type = "";
        std::vector<int> inputs;  // indices into values_
        int output = -1;
        Kernel kernel;
    };

    // Checks op `index` against the values defined so far (`value_index`:
    // value id -> index into values_), prepares its kernel and defines its
    // output value. Throws ModelError.
    void add_step(const OpSpec& op, size_t index, const std::string& name, std::map<int, int>& value_index);
    // Gives every value a buffer (values_[v].buffer, buffer_elements_),
    // shared between values whose lives do not overlap unless keep_all.
    void plan_buffers(bool keep_all);
    void ensure_capacity(int batch);
    // Runs `step` on images [first, first + count) of the batch.
    void run_step(const Step& step, int first, int count);

    InputSpec input_;
    OutputSpec output_;
    std::vector<std::string> class_names_;
    int num_classes_ = 0;

    std::vector<Value> values_;  // in order of definition: the input, then each op's output
    int output_index_ = -1;      // the logits' index into values_
    std::vector<Step> steps_;
    std::vector<int64_t> buffer_elements_;          // per image, for each buffer
    std::vector<std::vector<int8_t>> buffers_;      // buffer_elements_ * capacity_
    int capacity_ = 0;                              // the batch the buffers hold
    bool keep_op_outputs_ = false;
    std::vector<int8_t> input_nchw_;                // the quantized input before NHWC
    std::vector<float> logits_;

    bool profiling_ = false;
    std::vector<OpTime> profile_;  // one per step
};

}  // namespace qf::infer
