#include "data/loader.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "data/random.h"

namespace qf::data {

namespace {

// Distinct constants keep the shuffle stream and the per-sample streams apart.
constexpr uint64_t shuffle_stream = 0x53485546464c45ull;  // "SHUFFLE"
constexpr uint64_t sample_stream = 0x53414d504c45ull;     // "SAMPLE"

}  // namespace

DataLoader::DataLoader(const Dataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(options) {
    if (options_.batch_size < 1)
        throw std::invalid_argument("loader: batch_size must be >= 1, got " + std::to_string(options_.batch_size));
    if (options_.num_workers < 0 || options_.num_workers > 256)
        throw std::invalid_argument("loader: num_workers must be in [0, 256], got " +
                                    std::to_string(options_.num_workers));
    if (options_.prefetch_batches < 1)
        throw std::invalid_argument("loader: prefetch_batches must be >= 1, got " +
                                    std::to_string(options_.prefetch_batches));
    if (options_.shard_count < 1 || options_.shard_rank < 0 || options_.shard_rank >= options_.shard_count)
        throw std::invalid_argument("loader: shard " + std::to_string(options_.shard_rank) + " of " +
                                    std::to_string(options_.shard_count) + " does not exist");
    if (dataset_.size() < 1) throw std::invalid_argument("loader: the dataset is empty");
    if (dataset_.channels() < 1 || dataset_.height() < 1 || dataset_.width() < 1)
        throw std::invalid_argument("loader: the dataset's sample shape is empty");

    slots_.resize(size_t(std::max(options_.prefetch_batches, options_.num_workers)));
    workers_.reserve(size_t(options_.num_workers));
    for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

DataLoader::~DataLoader() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
        ++generation_;  // workers abandon their batch between samples
    }
    work_available_.notify_all();
    for (std::thread& t : workers_) t.join();
}

int64_t DataLoader::batches_per_epoch() const {
    const int64_t n = dataset_.size(), b = options_.batch_size;
    return options_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch(int64_t epoch, int64_t skip_batches) {
    if (epoch < 0) throw std::invalid_argument("loader: epoch must be >= 0, got " + std::to_string(epoch));
    if (skip_batches < 0 || skip_batches > batches_per_epoch())
        throw std::invalid_argument("loader: skip_batches must be in [0, " + std::to_string(batches_per_epoch()) +
                                    "], got " + std::to_string(skip_batches));
    {
        std::lock_guard<std::mutex> lock(mutex_);
        ++generation_;
        started_ = true;
        epoch_ = epoch;
        order_.resize(size_t(dataset_.size()));
        std::iota(order_.begin(), order_.end(), int64_t(0));
        if (options_.shuffle) {
            // Fisher-Yates with our own uniform draw: the same permutation
            // with every standard library.
            std::mt19937_64 rng(stream_seed(options_.seed, shuffle_stream, uint64_t(epoch)));
            for (size_t i = order_.size() - 1; i > 0; --i) std::swap(order_[i], order_[uniform_below(rng, i + 1)]);
        }
        next_to_claim_ = next_to_deliver_ = skip_batches;
        for (Slot& slot : slots_) {
            slot.ready = false;
            slot.error.clear();
        }
    }
    work_available_.notify_all();
}

bool DataLoader::fill_batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t generation, Batch& batch,
                            std::mt19937& rng) const {
    batch.c = dataset_.channels();
    batch.h = dataset_.height();
    batch.w = dataset_.width();
    const size_t sample_floats = size_t(batch.c * batch.h * batch.w);
    batch.images.resize(indices.size() * sample_floats);
    batch.labels.resize(indices.size());
    size_t kept = 0;
    for (int64_t index : indices) {
        if (generation_.load(std::memory_order_relaxed) != generation) return false;
        rng.seed(uint32_t(stream_seed(options_.seed ^ sample_stream, uint64_t(epoch), uint64_t(index))));
        if (dataset_.load(index, batch.images.data() + kept * sample_floats, rng, options_.train)) {
            batch.labels[kept] = dataset_.label(index);
            ++kept;
        }
    }
    batch.n = int64_t(kept);
    batch.images.resize(kept * sample_floats);
    batch.labels.resize(kept);
    return true;
}

void DataLoader::batch_indices(int64_t number, std::vector<int64_t>& indices) const {
    const int64_t first = number * options_.batch_size;
    const int64_t n = std::min(int64_t(order_.size()), first + options_.batch_size) - first;
    // Slice r of R is [n*r/R, n*(r+1)/R): sizes differ by at most one.
    const int64_t r = options_.shard_rank, R = options_.shard_count;
    indices.assign(order_.begin() + first + n * r / R, order_.begin() + first + n * (r + 1) / R);
}

bool DataLoader::can_claim() const {
    const int64_t in_flight_limit = int64_t(slots_.size());
    return started_ && next_to_claim_ < batches_per_epoch() && next_to_claim_ < next_to_deliver_ + in_flight_limit;
}

void DataLoader::worker_loop() {
    Batch work;  // this worker's buffer; swapped with a slot's when done
    std::vector<int64_t> indices;
    std::mt19937 rng;
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
        work_available_.wait(lock, [this] { return stopping_ || can_claim(); });
        if (stopping_) return;
        const int64_t number = next_to_claim_++;
        const int64_t epoch = epoch_, generation = generation_;
        batch_indices(number, indices);
        lock.unlock();

        std::string error;
        bool finished = false;
        try {
            finished = fill_batch(indices, epoch, generation, work, rng);
        } catch (const std::exception& e) {
            error = e.what();
            finished = true;
        } catch (...) {
            error = "unknown exception";
            finished = true;
        }

        lock.lock();
        if (!finished || generation != generation_) continue;  // start_epoch moved on
        Slot& slot = slots_[size_t(number) % slots_.size()];
        std::swap(slot.batch, work);
        slot.error = error.empty() ? "" : "data loader: batch " + std::to_string(number) + " of epoch " +
                                              std::to_string(epoch) + ": " + error;
        slot.ready = true;
        batch_ready_.notify_all();
    }
}

bool DataLoader::next(Batch& batch) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!started_) throw std::logic_error("loader: next() called before start_epoch()");
    while (next_to_deliver_ < batches_per_epoch()) {
        const int64_t number = next_to_deliver_;
        if (workers_.empty()) {
            // Inline loading: the same batches, made on this thread.
            batch_indices(number, inline_indices_);
            ++next_to_deliver_;
            lock.unlock();
            try {
                fill_batch(inline_indices_, epoch_, generation_, batch, inline_rng_);
            } catch (const std::exception& e) {
                throw std::runtime_error("data loader: batch " + std::to_string(number) + " of epoch " +
                                         std::to_string(epoch_) + ": " + e.what());
            }
            lock.lock();
        } else {
            Slot& slot = slots_[size_t(number) % slots_.size()];
            batch_ready_.wait(lock, [&] { return slot.ready; });
            slot.ready = false;
            ++next_to_deliver_;
            work_available_.notify_all();
            if (!slot.error.empty()) {
                std::string error = std::move(slot.error);
                slot.error.clear();
                throw std::runtime_error(error);
            }
            std::swap(batch, slot.batch);
        }
        if (batch.n > 0 || options_.shard_count > 1) return true;
    }
    return false;
}

}  // namespace qf::data
