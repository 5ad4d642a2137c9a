// trainloop: what `Engine::run(data)` accepts, behind one small interface: next() gives a pointer to the next batch
// (valid until the following call) or nullptr when the data is exhausted; restart() begins a fresh pass.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <cstddef>
#include <cstdint>
#include <vector>  // declares std::begin/end/size (range access) without <iterator>'s stream iterators
#include <optional>
#include <type_traits>
#include <utility>

#include "parts/core/hooks.hpp"

TRAINLOOP_DETAIL_BEGIN
namespace detail {

using std::begin;
using std::end;
template <class R>
using begin_t = decltype(begin(std::declval<R&>()));
template <class R>
using end_t = decltype(end(std::declval<R&>()));
template <class R>
inline constexpr bool is_range_v = is_detected_v<begin_t, R> && is_detected_v<end_t, R>;
template <class R>
using size_t_of = decltype(std::size(std::declval<const R&>()));

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// Gives the batch an iterator or generator produced a stable, mutable address for the step: a `Batch&` is used in
// place, anything else (a value, a const reference, a convertible type) is held in a slot.
template <class Batch>
class BatchSlot {
 public:
  template <class Ref>
  Batch* bind(Ref&& ref) {
    if constexpr (std::is_same_v<Ref&&, Batch&>) {
      return &ref;
    } else {
      slot_.reset();  // destroy first: a batch may own large buffers
      slot_.emplace(std::forward<Ref>(ref));
      return &*slot_;
    }
  }
  void clear() { slot_.reset(); }

 private:
  std::optional<Batch> slot_;
};

/// A range iterated pass after pass (a container, `*torch_data_loader`, a view). Lvalues are referenced, rvalues owned.
template <class Batch, class Range>
class RangeSource {
 public:
  explicit RangeSource(Range&& range) : range_(std::forward<Range>(range)) {}

  Batch* next() {
    if (!it_) {
      it_.emplace(begin(range_));
      end_.emplace(end(range_));
    } else if (advance_) {
      ++*it_;  // advance only now: the previous batch stayed valid through its whole iteration
    }
    advance_ = !(*it_ == *end_);  // never step past the end, however often an exhausted pass is asked
    return advance_ ? slot_.bind(**it_) : nullptr;
  }
  void restart() {
    it_.reset();
    end_.reset();
  }
  std::optional<std::size_t> size() const {
    if constexpr (is_detected_v<size_t_of, std::remove_reference_t<Range>>)
      return static_cast<std::size_t>(std::size(range_));
    else
      return std::nullopt;
  }

 private:
  using R = std::remove_reference_t<Range>;
  Range range_;
  std::optional<begin_t<R>> it_;
  std::optional<end_t<R>> end_;
  bool advance_ = false;
  BatchSlot<Batch> slot_;
};

/// A callable returning a fresh range for each pass (for example a loader that reshuffles when re-created).
template <class Batch, class Factory>
class RangeFactorySource {
 public:
  explicit RangeFactorySource(Factory factory) : factory_(std::move(factory)) {}

  Batch* next() {
    if (!pass_) pass_.emplace(factory_());
    return pass_->next();
  }
  void restart() { pass_.reset(); }
  std::optional<std::size_t> size() const { return std::nullopt; }

 private:
  using Pass = std::invoke_result_t<Factory&>;  // a range returned by value, owned by the RangeSource
  Factory factory_;
  std::optional<RangeSource<Batch, Pass>> pass_;
};

/// A generator: a callable returning std::optional<batch>, std::nullopt once exhausted (or never: infinite data).
template <class Batch, class Generator>
class GeneratorSource {
 public:
  explicit GeneratorSource(Generator generator) : generator_(std::move(generator)) {}

  Batch* next() {
    auto produced = generator_();
    if (!produced) return nullptr;
    return slot_.bind(std::move(*produced));
  }
  void restart() {}  // a generator has no passes; one that returned nullopt is asked again
  std::optional<std::size_t> size() const { return std::nullopt; }

 private:
  Generator generator_;
  BatchSlot<Batch> slot_;
};

template <class Batch, class Data>
auto make_data_source(Data&& data) {
  using D = std::remove_cv_t<std::remove_reference_t<Data>>;
  if constexpr (is_range_v<std::remove_reference_t<Data>>) {
    return RangeSource<Batch, Data>(std::forward<Data>(data));  // Data is T& (referenced) or T (moved in)
  } else if constexpr (std::is_invocable_v<D&>) {
    using Produced = std::invoke_result_t<D&>;
    if constexpr (is_optional<std::decay_t<Produced>>::value) {
      return GeneratorSource<Batch, D>(std::forward<Data>(data));
    } else {
      static_assert(is_range_v<std::remove_reference_t<Produced>>,
                    "trainloop: run(data): a callable data source must return a range (one pass over the data) or "
                    "std::optional<Batch> (a generator, std::nullopt when exhausted)");
      return RangeFactorySource<Batch, D>(std::forward<Data>(data));
    }
  } else {
    static_assert(is_range_v<std::remove_reference_t<Data>>,
                  "trainloop: run(data): data must be a range (begin/end: a container, *torch_data_loader, ...), a "
                  "callable returning a range per pass, or a callable returning std::optional<Batch>");
  }
}

// The batch type of any data the Engine accepts: a range's element, a generator's optional value, or the element of
// the range a factory returns.
template <class R>
using range_element_t = std::decay_t<decltype(*begin(std::declval<R&>()))>;
template <class Data, class = void>
struct batch_of_data {
  static_assert(sizeof(Data) == 0,
                "trainloop: data must be a range of batches, a callable returning a range per pass, or a "
                "callable returning std::optional<Batch>");
};
template <class Data>
struct batch_of_data<Data, std::enable_if_t<is_range_v<std::remove_reference_t<Data>>>> {
  using type = range_element_t<std::remove_reference_t<Data>>;
};
template <class Produced, bool = is_optional<std::decay_t<Produced>>::value>
struct batch_of_produced {
  using type = typename std::decay_t<Produced>::value_type;
};
template <class Produced>
struct batch_of_produced<Produced, false> {
  using type = range_element_t<std::remove_reference_t<Produced>>;
};
template <class Data>
struct batch_of_data<Data, std::enable_if_t<!is_range_v<std::remove_reference_t<Data>> &&
                                            std::is_invocable_v<std::decay_t<Data>&>>>
    : batch_of_produced<std::invoke_result_t<std::decay_t<Data>&>> {};
template <class Data>
using batch_of_data_t = typename batch_of_data<Data>::type;

template <class Data>
std::optional<std::int64_t> data_size(const Data& data) {
  if constexpr (is_range_v<Data> && is_detected_v<size_t_of, Data>)
    return static_cast<std::int64_t>(std::size(data));
  else
    return std::nullopt;
}
}  // namespace detail
TRAINLOOP_DETAIL_END
