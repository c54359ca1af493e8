#include "train/metrics.h"

#include <unistd.h>

#include <cmath>
#include <stdexcept>

namespace qf::train {

MetricsLog::MetricsLog(const std::string& path, bool append)
    : path_(path), file_(path, append ? std::ios::app : std::ios::trunc) {
    if (!file_) throw std::runtime_error("cannot open metrics log " + path);
}

void MetricsLog::write(const nlohmann::json& record) {
    // Replace rather than throw on invalid UTF-8 in strings (a file name, say).
    file_ << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    file_.flush();
    if (!file_) throw std::runtime_error("cannot write metrics log " + path_);
}

bool stdout_is_terminal() { return isatty(STDOUT_FILENO) == 1; }

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    long s = std::lround(seconds);
    char text[32];
    if (s >= 3600)
        std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
    return text;
}

Progress::Progress(std::string label, int64_t total_steps, int64_t first_step, int log_every, bool terminal,
                   std::FILE* out)
    : label_(std::move(label)), total_steps_(total_steps), first_step_(first_step),
      log_every_(log_every < 1 ? 1 : log_every), terminal_(terminal), out_(out) {}

double Progress::elapsed_seconds() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
}

double Progress::images_per_second() const {
    double t = elapsed_seconds();
    return t > 0 ? (double)images_ / t : 0.0;
}

std::string Progress::line(int64_t done, double loss, double accuracy, double lr) const {
    double t = elapsed_seconds();
    int64_t steps_here = done - first_step_;
    double eta = steps_here > 0 ? t / (double)steps_here * (double)(total_steps_ - done) : NAN;
    int width = (int)std::to_string(total_steps_).size();
    char text[256];
    std::snprintf(text, sizeof text, "%s [%*lld/%lld]  loss %.4f  acc %6.2f%%  lr %.5g  %.0f img/s  ETA %s",
                  label_.c_str(), width, (long long)done, (long long)total_steps_, loss, 100.0 * accuracy, lr,
                  images_per_second(), format_duration(eta).c_str());
    return text;
}

void Progress::update(int64_t done, int64_t batch_images, double loss, double accuracy, double lr) {
    images_ += batch_images;
    bool last = done >= total_steps_;
    if (terminal_) {
        Clock::time_point now = Clock::now();
        if (!last && line_open_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
        last_draw_ = now;
        // \r returns to the line start; ESC[K clears what a longer line left.
        std::fprintf(out_, "\r%s\x1b[K", line(done, loss, accuracy, lr).c_str());
        line_open_ = true;
    } else if (done % log_every_ == 0 || last) {
        std::fprintf(out_, "%s\n", line(done, loss, accuracy, lr).c_str());
    }
    std::fflush(out_);
}

void Progress::finish() {
    if (line_open_) std::fprintf(out_, "\n");
    line_open_ = false;
    std::fflush(out_);
}

}  // namespace qf::train
