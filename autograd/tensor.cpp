#include "autograd/tensor.h"

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace qf {

namespace {
class BufferPool {
public:
    // A buffer of n floats, recycled when one of that size is free (values
    // unspecified), else new and zeroed.
    std::vector<float> take(size_t n) {
        if (n >= kMinPooled) {
            std::lock_guard<std::mutex> lock(mutex_);
            auto it = free_.find(n);
            if (it != free_.end() && !it->second.empty()) {
                std::vector<float> v = std::move(it->second.back());
                it->second.pop_back();
                bytes_ -= n * sizeof(float);
                return v;
            }
        }
        return std::vector<float>(n);
    }
    void give(std::vector<float>& v) {
        const size_t n = v.size();
        if (n < kMinPooled) return;
        std::lock_guard<std::mutex> lock(mutex_);
        if (bytes_ + n * sizeof(float) > kMaxBytes) return;
        bytes_ += n * sizeof(float);
        free_[n].push_back(std::move(v));
    }
    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        free_.clear();
        bytes_ = 0;
    }
    size_t bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return bytes_;
    }

private:
    // Small buffers are cheap to allocate; big ones are what costs.
    static constexpr size_t kMinPooled = 16384;
    static constexpr size_t kMaxBytes = size_t(1) << 30;
    std::mutex mutex_;
    std::unordered_map<size_t, std::vector<std::vector<float>>> free_;
    size_t bytes_ = 0;
};

// Never destroyed: tensors held by other statics may die after it would.
BufferPool& pool() {
    static BufferPool* p = new BufferPool;
    return *p;
}
}  // namespace

TensorStorage::~TensorStorage() {
    pool().give(value);
    pool().give(grad);
}

void release_cached_buffers() { pool().clear(); }
size_t cached_buffer_bytes() { return pool().bytes(); }

Tensor Tensor::empty(const Shape& shape) {
    Tensor t;
    t.s_ = std::make_shared<TensorStorage>();
    t.s_->shape = shape;
    t.s_->value = pool().take(shape_numel(shape));
    return t;
}

int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) {
        if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(s));
        n *= d;
    }
    return n;
}

std::string shape_str(const Shape& s) {
    std::string r = "(";
    for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + ")";
}

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.0f); }

Tensor Tensor::full(const Shape& shape, float v) {
    Tensor t;
    t.s_ = std::make_shared<TensorStorage>();
    t.s_->shape = shape;
    t.s_->value.assign(shape_numel(shape), v);
    return t;
}

Tensor Tensor::from(const Shape& shape, std::vector<float> values) {
    if ((int64_t)values.size() != shape_numel(shape))
        throw std::invalid_argument("Tensor::from: " + std::to_string(values.size()) +
                                    " values for shape " + shape_str(shape));
    Tensor t;
    t.s_ = std::make_shared<TensorStorage>();
    t.s_->shape = shape;
    t.s_->value = std::move(values);
    return t;
}

Tensor Tensor::randn(const Shape& shape, std::mt19937& rng, float stddev) {
    Tensor t = zeros(shape);
    std::normal_distribution<float> dist(0.0f, stddev);
    for (float& v : t.s_->value) v = dist(rng);
    return t;
}

Tensor Tensor::uniform(const Shape& shape, std::mt19937& rng, float lo, float hi) {
    Tensor t = zeros(shape);
    std::uniform_real_distribution<float> dist(lo, hi);
    for (float& v : t.s_->value) v = dist(rng);
    return t;
}

float Tensor::item() const {
    if (numel() != 1) throw std::invalid_argument("item() on a tensor of shape " + shape_str(shape()));
    return s_->value[0];
}

float* Tensor::grad() {
    if (s_->grad.empty()) {
        s_->grad = pool().take(s_->value.size());
        std::fill(s_->grad.begin(), s_->grad.end(), 0.0f);
    }
    return s_->grad.data();
}

float* Tensor::grad_for_overwrite(bool& accumulate) {
    accumulate = has_grad();
    if (!accumulate) s_->grad = pool().take(s_->value.size());
    return s_->grad.data();
}

Tensor Tensor::clone() const { return from(shape(), values()); }

// ---- the tape ---------------------------------------------------------------

namespace {
struct TapeEntry {
    const char* op;
    Tensor out;
    std::function<void()> fn;
};
thread_local std::vector<TapeEntry> g_tape;
thread_local bool g_grad_enabled = true;
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGrad::NoGrad() : previous(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = previous; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
    if (!g_grad_enabled) return false;
    for (const Tensor* t : inputs)
        if (t && t->defined() && t->requires_grad()) return true;
    return false;
}

void record(const char* op, Tensor out, std::function<void()> fn) {
    out.set_requires_grad(true);
    g_tape.push_back({op, std::move(out), std::move(fn)});
}

// A marker has no output: it always runs.
void on_backward_reach(std::function<void()> fn) { g_tape.push_back({"marker", Tensor(), std::move(fn)}); }

void backward(Tensor loss) {
    if (!loss.defined() || loss.numel() != 1)
        throw std::invalid_argument("backward: the loss must hold exactly one element");
    backward(loss, {1.0f});
}

void backward(Tensor loss, const std::vector<float>& dout) {
    if (!loss.requires_grad())
        throw std::logic_error("backward: the result does not depend on any tensor that requires grad");
    if ((int64_t)dout.size() != loss.numel())
        throw std::invalid_argument("backward: d(out) has " + std::to_string(dout.size()) +
                                    " values for " + std::to_string(loss.numel()) + " elements");
    float* g = loss.grad();
    for (size_t i = 0; i < dout.size(); i++) g[i] += dout[i];
    // Newest first: every consumer of a tensor ran before its producer.
    for (size_t i = g_tape.size(); i-- > 0;) {
        TapeEntry& e = g_tape[i];
        if (!e.out.defined()) {
            e.fn();
        } else if (e.out.has_grad()) {
            e.fn();
            // Nobody reads an intermediate's gradient after its producer ran.
            if (!e.out.same(loss)) {
                pool().give(e.out.storage()->grad);
                e.out.storage()->grad.clear();
            }
        }
    }
    clear_tape();
}

void clear_tape() { g_tape.clear(); }
size_t tape_size() { return g_tape.size(); }

}  // namespace qf
