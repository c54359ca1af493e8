#include "infer/kernels/conv2d.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "infer/kernels/threading.h"

namespace qf::infer {

// Kernel::gemm_padded_input: a GEMM row is the kernel window of one output
// pixel, read in place from the padded int16 input as runs of contiguous
// values: one run per kernel row (kernel_w * in_c values) when groups == 1,
// else one per tap (the group's in_c / groups values). Returns where each run
// starts, counted from the window's first value of group 0.
static std::vector<size_t> window_run_offsets(const Conv2dParams& p) {
    std::vector<size_t> offsets;
    for (int ky = 0; ky < p.kernel_h; ++ky)
        for (int kx = 0; kx < (p.groups == 1 ? 1 : p.kernel_w); ++kx)
            offsets.push_back((size_t(ky) * p.padded_w() + size_t(kx)) * p.in_c);
    return offsets;
}

Conv2d::Conv2d(const Conv2dParams& p, const int8_t* weights, const int32_t* bias, Winograd winograd)
    : params_(p) {
    validate(p, weights, bias);
    if (is_depthwise3x3(p)) {
        kernel_ = Kernel::depthwise3x3;
        depthwise_ = pack_depthwise3x3(p, weights, bias);
        return;
    }
    const bool winograd_wanted = winograd == Winograd::whenever_exact ||
                                 (winograd == Winograd::when_faster && p.in_c >= kWinogradMinInChannels);
    if (winograd_wanted && is_winograd3x3_shape(p))
        if (std::optional<PackedWinograd3x3> packed = pack_winograd3x3(p, weights, bias)) {
            kernel_ = Kernel::winograd3x3;
            winograd_ = std::move(*packed);
            return;
        }
    const bool pointwise = p.kernel_h == 1 && p.kernel_w == 1 && p.pad_top == 0 && p.pad_left == 0 &&
                           p.pad_bottom == 0 && p.pad_right == 0;
    kernel_ = pointwise ? Kernel::gemm_pointwise : Kernel::gemm_padded_input;
    if (!pointwise) window_runs_ = window_run_offsets(p);
    const int out_c_per_group = p.out_c_per_group(), k = p.weights_per_out_channel();
    for (int g = 0; g < p.groups; ++g) {
        // This group's slice of the per-channel vectors (per-tensor ones stay as they are).
        auto slice = [&](const auto& v) {
            using V = std::decay_t<decltype(v)>;
            return v.size() == 1 ? v : V(v.begin() + g * out_c_per_group, v.begin() + (g + 1) * out_c_per_group);
        };
        const size_t first = size_t(g) * out_c_per_group;
        groups_.push_back(pack_gemm(out_c_per_group, k, weights + first * k, bias ? bias + first : nullptr,
                                    slice(p.weight_zero_points), p.input_zero_point, slice(p.multipliers),
                                    p.output, pointwise ? 1 : int(window_runs_.size())));
    }
}

void Conv2d::run(int batch, const int8_t* input, int8_t* output, bool use_simd) const {
    if (kernel_ == Kernel::depthwise3x3)
        qs8_dwconv3x3(depthwise_, batch, input, output, use_simd);
    else
        run_gemm(batch, input, output, use_simd);
}

// An output pixel (b, oy, ox), walked in order: a thread's panels are
// consecutive, so one cursor per thread replaces the divisions per pixel.
struct PixelCursor {
    int out_h, out_w, b, oy, ox;
    PixelCursor(const Conv2dParams& p, int64_t pixel)
        : out_h(p.out_h()), out_w(p.out_w()),
          b(int(pixel / (int64_t(out_h) * out_w))),
          oy(int(pixel / out_w % out_h)),
          ox(int(pixel % out_w)) {}
    void next() {
        if (++ox < out_w) return;
        ox = 0;
        if (++oy < out_h) return;
        oy = 0;
        ++b;
    }
};

// Output pixel `at` of group g as one GEMM row, for a pointwise kernel: a
// pointer into the input, no copy.
static const int8_t* pointwise_row(const Conv2dParams& p, const int8_t* input, const PixelCursor& at, int g) {
    const int8_t* image = input + size_t(at.b) * p.in_h * p.in_w * p.in_c + size_t(g) * p.in_c_per_group();
    return image + (size_t(at.oy) * p.stride_h * p.in_w + size_t(at.ox) * p.stride_w) * p.in_c;
}

// dst[0, n) = value. std::fill_n on int16 compiles to one 2-byte store per
// value at -O2, which made the padding cost as much as the widening.
static void fill_int16(int16_t* dst, size_t n, int16_t value, bool use_simd) {
    size_t i = 0;
#ifdef __AVX2__
    if (use_simd) {
        const __m256i v = _mm256_set1_epi16(value);
        for (; i + 16 <= n; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), v);
    }
#endif
    for (; i < n; ++i) dst[i] = value;
}

// The input sign-extended to int16 inside its padding (the input zero
// point): [batch][in_h + pad_top + pad_bottom][in_w + pad_left + pad_right][in_c],
// then one 0 for the kernel's read past an odd run (qs8_gemm.h). Rows of the
// padded image are spread over the threads of the enclosing parallel region.
static void widen_padded(const Conv2dParams& p, int batch, const int8_t* input, int16_t* padded,
                         bool use_simd) {
    const int padded_h = p.padded_h();
    const size_t line = size_t(p.padded_w()) * p.in_c, left = size_t(p.pad_left) * p.in_c;
    const size_t right = size_t(p.pad_right) * p.in_c, values = size_t(p.in_w) * p.in_c;
    const int16_t zx = int16_t(p.input_zero_point);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < int64_t(batch) * padded_h; ++row) {
        const int b = int(row / padded_h), y = int(row % padded_h) - p.pad_top;
        int16_t* dst = padded + size_t(row) * line;
        if (y < 0 || y >= p.in_h) {
            fill_int16(dst, line, zx, use_simd);
            continue;
        }
        const int8_t* src = input + (size_t(b) * p.in_h + size_t(y)) * values;
        fill_int16(dst, left, zx, use_simd);
        dst += left;
        size_t i = 0;
#ifdef __AVX2__
        if (use_simd)
            for (; i + 16 <= values; i += 16)
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                                    _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
        for (; i < values; ++i) dst[i] = src[i];
        fill_int16(dst + values, right, zx, use_simd);
    }
#pragma omp single
    padded[size_t(batch) * padded_h * line] = 0;
}

void Conv2d::run_gemm(int batch, const int8_t* input, int8_t* output, bool use_simd) const {
    const Conv2dParams& p = params_;
    const bool pointwise = kernel_ == Kernel::gemm_pointwise, winograd = kernel_ == Kernel::winograd3x3;
    const int64_t pixels = int64_t(batch) * p.out_h() * p.out_w();
    const int64_t panels = (pixels + kGemmTileM - 1) / kGemmTileM;
    const int64_t tiles = winograd ? int64_t(winograd_.tiles(batch)) : 0;
    const int k = p.weights_per_out_channel(), out_c_per_group = p.out_c_per_group();
    auto panel_kernel = use_simd ? qs8_gemm_panel : qs8_gemm_panel_scalar;
    auto runs_kernel = use_simd ? qs8_gemm_panel_widened : qs8_gemm_panel_widened_scalar;
    const int threads = threads_for(pixels * k * p.out_c, kMinMacsPerThread);

    // The padded input lives on the calling thread between calls: one buffer
    // for every layer, grown to the largest.
    // (Pointwise and Winograd convolutions read the int8 input directly.)
    static thread_local std::vector<int16_t> padded_buffer;
    const bool widened = !pointwise && !winograd;
    const size_t padded_image = size_t(p.padded_h()) * p.padded_w() * p.in_c;
    if (widened) padded_buffer.resize(std::max(padded_buffer.size(), batch * padded_image + 1));
    int16_t* padded = padded_buffer.data();  // thread_local: only this pointer is shared
    const int segments = int(window_runs_.size());
    // Where an output pixel's window starts in the padded input: computed
    // once here, since the compiler may not hoist the division in
    // in_c_per_group() out of the per-panel loop (it could trap).
    const size_t window_row_step = size_t(p.stride_h) * p.padded_w() * p.in_c;
    const size_t window_column_step = size_t(p.stride_w) * p.in_c, group_step = size_t(p.in_c_per_group());

#pragma omp parallel num_threads(threads)
    {
        std::vector<int16_t> scratch(pointwise ? gemm_scratch_size(groups_[0]) : 0);
        std::vector<const int16_t*> runs(size_t(kGemmTileM) * segments);
        if (widened) widen_padded(p, batch, input, padded, use_simd);  // ends in a barrier
        if (winograd) {
            WinogradScratch winograd_scratch(winograd_);
#pragma omp for schedule(static)
            for (int64_t first = 0; first < tiles; first += kWinogradTiles)
                qs8_winograd3x3_panel(winograd_, input, size_t(first),
                                      int(std::min<int64_t>(kWinogradTiles, tiles - first)), output, winograd_scratch,
                                      use_simd);
        } else {
            // This thread's panels, as omp for schedule(static) would split them.
            const int64_t nthreads = omp_get_num_threads(), thread = omp_get_thread_num();
            const int64_t first_panel = panels * thread / nthreads, last_panel = panels * (thread + 1) / nthreads;
            PixelCursor cursor(p, first_panel * kGemmTileM);
            for (int64_t panel = first_panel; panel < last_panel; ++panel) {
                const int64_t first = panel * kGemmTileM;
                const int count = int(std::min<int64_t>(kGemmTileM, pixels - first));
                const PixelCursor panel_start = cursor;
                for (int g = 0; g < p.groups; ++g) {
                    int8_t* c = output + first * p.out_c + g * out_c_per_group;
                    PixelCursor at = panel_start;
                    if (pointwise) {
                        const int8_t* rows[kGemmTileM];
                        for (int r = 0; r < count; ++r, at.next()) rows[r] = pointwise_row(p, input, at, g);
                        panel_kernel(groups_[size_t(g)], rows, count, c, size_t(p.out_c), scratch.data());
                        continue;
                    }
                    for (int r = 0; r < count; ++r, at.next()) {
                        const int16_t* window = padded + at.b * padded_image + size_t(at.oy) * window_row_step +
                                                size_t(at.ox) * window_column_step + size_t(g) * group_step;
                        for (int s = 0; s < segments; ++s) runs[r * segments + s] = window + window_runs_[size_t(s)];
                    }
                    runs_kernel(groups_[size_t(g)], runs.data(), count, c, size_t(p.out_c));
                }
                for (int r = 0; r < count; ++r) cursor.next();
            }
        }
    }
}

FullyConnected::FullyConnected(const FullyConnectedParams& p, const int8_t* weights, const int32_t* bias)
    : params_(p) {
    validate(p, weights, bias);
    gemm_ = pack_gemm(p.out_features, p.in_features, weights, bias, p.weight_zero_points, p.input_zero_point,
                      p.multipliers, p.output);
}

void FullyConnected::run(int batch, const int8_t* input, int8_t* output, bool use_simd) const {
    const int in_features = params_.in_features, out_features = params_.out_features;
    const int panels = (batch + kGemmTileM - 1) / kGemmTileM;
    auto panel_kernel = use_simd ? qs8_gemm_panel : qs8_gemm_panel_scalar;
    const int threads = threads_for(int64_t(batch) * in_features * out_features, kMinMacsPerThread);
#pragma omp parallel num_threads(threads)
    {
        std::vector<int16_t> scratch(gemm_scratch_size(gemm_));
#pragma omp for schedule(static)
        for (int panel = 0; panel < panels; ++panel) {
            const int first = panel * kGemmTileM, count = std::min(kGemmTileM, batch - first);
            const int8_t* rows[kGemmTileM];
            for (int r = 0; r < count; ++r) rows[r] = input + size_t(first + r) * in_features;
            panel_kernel(gemm_, rows, count, output + size_t(first) * out_features, size_t(out_features),
                         scratch.data());
        }
    }
}

}  // namespace qf::infer
