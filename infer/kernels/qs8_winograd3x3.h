// Exact integer Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions (groups 1),
// with fused requantization: 16 multiplies per 2x2 output tile and channel
// pair instead of 36, and the same int32 result as the direct GEMM, bit for
// bit, because every step is exact integer arithmetic:
//
//   Y = A^T [ (G g G^T) . (B^T d B) ] A     (Lavin & Gray 2015)
//
// G has halves in it; with G' = 2G the weight transform U = G' g G'^T is an
// integer matrix and Y comes out multiplied by exactly 4, which the output
// stage shifts off (an exact division: Y / 4 is the integer convolution sum).
// B and A hold only 0 and +-1.
//
// Ranges (g = W - zw, |g| <= 255; d the raw int16 input, |d| <= 128):
//  - U: each entry sums at most 9 weights with coefficients 1, 2 or 4 whose
//    magnitudes total at most 3 x 3: |U| <= 9 * 255 < 2^15, int16.
//  - V = B^T d B: each entry sums 4 inputs with coefficients +-1: |V| <= 512.
//  - M = sum_c U V per tile position, then A^T M A: sums of +-M. prepare
//    checks per output channel that sum_positions sum_c |U| * 512 fits int32
//    (pack_winograd3x3); every intermediate is bounded by it. Layers whose
//    weights fail the check run on the GEMM instead.
// The input tiles are read from the int8 input and sign-extended as they are
// loaded (the GEMM path's padded int16 copy, conv2d.cpp, would cost a pass
// over the input); positions in the padding read the input zero point, so
// the zero points fold into the bias exactly as on the GEMM path (qs8_gemm.h's
// expanded formula).
//
// Per panel of kWinogradTiles tiles: transform the input tiles (V, int16),
// run the GEMM kernel on all 16 tile positions in one call (16 products of
// kWinogradTiles x in_c by in_c x out_c, int32 out), then the output
// transform, bias and requantization, 16 channels at a time (8 at the end).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "infer/kernels/channel_requantization.h"
#include "infer/kernels/params.h"
#include "infer/kernels/qs8_gemm.h"

namespace qf::infer {

// 2x2 output tiles per panel, one GEMM row each. More tiles per panel read
// each position's weights less often but spill the panel's scratch (V and M)
// out of L1: 16 measured 7% faster at 16 channels and 15% slower at 64
// (bench/conv3x3_algorithms), so a panel is one GEMM row tile.
constexpr int kWinogradTiles = kGemmTileM;
constexpr int kWinogradPositions = 16;      // 4 x 4 tile positions
constexpr int kWinogradMinInChannels = 16;  // below, the GEMM is faster (conv2d.h)

struct PackedWinograd3x3 {
    Conv2dParams params;
    int out_h = 0, out_w = 0;                                 // params.out_h(), out_w(): no division per tile
    int tiles_h = 0, tiles_w = 0;                             // ceil(out / 2)
    int in_c_padded = 0;                                      // in_c rounded up to whole pairs
    int out_c_padded = 0;                                     // out_c rounded up to whole GEMM tiles
    std::array<PackedGemm, kWinogradPositions> positions;    // U at each position: [out_c][in_c]
    std::vector<int32_t> bias;                                // [out_c_padded]: bias - zx * sum (W - zw)
    std::vector<int8_t> padding_pixel;                        // in_c values of zx: what positions outside the input read
    ChannelRequantization requantization;

    size_t tiles(int batch) const { return size_t(batch) * tiles_h * tiles_w; }
};

// Whether `p` is a convolution this kernel can run (3x3, stride 1, groups 1).
bool is_winograd3x3_shape(const Conv2dParams& p);

// p must have passed validate() and is_winograd3x3_shape(). Empty when an
// intermediate of some output channel could leave int32 (above): the layer
// then runs on the GEMM.
std::optional<PackedWinograd3x3> pack_winograd3x3(const Conv2dParams& p, const int8_t* weights,
                                                  const int32_t* bias);

// What one thread works in: the transformed input tiles V
// [position][tile][in_c_padded] and the products M [position][tile][out_c_padded].
struct WinogradScratch {
    std::vector<int16_t> v;
    std::vector<int32_t> m;
    explicit WinogradScratch(const PackedWinograd3x3& wg);
};

// Tiles [first, first + count) (count <= kWinogradTiles, counted over batch x
// tiles_h x tiles_w) from `input` (NHWC int8, unpadded) into `output` (NHWC
// int8). use_simd false runs the portable kernels (tests).
void qs8_winograd3x3_panel(const PackedWinograd3x3& wg, const int8_t* input, size_t first, int count,
                           int8_t* output, WinogradScratch& scratch, bool use_simd);

}  // namespace qf::infer
