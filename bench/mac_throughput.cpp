// Peak multiply-accumulate rates of one core for the three inner loops an
// int8 or fp32 convolution can be built on, so that the speed targets of
// docs/infer_speed.md can be read against what the hardware allows:
//  - fp32:        vfmadd231ps                          8 MACs per instruction
//  - int16 exact: vpmaddwd + vpaddd (qforge's kernels) 16 MACs per pair
//  - u8 x s8:     vpmaddubsw + vpmaddwd(1) + vpaddd    32 MACs per triple, but
//                 vpmaddubsw saturates its int16 pair sums (the path of
//                 PyTorch's fbgemm/onednn on AVX2 without VNNI)
// Each loop keeps 8 independent accumulators in registers and runs 100M
// iterations; the three alternate, 7 times, and each rate is the median (on
// a shared machine, the ratios are what to read).
//   build/bench/mac_throughput
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace {

constexpr long kIterations = 100'000'000;

template <class Loop>
double seconds(Loop loop) {
    const auto t0 = std::chrono::steady_clock::now();
    loop();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Folds the accumulators into one value so that the compiler keeps the loop.
volatile int sink;

#define EIGHT(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

double fp32_fma() {
    return seconds([] {
        __m256 w = _mm256_set1_ps(0.999f), a = _mm256_set1_ps(1.001f);
#define DECL(i) __m256 acc##i = _mm256_set1_ps(float(i));
        EIGHT(DECL)
#undef DECL
        for (long it = 0; it < kIterations; ++it) {
            asm volatile("" : "+x"(a));
#define STEP(i) acc##i = _mm256_fmadd_ps(a, w, acc##i);
            EIGHT(STEP)
#undef STEP
        }
#define SUM(i) +_mm256_cvtss_f32(acc##i)
        sink = int(0 EIGHT(SUM));
#undef SUM
    });
}

double int16_madd() {
    return seconds([] {
        __m256i w = _mm256_set1_epi16(3), a = _mm256_set1_epi16(5);
#define DECL(i) __m256i acc##i = _mm256_set1_epi32(i);
        EIGHT(DECL)
#undef DECL
        for (long it = 0; it < kIterations; ++it) {
            asm volatile("" : "+x"(a));
#define STEP(i) acc##i = _mm256_add_epi32(acc##i, _mm256_madd_epi16(a, w));
            EIGHT(STEP)
#undef STEP
        }
#define SUM(i) +_mm256_cvtsi256_si32(acc##i)
        sink = 0 EIGHT(SUM);
#undef SUM
    });
}

double u8s8_maddubs() {
    return seconds([] {
        __m256i w = _mm256_set1_epi8(3), a = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
#define DECL(i) __m256i acc##i = _mm256_set1_epi32(i);
        EIGHT(DECL)
#undef DECL
        for (long it = 0; it < kIterations; ++it) {
            asm volatile("" : "+x"(a));
#define STEP(i) acc##i = _mm256_add_epi32(acc##i, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones));
            EIGHT(STEP)
#undef STEP
        }
#define SUM(i) +_mm256_cvtsi256_si32(acc##i)
        sink = 0 EIGHT(SUM);
#undef SUM
    });
}

}  // namespace

int main() {
    std::vector<double> t_fp32, t_int16, t_u8s8;
    for (int rep = 0; rep < 7; ++rep) {
        t_fp32.push_back(fp32_fma());
        t_int16.push_back(int16_madd());
        t_u8s8.push_back(u8s8_maddubs());
    }
    const double steps = double(kIterations) * 8;  // 8 accumulators per iteration
    const double fp32 = steps * 8 / median(t_fp32) / 1e9;
    const double int16 = steps * 16 / median(t_int16) / 1e9;
    const double u8s8 = steps * 32 / median(t_u8s8) / 1e9;
    std::printf("one core, median of 7 runs, GMAC/s:\n");
    std::printf("  fp32 vfmadd231ps                      %6.1f\n", fp32);
    std::printf("  int16 vpmaddwd + vpaddd (exact)       %6.1f  (%.2fx fp32)\n", int16, int16 / fp32);
    std::printf("  u8s8 vpmaddubsw chain (saturating)    %6.1f  (%.2fx fp32, %.2fx int16)\n", u8s8, u8s8 / fp32,
                u8s8 / int16);
    std::printf("RESULT fp32_gmacs=%.1f int16_gmacs=%.1f u8s8_gmacs=%.1f\n", fp32, int16, u8s8);
}
