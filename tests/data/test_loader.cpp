#include <doctest/doctest.h>

#include <chrono>
#include <set>
#include <thread>

#include "data/loader.h"

using namespace qf::data;

namespace {

// Samples of shape 2x1x2: [index, a random draw, label, index]; the draw
// shows that augmentation randomness follows the sample, not the thread.
class SyntheticDataset : public Dataset {
public:
    explicit SyntheticDataset(int64_t n) : n_(n) {}
    int64_t fail_at = -1;               // load throws for this index
    std::set<int64_t> skipped;          // load returns false for these
    bool jitter = false;                // sleep a little to scramble thread timing

    int64_t size() const override { return n_; }
    const std::vector<std::string>& class_names() const override { return names_; }
    int channels() const override { return 2; }
    int height() const override { return 1; }
    int width() const override { return 2; }
    int32_t label(int64_t index) const override { return int32_t(index % 3); }
    bool load(int64_t index, float* out, std::mt19937& rng, bool train) const override {
        if (jitter && index % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200 + index % 5 * 100));
        if (index == fail_at) throw std::runtime_error("sample " + std::to_string(index) + " is broken");
        if (skipped.count(index)) return false;
        out[0] = float(index);
        out[1] = float(rng() % 100000);
        out[2] = float(label(index));
        out[3] = train ? 1.0f : 0.0f;
        return true;
    }

private:
    int64_t n_;
    std::vector<std::string> names_ = {"a", "b", "c"};
};

// Every batch of one epoch, flattened to compare whole epochs.
struct EpochRecord {
    std::vector<std::vector<float>> images;
    std::vector<std::vector<int32_t>> labels;
    bool operator==(const EpochRecord&) const = default;
};

EpochRecord run_epoch(DataLoader& loader, int64_t epoch, int64_t skip = 0) {
    loader.start_epoch(epoch, skip);
    EpochRecord record;
    Batch batch;
    while (loader.next(batch)) {
        REQUIRE(batch.images.size() == size_t(batch.n * batch.c * batch.h * batch.w));
        REQUIRE(batch.labels.size() == size_t(batch.n));
        record.images.push_back(batch.images);
        record.labels.push_back(batch.labels);
    }
    return record;
}

LoaderOptions options(int workers, int64_t batch_size = 4, uint64_t seed = 7) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.num_workers = workers;
    o.seed = seed;
    return o;
}

}  // namespace

TEST_CASE("loader: every sample once per epoch, a new order each epoch") {
    SyntheticDataset ds(23);
    DataLoader loader(ds, options(2));
    CHECK(loader.batches_per_epoch() == 6);
    EpochRecord e0 = run_epoch(loader, 0), e1 = run_epoch(loader, 1);
    REQUIRE(e0.images.size() == 6);
    CHECK(e0.images.back().size() == 3 * 4);  // 23 = 5 * 4 + 3
    for (const EpochRecord* e : {&e0, &e1}) {
        std::set<int> seen;
        for (size_t b = 0; b < e->images.size(); ++b)
            for (size_t i = 0; i < e->labels[b].size(); ++i) {
                const float* sample = &e->images[b][i * 4];
                seen.insert(int(sample[0]));
                CHECK(e->labels[b][i] == int32_t(sample[2]));
                CHECK(sample[3] == 1.0f);
            }
        CHECK(seen.size() == 23);
    }
    CHECK_FALSE(e0 == e1);
    CHECK(run_epoch(loader, 0) == e0);  // epoch 0 again: the same batches
}

TEST_CASE("loader: the same batches whatever the number of workers") {
    SyntheticDataset ds(50);
    ds.jitter = true;
    DataLoader inline_loader(ds, options(0, 6));
    EpochRecord reference = run_epoch(inline_loader, 3);
    for (int workers : {1, 2, 4}) {
        for (int prefetch : {1, 3}) {
            LoaderOptions o = options(workers, 6);
            o.prefetch_batches = prefetch;
            DataLoader loader(ds, o);
            CHECK(run_epoch(loader, 3) == reference);
        }
    }
    DataLoader other_seed(ds, options(2, 6, 8));
    CHECK_FALSE(run_epoch(other_seed, 3) == reference);
}

TEST_CASE("loader: resuming with skip_batches continues exactly") {
    SyntheticDataset ds(37);
    ds.jitter = true;
    DataLoader loader(ds, options(3, 5));
    EpochRecord full = run_epoch(loader, 2);
    // Interrupt halfway through an epoch (start_epoch abandons it), then resume.
    loader.start_epoch(2);
    Batch batch;
    REQUIRE(loader.next(batch));
    REQUIRE(loader.next(batch));
    DataLoader resumed_loader(ds, options(1, 5));
    EpochRecord resumed = run_epoch(resumed_loader, 2, 3);
    REQUIRE(resumed.images.size() == full.images.size() - 3);
    for (size_t b = 0; b < resumed.images.size(); ++b) {
        CHECK(resumed.images[b] == full.images[b + 3]);
        CHECK(resumed.labels[b] == full.labels[b + 3]);
    }
    CHECK(run_epoch(loader, 2, loader.batches_per_epoch()).images.empty());
    CHECK_THROWS_AS(loader.start_epoch(2, loader.batches_per_epoch() + 1), std::invalid_argument);
}

TEST_CASE("loader: drop_last, no shuffle, evaluation mode") {
    SyntheticDataset ds(10);
    LoaderOptions o = options(1, 4);
    o.drop_last = true;
    o.shuffle = false;
    o.train = false;
    DataLoader loader(ds, o);
    CHECK(loader.batches_per_epoch() == 2);
    EpochRecord e = run_epoch(loader, 0);
    REQUIRE(e.images.size() == 2);
    CHECK(e.images[1][0] == 4.0f);  // in order: the second batch starts at sample 4
    CHECK(e.images[1][3] == 0.0f);  // train = false reached the dataset
}

TEST_CASE("loader: a worker's exception reaches the caller, and the epoch goes on") {
    for (int workers : {0, 2}) {
        CAPTURE(workers);
        SyntheticDataset ds(12);
        ds.fail_at = 5;
        LoaderOptions o = options(workers, 4);
        o.shuffle = false;
        DataLoader loader(ds, o);
        loader.start_epoch(0);
        Batch batch;
        REQUIRE(loader.next(batch));
        CHECK_THROWS_WITH_AS(loader.next(batch), doctest::Contains("batch 1 of epoch 0: sample 5 is broken"),
                             std::runtime_error);
        REQUIRE(loader.next(batch));
        CHECK(batch.images[0] == 8.0f);
        CHECK_FALSE(loader.next(batch));
    }
}

TEST_CASE("loader: skipped samples make a batch smaller; an all-skipped batch is passed over") {
    SyntheticDataset ds(12);
    ds.skipped = {1, 4, 5, 6, 7};
    LoaderOptions o = options(2, 4);
    o.shuffle = false;
    DataLoader loader(ds, o);
    EpochRecord e = run_epoch(loader, 0);
    REQUIRE(e.labels.size() == 2);
    CHECK(e.labels[0].size() == 3);
    CHECK(e.images[0][4] == 2.0f);  // sample 1 left out: the second is sample 2
    CHECK(e.images[1][0] == 8.0f);
}

TEST_CASE("loader: misuse and shutdown") {
    SyntheticDataset ds(100);
    ds.jitter = true;
    {
        DataLoader loader(ds, options(2, 3));
        Batch batch;
        CHECK_THROWS_AS(loader.next(batch), std::logic_error);
        loader.start_epoch(0);
        REQUIRE(loader.next(batch));
        // Destroyed with batches in flight: must join cleanly.
    }
    CHECK_THROWS_AS(DataLoader(ds, options(-1)), std::invalid_argument);
    CHECK_THROWS_AS(DataLoader(ds, options(1, 0)), std::invalid_argument);
    SyntheticDataset empty(0);
    CHECK_THROWS_WITH_AS(DataLoader(empty, options(1)), doctest::Contains("dataset is empty"), std::invalid_argument);
}

TEST_CASE("loader: shards of a batch concatenate to the one-process batch, every epoch") {
    // 23 samples in batches of 8: the last batch has 7, so 3 shards get 2, 2, 3.
    SyntheticDataset ds(23);
    DataLoader whole(ds, options(1, 8));
    for (int64_t epoch : {0, 3}) {
        const EpochRecord expected = run_epoch(whole, epoch);
        std::vector<EpochRecord> shards;
        for (int r = 0; r < 3; r++) {
            LoaderOptions o = options(r % 2, 8);  // inline and threaded loading alike
            o.shard_rank = r;
            o.shard_count = 3;
            DataLoader loader(ds, o);
            shards.push_back(run_epoch(loader, epoch));
        }
        EpochRecord joined;
        for (size_t b = 0; b < expected.labels.size(); b++) {
            std::vector<float> images;
            std::vector<int32_t> labels;
            for (const EpochRecord& s : shards) {
                REQUIRE(s.labels.size() == expected.labels.size());
                images.insert(images.end(), s.images[b].begin(), s.images[b].end());
                labels.insert(labels.end(), s.labels[b].begin(), s.labels[b].end());
            }
            joined.images.push_back(images);
            joined.labels.push_back(labels);
        }
        CHECK(joined == expected);
        CHECK(shards[0].labels.back().size() == 2);
        CHECK(shards[2].labels.back().size() == 3);
    }
}

TEST_CASE("loader: a shard with nothing left is still delivered, so every rank steps together") {
    SyntheticDataset ds(9);  // batches of 8 and 1: with 2 shards, shard 0 gets none of the last
    LoaderOptions o = options(1, 8);
    o.shuffle = false;
    o.shard_count = 2;
    DataLoader loader(ds, o);
    EpochRecord e = run_epoch(loader, 0);
    REQUIRE(e.labels.size() == 2);
    CHECK(e.labels[0].size() == 4);
    CHECK(e.labels[1].empty());
    o.shard_rank = 2;
    CHECK_THROWS_WITH_AS(DataLoader(ds, o), doctest::Contains("shard 2 of 2"), std::invalid_argument);
}
