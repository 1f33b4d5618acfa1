// A parallel loop on XLA's intra-op thread pool, for the methods' native
// kernels: the calling thread takes the first chunk and waits for the rest.

#ifndef SAMPLING_MLP_CSRC_PARALLEL_H_
#define SAMPLING_MLP_CSRC_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace sampling_mlp {

// Calls body(begin, end) on ranges of `grain` items (the last may be
// shorter) covering [0, n), on at most `workers` threads (the calling
// thread and pool.num_threads() others at most), and returns when every
// call has.  Ranges are claimed in order from a shared counter: the calling
// thread claims them too, so the loop finishes even when no pool thread
// ever becomes free (a kernel called from a pool thread while the others
// are busy), and a task that starts after the last range is claimed does
// nothing.  With one worker it is a plain loop on this thread, in order.
template <typename Body>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t n, int64_t workers,
                 int64_t grain, const Body& body) {
  grain = std::max<int64_t>(1, grain);
  const int64_t ranges = (n + grain - 1) / grain;
  workers = std::max<int64_t>(
      1, std::min({workers, ranges, pool.num_threads() + 1}));
  if (workers <= 1) {
    if (n > 0) body(int64_t{0}, n);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable cv;
    int64_t finished = 0;
  };
  auto shared = std::make_shared<Shared>();
  // Runs ranges until none is left, then counts them as finished.
  auto work = [shared, n, grain, ranges, &body]() {
    int64_t ran = 0;
    for (int64_t c; (c = shared->next.fetch_add(1)) < ranges; ++ran) {
      body(c * grain, std::min(n, (c + 1) * grain));
    }
    if (ran) {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->finished += ran;
      if (shared->finished == ranges) shared->cv.notify_all();
    }
  };
  // Late tasks find the counter exhausted and never touch `body`.
  for (int64_t c = 1; c < workers; ++c) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->finished == ranges; });
}

}  // namespace sampling_mlp

#endif  // SAMPLING_MLP_CSRC_PARALLEL_H_
