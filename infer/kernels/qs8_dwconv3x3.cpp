// The depthwise 3x3 kernel: scalar for any channel count, AVX2 for whole
// blocks of 8 channels (two taps per vpmaddwd, exact int32 sums).
#include "infer/kernels/qs8_dwconv3x3.h"

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
    for (int c = 0; c < channels; ++c) {
        const int32_t zw = per_channel(p.weight_zero_points, c);
        int32_t sum = 0;
        for (int tap = 0; tap < 9; ++tap) {
            const int16_t w = int16_t(weights[c * 9 + tap] - zw);
            dw.weights[packed_index(c, tap)] = w;
            sum += w;
        }
        dw.bias[size_t(c)] = (bias ? bias[c] : 0) - p.input_zero_point * sum;
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
#endif

void qs8_dwconv3x3(const PackedDepthwise3x3& dw, int batch, const int8_t* input, int8_t* output,
                   bool use_simd) {
    const Conv2dParams& p = dw.params;
    const int in_h = p.in_h, in_w = p.in_w, channels = p.out_c;
    const int out_h = p.out_h(), out_w = p.out_w();
    const int threads = threads_for(int64_t(batch) * out_h * out_w * channels * 9, kMinMacsPerThread);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int row = 0; row < batch * out_h; ++row) {
        const int b = row / out_h, oy = row % out_h;
        for (int ox = 0; ox < out_w; ++ox) {
            const int8_t* taps[9];
            for (int ky = 0; ky < 3; ++ky) {
                for (int kx = 0; kx < 3; ++kx) {
                    const int iy = oy * p.stride_h - p.pad_top + ky, ix = ox * p.stride_w - p.pad_left + kx;
                    const bool inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                    taps[ky * 3 + kx] = inside ? input + ((size_t(b) * in_h + iy) * in_w + ix) * channels
                                               : dw.padding_row.data();
                }
            }
            int8_t* out = output + ((size_t(b) * out_h + oy) * out_w + ox) * channels;
            int c = 0;
#ifdef __AVX2__
            if (use_simd)
                for (; c + kDepthwiseBlock <= channels; c += kDepthwiseBlock) depthwise_block_avx2(dw, taps, c, out + c);
#endif
            for (; c < channels; ++c) out[c] = depthwise_channel(dw, taps, c);
        }
    }
}

}  // namespace qf::infer
