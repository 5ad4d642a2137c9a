// Examples' helper: mini-batches of an in-memory split, reshuffled at every pass with their own generator.
// A range with a size: `begin()` starts a new shuffled pass, so the Trainer's epochs (and an Engine restarting its
// data) each see a new order. The data-loader issue brings the full trainloop::DataLoader; this is all the examples need.
#pragma once
#include <trainloop.hpp>

#include <cstdint>
#include <iterator>
#include <utility>

using ImageBatch = std::pair<torch::Tensor, torch::Tensor>;  // images [B, 1, 28, 28], labels [B]

class ShuffledBatches {
 public:
  ShuffledBatches(trainloop::MnistSplit split, std::int64_t batch_size, std::uint64_t seed, bool shuffle = true)
      : split_(std::move(split)),
        batch_size_(batch_size),
        shuffle_(shuffle),
        generator_(torch::make_generator<torch::CPUGeneratorImpl>(seed)) {}

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = ImageBatch;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = ImageBatch;
    Iterator(const ShuffledBatches* owner, std::int64_t start) : owner_(owner), start_(start) {}
    ImageBatch operator*() const {
      const std::int64_t end = std::min(start_ + owner_->batch_size_, owner_->examples());
      torch::Tensor index = owner_->order_.slice(0, start_, end);
      return {owner_->split_.images.index_select(0, index), owner_->split_.labels.index_select(0, index)};
    }
    Iterator& operator++() {
      start_ += owner_->batch_size_;
      return *this;
    }
    bool operator==(const Iterator& other) const { return std::min(start_, owner_->examples()) == std::min(other.start_, owner_->examples()); }
    bool operator!=(const Iterator& other) const { return !(*this == other); }

   private:
    const ShuffledBatches* owner_;
    std::int64_t start_;
  };

  Iterator begin() {
    order_ = shuffle_ ? torch::randperm(examples(), generator_, torch::kLong) : torch::arange(examples(), torch::kLong);
    return {this, 0};
  }
  Iterator end() const { return {this, examples()}; }
  std::size_t size() const { return static_cast<std::size_t>((examples() + batch_size_ - 1) / batch_size_); }
  std::int64_t examples() const { return split_.labels.size(0); }

 private:
  trainloop::MnistSplit split_;
  std::int64_t batch_size_;
  bool shuffle_;
  torch::Generator generator_;
  torch::Tensor order_;
};
