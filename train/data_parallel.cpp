#include "train/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "autograd/ops.h"
#include "quant/qat.h"

namespace qf::train {

using json = nlohmann::json;

void check_same_config(const Config& cfg) {
    if (dist::size() == 1) return;
    const json mine = config_to_json(cfg);
    std::string root_text = mine.dump();
    dist::broadcast(root_text);
    const json root = json::parse(root_text);
    std::string first_difference;
    for (const ConfigKey& k : config_keys()) {
        std::string pointer = "/" + k.path;
        std::replace(pointer.begin(), pointer.end(), '.', '/');
        const json::json_pointer p(pointer);
        if (mine.at(p) != root.at(p)) {
            first_difference = "'" + k.path + "' is " + mine.at(p).dump() + " here but " + root.at(p).dump() +
                               " on rank 0";
            break;
        }
    }
    // Every rank learns which ranks differ, so that all of them stop.
    std::vector<double> differs((size_t)dist::size(), 0.0);
    differs[(size_t)dist::rank()] = first_difference.empty() ? 0.0 : 1.0;
    dist::allreduce_sum(differs.data(), (int64_t)differs.size());
    std::string ranks;
    for (size_t r = 0; r < differs.size(); r++)
        if (differs[r] > 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    if (ranks.empty()) return;
    if (!first_difference.empty())
        throw ConfigError("rank " + std::to_string(dist::rank()) + "'s config differs from rank 0's: " +
                          first_difference + "; every rank must run the same config");
    throw ConfigError("the config of rank(s) " + ranks +
                      " differs from rank 0's; every rank must run the same config (their messages name the key)");
}

void broadcast_state(nn::Module& model, Optimizer* optimizer) {
    if (dist::size() == 1) return;
    for (nn::NamedTensor& t : model.state()) dist::broadcast(t.tensor.data(), t.tensor.numel());
    if (!optimizer) return;
    for (const nn::NamedTensor& t : optimizer->state()) {
        Tensor s = t.tensor;
        dist::broadcast(s.data(), s.numel());
    }
    int64_t steps = optimizer->step_count();
    dist::broadcast(&steps, 1);
    optimizer->set_step_count(steps);
}

void reduce_observer_ranges(nn::Module& model) {
    if (dist::size() == 1) return;
    quant::visit_qat(model, {.conv = {}, .linear = {}, .activation = [](quant::ActivationQuant& a) {
        a.observer().set_range_reduce([](std::vector<quant::Range>& ranges) {
            // One collective: the min of {min, -max} is {min of mins, -(max of maxes)}.
            const size_t n = ranges.size();
            std::vector<float> v(2 * n);
            for (size_t c = 0; c < n; c++) v[c] = ranges[c].min, v[n + c] = -ranges[c].max;
            dist::allreduce_min(v.data(), (int64_t)v.size());
            for (size_t c = 0; c < n; c++) ranges[c] = {v[c], -v[n + c]};
        });
    }});
}

SyncBatchNorm::SyncBatchNorm() {
    set_batch_norm_sync([](double* data, int64_t n) { dist::allreduce_sum(data, n); });
}
SyncBatchNorm::~SyncBatchNorm() { set_batch_norm_sync({}); }

// ---- GradientSum ------------------------------------------------------------------

GradientSum::GradientSum(const nn::Sequential& model, const DistributedConfig& cfg) : overlap_(cfg.overlap) {
    const int64_t bucket_floats = std::max<int64_t>(1, (int64_t)(cfg.bucket_mb * 1e6 / sizeof(float)));
    int64_t in_bucket = 0;
    const auto& children = model.children();
    for (size_t i = children.size(); i-- > 0;) {
        const std::vector<nn::NamedTensor> params = children[i].second->parameters();
        for (size_t j = params.size(); j-- > 0;) {
            if (buckets_.empty() || in_bucket >= bucket_floats) {
                buckets_.emplace_back();
                in_bucket = 0;
            }
            Bucket& b = buckets_.back();
            b.params.push_back(params[j].tensor);
            b.first_child = i;
            in_bucket += params[j].tensor.numel();
            floats_ += params[j].tensor.numel();
        }
    }
    for (Bucket& b : buckets_) {
        int64_t n = 0;
        for (const Tensor& p : b.params) n += p.numel();
        b.buffer.resize((size_t)n);
    }
}

Tensor GradientSum::forward(nn::Sequential& model, const Tensor& x) {
    for (Bucket& b : buckets_) b.started = false;
    Tensor h = x;
    const auto& children = model.children();
    for (size_t i = 0; i < children.size(); i++) {
        if (overlap_) on_backward_reach([this, i] { start_ready(i); });
        h = children[i].second->forward(h);
    }
    return h;
}

void GradientSum::start_ready(size_t child) {
    for (Bucket& b : buckets_) {
        if (!b.started && b.first_child >= child) start(b);
        // MPI's non-blocking collectives move on only inside MPI calls.
        if (b.started) b.pending.progress();
    }
}

void GradientSum::start(Bucket& b) {
    float* at = b.buffer.data();
    for (Tensor& p : b.params) {
        std::memcpy(at, p.grad(), (size_t)p.numel() * sizeof(float));
        at += p.numel();
    }
    b.pending = dist::PendingSum(b.buffer.data(), (int64_t)b.buffer.size());
    b.started = true;
}

void GradientSum::finish() {
    const auto begin = std::chrono::steady_clock::now();
    for (Bucket& b : buckets_)
        if (!b.started) start(b);
    for (Bucket& b : buckets_) {
        b.pending.wait();
        const float* at = b.buffer.data();
        for (Tensor& p : b.params) {
            std::memcpy(p.grad(), at, (size_t)p.numel() * sizeof(float));
            at += p.numel();
        }
    }
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
}

}  // namespace qf::train
