// How many OpenMP threads a kernel call gets: one per `min_work_per_thread`
// units of work, at most omp_get_max_threads(). Small layers (batch 1, late
// stages) then run on the calling thread: forking costs microseconds on an
// idle machine and far more on a loaded one, where the second thread may
// wait for a core the other processes hold.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace qf::infer {

inline int threads_for(int64_t work, int64_t min_work_per_thread) {
    const int64_t wanted = work / std::max<int64_t>(min_work_per_thread, 1);
    return int(std::clamp<int64_t>(wanted, 1, omp_get_max_threads()));
}

// Multiply-adds per thread for the conv, FC and depthwise kernels (about
// 20-50 microseconds of work on one core).
constexpr int64_t kMinMacsPerThread = int64_t(1) << 20;
// Values read per thread for the add and pooling kernels.
constexpr int64_t kMinValuesPerThread = int64_t(1) << 15;

}  // namespace qf::infer
