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

// Calls body(begin, end) on contiguous ranges ("chunks": at most
// `max_chunks`, at most pool.num_threads() + 1) covering [0, n), and
// returns when every call has.  Chunks are claimed from a shared counter:
// the calling thread claims them too, so the loop finishes even when no
// pool thread ever becomes free (a kernel called from a pool thread while
// the others are busy), and a task that starts after the last chunk is
// claimed does nothing.  With one chunk it is a plain call.
template <typename Body>
void ParallelFor(xla::ffi::ThreadPool& pool, int64_t n, int64_t max_chunks,
                 const Body& body) {
  const int64_t chunks = std::max<int64_t>(
      1, std::min({n, max_chunks, pool.num_threads() + 1}));
  if (chunks <= 1) {
    body(int64_t{0}, n);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable cv;
    int64_t finished = 0;
  };
  auto shared = std::make_shared<Shared>();
  // Runs chunks until none is left, then counts them as finished.
  auto work = [shared, n, chunks, &body]() {
    int64_t ran = 0;
    for (int64_t c; (c = shared->next.fetch_add(1)) < chunks; ++ran) {
      body(n * c / chunks, n * (c + 1) / chunks);
    }
    if (ran) {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->finished += ran;
      if (shared->finished == chunks) shared->cv.notify_all();
    }
  };
  // Late tasks find the counter exhausted and never touch `body`.
  for (int64_t c = 1; c < chunks; ++c) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->finished == chunks; });
}

}  // namespace sampling_mlp

#endif  // SAMPLING_MLP_CSRC_PARALLEL_H_
