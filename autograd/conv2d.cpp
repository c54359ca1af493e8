// conv2d: forward and backward side by side.
//
// Letters used throughout: N batch, C input channels, H W input size,
// OC output channels, KH KW kernel size, OH OW output size, G groups,
// Cg = C/G and OCg = OC/G channels per group, K = Cg*KH*KW the length of one
// output pixel's receptive field, P = OH*OW pixels per output plane.
//
// Four paths:
// - general: im2col turns one image's receptive fields into a (C*KH*KW, P)
//   matrix, and each group is one GEMM  out_g (OCg, P) = w_g (OCg, K) @ col_g (K, P).
//   Backward: dW from the same columns; dx at stride 1 is itself such a
//   convolution (of dout, see dx_as_conv), else a GEMM and col2im.
// - implicit GEMM (AVX2, one group, the batch split over the threads): the
//   same products read straight from the zero-padded image, forward and dW
//   (conv2d_implicit.h), and dx where it is a convolution; dx at stride 2
//   stays a GEMM and col2im.
// - 1x1, stride 1, no padding: the image itself already is the column matrix.
// - depthwise (G == C == OC): one KHxKW filter per plane, a direct loop.
//
// Parallelism: the reference models run 28x28 and smaller images at batch
// 128 on 2 cores, where one image's GEMM is too small to split well. So
// OpenMP splits the batch (in chunks of images, see ConvChunks) and every
// thread runs single-threaded GEMMs on its own scratch; dW is accumulated
// per thread, then summed. With fewer images than threads (inference at
// batch 1) the batch runs serially and BLIS splits each GEMM instead.
#include <omp.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/conv2d_implicit.h"
#include "autograd/conv_dims.h"
#include "autograd/gemm.h"
#include "autograd/ops.h"

namespace qf {

namespace {

using detail::ConvDims;

// The first and one-past-last output column ow whose input column
// ow*stride - pad + kw falls inside [0, W).
inline void valid_range(int64_t OW, int64_t W, int64_t stride, int64_t pad, int64_t kw,
                        int64_t& lo, int64_t& hi) {
    const int64_t first = pad - kw;  // need ow*stride >= first
    lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    const int64_t last = W - 1 + pad - kw;  // need ow*stride <= last
    hi = last < 0 ? 0 : std::min(OW, last / stride + 1);
    lo = std::min(lo, hi);
}

// dst[0 .. n) = src[0 .. n): one output row of im2col at stride 1. Under
// n = 8 it reads 8 floats from src, so the source needs 8 floats of slack.
inline void copy_run(float* dst, const float* src, int64_t n) {
#ifdef __AVX2__
    if (n >= 8) {
        // Whole vectors, the last one overlapping its predecessor.
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
        if (i < n) _mm256_storeu_ps(dst + n - 8, _mm256_loadu_ps(src + n - 8));
        return;
    }
    // A partial vector, stored in pieces (masked stores are slow on AMD).
    const __m256 v = _mm256_loadu_ps(src);
    __m128 h = _mm256_castps256_ps128(v);
    if (n >= 4) _mm_storeu_ps(dst, h), h = _mm256_extractf128_ps(v, 1), dst += 4, n -= 4;
    if (n >= 2) _mm_storel_pi(reinterpret_cast<__m64*>(dst), h), h = _mm_movehl_ps(h, h), dst += 2, n -= 2;
    if (n >= 1) _mm_store_ss(dst, h);
#else
    std::memcpy(dst, src, n * sizeof(float));
#endif
}

// Per-thread scratch buffers, grown as needed and kept between calls.
enum ScratchSlot { kCol, kDcol, kOutChunk, kDwPartials, kPadded, kDoutT, kSlots };
float* scratch(ScratchSlot slot, size_t n) {
    thread_local std::vector<float> bufs[kSlots];
    if (bufs[slot].size() < n) bufs[slot].resize(n);
    return bufs[slot].data();
}

// x (C, H, W) of one image -> xp (C, H + 2*pad, W + 2*pad), zero padded.
void pad_image(const float* x, float* xp, const ConvDims& d) {
    const int64_t HP = d.H + 2 * d.pad, WP = d.W + 2 * d.pad;
    for (int64_t c = 0; c < d.C; c++)
        for (int64_t r = 0; r < HP; r++) {
            float* dst = xp + (c * HP + r) * WP;
            const int64_t ih = r - d.pad;
            if (ih < 0 || ih >= d.H) {
                std::memset(dst, 0, WP * sizeof(float));
                continue;
            }
            for (int64_t i = 0; i < d.pad; i++) dst[i] = dst[d.pad + d.W + i] = 0.0f;
            std::memcpy(dst + d.pad, x + (c * d.H + ih) * d.W, d.W * sizeof(float));
        }
}

// x (C, H, W) of one image -> its P columns of col (C*KH*KW rows, leading
// dimension ld); padding reads as zero. The image is first copied with its
// padding (HP x WP planes), so that every run of im2col is a plain copy.
void im2col(const float* x, float* col, int64_t ld, const ConvDims& d) {
    const int64_t HP = d.H + 2 * d.pad, WP = d.W + 2 * d.pad;
    float* xp = scratch(kPadded, d.C * HP * WP + 8);  // + 8: copy_run's slack
    pad_image(x, xp, d);
    for (int64_t c = 0; c < d.C; c++)
        for (int64_t kh = 0; kh < d.KH; kh++)
            for (int64_t kw = 0; kw < d.KW; kw++) {
                float* row = col + ((c * d.KH + kh) * d.KW + kw) * ld;
                for (int64_t oh = 0; oh < d.OH; oh++) {
                    float* dst = row + oh * d.OW;
                    const float* src = xp + (c * HP + oh * d.stride + kh) * WP + kw;
                    if (d.stride == 1)
                        copy_run(dst, src, d.OW);
                    else
                        for (int64_t ow = 0; ow < d.OW; ow++) dst[ow] = src[ow * d.stride];
                }
            }
}

// The adjoint of im2col: dx (C, H, W) += one image's P columns of dcol
// (C*KH*KW rows, leading dimension ld), added back where they were read from.
void col2im_add(const float* dcol, int64_t ld, float* dx, const ConvDims& d) {
    for (int64_t c = 0; c < d.C; c++)
        for (int64_t kh = 0; kh < d.KH; kh++)
            for (int64_t kw = 0; kw < d.KW; kw++) {
                const float* row = dcol + ((c * d.KH + kh) * d.KW + kw) * ld;
                int64_t lo, hi;
                valid_range(d.OW, d.W, d.stride, d.pad, kw, lo, hi);
                for (int64_t oh = 0; oh < d.OH; oh++) {
                    const int64_t ih = oh * d.stride - d.pad + kh;
                    if (ih < 0 || ih >= d.H) continue;
                    const float* src = row + oh * d.OW;
                    float* dst = dx + (c * d.H + ih) * d.W - d.pad + kw;
                    if (d.stride == 1)
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] += src[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow * d.stride] += src[ow];
                }
            }
}

// ---- general and 1x1 convolution (im2col + GEMM) ----------------------------

// How the batch is cut into chunks of images that share one GEMM. Small
// planes (7x7: P = 49) make narrow GEMMs whose ragged edges waste BLIS's
// 6x16 kernel and whose dW inner dimension (P) is too short, so the columns
// of a few images are laid side by side: col (C*KH*KW, B*P). Larger planes
// keep one image per GEMM: there, wider column matrices fell out of the L2
// cache and measured no faster (lenet's 5x5 on 14x14 got slower).
struct ConvChunks {
    int64_t images;  // B, images per chunk
    int64_t count;   // chunks in the batch
    bool split;      // OpenMP splits the chunks (each GEMM single-threaded)
    int gemm_threads;
};
constexpr int64_t kMinGemmColumns = 256;

ConvChunks conv_chunks(const ConvDims& d) {
    const int threads = num_threads();
    ConvChunks c;
    c.split = threads > 1 && d.N >= threads;
    const int64_t per_thread = c.split ? d.N / threads : d.N;
    const int64_t wanted = d.P() < kMinGemmColumns / 2 ? (kMinGemmColumns + d.P() - 1) / d.P() : 1;
    c.images = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(per_thread, 1));
    c.count = (d.N + c.images - 1) / c.images;
    c.gemm_threads = c.split ? 1 : 0;
    return c;
}

// Runs chunk(0 .. count-1): split over the threads, or in order on the
// calling thread with BLIS threading each GEMM. Not `omp parallel if (split)`:
// an inactive region still makes BLIS's parallel region a nested one, which
// gets a fresh team of threads that then fights the idle pool threads still
// spinning (a batch-1 forward went from 0.5 to 8 ms).
template <class Chunk>
void for_each_chunk(const ConvChunks& ch, Chunk chunk) {
    if (!ch.split) {
        for (int64_t c = 0; c < ch.count; c++) chunk(c);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < ch.count; c++) chunk(c);
}

// The column matrix (C*KH*KW, nb*P) of images n0 .. n0+nb-1; a single 1x1
// image is its own column matrix.
const float* chunk_columns(const float* x, int64_t n0, int64_t nb, const ConvDims& d) {
    const int64_t image = d.C * d.H * d.W;
    if (d.pointwise() && nb == 1) return x + n0 * image;
    float* col = scratch(kCol, d.C * d.KH * d.KW * nb * d.P());
    for (int64_t b = 0; b < nb; b++) im2col(x + (n0 + b) * image, col + b * d.P(), nb * d.P(), d);
    return col;
}

// Images n0 .. n0+nb-1 of x (N, C, H, W) convolved with w (OC, Cg, KH, KW)
// and b (OC) or null, written to their planes of out (N, OC, OH, OW), or
// added to them (accumulate: the backward's dx, which takes no bias).
void conv_gemm_images(const float* x, const float* w, const float* b, float* out, bool accumulate,
                      int64_t n0, int64_t nb, int gemm_threads, const ConvDims& d) {
    const int64_t P = d.P(), K = d.K(), OCg = d.OCg(), L = nb * P;
    const float* col = chunk_columns(x, n0, nb, d);
    // One image: the GEMM writes out directly, onto the broadcast bias (or
    // what is to be accumulated). Several: it writes (OC, nb*P) to scratch,
    // scattered to out below.
    float* res = nb == 1 ? out + n0 * d.OC * P : scratch(kOutChunk, d.OC * L);
    if (nb == 1 && b && !accumulate)
        for (int64_t oc = 0; oc < d.OC; oc++)
            for (int64_t p = 0; p < P; p++) res[oc * P + p] = b[oc];
    const float beta = nb == 1 && (b || accumulate) ? 1.0f : 0.0f;
    // out_g (OCg, L) = w_g (OCg, K) @ col_g (K, L)
    for (int64_t g = 0; g < d.G; g++)
        sgemm(false, false, OCg, L, K, 1.0f, w + g * OCg * K, K, col + g * K * L, L, beta,
              res + g * OCg * L, L, gemm_threads);
    if (nb > 1)
        for (int64_t i = 0; i < nb; i++)
            for (int64_t oc = 0; oc < d.OC; oc++) {
                const float* src = res + oc * L + i * P;
                float* dst = out + ((n0 + i) * d.OC + oc) * P;
                if (accumulate)
                    for (int64_t p = 0; p < P; p++) dst[p] += src[p];
                else {
                    const float bias = b ? b[oc] : 0.0f;
                    for (int64_t p = 0; p < P; p++) dst[p] = src[p] + bias;
                }
            }
}

// ---- convolution as an implicit GEMM (AVX2, conv2d_implicit.h) -------------

#ifdef __AVX2__
using detail::ImplicitConv;
using detail::implicit_forward;
using detail::implicit_prepare;
using detail::implicit_weight_grad;
using detail::transpose_from_planes;
using detail::transpose_to_planes;

// A scratch buffer starting on a 64-byte boundary, so that no vector load
// of a row of OCp floats (a multiple of 16) splits a cache line.
float* aligned_scratch(ScratchSlot slot, size_t n) {
    float* p = scratch(slot, n + 15);
    return p + (16 - reinterpret_cast<uintptr_t>(p) / sizeof(float) % 16) % 16;
}

// Image n of x (N, C, H, W) with its padding, as the kernels read it: x itself without padding.
const float* padded_image(const ImplicitConv& ic, const float* x, int64_t n, const ConvDims& d) {
    const float* image = x + n * d.C * d.H * d.W;
    if (d.pad == 0) return image;
    float* xp = scratch(kPadded, d.C * ic.HP * ic.WP);
    pad_image(image, xp, d);
    return xp;
}

// Image n of x (N, C, H, W) convolved as prepared in ic, plus b (OC) or null,
// written to its planes of out (N, OC, OH, OW), or added to them (accumulate).
void implicit_image(const ImplicitConv& ic, const float* x, const float* b, float* out,
                    bool accumulate, int64_t n, const ConvDims& d) {
    float* outT = aligned_scratch(kOutChunk, ic.Pp * ic.OCp);
    implicit_forward(ic, padded_image(ic, x, n, d), outT);
    transpose_to_planes(outT, ic.OCp, d.OC, ic.P, b, accumulate, out + n * d.OC * ic.P);
}

// dwT (Kp, OCp) += the dW of image n, transposed (implicit_weight_grad).
void implicit_weight_grad_image(const ImplicitConv& ic, const float* x, const float* dout,
                                float* dwT, int64_t n, const ConvDims& d) {
    float* gT = aligned_scratch(kDoutT, ic.P * ic.OCp);
    transpose_from_planes(dout + n * d.OC * ic.P, d.OC, ic.P, gT, ic.OCp);
    implicit_weight_grad(ic, padded_image(ic, x, n, d), gT, dwT);
}
#endif

// Whether convolution d goes through the implicit GEMM: one group, not 1x1
// at stride 1 (there the image is its own column matrix), and the batch
// split over the threads (or one thread): the kernels are single-threaded,
// where BLIS would split a batch-1 GEMM.
bool implicit_conv(const ConvDims& d, const ConvChunks& ch) {
#ifdef __AVX2__
    return d.G == 1 && !d.pointwise() && (ch.split || num_threads() == 1);
#else
    return false;
#endif
}

// x (N, C, H, W), w (OC, Cg, KH, KW), b (OC) or null -> out (N, OC, OH, OW)
void conv_gemm_forward(const float* x, const float* w, const float* b, float* out,
                       const ConvDims& d) {
    const ConvChunks ch = conv_chunks(d);
#ifdef __AVX2__
    if (implicit_conv(d, ch)) {
        const ImplicitConv ic = implicit_prepare(w, d);
        for_each_chunk(ch, [&](int64_t c) {
            for (int64_t n = c * ch.images; n < std::min(d.N, (c + 1) * ch.images); n++)
                implicit_image(ic, x, b, out, false, n, d);
        });
        return;
    }
#endif
    for_each_chunk(ch, [&](int64_t c) {
        const int64_t n0 = c * ch.images;
        conv_gemm_images(x, w, b, out, false, n0, std::min(ch.images, d.N - n0), ch.gemm_threads, d);
    });
}

// dx of a stride-1 convolution is itself a stride-1 convolution: of dout
// with the weights flipped in space and with input and output channels
// swapped, padded by KH-1-pad. Computed that way (im2col of dout, one GEMM
// with K = OCg*KH*KW) it needs no col2im, whose scattered adds and whose
// GEMM with inner dimension only OCg cost more than the forward itself.
bool dx_as_conv(const ConvDims& d) {
    return d.stride == 1 && !d.pointwise() && d.KH == d.KW && d.pad <= d.KH - 1;
}

// The convolution dout -> dx of dx_as_conv: its dims, and its weights
// wt (C, OCg, KH, KW), wt[g*Cg + c][oc][kh][kw] = w[g*OCg + oc][c][KH-1-kh][KW-1-kw].
ConvDims dx_conv_dims(const ConvDims& d) {
    ConvDims t = d;
    t.C = d.OC, t.H = d.OH, t.W = d.OW;
    t.OC = d.C, t.OH = d.H, t.OW = d.W;
    t.pad = d.KH - 1 - d.pad;
    return t;
}
std::vector<float> dx_conv_weights(const float* w, const ConvDims& d) {
    const int64_t Cg = d.Cg(), OCg = d.OCg(), KK = d.KH * d.KW;
    std::vector<float> wt(d.OC * Cg * KK);
    for (int64_t g = 0; g < d.G; g++)
        for (int64_t c = 0; c < Cg; c++)
            for (int64_t oc = 0; oc < OCg; oc++) {
                const float* src = w + ((g * OCg + oc) * Cg + c) * KK;
                float* dst = wt.data() + ((g * Cg + c) * OCg + oc) * KK;
                for (int64_t k = 0; k < KK; k++) dst[k] = src[KK - 1 - k];
            }
    return wt;
}

// dout (N, OC, OH, OW) -> dx (N, C, H, W) += (or =, when !dx_accumulate),
// dw (OC, Cg, KH, KW) +=, db (OC) +=; any of dx, dw, db may be null (that
// input needs no gradient).
void conv_gemm_backward(const float* x, const float* w, const float* dout, float* dx,
                        bool dx_accumulate, float* dw, float* db, const ConvDims& d) {
    const int64_t P = d.P(), K = d.K(), OCg = d.OCg();
    const int64_t CK = d.C * d.KH * d.KW;  // rows of the column matrix
    const int64_t image = d.C * d.H * d.W;
    const int64_t wsize = d.OC * K;
    const ConvChunks ch = conv_chunks(d);
    const int partials = ch.split ? num_threads() : 1;

    if (db) {
#pragma omp parallel for schedule(static)
        for (int64_t oc = 0; oc < d.OC; oc++) {
            double s = 0;
            for (int64_t n = 0; n < d.N; n++) {
                const float* g = dout + (n * d.OC + oc) * P;
                float sp = 0;
                for (int64_t p = 0; p < P; p++) sp += g[p];
                s += sp;
            }
            db[oc] += (float)s;
        }
    }
    if (!dx && !dw) return;

    const bool dx_via_conv = dx && dx_as_conv(d);
    const ConvDims dt = dx_via_conv ? dx_conv_dims(d) : d;
    const std::vector<float> wt = dx_via_conv ? dx_conv_weights(w, d) : std::vector<float>();
#ifdef __AVX2__
    const bool dx_implicit = dx_via_conv && implicit_conv(dt, ch);
    const ImplicitConv dx_ic = dx_implicit ? implicit_prepare(wt.data(), dt) : ImplicitConv{};
    const bool dw_implicit = dw && implicit_conv(d, ch);
    const ImplicitConv wg = dw_implicit ? implicit_prepare(nullptr, d) : ImplicitConv{};
#endif
    // Every thread accumulates its images' dW into its own slice of this
    // slab (owned by the calling thread), summed into dw at the end. A slice
    // is dw's (OC, K), or (Kp, OCp), transposed, from the implicit kernel:
    // element (oc, k) at oc*oc_stride + k*k_stride.
#ifdef __AVX2__
    const int64_t slice = dw_implicit ? wg.Kp * wg.OCp : wsize;
    const int64_t oc_stride = dw_implicit ? 1 : K, k_stride = dw_implicit ? wg.OCp : 1;
#else
    const bool dw_implicit = false;
    const int64_t slice = wsize, oc_stride = K, k_stride = 1;
#endif
    float* dw_partial = dw ? scratch(kDwPartials, partials * slice) : nullptr;
    if (dw) std::memset(dw_partial, 0, partials * slice * sizeof(float));

    auto chunk = [&](int64_t c) {
        const int64_t n0 = c * ch.images, nb = std::min(ch.images, d.N - n0), L = nb * P;
        // This chunk's dout as (OC, L): itself for one image, else gathered
        // (unless only dx_via_conv reads it, from dout itself).
        const float* gc = dout + n0 * d.OC * P;
        if (nb > 1 && ((dw && !dw_implicit) || !dx_via_conv)) {
            float* buf = scratch(kOutChunk, d.OC * L);
            for (int64_t i = 0; i < nb; i++)
                for (int64_t oc = 0; oc < d.OC; oc++)
                    std::memcpy(buf + oc * L + i * P, dout + ((n0 + i) * d.OC + oc) * P, P * sizeof(float));
            gc = buf;
        }
        float* dwt = dw ? dw_partial + (ch.split ? omp_get_thread_num() : 0) * slice : nullptr;
#ifdef __AVX2__
        if (dw_implicit)
            for (int64_t i = n0; i < n0 + nb; i++) implicit_weight_grad_image(wg, x, dout, dwt, i, d);
#endif
        if (dw && !dw_implicit) {
            const float* col = chunk_columns(x, n0, nb, d);
            // dw_g (OCg, K) += dout_g (OCg, L) @ col_g^T (L, K)
            for (int64_t g = 0; g < d.G; g++)
                sgemm(false, true, OCg, K, L, 1.0f, gc + g * OCg * L, L, col + g * K * L, L, 1.0f,
                      dwt + g * OCg * K, K, ch.gemm_threads);
        }
        if (dx_via_conv) {
#ifdef __AVX2__
            if (dx_implicit) {
                for (int64_t i = n0; i < n0 + nb; i++) implicit_image(dx_ic, dout, nullptr, dx, dx_accumulate, i, dt);
                return;
            }
#endif
            conv_gemm_images(dout, wt.data(), nullptr, dx, dx_accumulate, n0, nb, ch.gemm_threads, dt);
        } else if (dx) {
            // dcol_g (K, L) = w_g^T (K, OCg) @ dout_g (OCg, L), added back by
            // col2im (onto zeros this thread writes, when dx is not yet a
            // gradient); a single 1x1 image's dcol is its dx, which the GEMM
            // writes or adds to.
            const bool direct = d.pointwise() && nb == 1;
            float* dcol = direct ? dx + n0 * image : scratch(kDcol, CK * L);
            for (int64_t g = 0; g < d.G; g++)
                sgemm(true, false, K, L, OCg, 1.0f, w + g * OCg * K, K, gc + g * OCg * L, L,
                      direct && dx_accumulate ? 1.0f : 0.0f, dcol + g * K * L, L, ch.gemm_threads);
            if (!direct)
                for (int64_t i = 0; i < nb; i++) {
                    if (!dx_accumulate) std::memset(dx + (n0 + i) * image, 0, image * sizeof(float));
                    col2im_add(dcol + i * P, L, dx + (n0 + i) * image, d);
                }
        }
    };
    for_each_chunk(ch, chunk);

    if (dw) {
#pragma omp parallel for schedule(static)
        for (int64_t oc = 0; oc < d.OC; oc++)
            for (int64_t k = 0; k < K; k++) {
                const float* src = dw_partial + oc * oc_stride + k * k_stride;
                float s = 0;
                for (int t = 0; t < partials; t++) s += src[t * slice];
                dw[oc * K + k] += s;
            }
    }
}

// ---- depthwise convolution (direct loops) -----------------------------------

// x (N, C, H, W), w (C, 1, KH, KW), b (C) or null -> out (N, C, OH, OW)
void conv_depthwise_forward(const float* x, const float* w, const float* b, float* out,
                            const ConvDims& d) {
    const int64_t P = d.P();
#pragma omp parallel for schedule(static)
    for (int64_t nc = 0; nc < d.N * d.C; nc++) {
        const int64_t c = nc % d.C;
        const float* xp = x + nc * d.H * d.W;
        const float* wc = w + c * d.KH * d.KW;
        float* op = out + nc * P;
        const float bias = b ? b[c] : 0.0f;
        for (int64_t p = 0; p < P; p++) op[p] = bias;
        for (int64_t kh = 0; kh < d.KH; kh++)
            for (int64_t kw = 0; kw < d.KW; kw++) {
                const float wv = wc[kh * d.KW + kw];
                int64_t lo, hi;
                valid_range(d.OW, d.W, d.stride, d.pad, kw, lo, hi);
                for (int64_t oh = 0; oh < d.OH; oh++) {
                    const int64_t ih = oh * d.stride - d.pad + kh;
                    if (ih < 0 || ih >= d.H) continue;
                    const float* src = xp + ih * d.W - d.pad + kw;
                    float* dst = op + oh * d.OW;
                    if (d.stride == 1)
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] += wv * src[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++) dst[ow] += wv * src[ow * d.stride];
                }
            }
    }
}

// dout (N, C, OH, OW) -> dx (N, C, H, W) +=, dw (C, 1, KH, KW) +=, db (C) +=.
// Threads split the channels, so each owns its dw[c] and db[c].
void conv_depthwise_backward(const float* x, const float* w, const float* dout, float* dx,
                             float* dw, float* db, const ConvDims& d) {
    const int64_t P = d.P(), KK = d.KH * d.KW;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.C; c++) {
        const float* wc = w + c * KK;
        float dwc[64] = {};  // the kernel's taps; KH*KW <= 64 is checked by the caller
        double dbc = 0;
        for (int64_t n = 0; n < d.N; n++) {
            const int64_t nc = n * d.C + c;
            const float* xp = x + nc * d.H * d.W;
            const float* gp = dout + nc * P;
            float* dxp = dx ? dx + nc * d.H * d.W : nullptr;
            if (db) {
                float s = 0;
                for (int64_t p = 0; p < P; p++) s += gp[p];
                dbc += s;
            }
            for (int64_t kh = 0; kh < d.KH; kh++)
                for (int64_t kw = 0; kw < d.KW; kw++) {
                    const float wv = wc[kh * d.KW + kw];
                    int64_t lo, hi;
                    valid_range(d.OW, d.W, d.stride, d.pad, kw, lo, hi);
                    float dwv = 0;
                    for (int64_t oh = 0; oh < d.OH; oh++) {
                        const int64_t ih = oh * d.stride - d.pad + kh;
                        if (ih < 0 || ih >= d.H) continue;
                        const int64_t off = ih * d.W - d.pad + kw;  // input of ow = 0
                        const float* g = gp + oh * d.OW;
                        const float* src = xp + off;
                        const int64_t s = d.stride;
                        if (dw)
                            for (int64_t ow = lo; ow < hi; ow++) dwv += g[ow] * src[ow * s];
                        if (dxp) {
                            float* dst = dxp + off;
                            for (int64_t ow = lo; ow < hi; ow++) dst[ow * s] += wv * g[ow];
                        }
                    }
                    dwc[kh * d.KW + kw] += dwv;
                }
        }
        if (dw)
            for (int64_t k = 0; k < KK; k++) dw[c * KK + k] += dwc[k];
        if (db) db[c] += (float)dbc;
    }
}

[[noreturn]] void conv_error(const std::string& what) {
    throw std::invalid_argument("conv2d: " + what);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, Conv2dParams p) {
    if (!x.defined() || !w.defined()) conv_error("x and weight must be defined");
    if (x.ndim() != 4) conv_error("x " + shape_str(x.shape()) + " must be (N, C, H, W)");
    if (w.ndim() != 4) conv_error("weight " + shape_str(w.shape()) + " must be (OC, C/groups, KH, KW)");
    if (p.stride < 1 || p.padding < 0 || p.groups < 1)
        conv_error("stride " + std::to_string(p.stride) + ", padding " + std::to_string(p.padding) +
                   ", groups " + std::to_string(p.groups) +
                   ": need stride >= 1, padding >= 0, groups >= 1");
    ConvDims d;
    d.N = x.dim(0), d.C = x.dim(1), d.H = x.dim(2), d.W = x.dim(3);
    d.OC = w.dim(0), d.KH = w.dim(2), d.KW = w.dim(3);
    d.G = p.groups, d.stride = p.stride, d.pad = p.padding;
    if (w.dim(1) * d.G != d.C)
        conv_error("weight " + shape_str(w.shape()) + " expects " + std::to_string(w.dim(1)) +
                   "*groups=" + std::to_string(w.dim(1) * d.G) + " input channels, got x " +
                   shape_str(x.shape()));
    if (d.OC % d.G != 0)
        conv_error("weight " + shape_str(w.shape()) + " has " + std::to_string(d.OC) +
                   " output channels, not divisible by groups=" + std::to_string(d.G));
    if (b.defined() && (b.ndim() != 1 || b.dim(0) != d.OC))
        conv_error("bias " + shape_str(b.shape()) + " does not match weight " + shape_str(w.shape()));
    if (d.KH < 1 || d.KW < 1 || d.H + 2 * d.pad < d.KH || d.W + 2 * d.pad < d.KW)
        conv_error("kernel of weight " + shape_str(w.shape()) + " does not fit x " +
                   shape_str(x.shape()) + " with padding " + std::to_string(d.pad));
    d.OH = (d.H + 2 * d.pad - d.KH) / d.stride + 1;
    d.OW = (d.W + 2 * d.pad - d.KW) / d.stride + 1;
    const bool depthwise = d.depthwise() && d.KH * d.KW <= 64;

    Tensor out = Tensor::empty({d.N, d.OC, d.OH, d.OW});
    const float* bias = b.defined() ? b.data() : nullptr;
    if (depthwise)
        conv_depthwise_forward(x.data(), w.data(), bias, out.data(), d);
    else
        conv_gemm_forward(x.data(), w.data(), bias, out.data(), d);

    if (needs_grad({&x, &w, &b})) {
        // x = x: a non-const copy of each handle, whose grad() the backward fills.
        record("conv2d", out, [x = x, w = w, b = b, out, d, depthwise]() mutable {
            // The GEMM paths write every element of dx: no zero-fill needed.
            bool dx_accumulate = true;
            float* dx = !x.requires_grad() ? nullptr
                        : depthwise        ? x.grad()
                                           : x.grad_for_overwrite(dx_accumulate);
            float* dw = w.requires_grad() ? w.grad() : nullptr;
            float* db = b.defined() && b.requires_grad() ? b.grad() : nullptr;
            if (depthwise)
                conv_depthwise_backward(x.data(), w.data(), out.grad(), dx, dw, db, d);
            else
                conv_gemm_backward(x.data(), w.data(), out.grad(), dx, dx_accumulate, dw, db, d);
        });
    }
    return out;
}

}  // namespace qf
