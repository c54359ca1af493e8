// Exact integer Winograd F(2x2, 3x3): packing, the two transforms and the
// panel driver. The products run on the GEMM kernels (qs8_gemm.h).
#include "infer/kernels/qs8_winograd3x3.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>

#include "infer/kernels/centered_weights.h"

namespace qf::infer {

namespace {

// G' = 2G: the weight transform's matrix, scaled to integers.
constexpr int kG[4][3] = {{2, 0, 0}, {1, 1, 1}, {1, -1, 1}, {0, 0, 2}};
constexpr int kMaxTransformedInput = 4 * 128;  // |B^T d B| for |d| <= 128

// U = G' g G'^T for one (output channel, input channel): g[ky][kx] at g + (ky * 3 + kx) * stride.
std::array<int32_t, kWinogradPositions> transform_weights(const int16_t* g, size_t stride) {
    std::array<int32_t, kWinogradPositions> u{};
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
            for (int a = 0; a < 3; ++a)
                for (int b = 0; b < 3; ++b) u[size_t(i * 4 + j)] += kG[i][a] * g[(a * 3 + b) * stride] * kG[j][b];
    return u;
}

}  // namespace

bool is_winograd3x3_shape(const Conv2dParams& p) {
    return p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 && p.groups == 1;
}

std::optional<PackedWinograd3x3> pack_winograd3x3(const Conv2dParams& p, const int8_t* weights,
                                                  const int32_t* bias) {
    const CenteredWeights centered =
        center_weights(p.out_c, p.weights_per_out_channel(), weights, bias, p.weight_zero_points, p.input_zero_point);
    // U at each position, [out_c][in_c], and per output channel the bound of
    // every intermediate: sum over positions and input channels of |U| * max |V|.
    std::vector<std::vector<int16_t>> u(kWinogradPositions, std::vector<int16_t>(size_t(p.out_c) * p.in_c));
    for (int o = 0; o < p.out_c; ++o) {
        const int16_t* g = centered.values.data() + size_t(o) * p.weights_per_out_channel();
        int64_t bound = 0;
        for (int c = 0; c < p.in_c; ++c) {
            const auto uc = transform_weights(g + c, size_t(p.in_c));
            for (int pos = 0; pos < kWinogradPositions; ++pos) {
                u[size_t(pos)][size_t(o) * p.in_c + c] = int16_t(uc[size_t(pos)]);  // |U| <= 9 * 255
                bound += std::abs(int64_t(uc[size_t(pos)]));
            }
        }
        if (bound * kMaxTransformedInput > std::numeric_limits<int32_t>::max()) return std::nullopt;
    }
    PackedWinograd3x3 wg;
    wg.params = p;
    wg.out_h = p.out_h();
    wg.out_w = p.out_w();
    wg.tiles_h = (wg.out_h + 1) / 2;
    wg.tiles_w = (wg.out_w + 1) / 2;
    wg.in_c_padded = (p.in_c + 1) / 2 * 2;
    for (int pos = 0; pos < kWinogradPositions; ++pos)
        wg.positions[size_t(pos)] = pack_gemm_layout(p.out_c, p.in_c, u[size_t(pos)].data());
    wg.out_c_padded = wg.positions[0].n_tiles * kGemmTileN;
    wg.bias.assign(size_t(wg.out_c_padded), 0);
    std::copy(centered.folded_bias.begin(), centered.folded_bias.end(), wg.bias.begin());
    // The padding, and one past it for the last tile of an odd output size.
    wg.padding_pixel.assign(size_t(p.in_c), int8_t(p.input_zero_point));
    wg.requantization = ChannelRequantization(p.multipliers, p.out_c, wg.out_c_padded, p.output);
    return wg;
}

WinogradScratch::WinogradScratch(const PackedWinograd3x3& wg)
    : v(size_t(kWinogradPositions) * kWinogradTiles * wg.in_c_padded),
      m(size_t(kWinogradPositions) * kWinogradTiles * wg.out_c_padded) {}

namespace {

// The tile `t` of the panel: which image, its top-left output pixel, and
// how many of its 2 x 2 outputs lie inside the image.
struct Tile {
    int b = 0, oy = 0, ox = 0, rows = 0, cols = 0;
    Tile() = default;
    Tile(const PackedWinograd3x3& wg, int b_, int oy_, int ox_)
        : b(b_), oy(oy_), ox(ox_), rows(std::min(2, wg.out_h - oy)), cols(std::min(2, wg.out_w - ox)) {}
    Tile(const PackedWinograd3x3& wg, size_t t)
        : Tile(wg, int(t / (size_t(wg.tiles_h) * wg.tiles_w)), int(t / wg.tiles_w % wg.tiles_h) * 2,
               int(t % wg.tiles_w) * 2) {}
    // The tile after this one.
    Tile next(const PackedWinograd3x3& wg) const {
        if (ox + 2 < wg.out_w) return Tile(wg, b, oy, ox + 2);
        if (oy + 2 < wg.out_h) return Tile(wg, b, oy + 2, 0);
        return Tile(wg, b + 1, 0, 0);
    }
    // Output pixel (oy + i, ox + j), counted over the batch.
    size_t pixel(const PackedWinograd3x3& wg, int i, int j) const {
        return (size_t(b) * wg.out_h + size_t(oy + i)) * wg.out_w + size_t(ox + j);
    }
};

// V = B^T d B for the 4 x 4 input tile whose rows start at d[i][j] (channels
// contiguous), channels [first, last), into v[pos * stride + c].
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; written once for a scalar
// and once for a vector of 16 channels, T (the same +, - on both).
template <class T, class Load, class Store, class Add, class Sub>
inline void transform_input_block(Load load, Store store, Add add, Sub sub) {
    T t[4][4];  // B^T d
    for (int j = 0; j < 4; ++j) {
        const T d0 = load(0, j), d1 = load(1, j), d2 = load(2, j), d3 = load(3, j);
        t[0][j] = sub(d0, d2);
        t[1][j] = add(d1, d2);
        t[2][j] = sub(d2, d1);
        t[3][j] = sub(d1, d3);
    }
    for (int i = 0; i < 4; ++i) {  // (B^T d) B
        store(i * 4 + 0, sub(t[i][0], t[i][2]));
        store(i * 4 + 1, add(t[i][1], t[i][2]));
        store(i * 4 + 2, sub(t[i][2], t[i][1]));
        store(i * 4 + 3, sub(t[i][1], t[i][3]));
    }
}

// d(i, j): the int8 pixel (channels contiguous) at the input tile's row i,
// column j; sign-extended to int16 as it is loaded.
template <class TileInput>
void transform_input(TileInput d, int channels, int16_t* v, size_t stride, bool use_simd) {
    int c = 0;
#ifdef __AVX2__
    if (use_simd)
        for (; c + 16 <= channels; c += 16)
            transform_input_block<__m256i>(
                [&](int i, int j) {
                    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d(i, j) + c)));
                },
                [&](int pos, __m256i x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(v + pos * stride + c), x); },
                _mm256_add_epi16, _mm256_sub_epi16);
#else
    (void)use_simd;
#endif
    for (; c < channels; ++c)
        transform_input_block<int16_t>([&](int i, int j) { return int16_t(d(i, j)[c]); },
                                       [&](int pos, int16_t x) { v[pos * stride + c] = x; },
                                       [](int16_t a, int16_t b) { return int16_t(a + b); },
                                       [](int16_t a, int16_t b) { return int16_t(a - b); });
}

// y[i][j] = (A^T M A)[i][j] / 4 for the 16 values m(pos), A^T = [1 1 1 0; 0 1 -1 -1],
// on a scalar or a vector of 8 channels, T (the same +, -, / 4 on both). The
// division is exact: Y carries the factor 4 of G'.
template <class T, class Load, class Add, class Sub, class Quarter>
inline void transform_output(Load m, Add add, Sub sub, Quarter quarter, T (&y)[2][2]) {
    T s[2][4];  // A^T M
    for (int j = 0; j < 4; ++j) {
        const T m0 = m(j), m1 = m(4 + j), m2 = m(8 + j), m3 = m(12 + j);
        s[0][j] = add(add(m0, m1), m2);
        s[1][j] = sub(sub(m1, m2), m3);
    }
    for (int i = 0; i < 2; ++i) {
        y[i][0] = quarter(add(add(s[i][0], s[i][1]), s[i][2]));
        y[i][1] = quarter(sub(sub(s[i][1], s[i][2]), s[i][3]));
    }
}

// Output stage of the panel's tiles: transform, bias, requantize, store the
// in-image pixels. m: the products [position][tile][out_c_padded].
void finish_tiles_scalar(const PackedWinograd3x3& wg, const int32_t* m, const Tile* tiles, int count,
                         int8_t* output) {
    const Conv2dParams& p = wg.params;
    const size_t stride = size_t(kWinogradTiles) * wg.out_c_padded;
    for (int r = 0; r < count; ++r)
        for (int o = 0; o < p.out_c; ++o) {
            const int32_t* mr = m + size_t(r) * wg.out_c_padded + o;
            int32_t y[2][2];
            transform_output([&](int pos) { return mr[pos * stride]; }, std::plus<int32_t>(), std::minus<int32_t>(),
                             [](int32_t x) { return x / 4; }, y);
            for (int i = 0; i < tiles[r].rows; ++i)
                for (int j = 0; j < tiles[r].cols; ++j)
                    output[tiles[r].pixel(wg, i, j) * p.out_c + size_t(o)] =
                        int8_t(wg.requantization.apply(y[i][j] + wg.bias[size_t(o)], o));
        }
}

#ifdef __AVX2__
// The same on vectors: 16 output channels at a time (one 16-byte store per
// pixel), then 8 for a remainder. m and the bias are padded to whole GEMM
// tiles of 16 channels, so the loads never leave them.
void finish_tiles_avx2(const PackedWinograd3x3& wg, const int32_t* m, const Tile* tiles, int count,
                       int8_t* output) {
    const Conv2dParams& p = wg.params;
    const size_t stride = size_t(kWinogradTiles) * wg.out_c_padded;
    auto load = [](const int32_t* at) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at)); };
    // Y + bias of tile r's channels [o, o + 8).
    auto tile_output = [&](int r, int o, __m256i (&y)[2][2]) {
        const int32_t* mr = m + size_t(r) * wg.out_c_padded + o;
        transform_output([&](int pos) { return load(mr + pos * stride); }, _mm256_add_epi32, _mm256_sub_epi32,
                         [](__m256i x) { return _mm256_srai_epi32(x, 2); }, y);
        const __m256i bias = load(wg.bias.data() + o);
        for (auto& row : y)
            for (__m256i& v : row) v = _mm256_add_epi32(v, bias);
    };
    int o = 0;
    for (; o + 16 <= p.out_c; o += 16) {
        const avx2::RequantizeLanes& q0 = wg.requantization.lanes(o);
        const avx2::RequantizeLanes& q1 = wg.requantization.lanes(o + 8);
        for (int r = 0; r < count; ++r) {
            __m256i y0[2][2], y1[2][2];
            tile_output(r, o, y0);
            tile_output(r, o + 8, y1);
            for (int i = 0; i < tiles[r].rows; ++i)
                for (int j = 0; j < tiles[r].cols; ++j)
                    _mm_storeu_si128(reinterpret_cast<__m128i*>(output + tiles[r].pixel(wg, i, j) * p.out_c + size_t(o)),
                                     avx2::requantize_to_int8x16(y0[i][j], y1[i][j], q0, q1));
        }
    }
    for (; o < p.out_c; o += 8) {
        const avx2::RequantizeLanes& q = wg.requantization.lanes(o);
        const int channels = p.out_c - o < 8 ? p.out_c - o : 8;
        for (int r = 0; r < count; ++r) {
            __m256i y[2][2];
            tile_output(r, o, y);
            for (int i = 0; i < tiles[r].rows; ++i)
                for (int j = 0; j < tiles[r].cols; ++j) {
                    int8_t tmp[8];
                    avx2::store_int8x8(tmp, avx2::requantize(y[i][j], q));
                    std::memcpy(output + tiles[r].pixel(wg, i, j) * p.out_c + size_t(o), tmp, size_t(channels));
                }
        }
    }
}
#endif

}  // namespace

void qs8_winograd3x3_panel(const PackedWinograd3x3& wg, const int8_t* input, size_t first, int count,
                           int8_t* output, WinogradScratch& scratch, bool use_simd) {
    const Conv2dParams& p = wg.params;
    const size_t row_stride = size_t(p.in_w) * p.in_c, image = size_t(p.in_h) * row_stride;
    const size_t v_stride = size_t(kWinogradTiles) * wg.in_c_padded;
    Tile tiles[kWinogradTiles];
    tiles[0] = Tile(wg, first);
    for (int r = 1; r < count; ++r) tiles[r] = tiles[r - 1].next(wg);
    for (int r = 0; r < count; ++r) {
        const Tile& tile = tiles[r];
        // The 4 x 4 input tile starts at input row y0, column x0 (stride 1);
        // where it reaches into the padding (or, for an odd output size's
        // last tile, one past it) it reads a pixel of input zero points.
        const int y0 = tile.oy - p.pad_top, x0 = tile.ox - p.pad_left;
        const int8_t* corner = input + tile.b * image;
        int16_t* v = scratch.v.data() + size_t(r) * wg.in_c_padded;
        if (y0 >= 0 && y0 + 4 <= p.in_h && x0 >= 0 && x0 + 4 <= p.in_w) {
            corner += size_t(y0) * row_stride + size_t(x0) * p.in_c;
            transform_input([&](int i, int j) { return corner + i * row_stride + size_t(j) * p.in_c; }, p.in_c, v,
                            v_stride, use_simd);
        } else {
            const int8_t* pixel[4][4];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) {
                    const int y = y0 + i, x = x0 + j;
                    pixel[i][j] = y >= 0 && y < p.in_h && x >= 0 && x < p.in_w
                                      ? corner + size_t(y) * row_stride + size_t(x) * p.in_c
                                      : wg.padding_pixel.data();
                }
            transform_input([&](int i, int j) { return pixel[i][j]; }, p.in_c, v, v_stride, use_simd);
        }
        if (wg.in_c_padded > p.in_c)
            for (int pos = 0; pos < kWinogradPositions; ++pos) v[pos * v_stride + size_t(p.in_c)] = 0;
    }
    const size_t m_stride = size_t(kWinogradTiles) * wg.out_c_padded;
    (use_simd ? qs8_gemm_products_int32 : qs8_gemm_products_int32_scalar)(
        wg.positions.data(), kWinogradPositions, scratch.v.data(), v_stride, size_t(wg.in_c_padded), count,
        scratch.m.data(), m_stride, size_t(wg.out_c_padded));
#ifdef __AVX2__
    if (use_simd) {
        finish_tiles_avx2(wg, scratch.m.data(), tiles, count, output);
        return;
    }
#endif
    finish_tiles_scalar(wg, scratch.m.data(), tiles, count, output);
}

}  // namespace qf::infer
