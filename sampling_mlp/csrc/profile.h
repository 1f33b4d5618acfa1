// Time spent in the phases of a native kernel, for the benchmark's
// --breakdown (sampling_mlp/native.py, Library.phase_times): off unless
// switched on, when each phase's nanoseconds are added up over every
// thread.  A library defines its phases once, with
// SAMPLING_MLP_DEFINE_PROFILE("name", ...), and times a region with
// `PhaseTimer t(phase);` (or t.Switch(next) to move to the next phase).

#ifndef SAMPLING_MLP_CSRC_PROFILE_H_
#define SAMPLING_MLP_CSRC_PROFILE_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace sampling_mlp {

constexpr int kMaxPhases = 8;

struct Profile {
  std::atomic<bool> on{false};
  std::atomic<uint64_t> ns[kMaxPhases] = {};
};

inline Profile& GetProfile() {
  static Profile profile;
  return profile;
}

// Adds the time from its construction (or last Switch) to its destruction
// (or next Switch) to the current phase, when profiling is on.
class PhaseTimer {
 public:
  explicit PhaseTimer(int phase)
      : phase_(phase), on_(GetProfile().on.load(std::memory_order_relaxed)) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~PhaseTimer() { Stop(); }
  void Switch(int phase) {
    Stop();
    phase_ = phase;
    if (on_) start_ = std::chrono::steady_clock::now();
  }

 private:
  void Stop() {
    if (!on_ || phase_ < 0) return;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now() - start_).count();
    GetProfile().ns[phase_].fetch_add(ns, std::memory_order_relaxed);
    phase_ = -1;
  }
  int phase_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace sampling_mlp

// The library's C entry points: its phase names, switching the timers on or
// off (which zeroes them), and reading the nanoseconds of each phase.
#define SAMPLING_MLP_DEFINE_PROFILE(...)                                  \
  extern "C" {                                                            \
  const char* sampling_mlp_phase_names() { return #__VA_ARGS__; }         \
  void sampling_mlp_profile(int32_t on) {                                 \
    auto& p = sampling_mlp::GetProfile();                                 \
    for (auto& v : p.ns) v.store(0);                                      \
    p.on.store(on != 0);                                                  \
  }                                                                       \
  void sampling_mlp_phase_ns(uint64_t* out) {                             \
    for (int i = 0; i < sampling_mlp::kMaxPhases; ++i) {                  \
      out[i] = sampling_mlp::GetProfile().ns[i].load();                   \
    }                                                                     \
  }                                                                       \
  }

#endif  // SAMPLING_MLP_CSRC_PROFILE_H_
