// trainloop: SharedFunction, the type-erased callable behind run-time handlers, filter predicates and the Engine's
// kept data source, and FunctionRef, a callable borrowed for one call. They stand in for std::function (and
// std::shared_ptr) so that the torch-free core does not pay for <functional> and <memory> in every translation unit
// (bench/compile_cost.py measures it).
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <atomic>
#include <cstddef>
#include <type_traits>
#include <utility>

TRAINLOOP_DETAIL_BEGIN
namespace detail {

template <class Signature>
class SharedFunction;

/// A copyable callable whose copies share one target, as a Python callable is shared: a handler or predicate
/// registered for several events (or copied with its Filter) keeps one state. Copies may be made and dropped from
/// several threads (the count is atomic); calling one target from several threads is the target's business.
template <class R, class... Args>
class SharedFunction<R(Args...)> {
 public:
  SharedFunction() noexcept = default;
  SharedFunction(std::nullptr_t) noexcept {}  // NOLINT(google-explicit-constructor)
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, SharedFunction> &&
                                              !std::is_same_v<std::decay_t<F>, std::nullptr_t>>>
  explicit SharedFunction(F&& f) : block_(new Block<std::decay_t<F>>(std::forward<F>(f))) {}

  SharedFunction(const SharedFunction& other) noexcept : block_(other.block_) {
    if (block_) block_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  SharedFunction(SharedFunction&& other) noexcept : block_(std::exchange(other.block_, nullptr)) {}
  SharedFunction& operator=(SharedFunction other) noexcept {
    std::swap(block_, other.block_);
    return *this;
  }
  SharedFunction& operator=(std::nullptr_t) noexcept {
    release();
    return *this;
  }
  ~SharedFunction() { release(); }

  explicit operator bool() const noexcept { return block_ != nullptr; }
  /// Calls the target (as a non-const lvalue, as std::function does). Must not be empty.
  R operator()(Args... args) const { return block_->call(block_, std::forward<Args>(args)...); }

 private:
  struct BlockBase {
    std::atomic<std::size_t> refs{1};
    R (*call)(BlockBase*, Args&&...);
    void (*destroy)(BlockBase*) noexcept;
  };
  template <class F>
  struct Block : BlockBase {
    template <class G>
    explicit Block(G&& g) : BlockBase{{1}, &invoke, &dispose}, f(std::forward<G>(g)) {}
    static R invoke(BlockBase* b, Args&&... args) {
      return static_cast<Block*>(b)->f(std::forward<Args>(args)...);
    }
    static void dispose(BlockBase* b) noexcept { delete static_cast<Block*>(b); }
    F f;
  };

  void release() noexcept {
    if (block_ && block_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) block_->destroy(block_);
    block_ = nullptr;
  }

  BlockBase* block_ = nullptr;
};

/// A non-owning reference to a callable, for a parameter called before the function returns: a template's
/// type-dependent step handed to an out-of-line function (one indirect call; nothing allocated, nothing copied).
template <class Signature>
class FunctionRef;
template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f) noexcept  // NOLINT(google-explicit-constructor): a parameter type, as std::function is
      : target_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* target, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(target))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(target_, std::forward<Args>(args)...); }

 private:
  void* target_;
  R (*call_)(void*, Args...);
};

}  // namespace detail
TRAINLOOP_DETAIL_END
