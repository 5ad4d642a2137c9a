// trainloop: datasets and collation. TensorDataset (every example in memory, batched by one index_select per
// tensor); what the DataLoader detects on a dataset of the user's type (size(), get(index), get(index, generator),
// get_batch(indices)); and default_collate, which stacks examples into a batch field by field.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/hooks.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace detail {
template <std::size_t N, class = std::make_index_sequence<N>>
struct tensor_tuple;
template <std::size_t>
using tensor_for_index = torch::Tensor;
template <std::size_t N, std::size_t... I>
struct tensor_tuple<N, std::index_sequence<I...>> {
  using type = std::tuple<tensor_for_index<I>...>;
};
// One tensor: the tensor; two: a pair (batch.first, batch.second); more: a tuple. All work with structured bindings.
template <std::size_t N>
struct tensor_batch {
  using type = typename tensor_tuple<N>::type;
};
template <>
struct tensor_batch<1> {
  using type = torch::Tensor;
};
template <>
struct tensor_batch<2> {
  using type = std::pair<torch::Tensor, torch::Tensor>;
};
}  // namespace detail

/// The batch type of a TensorDataset<N>: a Tensor, a std::pair, or a std::tuple of N tensors.
template <std::size_t N>
using TensorBatch = typename detail::tensor_batch<N>::type;

/// N tensors sharing their first dimension: example i is (t[i] for each tensor t).
template <std::size_t N>
class TensorDataset {
  static_assert(N >= 1, "trainloop: a TensorDataset holds at least one tensor");

 public:
  template <class... T, class = std::enable_if_t<sizeof...(T) == N>>
  explicit TensorDataset(T... tensors) : tensors_{std::move(tensors)...} {
    for (std::size_t i = 0; i < N; ++i) {
      if (!tensors_[i].defined()) throw std::invalid_argument("trainloop: TensorDataset: tensor " + std::to_string(i) + " is undefined");
      if (tensors_[i].dim() == 0)
        throw std::invalid_argument("trainloop: TensorDataset: tensor " + std::to_string(i) +
                                    " is a scalar; every tensor needs a first dimension indexing the examples");
      if (tensors_[i].size(0) != tensors_[0].size(0))
        throw std::invalid_argument("trainloop: TensorDataset: tensor " + std::to_string(i) + " has shape " +
                                    c10::str(tensors_[i].sizes()) + " but tensor 0 has shape " +
                                    c10::str(tensors_[0].sizes()) + "; they must share dim 0");
    }
  }
  std::int64_t size() const { return tensors_[0].size(0); }
  const std::array<torch::Tensor, N>& tensors() const { return tensors_; }

  /// The examples at `index` (an int64 tensor) as one batch: one index_select per tensor, no per-example stacking.
  TensorBatch<N> get_batch(const torch::Tensor& index) const { return gather(index, std::make_index_sequence<N>{}); }

 private:
  template <std::size_t... I>
  TensorBatch<N> gather(const torch::Tensor& index, std::index_sequence<I...>) const {
    if constexpr (N == 1) return tensors_[0].index_select(0, index);
    else return TensorBatch<N>(tensors_[I].index_select(0, index)...);
  }
  std::array<torch::Tensor, N> tensors_;
};
template <class... T>
TensorDataset(T...) -> TensorDataset<sizeof...(T)>;

namespace detail {
// --- what the DataLoader detects on a dataset (one trait each) ------------------------------------------------------
// get(index, generator): an example drawing its randomness from a generator seeded by (seed, epoch, index).
template <class D>
using dataset_get_random_t = decltype(std::declval<D&>().get(std::size_t{}, std::declval<torch::Generator&>()));
// get(index): an example (LibTorch's torch::data::Dataset spelling).
template <class D>
using dataset_get_t = decltype(std::declval<D&>().get(std::size_t{}));
// get_batch(index tensor): a whole batch from an int64 tensor of indices (TensorDataset's gather).
template <class D>
using dataset_get_batch_tensor_t = decltype(std::declval<D&>().get_batch(std::declval<const torch::Tensor&>()));
// get_batch(indices): a batch, or the batch's examples to collate (torch::data's get_batch returns those).
template <class D>
using dataset_get_batch_t = decltype(std::declval<D&>().get_batch(std::declval<const std::vector<std::size_t>&>()));
template <class D>
using dataset_size_t = decltype(std::declval<const D&>().size());

template <class T>
struct is_std_vector : std::false_type {};
template <class T, class A>
struct is_std_vector<std::vector<T, A>> : std::true_type {};

// The examples a dataset yields one at a time, or void when it only yields batches.
template <class D, class = void>
struct example_of {
  using type = void;
};
template <class D>
struct example_of<D, std::enable_if_t<is_detected_v<dataset_get_random_t, D>>> {
  using type = std::decay_t<dataset_get_random_t<D>>;
};
template <class D>
struct example_of<D, std::enable_if_t<!is_detected_v<dataset_get_random_t, D> && is_detected_v<dataset_get_t, D>>> {
  using type = std::decay_t<dataset_get_t<D>>;
};
template <class D>
using example_of_t = typename example_of<D>::type;

// size() as an integer: a number, or LibTorch's optional<size_t> (which must hold one: a map-style dataset has a size).
template <class D>
std::int64_t dataset_size(const D& dataset) {
  static_assert(is_detected_v<dataset_size_t, D>,
                "trainloop: DataLoader: the dataset has no size() const (the number of examples, as torch::data's "
                "datasets have)");
  const auto size = dataset.size();
  if constexpr (std::is_integral_v<std::decay_t<decltype(size)>>) {
    return static_cast<std::int64_t>(size);
  } else {
    if (!size.has_value()) throw std::invalid_argument("trainloop: DataLoader: the dataset's size() is empty; a map-style dataset needs a size");
    return static_cast<std::int64_t>(*size);
  }
}

// --- aggregate reflection: the fields of a plain struct of tensors, by structured bindings ----------------------------
struct any_field {  // converts to any field's type; used in unevaluated braces only, to count fields
  template <class T>
  operator T() const;
};
template <class T, class Seq, class = void>
struct brace_initializable : std::false_type {};
template <class T, std::size_t... I>
struct brace_initializable<T, std::index_sequence<I...>, std::void_t<decltype(T{(void(I), any_field{})...})>> : std::true_type {};
inline constexpr std::size_t max_struct_fields = 8;
template <class T, std::size_t N = 0>
constexpr std::size_t field_count() {
  if constexpr (N <= max_struct_fields && brace_initializable<T, std::make_index_sequence<N + 1>>::value) return field_count<T, N + 1>();
  else return N;
}
// The fields of `value` as a tuple of references.
template <class T>
auto fields_of(T& value) {
  constexpr std::size_t n = field_count<std::remove_const_t<T>>();
  if constexpr (n == 1) { auto& [a] = value; return std::tie(a); }
  else if constexpr (n == 2) { auto& [a, b] = value; return std::tie(a, b); }
  else if constexpr (n == 3) { auto& [a, b, c] = value; return std::tie(a, b, c); }
  else if constexpr (n == 4) { auto& [a, b, c, d] = value; return std::tie(a, b, c, d); }
  else if constexpr (n == 5) { auto& [a, b, c, d, e] = value; return std::tie(a, b, c, d, e); }
  else if constexpr (n == 6) { auto& [a, b, c, d, e, f] = value; return std::tie(a, b, c, d, e, f); }
  else if constexpr (n == 7) { auto& [a, b, c, d, e, f, g] = value; return std::tie(a, b, c, d, e, f, g); }
  else { auto& [a, b, c, d, e, f, g, h] = value; return std::tie(a, b, c, d, e, f, g, h); }
}

template <class T>
struct is_pair_or_tuple : std::false_type {};
template <class A, class B>
struct is_pair_or_tuple<std::pair<A, B>> : std::true_type {};
template <class... T>
struct is_pair_or_tuple<std::tuple<T...>> : std::true_type {};
template <class T>
struct is_torch_example : std::false_type {};
template <class Data, class Target>
struct is_torch_example<torch::data::Example<Data, Target>> : std::true_type {};

// A struct whose fields are all tensors (checked where it is collated).
template <class T>
inline constexpr bool is_tensor_struct_v = std::is_aggregate_v<T> && !is_pair_or_tuple<T>::value &&
                                           !is_torch_example<T>::value && field_count<T>() >= 1 &&
                                           field_count<T>() <= max_struct_fields;

// Applies f to every tensor of a batch (a tensor, pair, tuple, torch::data::Example or struct of tensors).
template <class Batch, class F>
void for_each_tensor(Batch& batch, F&& f) {
  if constexpr (std::is_same_v<Batch, torch::Tensor>) f(batch);
  else if constexpr (is_pair_or_tuple<Batch>::value) std::apply([&](auto&... part) { (for_each_tensor(part, f), ...); }, batch);
  else if constexpr (is_torch_example<Batch>::value) {
    for_each_tensor(batch.data, f);
    if constexpr (!std::is_same_v<decltype(batch.target), torch::data::example::NoTarget>) for_each_tensor(batch.target, f);
  } else if constexpr (is_tensor_struct_v<Batch>) {
    std::apply([&](auto&... part) { (for_each_tensor(part, f), ...); }, fields_of(batch));
  }
  // Other fields (numbers, strings) hold no tensor.
}

// --- collation -------------------------------------------------------------------------------------------------------
// Stacks field `get(example)` of every example; `field` names it in the error ("field 1", "data").
template <class Example, class Get>
torch::Tensor stack_field(std::vector<Example>& examples, Get&& get, const std::string& field) {
  std::vector<torch::Tensor> parts;
  parts.reserve(examples.size());
  for (auto& example : examples) {
    torch::Tensor& t = get(example);
    if (!t.defined()) throw std::invalid_argument("trainloop: collate: " + field + " of example " + std::to_string(parts.size()) + " in the batch is an undefined tensor");
    if (!parts.empty() && (t.sizes() != parts.front().sizes() || t.scalar_type() != parts.front().scalar_type()))
      throw std::invalid_argument(
          "trainloop: collate: cannot stack " + field + ": example " + std::to_string(parts.size()) + " in the batch has shape " +
          c10::str(t.sizes()) + " (" + std::string(c10::toString(t.scalar_type())) + ") but example 0 has shape " +
          c10::str(parts.front().sizes()) + " (" + std::string(c10::toString(parts.front().scalar_type())) +
          "); give the DataLoader a collate function (padding variable-length examples, for instance)");
    parts.push_back(std::move(t));
  }
  return torch::stack(parts);
}
// Numbers become a 1-D tensor, as PyTorch's default_collate does: int64 for integers, float64 for floating point.
template <class Example, class Get>
torch::Tensor number_field(std::vector<Example>& examples, Get&& get) {
  using Number = std::decay_t<decltype(get(examples.front()))>;
  using Stored = std::conditional_t<std::is_same_v<Number, bool>, bool, std::conditional_t<std::is_integral_v<Number>, std::int64_t, double>>;
  const auto dtype = std::is_same_v<Stored, bool> ? torch::kBool : std::is_integral_v<Stored> ? torch::kLong : torch::kDouble;
  torch::Tensor out = torch::empty({static_cast<std::int64_t>(examples.size())}, dtype);
  Stored* data = out.data_ptr<Stored>();
  for (std::size_t i = 0; i < examples.size(); ++i) data[i] = static_cast<Stored>(get(examples[i]));
  return out;
}
template <class Field>
using collated_field_t = std::conditional_t<std::is_arithmetic_v<Field>, torch::Tensor, Field>;

template <class Example, class Get>
auto collate_field(std::vector<Example>& examples, Get&& get, const std::string& field) {
  using Field = std::decay_t<decltype(get(examples.front()))>;
  if constexpr (std::is_same_v<Field, torch::Tensor>) return stack_field(examples, get, field);
  else if constexpr (std::is_arithmetic_v<Field>) return number_field(examples, get);
  else static_assert(sizeof(Field) == 0, "trainloop: default_collate stacks tensors and numbers; give the DataLoader a collate function for other fields");
}
template <class Example, std::size_t... I>
auto collate_tuple(std::vector<Example>& examples, std::index_sequence<I...>) {
  using Out = std::conditional_t<
      std::tuple_size_v<Example> == 2 && std::is_same_v<Example, std::pair<std::tuple_element_t<0, Example>, std::tuple_element_t<1, Example>>>,
      std::pair<collated_field_t<std::tuple_element_t<I, Example>>...>, std::tuple<collated_field_t<std::tuple_element_t<I, Example>>...>>;
  return Out(collate_field(examples, [](Example& e) -> auto& { return std::get<I>(e); }, "field " + std::to_string(I))...);
}
template <class T, std::size_t... I>
constexpr bool all_tensor_fields(std::index_sequence<I...>) {
  using Fields = decltype(fields_of(std::declval<T&>()));
  return (std::is_same_v<std::decay_t<std::tuple_element_t<I, Fields>>, torch::Tensor> && ...);
}
template <class Example, std::size_t... I>
Example collate_struct(std::vector<Example>& examples, std::index_sequence<I...>) {
  return Example{collate_field(examples, [](Example& e) -> auto& { return std::get<I>(fields_of(e)); }, "field " + std::to_string(I))...};
}
}  // namespace detail

/// Stacks a batch's examples field by field, as PyTorch's default_collate: tensors are stacked along a new first
/// dimension (same shapes and dtypes, or an error naming the field and both shapes), numbers become a 1-D tensor
/// (int64 or float64); a tensor stays a tensor, a pair or tuple keeps its shape (numbers turned into tensors), a
/// torch::data::Example stacks data and target, and a plain struct whose fields are all tensors is collated into the
/// same struct.
template <class Example>
auto default_collate(std::vector<Example> examples) {
  if (examples.empty()) throw std::invalid_argument("trainloop: collate: a batch needs at least one example");
  if constexpr (std::is_same_v<Example, torch::Tensor>) {
    return detail::stack_field(examples, [](torch::Tensor& t) -> torch::Tensor& { return t; }, "the examples");
  } else if constexpr (detail::is_pair_or_tuple<Example>::value) {
    return detail::collate_tuple(examples, std::make_index_sequence<std::tuple_size_v<Example>>{});
  } else if constexpr (detail::is_torch_example<Example>::value) {
    using Target = decltype(Example::target);
    auto data = detail::stack_field(examples, [](Example& e) -> torch::Tensor& { return e.data; }, "data");
    if constexpr (std::is_same_v<Target, torch::data::example::NoTarget>) {
      return Example(std::move(data));
    } else {
      auto target = detail::stack_field(examples, [](Example& e) -> torch::Tensor& { return e.target; }, "target");
      return Example(std::move(data), std::move(target));
    }
  } else if constexpr (detail::is_tensor_struct_v<Example>) {
    constexpr std::size_t n = detail::field_count<Example>();
    static_assert(detail::all_tensor_fields<Example>(std::make_index_sequence<n>{}),
                  "trainloop: default_collate collates a struct whose fields are all torch::Tensor into the same struct; "
                  "for other fields give the DataLoader a collate function (or return a tuple: numbers become tensors)");
    return detail::collate_struct(examples, std::make_index_sequence<n>{});
  } else {
    static_assert(sizeof(Example) == 0,
                  "trainloop: default_collate stacks a tensor, a pair or tuple of tensors and numbers, a "
                  "torch::data::Example, or a struct of tensors (up to 8 fields); give the DataLoader a collate function");
  }
}

/// The DataLoader's default: default_collate.
struct DefaultCollate {
  template <class Example>
  auto operator()(std::vector<Example> examples) const {
    return default_collate(std::move(examples));
  }
};

TRAINLOOP_DETAIL_END
