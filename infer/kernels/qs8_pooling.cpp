// Pooling kernels: each output pixel visits the window's in-image taps only
// (padding is skipped by max pooling and adds 0 to an average's sum, as in
// the reference kernels), with the channels of a tap contiguous in NHWC.
#include "infer/kernels/qs8_pooling.h"

#include <algorithm>

#include "infer/kernels/threading.h"

#ifdef __AVX2__
#include <immintrin.h>

#include "infer/kernels/requantize_avx2.h"
#endif

namespace qf::infer {

namespace {

// The in-image window of output pixel (oy, ox): rows [y0, y1), columns [x0, x1).
struct Window {
    int y0, y1, x0, x1;
    int taps() const { return (y1 - y0) * (x1 - x0); }
};
Window window(const PoolParams& p, int oy, int ox) {
    const int y = oy * p.stride_h - p.pad_top, x = ox * p.stride_w - p.pad_left;
    return {std::max(y, 0), std::min(y + p.kernel_h, p.in_h), std::max(x, 0), std::min(x + p.kernel_w, p.in_w)};
}

// Output pixel (oy, ox) of one image: the max over the window, clamped.
void max_pixel(const PoolParams& p, const int8_t* image, int oy, int ox, int8_t* out, bool use_simd) {
    const Window win = window(p, oy, ox);
    const int channels = p.channels;
    auto tap = [&](int iy, int ix) { return image + (size_t(iy) * p.in_w + ix) * channels; };
    int c = 0;
#ifdef __AVX2__
    if (use_simd) {
        const __m256i lo = _mm256_set1_epi8(int8_t(p.output.min)), hi = _mm256_set1_epi8(int8_t(p.output.max));
        for (; c + 32 <= channels; c += 32) {
            __m256i m = _mm256_set1_epi8(-128);
            for (int iy = win.y0; iy < win.y1; ++iy)
                for (int ix = win.x0; ix < win.x1; ++ix)
                    m = _mm256_max_epi8(m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tap(iy, ix) + c)));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), _mm256_min_epi8(_mm256_max_epi8(m, lo), hi));
        }
        for (; c + 16 <= channels; c += 16) {
            __m128i m = _mm_set1_epi8(-128);
            for (int iy = win.y0; iy < win.y1; ++iy)
                for (int ix = win.x0; ix < win.x1; ++ix)
                    m = _mm_max_epi8(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(tap(iy, ix) + c)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c),
                             _mm_min_epi8(_mm_max_epi8(m, _mm256_castsi256_si128(lo)), _mm256_castsi256_si128(hi)));
        }
    }
#endif
    for (; c < channels; ++c) {
        int32_t m = -128;
        for (int iy = win.y0; iy < win.y1; ++iy)
            for (int ix = win.x0; ix < win.x1; ++ix) m = std::max<int32_t>(m, tap(iy, ix)[c]);
        out[c] = int8_t(std::clamp(m, p.output.min, p.output.max));
    }
}

// Output pixel (oy, ox) of one image: the window sum of x - zx, requantized.
void average_pixel(const PoolParams& p, const int8_t* image, int oy, int ox, int8_t* out, bool use_simd) {
    const Window win = window(p, oy, ox);
    const int channels = p.channels;
    // sum (x - zx) over the taps = sum x - taps * zx, exactly (no int32 overflow: validate_average_pool).
    const int32_t zero_sum = win.taps() * p.input_zero_point;
    auto tap = [&](int iy, int ix) { return image + (size_t(iy) * p.in_w + ix) * channels; };
    int c = 0;
#ifdef __AVX2__
    if (use_simd) {
        const QuantizedMultiplier m = p.multiplier;
        const avx2::RequantizeLanes q = avx2::make_requantize_lanes(
            _mm256_set1_epi32(m.M0), _mm256_set1_epi32(m.shift), p.output.zero_point, p.output.min, p.output.max);
        const __m256i zero = _mm256_set1_epi32(zero_sum);
        for (; c + 8 <= channels; c += 8) {
            __m256i sum = _mm256_setzero_si256();
            for (int iy = win.y0; iy < win.y1; ++iy)
                for (int ix = win.x0; ix < win.x1; ++ix)
                    sum = _mm256_add_epi32(sum, _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                                                    reinterpret_cast<const __m128i*>(tap(iy, ix) + c))));
            avx2::store_int8x8(out + c, avx2::requantize(_mm256_sub_epi32(sum, zero), q));
        }
    }
#endif
    for (; c < channels; ++c) {
        int32_t sum = 0;
        for (int iy = win.y0; iy < win.y1; ++iy)
            for (int ix = win.x0; ix < win.x1; ++ix) sum += tap(iy, ix)[c];
        out[c] = int8_t(requantize(sum - zero_sum, p.multiplier.M0, p.multiplier.shift, p.output.zero_point,
                                   p.output.min, p.output.max));
    }
}

template <class PixelKernel>
void pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output, bool use_simd,
          PixelKernel pixel_kernel) {
    const int out_h = p.out_h(), out_w = p.out_w(), channels = p.channels;
    const int64_t work = int64_t(batch) * p.in_h * p.in_w * channels;
    const int rows = batch * out_h;
#pragma omp parallel for schedule(static) num_threads(threads_for(work, kMinValuesPerThread))
    for (int row = 0; row < rows; ++row) {
        const int b = row / out_h, oy = row % out_h;
        const int8_t* image = input + size_t(b) * p.in_h * p.in_w * channels;
        int8_t* out = output + (size_t(row) * out_w) * channels;
        for (int ox = 0; ox < out_w; ++ox) pixel_kernel(p, image, oy, ox, out + size_t(ox) * channels, use_simd);
    }
}

}  // namespace

void qs8_max_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output, bool use_simd) {
    pool(p, batch, input, output, use_simd, max_pixel);
}

void qs8_average_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output, bool use_simd) {
    pool(p, batch, input, output, use_simd, average_pixel);
}

}  // namespace qf::infer
