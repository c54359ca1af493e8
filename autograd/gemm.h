// Every float matrix product in qforge goes through this one BLIS call.
#pragma once
#include <cstdint>

namespace qf {

// C = alpha * op(A) * op(B) + beta * C, row-major; op(X) = X or X^T.
// op(A) is M x K, op(B) is K x N, C is M x N with leading dimension ldc.
// `threads` BLIS threads (0: the process-wide setting of set_num_threads).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc, int threads = 0);

// Sets OpenMP's and BLIS's thread counts for the whole process.
void set_num_threads(int n);
int num_threads();

}  // namespace qf
