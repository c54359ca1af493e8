// A float32 N-d tensor with contiguous row-major storage, and the reverse-mode
// tape that records how each tensor was computed.
//
// Example:
//   Tensor w = Tensor::randn({10, 784}, rng, 0.01f); w.set_requires_grad(true);
//   Tensor logits = linear(x, w, b);          // ops record their backward
//   Tensor loss = cross_entropy(logits, labels);
//   backward(loss);                           // w.grad() now holds dloss/dw
//
// A Tensor is a shared handle: copies alias the same storage, like
// torch.Tensor. Gradients are allocated on first use and accumulated (+=).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace qf {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

struct TensorStorage {
    Shape shape;
    std::vector<float> value;
    std::vector<float> grad;  // empty until something accumulates into it
    bool requires_grad = false;
    // Hands both buffers back to the pool that empty() draws from.
    ~TensorStorage();
};

// Training repeats the same shapes every step; recycling freed buffers of the
// same size saves the page faults and zero-filling of fresh allocations,
// which cost more than a relu. Bounded; safe from any thread.
void release_cached_buffers();  // frees every pooled buffer
size_t cached_buffer_bytes();

class Tensor {
public:
    Tensor() = default;
    static Tensor zeros(const Shape& shape);
    // Values unspecified (recycled): for ops that write every element.
    static Tensor empty(const Shape& shape);
    static Tensor full(const Shape& shape, float v);
    static Tensor from(const Shape& shape, std::vector<float> values);
    // Normal(0, stddev) samples drawn from rng.
    static Tensor randn(const Shape& shape, std::mt19937& rng, float stddev = 1.0f);
    static Tensor uniform(const Shape& shape, std::mt19937& rng, float lo, float hi);

    bool defined() const { return s_ != nullptr; }
    const Shape& shape() const { return s_->shape; }
    int ndim() const { return (int)s_->shape.size(); }
    int64_t dim(int i) const { return s_->shape[i < 0 ? i + ndim() : i]; }
    int64_t numel() const { return (int64_t)s_->value.size(); }

    float* data() { return s_->value.data(); }
    const float* data() const { return s_->value.data(); }
    std::vector<float>& values() { return s_->value; }
    const std::vector<float>& values() const { return s_->value; }
    float item() const;  // the value of a one-element tensor

    bool requires_grad() const { return s_ && s_->requires_grad; }
    void set_requires_grad(bool r) { s_->requires_grad = r; }
    bool has_grad() const { return !s_->grad.empty(); }
    float* grad();  // allocates zeros on first use
    // For a backward that sets every element of the gradient: with none yet,
    // a buffer left unfilled, and `accumulate` false (write dx, do not add);
    // else grad() and `accumulate` true. Saves grad()'s zero-fill, a serial
    // pass over the whole buffer.
    float* grad_for_overwrite(bool& accumulate);
    const std::vector<float>& grad_values() const { return s_->grad; }
    void zero_grad() { s_->grad.clear(); }

    // A new tensor with a copy of the values, detached from the tape.
    Tensor clone() const;
    bool same(const Tensor& o) const { return s_ == o.s_; }
    TensorStorage* storage() const { return s_.get(); }

private:
    std::shared_ptr<TensorStorage> s_;
};

// ---- the tape ---------------------------------------------------------------

// True while ops should record their backward (not inside a NoGrad scope).
bool grad_enabled();

// Disables recording for its lifetime (evaluation, optimizer updates).
struct NoGrad {
    NoGrad();
    ~NoGrad();
    NoGrad(const NoGrad&) = delete;
    NoGrad& operator=(const NoGrad&) = delete;
    bool previous;
};

// True when an op on these inputs must record a backward.
bool needs_grad(std::initializer_list<const Tensor*> inputs);

// Records the backward of an op whose result is `out`. `fn` reads out.grad()
// and accumulates into the inputs' gradients; it runs only if `out` received
// a gradient. `op` names the op in error messages.
void record(const char* op, Tensor out, std::function<void()> fn);

// Runs `fn` when a later backward() reaches this point of the tape: after the
// backward of every op recorded since, before those recorded earlier. (Data-
// parallel training starts summing gradients that are final by then while
// the rest of the backward runs.)
void on_backward_reach(std::function<void()> fn);

// Seeds d(loss)/d(loss) = 1 and runs the recorded backwards newest first,
// then clears the tape. `loss` must hold one element.
void backward(Tensor loss);
// The same from a non-scalar result with a given d(out) (gradient checks).
void backward(Tensor out, const std::vector<float>& dout);

// Forgets everything recorded (e.g. after a forward that needs no backward).
void clear_tape();
size_t tape_size();

}  // namespace qf
