#include "train/distributed.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <thread>
#include <utility>

#ifdef QF_WITH_MPI
#include <mpi.h>
#endif

namespace qf::train::dist {

namespace {
int g_rank = 0, g_size = 1;
[[maybe_unused]] bool g_mpi = false;  // this process joined an MPI job (always false without MPI)
int64_t g_bytes = 0;

#ifdef QF_WITH_MPI
// Collectives report failure by return code (MPI_ERRORS_RETURN, set in
// init) so that the message can say which call failed and why.
void check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw DistributedError(std::string(call) + " failed on rank " + std::to_string(g_rank) + " of " +
                           std::to_string(g_size) + ": " + std::string(text, (size_t)len) +
                           " (another rank has probably died; the job is ended)");
}

// MPI counts are int: longer buffers go in pieces.
template <class F>
void in_pieces(int64_t n, F&& f) {
    constexpr int64_t kPiece = std::numeric_limits<int>::max() / 2;
    for (int64_t at = 0; at < n; at += kPiece) f(at, (int)std::min(kPiece, n - at));
}

void allreduce(void* data, int64_t n, MPI_Datatype type, size_t elem, MPI_Op op) {
    if (!g_mpi || g_size == 1) return;
    g_bytes += n * (int64_t)elem;
    in_pieces(n, [&](int64_t at, int count) {
        check(MPI_Allreduce(MPI_IN_PLACE, (char*)data + at * elem, count, type, op, MPI_COMM_WORLD),
              "MPI_Allreduce");
    });
}

void bcast(void* data, int64_t n, MPI_Datatype type, size_t elem) {
    if (!g_mpi || g_size == 1) return;
    g_bytes += n * (int64_t)elem;
    in_pieces(n, [&](int64_t at, int count) {
        check(MPI_Bcast((char*)data + at * elem, count, type, 0, MPI_COMM_WORLD), "MPI_Bcast");
    });
}

// Tests `request` until done, sleeping between tests (MPI_Wait would spin a
// core that the ranks still computing need).
void wait_sleeping(MPI_Request& request, const char* call) {
    for (int done = 0;;) {
        check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
        if (done) return;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}
#endif

bool launched_by_mpirun() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
        if (std::getenv(v)) return true;
    return false;
}
}  // namespace

void init(int& argc, char**& argv) {
#ifdef QF_WITH_MPI
    if (g_mpi || !launched_by_mpirun()) return;
    // Only the main thread calls MPI; OpenMP and loader threads never do.
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw DistributedError("MPI_Init_thread failed");
    g_mpi = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
    (void)argc, (void)argv;
    if (launched_by_mpirun() && std::getenv("OMPI_COMM_WORLD_SIZE") &&
        std::string(std::getenv("OMPI_COMM_WORLD_SIZE")) != "1")
        throw DistributedError("started by mpirun with several ranks, but this train was built without MPI "
                               "(install libopenmpi-dev and rebuild): each rank would train alone");
#endif
}

void finalize() {
#ifdef QF_WITH_MPI
    if (g_mpi) MPI_Finalize();
    g_mpi = false;
#endif
}

void abort(int code) {
#ifdef QF_WITH_MPI
    if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    std::exit(code);
}

bool built_with_mpi() {
#ifdef QF_WITH_MPI
    return true;
#else
    return false;
#endif
}

int rank() { return g_rank; }
int size() { return g_size; }
int64_t bytes_communicated() { return g_bytes; }

#ifdef QF_WITH_MPI
void allreduce_sum(float* d, int64_t n) { allreduce(d, n, MPI_FLOAT, sizeof(float), MPI_SUM); }
void allreduce_sum(double* d, int64_t n) { allreduce(d, n, MPI_DOUBLE, sizeof(double), MPI_SUM); }
void allreduce_min(float* d, int64_t n) { allreduce(d, n, MPI_FLOAT, sizeof(float), MPI_MIN); }
void allreduce_max(float* d, int64_t n) { allreduce(d, n, MPI_FLOAT, sizeof(float), MPI_MAX); }
void broadcast(float* d, int64_t n) { bcast(d, n, MPI_FLOAT, sizeof(float)); }
void broadcast(int64_t* d, int64_t n) { bcast(d, n, MPI_INT64_T, sizeof(int64_t)); }

void broadcast(std::string& text) {
    if (!g_mpi || g_size == 1) return;
    int64_t length = (int64_t)text.size();
    broadcast(&length, 1);
    text.resize((size_t)length);
    bcast(text.data(), length, MPI_CHAR, 1);
}

void wait_for_all() {
    if (!g_mpi || g_size == 1) return;
    MPI_Request request;
    check(MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier");
    wait_sleeping(request, "MPI_Ibarrier");
}

PendingSum::PendingSum(float* data, int64_t n) {
    if (!g_mpi || g_size == 1) return;
    if (n > std::numeric_limits<int>::max())
        throw DistributedError("PendingSum: " + std::to_string(n) + " floats exceed one MPI count; use smaller buckets");
    g_bytes += n * (int64_t)sizeof(float);
    auto* request = new MPI_Request;
    const int rc = MPI_Iallreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, request);
    if (rc != MPI_SUCCESS) delete request;
    check(rc, "MPI_Iallreduce");
    request_ = request;
}

bool PendingSum::progress() {
    if (!request_) return true;
    int done = 0;
    check(MPI_Test(static_cast<MPI_Request*>(request_), &done, MPI_STATUS_IGNORE), "MPI_Iallreduce (test)");
    if (done) {
        delete static_cast<MPI_Request*>(request_);
        request_ = nullptr;
    }
    return done;
}

void PendingSum::wait() {
    if (!request_) return;
    auto* request = static_cast<MPI_Request*>(request_);
    request_ = nullptr;
    const int rc = MPI_Wait(request, MPI_STATUS_IGNORE);
    delete request;
    check(rc, "MPI_Iallreduce (wait)");
}

PendingSum::~PendingSum() {
    // Only reached pending when an exception unwinds: the job is ending, and
    // freeing the request beats waiting on a peer that may be gone.
    if (request_) {
        MPI_Request_free(static_cast<MPI_Request*>(request_));
        delete static_cast<MPI_Request*>(request_);
    }
}
#else
void allreduce_sum(float*, int64_t) {}
void allreduce_sum(double*, int64_t) {}
void allreduce_min(float*, int64_t) {}
void allreduce_max(float*, int64_t) {}
void broadcast(float*, int64_t) {}
void broadcast(int64_t*, int64_t) {}
void broadcast(std::string&) {}
void wait_for_all() {}
PendingSum::PendingSum(float*, int64_t) {}
bool PendingSum::progress() { return true; }
void PendingSum::wait() {}
PendingSum::~PendingSum() = default;
#endif

PendingSum::PendingSum(PendingSum&& o) noexcept : request_(std::exchange(o.request_, nullptr)) {}
PendingSum& PendingSum::operator=(PendingSum&& o) noexcept {
    std::swap(request_, o.request_);
    return *this;
}

}  // namespace qf::train::dist
