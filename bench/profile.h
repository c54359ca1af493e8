// Per-op time of training steps, measured from outside autograd/.
//
// Forward: profiled_forward() walks the model's module tree and calls the same
// ops that the modules' forward() would call, each wrapped in a timer.
// Backward: after each op, a marker entry is recorded on the tape. The tape
// runs newest first, so the time from one marker firing to the next is the
// backward of the op recorded between them. A marker is a closure on a
// one-element tensor given a gradient up front, so that backward() runs it.
#pragma once
#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"
#include "nn/module.h"

namespace qf {

class OpProfile {
public:
    using Clock = std::chrono::steady_clock;

    // Runs `f` (one op call returning a Tensor), adds its time to `op`, and
    // when the tape records, places a marker after it.
    template <class F>
    Tensor time(const std::string& op, F&& f) {
        const auto t0 = Clock::now();
        Tensor y = f();
        OpTimes& t = ops_[op];
        t.forward_ms += std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        t.calls++;
        if (grad_enabled()) place_marker(op);
        return y;
    }

    // The phases of one step, in order.
    void begin_step();
    void forward_done();
    void backward_done();
    void step_done();  // after the optimizer update

    // A table of ms per step by op kind, averaged over `steps` profiled steps.
    void print(int steps) const;

private:
    struct OpTimes {
        double forward_ms = 0, backward_ms = 0;
        int64_t calls = 0;
    };
    void place_marker(const std::string& op_before);

    std::map<std::string, OpTimes> ops_;
    // Markers in the order they fired during this step's backward; each names
    // the op whose backward runs after it.
    std::vector<std::pair<std::string, Clock::time_point>> fired_;
    Clock::time_point step_start_, forward_end_, backward_end_;
    double forward_ms_ = 0, backward_ms_ = 0, optimizer_ms_ = 0, step_ms_ = 0;
};

// The model's forward, op by op under `prof`. Knows the module kinds of
// nn/layers.h and nn/blocks.h (keep it in step with their forward());
// throws for any other kind.
Tensor profiled_forward(nn::Module& m, const Tensor& x, OpProfile& prof);

// Throws unless profiled_forward(model) gives twin.forward()'s result; twin
// is a model built the same way (forward moves BN statistics and QAT ranges,
// so the two must start from the same state).
void check_profiled_forward(nn::Module& model, nn::Module& twin, const Tensor& x);

}  // namespace qf
