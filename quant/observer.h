// Observers: they see float tensors (calibration batches, or every QAT step)
// and produce the range [min, max] that choose_qparams turns into a scale and
// zero point, one range per tensor or one per channel of the scheme's axis.
//
// Example:
//   MovingAverageMinMaxObserver obs("layer1.0.act", act_scheme, 0.01f);
//   for (batch...) obs.observe(activation);
//   QuantParams p = obs.qparams();
//
// NaN and infinite values are skipped: they carry no range. An observer that
// saw no finite value (never called, or only NaN/inf) throws QuantError
// naming itself when asked for its range.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "quant/scheme.h"

namespace qf::quant {

class Observer {
public:
    Observer(std::string name, QuantScheme scheme);
    virtual ~Observer() = default;

    // Sees one tensor. Throws QuantError if the tensor lacks the per-channel
    // axis or its channel count differs from earlier calls.
    void observe(const Tensor& x);
    // The same for a per-tensor observer that needs only the range
    // (needs_values() false), given a tensor of `shape` whose finite values
    // span `finite` (min > max: none): what the op that wrote it measured.
    void observe_range(const Shape& shape, Range finite);
    // Whether update() reads the values (histograms), not just their range.
    virtual bool needs_values() const { return false; }
    // The range per channel (one for per tensor). Throws QuantError if a
    // channel saw no finite value.
    std::vector<Range> ranges() const;
    QuantParams qparams() const { return choose_qparams(ranges(), scheme_); }

    const std::string& name() const { return name_; }
    const QuantScheme& scheme() const { return scheme_; }
    virtual const char* kind() const = 0;  // "minmax", ... for messages

    // Data-parallel training: combines each observed batch's per-channel
    // finite ranges with the other processes' ({+inf, -inf} where a channel
    // had none) before the observer uses them, so that every process's
    // observer moves identically. Unset (the default): this process's ranges.
    using RangeReduce = std::function<void(std::vector<Range>& batch_ranges)>;
    void set_range_reduce(RangeReduce reduce) { reduce_ = std::move(reduce); }

protected:
    // One observed tensor, already split into channels, with each channel's
    // finite min/max (max < min where a channel had none).
    struct Batch {
        const float* data;
        ChannelLayout layout;
        std::vector<Range> finite;
        bool has(int64_t c) const { return finite[c].min <= finite[c].max; }
    };
    virtual void update(const Batch& batch) = 0;  // batch.data is null from observe_range
    // Called only for channels that saw finite values.
    virtual Range channel_range(int64_t c) const = 0;

    int64_t channels() const { return int64_t(seen_.size()); }
    // observe's steps before and after the batch's ranges are known.
    ChannelLayout begin_batch(const Shape& shape);
    void end_batch(Batch& batch);

private:
    std::string name_;
    QuantScheme scheme_;
    std::vector<bool> seen_;  // per channel: any finite value so far
    int64_t calls_ = 0;
    RangeReduce reduce_;
};

// The smallest min and largest max ever seen (PyTorch's MinMaxObserver and
// PerChannelMinMaxObserver).
class MinMaxObserver : public Observer {
public:
    using Observer::Observer;
    const char* kind() const override { return "minmax"; }

protected:
    void update(const Batch& batch) override;
    Range channel_range(int64_t c) const override { return running_[c]; }

private:
    std::vector<Range> running_;
};

// An exponential moving average of each batch's min and max; the first batch
// sets them: running += momentum * (batch - running) (PyTorch's
// MovingAverage[PerChannel]MinMaxObserver with averaging_constant = momentum).
class MovingAverageMinMaxObserver : public Observer {
public:
    MovingAverageMinMaxObserver(std::string name, QuantScheme scheme, float momentum = 0.01f);
    const char* kind() const override { return "moving_average"; }

protected:
    void update(const Batch& batch) override;
    Range channel_range(int64_t c) const override { return running_[c]; }

private:
    float momentum_;
    std::vector<Range> running_;
    std::vector<bool> started_;
};

// A histogram of kBins equal bins that grows to hold every value seen: when a
// value falls outside it, the bin width doubles (pairs of neighbouring bins
// merge, exactly) and the histogram extends on that side, as often as needed.
// Counts are never interpolated; the resolution is the final width / kBins.
class Histogram {
public:
    static constexpr int kBins = 2048;
    bool empty() const { return counts_.empty(); }
    // Adds values (non-finite ones skipped), given their finite min/max.
    void add(const float* values, int64_t n, Range finite);
    // The value below which a fraction q of the counts lie, interpolated
    // linearly inside a bin and kept within the exact min/max seen.
    float quantile(double q) const;
    Range seen() const { return seen_; }  // the exact min and max
    float lo() const { return lo_; }
    float bin_width() const { return width_; }
    const std::vector<double>& counts() const { return counts_; }
    double total() const { return total_; }

private:
    void grow_to(Range r);
    float lo_ = 0.0f, width_ = 0.0f;
    std::vector<double> counts_;
    double total_ = 0;
    Range seen_;
};

// Base of the histogram observers: one histogram per channel.
class HistogramObserver : public Observer {
public:
    using Observer::Observer;
    const Histogram& histogram(int64_t c) const { return hist_[c]; }
    bool needs_values() const override { return true; }

protected:
    void update(const Batch& batch) override;

private:
    std::vector<Histogram> hist_;
};

// [quantile(1 - p/100), quantile(p/100)]: outliers beyond the percentile are
// clipped (e.g. 99.99 clips the highest and lowest 0.01%).
class PercentileObserver : public HistogramObserver {
public:
    PercentileObserver(std::string name, QuantScheme scheme, double percentile = 99.99);
    const char* kind() const override { return "percentile"; }

protected:
    Range channel_range(int64_t c) const override;

private:
    double percentile_;
};

// The clipping range with the least expected squared quantization error.
// Candidates: first [a * min, a * max] for a = k / kSteps, k = kSteps..1
// (min, max: the range seen, widened to include 0); then, twice round, the
// upper end alone and the lower end alone on the same grid, the other end
// held at the best so far (so an outlier on one side does not force clipping
// the other). For each candidate, the actual (nudged) qparams give the
// representable interval; from the histogram, a value inside it costs the
// rounding error s^2 / 12 (uniform within a step), one outside it costs its
// squared distance to the interval (the bin centre stands for the bin's
// values). 500 candidates x 2048 bins per channel.
class MseObserver : public HistogramObserver {
public:
    static constexpr int kSteps = 100;
    using HistogramObserver::HistogramObserver;
    const char* kind() const override { return "mse"; }

protected:
    Range channel_range(int64_t c) const override;
};

// Expected squared error of quantizing the histogram's values with `params`
// (channel 0 of them) under `scheme`, as MseObserver estimates it; divided by
// the count.
double histogram_quantization_mse(const Histogram& h, const QuantParams& params,
                                  const QuantScheme& scheme);

enum class ObserverKind { minmax, moving_average, percentile, mse };
// "minmax", "moving_average", "percentile", "mse"; throws QuantError otherwise.
ObserverKind parse_observer_kind(const std::string& s);

struct ObserverOptions {
    float momentum = 0.01f;      // moving_average
    double percentile = 99.99;   // percentile
};
std::unique_ptr<Observer> make_observer(ObserverKind kind, std::string name, QuantScheme scheme,
                                        ObserverOptions options = {});

}  // namespace qf::quant
