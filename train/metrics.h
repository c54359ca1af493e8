// What a run reports: a JSONL metrics log for programs, and a progress
// display for people.
//
// Example:
//   MetricsLog log(out_dir + "/metrics.jsonl", /*append=*/resuming);
//   Progress progress("epoch 1/3", steps_per_epoch, 0, cfg.train.log_every, stdout_is_terminal());
//   for (...) { ...; progress.update(step + 1, batch_images, mean_loss, accuracy, lr); }
//   progress.finish();
//   log.write({{"kind", "eval"}, {"epoch", 1}, {"acc", 0.91}, ...});
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace qf::train {

// One JSON object per line, flushed after each line: a crash loses nothing
// already written, and `tail -f` shows records as they come.
class MetricsLog {
public:
    // append = true continues an existing log (a resumed run); false starts
    // it afresh. Throws std::runtime_error naming the path if it can't open.
    MetricsLog(const std::string& path, bool append);
    void write(const nlohmann::json& record);
    const std::string& path() const { return path_; }

private:
    std::string path_;
    std::ofstream file_;
};

// True when standard output is a terminal (not a file or a pipe).
bool stdout_is_terminal();

// "0:42", "12:03", "1:02:03".
std::string format_duration(double seconds);

// Progress of one phase (an epoch, an evaluation). On a terminal, a single
// line redrawn in place (at most ten times a second) with loss, accuracy,
// images/s and ETA; otherwise the same line printed every log_every steps
// and at the last step, for log files.
class Progress {
public:
    // `label` starts each line ("epoch 2/3"); steps are counted from
    // `first_step` (not 0 when a resumed run starts mid-epoch) to `total_steps`.
    Progress(std::string label, int64_t total_steps, int64_t first_step, int log_every, bool terminal,
             std::FILE* out = stdout);
    // `done` steps of the phase are complete, the last of `batch_images`
    // images; loss and accuracy (a fraction) are the caller's running means.
    void update(int64_t done, int64_t batch_images, double loss, double accuracy, double lr);
    // Ends the line being redrawn on a terminal.
    void finish();
    double elapsed_seconds() const;
    double images_per_second() const;

private:
    std::string line(int64_t done, double loss, double accuracy, double lr) const;

    using Clock = std::chrono::steady_clock;
    std::string label_;
    int64_t total_steps_, first_step_;
    int log_every_;
    bool terminal_;
    std::FILE* out_;
    Clock::time_point start_ = Clock::now(), last_draw_{};
    int64_t images_ = 0;
    bool line_open_ = false;
};

}  // namespace qf::train
