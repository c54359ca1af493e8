// The int8 graph end to end in memory: models built through the format
// writer, saved, loaded and run, against the reference kernels run by hand op
// by op (bit for bit); the file round trip; buffers reused across batches;
// the profile.
#include <doctest/doctest.h>
#include <omp.h>

#include <unistd.h>

#include <filesystem>
#include <random>
#include <vector>

#include "infer/kernels/reference/reference.h"
#include "infer/model.h"
#include "infer/quantize.h"
#include "tiny_models.h"

using namespace qf::infer;
using namespace qf::infer::test;

namespace {

// Sets the OpenMP thread count for a scope.
struct ThreadCount {
    int saved = omp_get_max_threads();
    explicit ThreadCount(int n) { omp_set_num_threads(n); }
    ~ThreadCount() { omp_set_num_threads(saved); }
};

// Random normalized images, batch x C x H x W, with a few values far out of
// the input range (they must clamp).
std::vector<float> random_images(std::mt19937_64& rng, const InputSpec& in, int batch) {
    std::vector<float> images(size_t(batch) * in.channels * in.height * in.width);
    std::normal_distribution<float> normal(0.0f, 1.2f);
    for (float& x : images) x = normal(rng);
    images[0] = 1e6f;
    images[images.size() - 1] = -1e6f;
    return images;
}

// The quantized input as the hand-run oracle makes it: quantize each float,
// then place it at its NHWC position.
std::vector<int8_t> quantize_input_nhwc(const InputSpec& in, const std::vector<float>& nchw, int batch) {
    const int C = in.channels, H = in.height, W = in.width;
    std::vector<int8_t> nhwc(nchw.size());
    for (int b = 0; b < batch; ++b)
        for (int c = 0; c < C; ++c)
            for (int y = 0; y < H; ++y)
                for (int x = 0; x < W; ++x) {
                    const size_t from = ((size_t(b) * C + c) * H + y) * W + x;
                    quantize(&nchw[from], 1, float(in.scale), in.zero_point,
                             &nhwc[((size_t(b) * H + y) * W + x) * C + c], in.qmin, in.qmax);
                }
    return nhwc;
}

Conv2dParams conv_params(const Conv2dSpec& c, int in_h, int in_w, int32_t input_zero_point) {
    Conv2dParams p;
    p.in_h = in_h, p.in_w = in_w, p.in_c = c.in_c_per_group * c.groups;
    p.out_c = c.out_c, p.kernel_h = c.kernel_h, p.kernel_w = c.kernel_w;
    p.stride_h = c.window.stride_h, p.stride_w = c.window.stride_w;
    p.pad_top = c.window.pad_top, p.pad_left = c.window.pad_left;
    p.pad_bottom = c.window.pad_bottom, p.pad_right = c.window.pad_right;
    p.groups = c.groups;
    p.input_zero_point = input_zero_point;
    p.weight_zero_points = c.weight_zero_points;
    p.multipliers = c.multipliers;
    p.output = c.output;
    return p;
}

// Reference conv of `spec` on x (NHWC, in_h x in_w); returns the output and its size.
std::vector<int8_t> ref_conv(const Conv2dSpec& spec, int batch, int& h, int& w, int32_t zx,
                             const std::vector<int8_t>& x) {
    const Conv2dParams p = conv_params(spec, h, w, zx);
    std::vector<int8_t> y(size_t(batch) * p.out_h() * p.out_w() * p.out_c);
    reference::conv2d(p, batch, x.data(), spec.weights.data(), spec.bias.data(), y.data());
    h = p.out_h(), w = p.out_w();
    return y;
}

std::vector<int8_t> ref_fc(const FullyConnectedSpec& spec, int batch, int32_t zx, const std::vector<int8_t>& x,
                           const std::vector<int8_t>* columns_override = nullptr) {
    FullyConnectedParams p;
    p.in_features = spec.in_features, p.out_features = spec.out_features;
    p.input_zero_point = zx;
    p.weight_zero_points = spec.weight_zero_points;
    p.multipliers = spec.multipliers;
    p.output = spec.output;
    std::vector<int8_t> y(size_t(batch) * p.out_features);
    const std::vector<int8_t>& weights = columns_override ? *columns_override : spec.weights;
    reference::fully_connected(p, batch, x.data(), weights.data(), spec.bias.data(), y.data());
    return y;
}

template <class T>
const T& op_at(const ModelSpec& m, size_t i) {
    return std::get<T>(m.ops[i].op);
}

// A fresh file path under the temp folder, removed at the end of the test.
struct TempFile {
    std::string path;
    explicit TempFile(const std::string& name)
        : path((std::filesystem::temp_directory_path() / ("qf_infer_test_" + std::to_string(::getpid()) + "_" + name)).string()) {}
    ~TempFile() { std::filesystem::remove(path); }
};

}  // namespace

TEST_CASE("a model round-trips through the file unchanged") {
    std::mt19937_64 rng(1);
    for (const ModelSpec& m : {residual_model(rng), lenet_like_model(rng), concat_model(rng)}) {
        const std::vector<uint8_t> bytes = model_to_bytes(m);
        const ModelSpec back = parse_model(qf::safetensors::parse(bytes, "memory"));
        CHECK(model_to_bytes(back) == bytes);
        CHECK(back.ops.size() == m.ops.size());
        CHECK(back.class_names == m.class_names);
        CHECK(back.input.mean == m.input.mean);
        CHECK(back.input.scale == m.input.scale);
    }
}

TEST_CASE("residual graph (conv, depthwise, 1x1, add, global pool, fc) is bit-exact with the reference kernels") {
    std::mt19937_64 rng(2);
    const ModelSpec m = residual_model(rng, 3, 9, 7);
    TempFile file("residual.safetensors");
    write_model(m, file.path);
    Model model = Model::load(file.path);
    REQUIRE(model.num_classes() == 10);

    // 2 after 4: the buffers are reused, not regrown. 13 and 40 on 3
    // threads: the batch is split into runs of whole images that the threads
    // take as they go (13: runs of 2 and a last 1; 40: 6, 5, 4, 4, 3, 3, 2...),
    // not each op.
    const ThreadCount three(3);
    REQUIRE(13 >= Model::kMinImagesPerThread * 3);
    for (int batch : {1, 4, 2, 13, 40}) {
        INFO("batch " << batch);
        const std::vector<float> images = random_images(rng, m.input, batch);
        const std::vector<int8_t> x = quantize_input_nhwc(m.input, images, batch);

        const auto& stem = op_at<Conv2dSpec>(m, 0);
        const auto& depthwise = op_at<Conv2dSpec>(m, 1);
        const auto& project = op_at<Conv2dSpec>(m, 2);
        const auto& add = op_at<AddSpec>(m, 3);
        const auto& pool = op_at<GlobalAvgPoolSpec>(m, 4);
        const auto& fc = op_at<FullyConnectedSpec>(m, 5);
        int h = m.input.height, w = m.input.width;
        const auto a = ref_conv(stem, batch, h, w, m.input.zero_point, x);
        const auto b = ref_conv(depthwise, batch, h, w, stem.output.zero_point, a);
        const auto c = ref_conv(project, batch, h, w, depthwise.output.zero_point, b);
        std::vector<int8_t> d(a.size());
        const AddParams add_params{stem.output.zero_point, project.output.zero_point, add.input1_multiplier,
                                   add.input2_multiplier, add.output_multiplier, add.output};
        reference::add(add_params, int64_t(a.size()), a.data(), c.data(), d.data());
        std::vector<int8_t> e(size_t(batch) * 8);
        reference::average_pool(global_average_pool_params(h, w, 8, add.output.zero_point, pool.multiplier, pool.output),
                                batch, d.data(), e.data());
        const auto logits = ref_fc(fc, batch, pool.output.zero_point, e);

        const auto q = model.run_quantized(images.data(), batch);
        CHECK(std::vector<int8_t>(q.begin(), q.end()) == logits);
        int distinct = 0;  // the random multipliers must not collapse everything onto a clamp
        for (int8_t v : logits) distinct += v != logits[0];
        CHECK(distinct > 0);

        const auto real = model.run(images.data(), batch);
        REQUIRE(real.size() == logits.size());
        for (size_t i = 0; i < logits.size(); ++i) CHECK(real[i] == float(m.output.scale) * float(logits[i] - m.output.zero_point));
    }
}

TEST_CASE("lenet-like graph: max pool, flatten with FC columns reordered at freeze, bit-exact") {
    std::mt19937_64 rng(3);
    const ModelSpec m = lenet_like_model(rng, 12, 12);
    Model model(m, "lenet-like");
    const int batch = 3;
    const std::vector<float> images = random_images(rng, m.input, batch);
    const std::vector<int8_t> x = quantize_input_nhwc(m.input, images, batch);

    const auto& conv1 = op_at<Conv2dSpec>(m, 0);
    const auto& pool = op_at<MaxPoolSpec>(m, 1);
    const auto& conv2 = op_at<Conv2dSpec>(m, 2);
    const auto& fc1 = op_at<FullyConnectedSpec>(m, 4);
    const auto& fc2 = op_at<FullyConnectedSpec>(m, 5);
    int h = 12, w = 12;
    const auto a = ref_conv(conv1, batch, h, w, m.input.zero_point, x);
    PoolParams pp;
    pp.in_h = h, pp.in_w = w, pp.channels = 4, pp.kernel_h = pp.kernel_w = 2, pp.stride_h = pp.stride_w = 2;
    pp.input_zero_point = conv1.output.zero_point;
    pp.output = {conv1.output.zero_point, pool.qmin, pool.qmax};
    std::vector<int8_t> b(size_t(batch) * pp.out_h() * pp.out_w() * 4);
    reference::max_pool(pp, batch, a.data(), b.data());
    h = pp.out_h(), w = pp.out_w();
    const auto c = ref_conv(conv2, batch, h, w, conv1.output.zero_point, b);

    // The fp32 model's view: flatten NCHW and apply the FC's original columns.
    std::vector<int8_t> c_nchw(c.size());
    const int C = conv2.out_c;
    for (int n = 0; n < batch; ++n)
        for (int ch = 0; ch < C; ++ch)
            for (int i = 0; i < h * w; ++i) c_nchw[(size_t(n) * C + ch) * h * w + i] = c[(size_t(n) * h * w + i) * C + ch];
    std::vector<int8_t> original_columns(fc1.weights.size());  // invert the reordering of the builder
    const int in_features = fc1.in_features;
    for (int o = 0; o < fc1.out_features; ++o)
        for (int ch = 0; ch < C; ++ch)
            for (int i = 0; i < h * w; ++i)
                original_columns[size_t(o) * in_features + size_t(ch) * h * w + i] =
                    fc1.weights[size_t(o) * in_features + size_t(i) * C + ch];
    const auto e = ref_fc(fc1, batch, conv2.output.zero_point, c_nchw, &original_columns);
    const auto logits = ref_fc(fc2, batch, fc1.output.zero_point, e);

    const auto q = model.run_quantized(images.data(), batch);
    CHECK(std::vector<int8_t>(q.begin(), q.end()) == logits);
}

TEST_CASE("concat graph (two scales), average pool, global pool: bit-exact") {
    std::mt19937_64 rng(4);
    const ModelSpec m = concat_model(rng);
    Model model = Model::from_bytes(model_to_bytes(m), "concat");
    const ThreadCount two(2);
    for (int batch : {2, 9}) {  // 9 on 2 threads: 4 + 5 images per thread
        INFO("batch " << batch);
        const std::vector<float> images = random_images(rng, m.input, batch);
        const std::vector<int8_t> x = quantize_input_nhwc(m.input, images, batch);

        const auto& left = op_at<Conv2dSpec>(m, 0);
        const auto& right = op_at<Conv2dSpec>(m, 1);
        const auto& cat = op_at<ConcatSpec>(m, 2);
        const auto& avg = op_at<AvgPoolSpec>(m, 3);
        const auto& gap = op_at<GlobalAvgPoolSpec>(m, 4);
        const auto& fc = op_at<FullyConnectedSpec>(m, 5);
        int h = 8, w = 8, h2 = 8, w2 = 8;
        const auto a = ref_conv(left, batch, h, w, m.input.zero_point, x);
        const auto b = ref_conv(right, batch, h2, w2, m.input.zero_point, x);
        ConcatParams cp;
        cp.h = h, cp.w = w, cp.output_zero_point = cat.output_zero_point;
        cp.inputs = {{3, left.output.zero_point, cat.multipliers[0]}, {5, right.output.zero_point, cat.multipliers[1]}};
        std::vector<int8_t> c(size_t(batch) * h * w * 8);
        const int8_t* parts[] = {a.data(), b.data()};
        reference::concat(cp, batch, parts, c.data());
        PoolParams pp;
        pp.in_h = h, pp.in_w = w, pp.channels = 8, pp.kernel_h = pp.kernel_w = 2, pp.stride_h = pp.stride_w = 2;
        pp.input_zero_point = cat.output_zero_point, pp.multiplier = avg.multiplier, pp.output = avg.output;
        std::vector<int8_t> d(size_t(batch) * 4 * 4 * 8);
        reference::average_pool(pp, batch, c.data(), d.data());
        std::vector<int8_t> e(size_t(batch) * 8);
        reference::average_pool(global_average_pool_params(4, 4, 8, avg.output.zero_point, gap.multiplier, gap.output),
                                batch, d.data(), e.data());
        const auto logits = ref_fc(fc, batch, gap.output.zero_point, e);

        const auto q = model.run_quantized(images.data(), batch);
        CHECK(std::vector<int8_t>(q.begin(), q.end()) == logits);
    }
}

TEST_CASE("activations share buffers unless the op outputs are kept") {
    std::mt19937_64 rng(6);
    const ModelSpec m = residual_model(rng, 3, 9, 7);  // stem, depthwise, 1x1, add, pool, fc
    Model model(m);
    const int64_t shared = model.activation_elements();
    const std::vector<float> images = random_images(rng, m.input, 5);
    const auto q = model.run_quantized(images.data(), 5);
    const std::vector<int8_t> logits(q.begin(), q.end());
    CHECK_THROWS_AS(model.op_output(0), std::logic_error);

    model.keep_op_outputs();
    const auto kept = model.run_quantized(images.data(), 5);
    CHECK(std::vector<int8_t>(kept.begin(), kept.end()) == logits);
    // Shared, the add's output took the depthwise output's buffer (read by
    // the 1x1 conv before): one stem-sized value less than one buffer each.
    const Model::OpOutput stem = model.op_output(0);
    CHECK(model.activation_elements() - shared == int64_t(stem.h) * stem.w * stem.c);
    const Model::OpOutput last = model.op_output(model.num_ops() - 1);
    CHECK(std::vector<int8_t>(last.data, last.data + logits.size()) == logits);
}

TEST_CASE("the profile counts each op's runs") {
    std::mt19937_64 rng(5);
    const ModelSpec m = residual_model(rng);
    Model model(m);
    const std::vector<float> images = random_images(rng, m.input, 2);
    model.run(images.data(), 2);  // not profiled
    model.set_profiling(true);
    model.run(images.data(), 2);
    model.run(images.data(), 1);
    REQUIRE(model.profile().size() == m.ops.size());
    for (size_t i = 0; i < m.ops.size(); ++i) {
        CHECK(model.profile()[i].calls == 2);
        CHECK(model.profile()[i].name == m.ops[i].name);
        CHECK(model.profile()[i].type == op_type_name(m.ops[i].op));
        CHECK(model.profile()[i].seconds >= 0);
    }
    model.reset_profile();
    CHECK(model.profile()[0].calls == 0);
    CHECK_THROWS_AS(model.run(images.data(), 0), std::invalid_argument);
}

TEST_CASE("fc_weights_chw_to_hwc moves column (c, y, x) to (y, x, c)") {
    // 1 output, 2 channels, 1 x 3 image: CHW columns c0x0 c0x1 c0x2 c1x0 c1x1 c1x2.
    const int8_t chw[] = {0, 1, 2, 10, 11, 12};
    CHECK(fc_weights_chw_to_hwc(chw, 1, 2, 1, 3) == std::vector<int8_t>{0, 10, 1, 11, 2, 12});
}
