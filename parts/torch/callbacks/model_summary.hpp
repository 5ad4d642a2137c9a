// trainloop: ModelSummary, printed at the start of fit: the module's direct children, their types and parameter
// counts, then trainable / non-trainable / total parameters and the estimated size.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

TRAINLOOP_DETAIL_BEGIN

class ModelSummary {
 public:
  explicit ModelSummary(std::FILE* stream = stdout) : stream_(stream) {}

  template <class T, class M>
  void on_fit_start(T&, M& module) {
    print(module);
  }

  struct Row {
    std::string name, type;
    std::int64_t parameters = 0;
  };
  struct Summary {
    std::vector<Row> rows;
    std::int64_t trainable = 0, non_trainable = 0;
    double megabytes = 0;
  };

  /// The numbers behind the table, for tests and tools.
  TRAINLOOP_DETAIL_API static Summary summarize(const torch::nn::Module& module);

  TRAINLOOP_DETAIL_API void print(const torch::nn::Module& module) const;

  /// "torch::nn::LinearImpl" -> "Linear", "my::Net" -> "Net".
  TRAINLOOP_DETAIL_API static std::string short_type(std::string type);
  /// Lightning's style: 101 K, 1.2 M.
  TRAINLOOP_DETAIL_API static std::string human(std::int64_t n);

 private:
  std::FILE* stream_;
};

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API ModelSummary::Summary ModelSummary::summarize(const torch::nn::Module& module) {
  Summary s;
  for (const auto& child : module.named_children()) {
    Row row{child.key(), short_type(child.value()->name()), 0};
    for (const auto& p : child.value()->parameters()) row.parameters += p.numel();
    s.rows.push_back(row);
  }
  for (const auto& p : module.parameters()) {
    (p.requires_grad() ? s.trainable : s.non_trainable) += p.numel();
    s.megabytes += static_cast<double>(p.numel() * static_cast<std::int64_t>(p.element_size())) / 1e6;
  }
  return s;
}

TRAINLOOP_DETAIL_API void ModelSummary::print(const torch::nn::Module& module) const {
  const Summary s = summarize(module);
  std::size_t name_width = 4, type_width = 4;
  for (const auto& r : s.rows) {
    name_width = std::max(name_width, r.name.size());
    type_width = std::max(type_width, r.type.size());
  }
  std::fprintf(stream_, "  | %-*s | %-*s | Params\n", static_cast<int>(name_width), "Name", static_cast<int>(type_width),
               "Type");
  std::fprintf(stream_, "%s\n", std::string(name_width + type_width + 20, '-').c_str());
  for (std::size_t i = 0; i < s.rows.size(); ++i)
    std::fprintf(stream_, "%zu | %-*s | %-*s | %s\n", i, static_cast<int>(name_width), s.rows[i].name.c_str(),
                 static_cast<int>(type_width), s.rows[i].type.c_str(), human(s.rows[i].parameters).c_str());
  std::fprintf(stream_, "%s\n", std::string(name_width + type_width + 20, '-').c_str());
  std::fprintf(stream_, "%-10s Trainable params\n%-10s Non-trainable params\n%-10s Total params\n%-10.3f Total estimated model params size (MB)\n",
               human(s.trainable).c_str(), human(s.non_trainable).c_str(), human(s.trainable + s.non_trainable).c_str(),
               s.megabytes);
  std::fflush(stream_);
}

TRAINLOOP_DETAIL_API std::string ModelSummary::short_type(std::string type) {
  const auto colon = type.rfind("::");
  if (colon != std::string::npos) type = type.substr(colon + 2);
  if (type.size() > 4 && type.compare(type.size() - 4, 4, "Impl") == 0) type.resize(type.size() - 4);
  return type;
}

TRAINLOOP_DETAIL_API std::string ModelSummary::human(std::int64_t n) {
  char text[32];
  if (n < 1000) std::snprintf(text, sizeof text, "%lld", static_cast<long long>(n));
  else if (n < 1000000) std::snprintf(text, sizeof text, "%.1f K", static_cast<double>(n) / 1e3);
  else if (n < 1000000000) std::snprintf(text, sizeof text, "%.1f M", static_cast<double>(n) / 1e6);
  else std::snprintf(text, sizeof text, "%.1f B", static_cast<double>(n) / 1e9);
  return text;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
