// Peak multiply-accumulate rates of one core for the four inner loops an
// int8 or fp32 convolution can be built on, so that the speed targets of
// docs/infer_speed.md can be read against what the hardware allows:
//  - fp32:        vfmadd231ps                          8 MACs per instruction
//  - int16 exact: vpmaddwd + vpaddd (qforge's kernels) 16 MACs per pair
//  - u8 x s8:     vpmaddubsw + vpmaddwd(1) + vpaddd    32 MACs per triple, but
//                 vpmaddubsw saturates its int16 pair sums (the path of
//                 PyTorch's fbgemm/onednn on AVX2 without VNNI)
//  - s8 sign:     vpsignb + vpmaddubsw + vpmaddwd(1) + vpaddd: exact when
//                 weights are in [-127, 127] (see s8_sign_maddubs)
// Each loop keeps independent accumulators in registers and runs 100M
// iterations; the four alternate, 7 times, and each rate is the median (on
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

int first_lane(__m256 v) { return int(_mm256_cvtss_f32(v)); }
int first_lane(__m256i v) { return _mm256_cvtsi256_si32(v); }

// Time per step of kIterations of acc = step(acc, a), in independent chains
// the compiler cannot merge (asm volatile hides their values).
//  - The integer loops have only the add on the chain: 4 chains hide its
//    latency. Each chain gets its own operand `a`, hidden every iteration:
//    with one shared operand the compiler computes the multiplies once per
//    iteration and the loop times only the adds. 4 x 2 operands fit in the
//    16 ymm registers (spilled accumulators would time the stores).
//  - The fp32 FMA is itself on the chain (latency 4, two per cycle): it needs
//    8 chains, and cannot be merged even with a shared operand.
#define CHAINS4(X) X(0) X(1) X(2) X(3)
#define CHAINS8(X) CHAINS4(X) X(4) X(5) X(6) X(7)
#define DECLARE(i) \
    V acc##i = a;   \
    asm volatile("" : "+x"(acc##i));
#define DECLARE_OPERAND(i) V a##i = a;
#define STEP_OWN_OPERAND(i)        \
    asm volatile("" : "+x"(a##i)); \
    acc##i = step(acc##i, a##i);
#define STEP_SHARED_OPERAND(i) acc##i = step(acc##i, a);
#define SUM(i) +first_lane(acc##i)
#define TIME_CHAINS(CHAINS, STEP, HIDE_SHARED, n)                      \
    return seconds([&] {                                              \
               CHAINS(DECLARE) for (long it = 0; it < kIterations; ++it) { \
                   HIDE_SHARED;                                       \
                   CHAINS(STEP)                                       \
               }                                                      \
               sink = 0 CHAINS(SUM);                                  \
           }) /                                                       \
           (double(kIterations) * n);

template <class V, class Step>
double time_4_chains(V a, Step step) {
    CHAINS4(DECLARE_OPERAND)
    TIME_CHAINS(CHAINS4, STEP_OWN_OPERAND, (void)0, 4)
}

template <class V, class Step>
double time_8_chains(V a, Step step) {
    TIME_CHAINS(CHAINS8, STEP_SHARED_OPERAND, asm volatile("" : "+x"(a)), 8)
}

double fp32_fma() {
    const __m256 w = _mm256_set1_ps(0.999f);
    return time_8_chains(_mm256_set1_ps(1.001f), [w](__m256 acc, __m256 a) { return _mm256_fmadd_ps(a, w, acc); });
}

double int16_madd() {
    const __m256i w = _mm256_set1_epi16(3);
    return time_4_chains(_mm256_set1_epi16(5),
                       [w](__m256i acc, __m256i a) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, w)); });
}

double u8s8_maddubs() {
    const __m256i w = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    return time_4_chains(_mm256_set1_epi8(5), [w, ones](__m256i acc, __m256i a) {
        return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), ones));
    });
}

// The exact use of vpmaddubsw: |a| (at most 128) times w with a's sign
// moved onto it (vpsignb); with |w| <= 127 a pair sums to at most 32512, so
// nothing saturates. Needs weights in [-127, 127] (narrow range).
double s8_sign_maddubs() {
    const __m256i w = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    return time_4_chains(_mm256_set1_epi8(-5), [w, ones](__m256i acc, __m256i a) {
        const __m256i product_pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a));
        return _mm256_add_epi32(acc, _mm256_madd_epi16(product_pairs, ones));
    });
}

}  // namespace

int main() {
    std::vector<double> t_fp32, t_int16, t_u8s8, t_sign;
    for (int rep = 0; rep < 7; ++rep) {
        t_fp32.push_back(fp32_fma());
        t_int16.push_back(int16_madd());
        t_u8s8.push_back(u8s8_maddubs());
        t_sign.push_back(s8_sign_maddubs());
    }
    const double fp32 = 8 / median(t_fp32) / 1e9;
    const double int16 = 16 / median(t_int16) / 1e9;
    const double u8s8 = 32 / median(t_u8s8) / 1e9;
    const double sign = 32 / median(t_sign) / 1e9;
    std::printf("one core, median of 7 runs, GMAC/s:\n");
    std::printf("  fp32 vfmadd231ps                      %6.1f\n", fp32);
    std::printf("  int16 vpmaddwd + vpaddd (exact)       %6.1f  (%.2fx fp32)\n", int16, int16 / fp32);
    std::printf("  u8s8 vpmaddubsw chain (saturating)    %6.1f  (%.2fx fp32, %.2fx int16)\n", u8s8, u8s8 / fp32,
                u8s8 / int16);
    std::printf("  s8 vpsignb + vpmaddubsw chain (exact)  %6.1f  (%.2fx fp32, %.2fx int16)\n", sign, sign / fp32,
                sign / int16);
    std::printf("RESULT fp32_gmacs=%.1f int16_gmacs=%.1f u8s8_gmacs=%.1f sign_gmacs=%.1f\n", fp32, int16, u8s8, sign);
}
