// qforge's data loading: datasets, transforms, and a loader that batches
// samples on worker threads ahead of the training loop.
//
// Worked example (Fashion-MNIST, 3 epochs, resuming epoch 1 at batch 200):
//
//   #include "data/loader.h"
//   using namespace qf::data;
//
//   IdxOptions idx;
//   idx.transforms.horizontal_flip = true;
//   idx.transforms.mean = {0.2860f};
//   idx.transforms.std = {0.3530f};
//   idx.class_names = fashion_mnist_class_names();
//   IdxDataset train_set("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
//                        "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz", idx);
//
//   LoaderOptions opt;
//   opt.batch_size = 128;
//   opt.seed = 0;
//   DataLoader loader(train_set, opt);      // worker threads start here, once
//   Batch batch;                            // reused: no allocation per batch
//   for (int64_t epoch = 1; epoch < 3; ++epoch) {
//       loader.start_epoch(epoch, epoch == 1 ? 200 : 0);
//       while (loader.next(batch)) {
//           // batch.images: n x c x h x w floats, batch.labels: n int32
//       }
//   }
//
// An image folder (root/<class>/*.png ...) is the same with
// ImageFolderDataset(root, ImageFolderOptions{...}) in place of IdxDataset.
//
// Determinism: the order of epoch e is a function of (seed, e) only, and each
// sample's augmentation draws from a stream seeded by (seed, e, sample index),
// so batches are the same whatever the number of workers and however the
// threads are scheduled; start_epoch(e, k) yields exactly the batches k, k+1,
// ... that an uninterrupted epoch e would have.
//
// Sharding (data-parallel training): with shard_count = R, the loader of rank
// r yields, for each batch b, the r-th of R nearly equal consecutive slices
// of batch b as a one-process loader would make it. Concatenating the
// slices of ranks 0..R-1 gives back that batch, whatever R is, so a run
// resumed with another number of ranks continues the same sample order.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/transforms.h"

namespace qf::data {

struct Batch {
    std::vector<float> images;  // n x c x h x w, contiguous
    int64_t n = 0, c = 0, h = 0, w = 0;
    std::vector<int32_t> labels;  // n
};

struct LoaderOptions {
    int64_t batch_size = 128;
    bool shuffle = true;      // a fresh order each epoch, from (seed, epoch)
    bool drop_last = false;   // leave out the last, smaller batch
    bool train = true;        // apply the dataset's training augmentation
    uint64_t seed = 0;
    int num_workers = 1;      // decoding threads; 0: decode inside next()
    int prefetch_batches = 2; // batches decoded ahead (at least num_workers are)
    int shard_rank = 0;       // this process's slice of each batch ...
    int shard_count = 1;      // ... out of this many (see Sharding above)
};

class DataLoader {
public:
    // The dataset must outlive the loader. Throws std::invalid_argument for
    // bad options or an empty dataset.
    DataLoader(const Dataset& dataset, LoaderOptions options);
    ~DataLoader();  // stops and joins the workers
    DataLoader(const DataLoader&) = delete;
    DataLoader& operator=(const DataLoader&) = delete;

    // Begins epoch `epoch` at batch `skip_batches` (0 <= skip_batches <=
    // batches_per_epoch()), abandoning whatever was left of the previous one.
    void start_epoch(int64_t epoch, int64_t skip_batches = 0);

    // The next batch of the epoch into `batch` (its buffers are reused);
    // false at the end of the epoch. A batch whose samples were all skipped
    // as bad images is passed over, so skipped images make a batch smaller,
    // never empty; except when sharded: then every batch is delivered, empty
    // or not, so that all ranks take the same number of steps. Throws std::runtime_error with the worker's message if
    // loading the batch failed; the epoch can go on after that.
    bool next(Batch& batch);

    int64_t batches_per_epoch() const;
    const LoaderOptions& options() const { return options_; }

private:
    // A finished batch waiting to be taken by next().
    struct Slot {
        Batch batch;
        bool ready = false;
        std::string error;  // non-empty: loading failed with this message
    };

    void worker_loop();
    // Loads the samples `indices` (dataset indices) of `epoch` into `batch`.
    // Returns false if abandoned because start_epoch moved on (`generation`
    // is stale); throws whatever the dataset throws.
    bool fill_batch(const std::vector<int64_t>& indices, int64_t epoch, int64_t generation, Batch& batch,
                    std::mt19937& rng) const;
    bool can_claim() const;
    // The dataset indices of batch `number` of this epoch (this shard's slice).
    void batch_indices(int64_t number, std::vector<int64_t>& indices) const;

    const Dataset& dataset_;
    LoaderOptions options_;

    std::mutex mutex_;
    std::condition_variable work_available_;  // workers wait on it
    std::condition_variable batch_ready_;     // next() waits on it
    bool stopping_ = false;
    bool started_ = false;
    int64_t epoch_ = 0;
    std::atomic<int64_t> generation_{0};  // bumped by start_epoch: in-flight work is stale
    std::vector<int64_t> order_;          // this epoch's sample indices
    int64_t next_to_claim_ = 0;           // batch numbers within the epoch
    int64_t next_to_deliver_ = 0;
    std::vector<Slot> slots_;             // batch b waits in slots_[b % size]

    std::vector<std::thread> workers_;
    // Used by next() when num_workers == 0.
    std::vector<int64_t> inline_indices_;
    std::mt19937 inline_rng_;
};

}  // namespace qf::data
