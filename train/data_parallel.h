// Data-parallel training: what the Trainer does beyond a one-process run
// when mpirun starts it as R ranks (train/distributed.h). Every rank holds
// the whole model; each step each rank takes 1/R of the global batch
// (data/loader.h, Sharding), and the pieces below keep the ranks identical:
//
//   check_same_config      ranks that resolved different configs are refused
//   broadcast_state        rank 0's weights, buffers and optimizer state to all
//   reduce_observer_ranges activation observers see the global batch's range
//   SyncBatchNorm          (distributed.sync_bn) BN statistics of the global batch
//   GradientSum            gradients summed over ranks in buckets, started
//                          while backward still runs
//
// Gradients are summed, not averaged: each rank seeds its backward with
// n_rank / n_global instead of 1, so that its gradients are its share of the
// global batch's mean loss, and the sum over ranks is the gradient the
// one-process run of the same global batch computes (also when the last
// batch splits unevenly).
#pragma once
#include <vector>

#include "nn/layers.h"
#include "train/config.h"
#include "train/distributed.h"
#include "train/optimizer.h"

namespace qf::train {

// Throws ConfigError on every rank when some rank's resolved config differs
// from rank 0's: the message of a differing rank names the first key that
// differs with both values; rank 0's names the ranks that differ.
void check_same_config(const Config& cfg);

// Overwrites every rank's parameters and buffers (BN statistics, activation
// ranges, learned quantization ranges) and the optimizer's state and step
// count with rank 0's. `optimizer` may be null.
void broadcast_state(nn::Module& model, Optimizer* optimizer);

// QAT: makes every activation observer of `model` combine each batch's range
// with the other ranks' (min of the mins, max of the maxes) before using it,
// so that moving averages run on the global batch's ranges and the
// quantization parameters stay the same on every rank.
void reduce_observer_ranges(nn::Module& model);

// While alive, training-mode batch norm uses the statistics of the global
// batch (sum, sum of squares and count summed over ranks; likewise sum(dy)
// and sum(dy * xhat) in backward).
class SyncBatchNorm {
public:
    SyncBatchNorm();
    ~SyncBatchNorm();
    SyncBatchNorm(const SyncBatchNorm&) = delete;
    SyncBatchNorm& operator=(const SyncBatchNorm&) = delete;
};

// Sums the parameters' gradients over the ranks, in buckets of about
// bucket_mb. A bucket holds the parameters of consecutive top-level children
// of the model, taken from the last child back (the order backward finishes
// them). With overlap, forward() leaves a marker on the tape before each
// child; when backward reaches it, that child's and all later children's
// gradients are final, so the buckets they fill start their sum
// (MPI_Iallreduce) while backward goes on through the earlier children.
class GradientSum {
public:
    GradientSum(const nn::Sequential& model, const DistributedConfig& cfg);
    // The model's forward, child by child, leaving the markers (overlap) .
    Tensor forward(nn::Sequential& model, const Tensor& x);
    // After backward: starts the buckets not yet started, waits for all and
    // writes the sums into the gradients.
    void finish();
    // Bytes of gradients each rank sends into the sum per step, and the time
    // finish() spent waiting for them (seconds, since construction).
    int64_t bytes_per_step() const { return floats_ * (int64_t)sizeof(float); }
    double wait_seconds() const { return wait_seconds_; }
    size_t buckets() const { return buckets_.size(); }

private:
    struct Bucket {
        std::vector<Tensor> params;
        size_t first_child = 0;  // smallest child index among params
        std::vector<float> buffer;
        dist::PendingSum pending;
        bool started = false;
    };
    void start_ready(size_t child);  // buckets whose children are all >= child
    void start(Bucket& b);

    std::vector<Bucket> buckets_;  // in the order backward completes them
    bool overlap_;
    int64_t floats_ = 0;
    double wait_seconds_ = 0;
};

}  // namespace qf::train
