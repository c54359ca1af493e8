// The processes of one data-parallel job and the few collectives training
// needs, over MPI when qforge is built with it (QF_MPI) and the process was
// started by mpirun; otherwise a job of one process where every collective
// is the identity. The rest of qforge calls these unconditionally.
//
// Example:
//   dist::init(argc, argv);                 // MPI_Init_thread under mpirun
//   float g[3] = {...};
//   dist::allreduce_sum(g, 3);              // the sum over every rank, in place
//   if (dist::is_root()) write_checkpoint();
//   dist::finalize();
//
// Every collective must be called by every rank in the same order. A failed
// collective (a rank died, the network broke) throws DistributedError naming
// the call; the caller then ends the job with abort(), since the surviving
// ranks cannot finish a collective without the lost one.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace qf::train::dist {

struct DistributedError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Joins the job when launched by an MPI launcher (mpirun sets
// OMPI_COMM_WORLD_SIZE / PMI_SIZE / PMIX_RANK); a plain start stays a
// one-process job without touching MPI. Idempotent.
void init(int& argc, char**& argv);
// Leaves the job (MPI_Finalize): call once every rank is done.
void finalize();
// Ends every rank of the job now with `code` (MPI_Abort); for errors that
// leave the other ranks waiting in a collective. A one-process job exits.
[[noreturn]] void abort(int code);

bool built_with_mpi();
int rank();
int size();
inline bool is_root() { return rank() == 0; }

// In place, the element-wise sum / min / max over every rank.
void allreduce_sum(float* data, int64_t n);
void allreduce_sum(double* data, int64_t n);
void allreduce_min(float* data, int64_t n);
void allreduce_max(float* data, int64_t n);
// Overwrites `data` with rank 0's.
void broadcast(float* data, int64_t n);
void broadcast(int64_t* data, int64_t n);
void broadcast(std::string& text);
// Every rank waits for all the others, sleeping between polls so that a rank
// that waits (while rank 0 evaluates or writes) leaves the cores to it.
void wait_for_all();

// A sum over every rank started now and finished by wait(): the buffer is
// not touched by the caller in between, and the communication can run
// while the caller computes (it progresses whenever progress() or wait() is
// called, as MPI's non-blocking collectives do).
class PendingSum {
public:
    PendingSum() = default;
    PendingSum(float* data, int64_t n);  // starts the sum
    PendingSum(PendingSum&& o) noexcept;
    PendingSum& operator=(PendingSum&& o) noexcept;
    PendingSum(const PendingSum&) = delete;
    ~PendingSum();  // waits if still pending
    bool progress();  // true when done
    void wait();

private:
    void* request_ = nullptr;  // MPI_Request*, owned
};

// Bytes each rank has handed to collectives since start (payload, not the
// extra traffic of the reduction algorithm): for the per-step report.
int64_t bytes_communicated();

}  // namespace qf::train::dist
