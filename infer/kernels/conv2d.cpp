#include "infer/kernels/conv2d.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "infer/kernels/threading.h"

namespace qf::infer {

Conv2d::Conv2d(const Conv2dParams& p, const int8_t* weights, const int32_t* bias) : params_(p) {
    validate(p, weights, bias);
    if (is_depthwise3x3(p)) {
        kernel_ = Kernel::depthwise3x3;
        depthwise_ = pack_depthwise3x3(p, weights, bias);
        return;
    }
    const bool pointwise = p.kernel_h == 1 && p.kernel_w == 1 && p.pad_top == 0 && p.pad_left == 0 &&
                           p.pad_bottom == 0 && p.pad_right == 0;
    kernel_ = pointwise ? Kernel::gemm_pointwise : Kernel::gemm_im2col;
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
                                    p.output));
    }
}

void Conv2d::run(int batch, const int8_t* input, int8_t* output, bool use_simd) const {
    if (kernel_ == Kernel::depthwise3x3)
        qs8_dwconv3x3(depthwise_, batch, input, output, use_simd);
    else
        run_gemm(batch, input, output, use_simd);
}

// Output pixel `pixel` (b, oy, ox flattened) of group g as one GEMM row, for
// a pointwise kernel: a pointer into the input, no copy.
static const int8_t* pointwise_row(const Conv2dParams& p, const int8_t* input, int64_t pixel, int g) {
    const int out_h = p.out_h(), out_w = p.out_w();
    const int b = int(pixel / (int64_t(out_h) * out_w));
    const int oy = int(pixel / out_w % out_h), ox = int(pixel % out_w);
    const int8_t* image = input + size_t(b) * p.in_h * p.in_w * p.in_c + size_t(g) * p.in_c_per_group();
    return image + (size_t(oy) * p.stride_h * p.in_w + size_t(ox) * p.stride_w) * p.in_c;
}

// Sign-extends n int8 to int16.
static void widen(const int8_t* src, int n, int16_t* dst, bool use_simd) {
    int i = 0;
#ifdef __AVX2__
    if (use_simd)
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                                _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
    for (; i < n; ++i) dst[i] = src[i];
}

// The im2col row of output pixel `pixel` for group g, gathered straight into
// int16 (the form the GEMM multiplies): kernel_h x kernel_w taps of
// in_c_per_group values, padding as the input zero point, then a 0 if k is
// odd (the packed weights' padding).
static void im2col_row_widened(const Conv2dParams& p, const int8_t* input, int64_t pixel, int g, int16_t* row,
                               bool use_simd) {
    const int out_h = p.out_h(), out_w = p.out_w();
    const int b = int(pixel / (int64_t(out_h) * out_w));
    const int oy = int(pixel / out_w % out_h), ox = int(pixel % out_w);
    const int in_c_per_group = p.in_c_per_group();
    const int8_t* image = input + size_t(b) * p.in_h * p.in_w * p.in_c + size_t(g) * in_c_per_group;
    const int16_t zx = int16_t(p.input_zero_point);
    const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
    int16_t* dst = row;
    for (int ky = 0; ky < p.kernel_h; ++ky) {
        const int iy = y0 + ky;
        if (iy < 0 || iy >= p.in_h) {
            dst = std::fill_n(dst, size_t(p.kernel_w) * in_c_per_group, zx);
            continue;
        }
        const int8_t* line = image + size_t(iy) * p.in_w * p.in_c;
        if (in_c_per_group == 1) {  // first layers: one value per tap
            for (int kx = 0, ix = x0; kx < p.kernel_w; ++kx, ++ix)
                *dst++ = ix >= 0 && ix < p.in_w ? int16_t(line[size_t(ix) * p.in_c]) : zx;
            continue;
        }
        for (int kx = 0, ix = x0; kx < p.kernel_w; ++kx, ++ix, dst += in_c_per_group) {
            if (ix >= 0 && ix < p.in_w)
                widen(line + size_t(ix) * p.in_c, in_c_per_group, dst, use_simd);
            else
                std::fill_n(dst, in_c_per_group, zx);
        }
    }
    if (p.weights_per_out_channel() % 2) *dst = 0;
}

void Conv2d::run_gemm(int batch, const int8_t* input, int8_t* output, bool use_simd) const {
    const Conv2dParams& p = params_;
    const bool pointwise = kernel_ == Kernel::gemm_pointwise;
    const int64_t pixels = int64_t(batch) * p.out_h() * p.out_w();
    const int64_t panels = (pixels + kGemmTileM - 1) / kGemmTileM;
    const int k = p.weights_per_out_channel(), out_c_per_group = p.out_c_per_group();
    const size_t row_len = 2 * size_t(groups_[0].k_pairs);
    auto panel_kernel = use_simd ? qs8_gemm_panel : qs8_gemm_panel_scalar;
    auto widened_kernel = use_simd ? qs8_gemm_panel_widened : qs8_gemm_panel_widened_scalar;
    const int threads = threads_for(pixels * k * p.out_c, kMinMacsPerThread);
#pragma omp parallel num_threads(threads)
    {
        std::vector<int16_t> scratch(gemm_scratch_size(groups_[0]));
#pragma omp for schedule(static)
        for (int64_t panel = 0; panel < panels; ++panel) {
            const int64_t first = panel * kGemmTileM;
            const int count = int(std::min<int64_t>(kGemmTileM, pixels - first));
            for (int g = 0; g < p.groups; ++g) {
                int8_t* c = output + first * p.out_c + g * out_c_per_group;
                if (pointwise) {
                    const int8_t* rows[kGemmTileM];
                    for (int r = 0; r < count; ++r) rows[r] = pointwise_row(p, input, first + r, g);
                    panel_kernel(groups_[size_t(g)], rows, count, c, size_t(p.out_c), scratch.data());
                } else {
                    for (int r = 0; r < count; ++r)
                        im2col_row_widened(p, input, first + r, g, scratch.data() + r * row_len, use_simd);
                    widened_kernel(groups_[size_t(g)], scratch.data(), count, c, size_t(p.out_c));
                }
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
