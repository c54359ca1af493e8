#include "quant/observer.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qf::quant {

namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
constexpr float kInf = std::numeric_limits<float>::infinity();

// The finite min/max of n values (autograd's finite_min_max), split between
// the threads when n is large. Not for use inside a parallel region: libgomp
// starts fresh threads for a region opened inside another, even one that
// runs on a single thread, every time.
Range finite_range(const float* p, int64_t n) {
    float lo = kInf, hi = -kInf;
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi) if (n > kParallelMin)
    for (int64_t first = 0; first < n; first += kParallelMin) {
        const Range r = finite_min_max(p + first, std::min(kParallelMin, n - first));
        lo = r.min < lo ? r.min : lo;
        hi = r.max > hi ? r.max : hi;
    }
    return {lo, hi};
}

Range merge(Range a, Range b) { return {std::min(a.min, b.min), std::max(a.max, b.max)}; }

}  // namespace

// ---- Observer ----------------------------------------------------------------

Observer::Observer(std::string name, QuantScheme scheme) : name_(std::move(name)), scheme_(scheme) {
    scheme_.validate(name_);
}

void Observer::observe(const Tensor& x) {
    const ChannelLayout layout = begin_batch(x.shape());
    Batch batch{x.data(), layout, std::vector<Range>(size_t(layout.channels), Range{kInf, -kInf})};
    if (layout.channels == 1) {  // per tensor: its one channel is the whole tensor
        batch.finite[0] = finite_range(x.data(), x.numel());
    } else {  // per channel: the threads split the channels, each measures its own
#pragma omp parallel for schedule(static) if (x.numel() > kParallelMin)
        for (int64_t c = 0; c < layout.channels; c++) {
            for (int64_t o = 0; o < layout.outer; o++) {
                const float* span = x.data() + (o * layout.channels + c) * layout.inner;
                batch.finite[c] = merge(batch.finite[c], finite_min_max(span, layout.inner));
            }
        }
    }
    end_batch(batch);
}

void Observer::observe_range(const Shape& shape, Range finite) {
    if (needs_values() || scheme_.per_channel)
        throw QuantError("observer '" + name_ + "' (" + kind() + "): needs the values, not only their range");
    Batch batch{nullptr, begin_batch(shape), {finite}};
    end_batch(batch);
}

ChannelLayout Observer::begin_batch(const Shape& shape) {
    validate(scheme_, shape, name_);
    const ChannelLayout layout = channel_layout(scheme_, shape);
    if (calls_ == 0) {
        seen_.assign(size_t(layout.channels), false);
    } else if (layout.channels != channels()) {
        throw QuantError("observer '" + name_ + "': tensor of shape " + shape_str(shape) +
                         " has " + std::to_string(layout.channels) + " channels on axis " +
                         std::to_string(scheme_.axis) + ", earlier tensors had " +
                         std::to_string(channels()));
    }
    calls_++;
    return layout;
}

void Observer::end_batch(Batch& batch) {
    if (reduce_) reduce_(batch.finite);
    for (int64_t c = 0; c < batch.layout.channels; c++) {
        if (batch.has(c)) seen_[c] = true;
    }
    update(batch);
}

std::vector<Range> Observer::ranges() const {
    const std::string who = "observer '" + name_ + "' (" + kind() + ")";
    if (calls_ == 0) throw QuantError(who + " saw no data: observe() was never called");
    std::vector<Range> out;
    for (int64_t c = 0; c < channels(); c++) {
        if (!seen_[c]) {
            throw QuantError(who + " saw only NaN/inf values" +
                             (channels() > 1 ? " in channel " + std::to_string(c) : std::string()) +
                             " in " + std::to_string(calls_) + " call(s): no range to quantize");
        }
        out.push_back(channel_range(c));
    }
    return out;
}

// ---- min/max observers ------------------------------------------------------------

void MinMaxObserver::update(const Batch& batch) {
    running_.resize(batch.finite.size(), Range{kInf, -kInf});
    for (size_t c = 0; c < running_.size(); c++) running_[c] = merge(running_[c], batch.finite[c]);
}

MovingAverageMinMaxObserver::MovingAverageMinMaxObserver(std::string name, QuantScheme scheme,
                                                         float momentum)
    : Observer(std::move(name), scheme), momentum_(momentum) {
    if (!(momentum > 0.0f && momentum <= 1.0f)) {
        throw QuantError("observer '" + this->name() + "': momentum " + std::to_string(momentum) +
                         " is outside (0, 1]");
    }
}

void MovingAverageMinMaxObserver::update(const Batch& batch) {
    running_.resize(batch.finite.size());
    started_.resize(batch.finite.size(), false);
    for (size_t c = 0; c < running_.size(); c++) {
        if (!batch.has(int64_t(c))) continue;
        const Range now = batch.finite[c];
        if (!started_[c]) {
            running_[c] = now;
            started_[c] = true;
            continue;
        }
        // Spelled as PyTorch's: running + momentum * (now - running), in float.
        running_[c].min = running_[c].min + momentum_ * (now.min - running_[c].min);
        running_[c].max = running_[c].max + momentum_ * (now.max - running_[c].max);
    }
}

// ---- Histogram ----------------------------------------------------------------------

void Histogram::grow_to(Range r) {
    while (r.min < lo_ || r.max > lo_ + width_ * kBins) {
        std::vector<double> merged(kBins, 0.0);
        if (r.min < lo_) {
            // Extend downwards: the old bins become the upper half, in pairs.
            for (int j = 0; j < kBins; j++) merged[kBins / 2 + j / 2] += counts_[j];
            lo_ -= width_ * kBins;
        } else {
            // Extend upwards: the old bins become the lower half, in pairs.
            for (int j = 0; j < kBins; j++) merged[j / 2] += counts_[j];
        }
        width_ *= 2.0f;
        counts_.swap(merged);
    }
}

void Histogram::add(const float* values, int64_t n, Range finite) {
    if (!(finite.min <= finite.max)) return;  // nothing finite
    if (empty()) {
        // The first values set the range; a constant gets a tiny width.
        const float span = std::max(finite.max - finite.min,
                                    std::max(std::fabs(finite.min) * 1e-6f, 1e-12f));
        lo_ = finite.min;
        width_ = span / kBins;
        while (lo_ + width_ * kBins < finite.max) width_ = std::nextafter(width_, kInf);
        counts_.assign(kBins, 0.0);
        seen_ = finite;
    }
    grow_to(finite);
    seen_ = merge(seen_, finite);
    for (int64_t i = 0; i < n; i++) {
        const float v = values[i];
        if (!is_finite_value(v)) continue;
        const int64_t bin = std::clamp(int64_t((v - lo_) / width_), int64_t(0), int64_t(kBins - 1));
        counts_[bin] += 1.0;
        total_ += 1.0;
    }
}

float Histogram::quantile(double q) const {
    const double target = q * total_;
    double below = 0;
    for (int i = 0; i < kBins; i++) {
        const double n = counts_[i];
        if (n > 0 && below + n >= target) {
            const double fraction = std::max(0.0, (target - below) / n);
            const float v = float(lo_ + double(width_) * (i + fraction));
            return std::clamp(v, seen_.min, seen_.max);
        }
        below += n;
    }
    return seen_.max;
}

// ---- histogram observers -----------------------------------------------------------

void HistogramObserver::update(const Batch& batch) {
    const ChannelLayout& l = batch.layout;
    hist_.resize(size_t(l.channels));
#pragma omp parallel for schedule(dynamic) if (l.channels > 1)
    for (int64_t c = 0; c < l.channels; c++) {
        for (int64_t o = 0; o < l.outer; o++) {
            hist_[c].add(batch.data + (o * l.channels + c) * l.inner, l.inner, batch.finite[c]);
        }
    }
}

PercentileObserver::PercentileObserver(std::string name, QuantScheme scheme, double percentile)
    : HistogramObserver(std::move(name), scheme), percentile_(percentile) {
    if (!(percentile > 50.0 && percentile <= 100.0)) {
        throw QuantError("observer '" + this->name() + "': percentile " + std::to_string(percentile) +
                         " is outside (50, 100]");
    }
}

Range PercentileObserver::channel_range(int64_t c) const {
    const double q = percentile_ / 100.0;
    return {histogram(c).quantile(1.0 - q), histogram(c).quantile(q)};
}

double histogram_quantization_mse(const Histogram& h, const QuantParams& params,
                                  const QuantScheme& scheme) {
    const double s = params.scales[0];
    const double z = params.zero_points[0];
    const double lowest = s * (scheme.qmin() - z), highest = s * (scheme.qmax() - z);
    const double rounding = s * s / 12.0;
    double err = 0;
    for (int i = 0; i < Histogram::kBins; i++) {
        const double n = h.counts()[i];
        if (n == 0) continue;
        const double centre = h.lo() + double(h.bin_width()) * (i + 0.5);
        const double clipped = centre < lowest ? lowest - centre : centre > highest ? centre - highest : 0.0;
        err += n * (clipped > 0 ? clipped * clipped : rounding);
    }
    return h.total() > 0 ? err / h.total() : 0.0;
}

Range MseObserver::channel_range(int64_t c) const {
    const Histogram& h = histogram(c);
    const Range full{std::min(h.seen().min, 0.0f), std::max(h.seen().max, 0.0f)};
    Range best = full;
    double best_err = std::numeric_limits<double>::infinity();
    auto consider = [&](Range candidate) {
        const double err = histogram_quantization_mse(h, choose_qparams(candidate, scheme()), scheme());
        if (err < best_err) best_err = err, best = candidate;
    };
    // Both ends shrunk together, from the widest down (a tie keeps the wider).
    for (int k = kSteps; k >= 1; k--) consider({full.min * k / kSteps, full.max * k / kSteps});
    // Then each end on its own, the other held (a lone outlier on one side
    // should not clip the other), twice round.
    for (int round = 0; round < 2; round++) {
        for (int k = kSteps; k >= 1; k--) consider({best.min, full.max * k / kSteps});
        for (int k = kSteps; k >= 1; k--) consider({full.min * k / kSteps, best.max});
    }
    return best;
}

// ---- by name ---------------------------------------------------------------------------

ObserverKind parse_observer_kind(const std::string& s) {
    if (s == "minmax") return ObserverKind::minmax;
    if (s == "moving_average") return ObserverKind::moving_average;
    if (s == "percentile") return ObserverKind::percentile;
    if (s == "mse") return ObserverKind::mse;
    throw QuantError("observer '" + s + "' is not one of minmax, moving_average, percentile, mse");
}

std::unique_ptr<Observer> make_observer(ObserverKind kind, std::string name, QuantScheme scheme,
                                        ObserverOptions options) {
    switch (kind) {
        case ObserverKind::minmax: return std::make_unique<MinMaxObserver>(std::move(name), scheme);
        case ObserverKind::moving_average:
            return std::make_unique<MovingAverageMinMaxObserver>(std::move(name), scheme, options.momentum);
        case ObserverKind::percentile:
            return std::make_unique<PercentileObserver>(std::move(name), scheme, options.percentile);
        case ObserverKind::mse: return std::make_unique<MseObserver>(std::move(name), scheme);
    }
    throw QuantError("make_observer: unknown kind");
}

}  // namespace qf::quant
