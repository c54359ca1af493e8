// The learning rate at each training step, from the `schedule` config.
//
// Example:
//   LrSchedule schedule(cfg.schedule, cfg.optimizer.lr, cfg.train.epochs, steps_per_epoch);
//   optimizer->step(schedule.lr(global_step));
//
// Steps are counted from 0 over the whole run: lr(s) is the rate of the s-th
// update. Shapes, with warmup_steps = round(warmup_epochs * steps_per_epoch):
// - warmup (any schedule): lr * (s + 1) / warmup_steps for s < warmup_steps;
// - cosine: from lr at the end of warmup to final_lr at the last step + 1, per
//   step, as torch's CosineAnnealingLR stepped every iteration:
//   final_lr + (lr - final_lr) * (1 + cos(pi * t / T)) / 2 with t the steps
//   since warmup and T the steps after warmup;
// - step: lr * gamma^(milestones <= the current epoch), epochs counted from 0;
// - constant: lr.
#pragma once
#include <cstdint>

#include "train/config.h"

namespace qf::train {

class LrSchedule {
public:
    LrSchedule(const ScheduleConfig& cfg, double base_lr, int epochs, int64_t steps_per_epoch);
    double lr(int64_t step) const;
    int64_t total_steps() const { return total_steps_; }
    int64_t warmup_steps() const { return warmup_steps_; }

private:
    ScheduleConfig cfg_;
    double base_lr_;
    int64_t steps_per_epoch_;
    int64_t total_steps_;
    int64_t warmup_steps_;
};

}  // namespace qf::train
