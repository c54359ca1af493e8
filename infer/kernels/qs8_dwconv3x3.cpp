// The depthwise 3x3 kernel: scalar for any channel count, AVX2 for whole
// blocks of 8 channels (two taps per vpmaddwd, exact int32 sums).
#include "infer/kernels/qs8_dwconv3x3.h"

#include <algorithm>
#include <vector>

#include "infer/kernels/centered_weights.h"
#include "infer/kernels/threading.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace qf::infer {

bool is_depthwise3x3(const Conv2dParams& p) {
    return p.kernel_h == 3 && p.kernel_w == 3 && p.groups == p.in_c && p.out_c == p.in_c;
}

static size_t packed_index(int channel, int tap) {
    return ((size_t(channel / kDepthwiseBlock) * kDepthwiseTapPairs + tap / 2) * kDepthwiseBlock +
            channel % kDepthwiseBlock) * 2 + tap % 2;
}

PackedDepthwise3x3 pack_depthwise3x3(const Conv2dParams& p, const int8_t* weights, const int32_t* bias) {
    PackedDepthwise3x3 dw;
    dw.params = p;
    const int channels = p.out_c;
    dw.channel_blocks = (channels + kDepthwiseBlock - 1) / kDepthwiseBlock;
    const int padded = dw.channel_blocks * kDepthwiseBlock;
    dw.weights.assign(size_t(dw.channel_blocks) * kDepthwiseTapPairs * kDepthwiseBlock * 2, 0);
    dw.bias.assign(size_t(padded), 0);
    const CenteredWeights centered =
        center_weights(channels, 9, weights, bias, p.weight_zero_points, p.input_zero_point);
    for (int c = 0; c < channels; ++c) {
        for (int tap = 0; tap < 9; ++tap) dw.weights[packed_index(c, tap)] = centered.values[size_t(c) * 9 + tap];
        dw.bias[size_t(c)] = centered.folded_bias[size_t(c)];
    }
    // weights16: the low halves (channels 0-3) of blocks 2B and 2B+1, then their high halves.
    dw.weights16.resize(size_t(channels / 16) * kDepthwiseTapPairs * 32);
    for (int block = 0; block < channels / 16; ++block) {
        for (int pair = 0; pair < kDepthwiseTapPairs; ++pair) {
            const int16_t* w0 = dw.weights.data() + (size_t(2 * block) * kDepthwiseTapPairs + pair) * 16;
            const int16_t* w1 = w0 + kDepthwiseTapPairs * 16;
            int16_t* dst = dw.weights16.data() + (size_t(block) * kDepthwiseTapPairs + pair) * 32;
            std::copy(w0, w0 + 8, dst);
            std::copy(w1, w1 + 8, dst + 8);
            std::copy(w0 + 8, w0 + 16, dst + 16);
            std::copy(w1 + 8, w1 + 16, dst + 24);
        }
    }
    dw.padding_row.assign(size_t(channels), int8_t(p.input_zero_point));
    dw.requantization = ChannelRequantization(p.multipliers, channels, padded, p.output);
    return dw;
}

// Output channel c of one pixel from its 9 tap rows.
static int8_t depthwise_channel(const PackedDepthwise3x3& dw, const int8_t* const taps[9], int c) {
    int32_t acc = dw.bias[size_t(c)];
    for (int tap = 0; tap < 9; ++tap) acc += dw.weights[packed_index(c, tap)] * taps[tap][c];
    return int8_t(dw.requantization.apply(acc, c));
}

#ifdef __AVX2__
// Channels [c, c + 8) of one pixel: taps 2p and 2p+1 interleaved per channel
// so that vpmaddwd adds both products of a channel in its own int32 lane.
static void depthwise_block_avx2(const PackedDepthwise3x3& dw, const int8_t* const taps[9], int c,
                                 int8_t* out) {
    __m256i acc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dw.bias.data() + c));
    const int16_t* w = dw.weights.data() + size_t(c / kDepthwiseBlock) * kDepthwiseTapPairs * kDepthwiseBlock * 2;
    auto load8 = [c](const int8_t* row) {
        return _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
    };
    for (int pair = 0; pair < kDepthwiseTapPairs; ++pair, w += kDepthwiseBlock * 2) {
        const __m128i x0 = load8(taps[2 * pair]);
        const __m128i x1 = 2 * pair + 1 < 9 ? load8(taps[2 * pair + 1]) : _mm_setzero_si128();
        // [x0[0] x1[0] .. x0[3] x1[3] | x0[4] x1[4] .. x0[7] x1[7]]: the weights' order.
        const __m256i x = _mm256_set_m128i(_mm_unpackhi_epi16(x0, x1), _mm_unpacklo_epi16(x0, x1));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))));
    }
    avx2::store_int8x8(out, dw.requantization.apply(acc, dw.requantization.lanes(c)));
}

// Channels [c, c + 16) of the out_w pixels of one output row (taps: 9 per
// pixel), the channel block's constants loaded once for the row. vpunpck
// splits a tap pair into channels {0-3, 8-11} and {4-7, 12-15} (weights16's
// order); vpackssdw of the two halves puts the channels back in order.
static void depthwise_row16_avx2(const PackedDepthwise3x3& dw, const int8_t* const* taps, int out_w, int c,
                                 int8_t* out, size_t out_stride) {
    auto lo = [](__m256i a, __m256i b) { return _mm256_permute2x128_si256(a, b, 0x20); };
    auto hi = [](__m256i a, __m256i b) { return _mm256_permute2x128_si256(a, b, 0x31); };
    const __m256i bias0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dw.bias.data() + c));
    const __m256i bias1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dw.bias.data() + c + 8));
    const ChannelRequantization& r = dw.requantization;
    auto load = [](const std::vector<int32_t>& v, int at) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.data() + at));
    };
    const __m256i M0_0 = load(r.M0, c), M0_1 = load(r.M0, c + 8);
    const __m256i shift0 = load(r.shift, c), shift1 = load(r.shift, c + 8);
    const OutputRange& o = r.output;
    const avx2::RequantizeLanes q_lo =
        avx2::make_requantize_lanes(lo(M0_0, M0_1), lo(shift0, shift1), o.zero_point, o.min, o.max);
    const avx2::RequantizeLanes q_hi =
        avx2::make_requantize_lanes(hi(M0_0, M0_1), hi(shift0, shift1), o.zero_point, o.min, o.max);
    const __m256i bias_lo = lo(bias0, bias1), bias_hi = hi(bias0, bias1);
    const int16_t* w = dw.weights16.data() + size_t(c / 16) * kDepthwiseTapPairs * 32;
    auto load16 = [c](const int8_t* row) {
        return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
    };
    for (int ox = 0; ox < out_w; ++ox, taps += 9) {
        // The 5 tap pairs written out (GCC kept the loop, and its test for
        // the 10th tap, in the hot path): two independent sums per half.
        __m256i sum_lo[2] = {bias_lo, _mm256_setzero_si256()}, sum_hi[2] = {bias_hi, _mm256_setzero_si256()};
        auto add_pair = [&](int pair, __m256i x0, __m256i x1) {
            const __m256i* wp = reinterpret_cast<const __m256i*>(w + pair * 32);
            __m256i& lo_acc = sum_lo[pair % 2];
            __m256i& hi_acc = sum_hi[pair % 2];
            lo_acc = _mm256_add_epi32(lo_acc, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), _mm256_loadu_si256(wp)));
            hi_acc = _mm256_add_epi32(hi_acc, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), _mm256_loadu_si256(wp + 1)));
        };
        add_pair(0, load16(taps[0]), load16(taps[1]));
        add_pair(1, load16(taps[2]), load16(taps[3]));
        add_pair(2, load16(taps[4]), load16(taps[5]));
        add_pair(3, load16(taps[6]), load16(taps[7]));
        add_pair(4, load16(taps[8]), _mm256_setzero_si256());
        const __m256i acc_lo = _mm256_add_epi32(sum_lo[0], sum_lo[1]);
        const __m256i acc_hi = _mm256_add_epi32(sum_hi[0], sum_hi[1]);
        // lo, hi = channels {0-3, 8-11}, {4-7, 12-15}: vpackssdw puts them in order.
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + size_t(ox) * out_stride + c),
                         avx2::pack_int16_to_int8(avx2::requantize_to_int16_packed(acc_lo, acc_hi, q_lo, q_hi)));
    }
}
#endif

void qs8_dwconv3x3(const PackedDepthwise3x3& dw, int batch, const int8_t* input, int8_t* output,
                   bool use_simd) {
    const Conv2dParams& p = dw.params;
    const int in_h = p.in_h, in_w = p.in_w, channels = p.out_c;
    const int out_h = p.out_h(), out_w = p.out_w();
    const int threads = threads_for(int64_t(batch) * out_h * out_w * channels * 9, kMinMacsPerThread);
#pragma omp parallel num_threads(threads)
    {
    std::vector<const int8_t*> row_taps(size_t(out_w) * 9);  // 9 tap rows per output pixel
#pragma omp for schedule(static)
    for (int row = 0; row < batch * out_h; ++row) {
        const int b = row / out_h, oy = row % out_h;
        for (int ox = 0; ox < out_w; ++ox) {
            const int8_t** taps = row_taps.data() + size_t(ox) * 9;
            for (int ky = 0; ky < 3; ++ky) {
                for (int kx = 0; kx < 3; ++kx) {
                    const int iy = oy * p.stride_h - p.pad_top + ky, ix = ox * p.stride_w - p.pad_left + kx;
                    const bool inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                    taps[ky * 3 + kx] = inside ? input + ((size_t(b) * in_h + iy) * in_w + ix) * channels
                                               : dw.padding_row.data();
                }
            }
        }
        int8_t* out_row = output + (size_t(b) * out_h + oy) * out_w * channels;
        int first = 0;  // channels below it are done for the whole row
#ifdef __AVX2__
        if (use_simd)
            for (; first + 16 <= channels; first += 16)
                depthwise_row16_avx2(dw, row_taps.data(), out_w, first, out_row, size_t(channels));
#endif
        for (int ox = 0; ox < out_w; ++ox) {
            const int8_t* const* taps = row_taps.data() + size_t(ox) * 9;
            int8_t* out = out_row + size_t(ox) * channels;
            int c = first;
#ifdef __AVX2__
            if (use_simd)
                for (; c + kDepthwiseBlock <= channels; c += kDepthwiseBlock) depthwise_block_avx2(dw, taps, c, out + c);
#endif
            for (; c < channels; ++c) out[c] = depthwise_channel(dw, taps, c);
        }
    }
    }
}

}  // namespace qf::infer
