#include "autograd/gemm.h"

#include <blis.h>
#include <omp.h>

namespace qf {

namespace {
int g_threads = 0;  // 0: not set yet, use OpenMP's default
}

void set_num_threads(int n) {
    g_threads = n;
    omp_set_num_threads(n);
    bli_thread_set_num_threads(n);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc, int threads) {
    if (M == 0 || N == 0) return;
    // BLIS takes row and column strides, so row-major needs no transposition trick.
    rntm_t rntm;
    bli_rntm_init(&rntm);
    bli_rntm_set_num_threads(threads > 0 ? threads : num_threads(), &rntm);
    bli_sgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, M, N, K, &alpha,
                 const_cast<float*>(A), lda, 1, const_cast<float*>(B), ldb, 1, &beta, C, ldc, 1,
                 nullptr, &rntm);
}

}  // namespace qf
