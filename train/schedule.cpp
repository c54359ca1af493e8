#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

namespace qf::train {

LrSchedule::LrSchedule(const ScheduleConfig& cfg, double base_lr, int epochs, int64_t steps_per_epoch)
    : cfg_(cfg), base_lr_(base_lr), steps_per_epoch_(steps_per_epoch),
      total_steps_((int64_t)epochs * steps_per_epoch),
      warmup_steps_(std::llround(cfg.warmup_epochs * (double)steps_per_epoch)) {
    if (steps_per_epoch <= 0) throw std::invalid_argument("LrSchedule: steps_per_epoch must be positive");
    warmup_steps_ = std::min(warmup_steps_, total_steps_);
}

double LrSchedule::lr(int64_t step) const {
    if (step < warmup_steps_) return base_lr_ * (double)(step + 1) / (double)warmup_steps_;
    switch (cfg_.name) {
        case ScheduleKind::Constant: return base_lr_;
        case ScheduleKind::Step: {
            int64_t epoch = step / steps_per_epoch_;
            int passed = (int)std::count_if(cfg_.milestones.begin(), cfg_.milestones.end(),
                                            [&](int m) { return m <= epoch; });
            return base_lr_ * std::pow(cfg_.gamma, passed);
        }
        case ScheduleKind::Cosine: {
            int64_t span = total_steps_ - warmup_steps_;
            if (span <= 0) return cfg_.final_lr;
            double progress = std::min(1.0, (double)(step - warmup_steps_) / (double)span);
            return cfg_.final_lr + (base_lr_ - cfg_.final_lr) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
        }
    }
    return base_lr_;
}

}  // namespace qf::train
