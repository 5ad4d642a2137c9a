// trainloop: PyTorch's state dicts and optimizer states, in files Python's PyTorch reads and writes (torch.save's
// format: torch_save_format.hpp): a module's parameters and buffers under PyTorch's names and order, loaded with
// PyTorch's strict checks; LibTorch's Adam, AdamW, SGD, RMSprop and Adagrad in the layout of Python's
// optimizer.state_dict(), both ways.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/torch/checkpoint.hpp"
#include "parts/torch/torch_save_format.hpp"

TRAINLOOP_DETAIL_BEGIN

/// PyTorch's `torch.save(model.state_dict(), path)`: the module's parameters and buffers under PyTorch's dotted names
/// (`features.0.weight`, `bn.running_mean`, `bn.num_batches_tracked`), in PyTorch's order, detached, on the CPU.
/// Python's `model.load_state_dict(torch.load(path))` takes it for the same architecture written in Python.
TRAINLOOP_DETAIL_API void save_state_dict(const torch::nn::Module& module, const std::string& path);

/// How load_state_dict matches a file's names to the module's.
class LoadStateDictOptions {
 public:
  /// PyTorch's strict: every key of the module in the file and no other (default). With false, what matches is loaded
  /// and the rest returned. Shape mismatches are errors either way, as in PyTorch.
  LoadStateDictOptions& strict(bool v) { return strict_ = v, *this; }
  /// Removes this prefix from the file's keys that start with it (DDP's "module.", a Lightning module's "model.");
  /// several prefixes: the first that matches is removed.
  LoadStateDictOptions& strip_prefix(std::string prefix) { return prefixes_.push_back(std::move(prefix)), *this; }
  /// Renames the file's keys (after strip_prefix); an empty name drops the key.
  LoadStateDictOptions& rename(std::function<std::string(const std::string&)> f) { return rename_ = std::move(f), *this; }
  /// Where the file's tensors are read to before they are copied into the module (map_location).
  LoadStateDictOptions& map_location(torch::Device device) { return map_location_ = device, *this; }
  /// A tensor of another dtype than the module's is an error (default), or converted as PyTorch's copy_ does.
  LoadStateDictOptions& convert_dtypes(bool v) { return convert_dtypes_ = v, *this; }

  bool strict() const noexcept { return strict_; }
  bool convert_dtypes() const noexcept { return convert_dtypes_; }
  const std::optional<torch::Device>& map_location() const noexcept { return map_location_; }
  /// The module's name for a file's key ("" to drop it).
  TRAINLOOP_DETAIL_API std::string module_key(const std::string& file_key) const;

 private:
  bool strict_ = true, convert_dtypes_ = false;
  std::vector<std::string> prefixes_;
  std::function<std::string(const std::string&)> rename_;
  std::optional<torch::Device> map_location_;
};

/// PyTorch's `_IncompatibleKeys`: what strict(false) left out.
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;     // the module's, absent from the file
  std::vector<std::string> unexpected_keys;  // the file's (as named after the options), absent from the module
};

/// PyTorch's `model.load_state_dict(torch.load(path))`: reads a file of torch.save(model.state_dict()) (or of
/// save_state_dict; a Lightning checkpoint's "state_dict") into the module. Everything is checked before anything is
/// copied: missing and unexpected keys (when strict), shape and dtype mismatches are one CheckpointError listing them
/// all, PyTorch's way, and the module is left as it was.
TRAINLOOP_DETAIL_API LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path,
                                                         const LoadStateDictOptions& options = LoadStateDictOptions());

/// PyTorch's `torch.save(optimizer.state_dict(), path)` for a LibTorch Adam, AdamW, SGD, RMSprop or Adagrad: "state"
/// by parameter index (Adam's step/exp_avg/exp_avg_sq, SGD's momentum_buffer, ...) and "param_groups" with PyTorch's
/// hyperparameter names and the parameters' indices. Python's optimizer.load_state_dict takes it for the same
/// parameters in the same order.
TRAINLOOP_DETAIL_API void save_optimizer_state_dict(const torch::optim::Optimizer& optimizer, const std::string& path);
/// Python's `optimizer.load_state_dict(torch.load(path))`: the state and the groups' hyperparameters (lr, betas, ...)
/// as the file has them. A file of another optimizer type, other groups or parameters, or a hyperparameter LibTorch's
/// optimizer does not have (maximize=True) is a CheckpointError naming the file and key; nothing is changed then.
TRAINLOOP_DETAIL_API void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const std::string& path);

/// The dicts save_state_dict and save_optimizer_state_dict write, to compose a file of one's own with
/// save_pytorch_file (a dict holding a model's and an optimizer's state, as in Python's usual checkpoint). Their
/// tensors are copies on the CPU: the dict does not change as training goes on.
TRAINLOOP_DETAIL_API c10::impl::GenericDict pytorch_state_dict(const torch::nn::Module& module);
TRAINLOOP_DETAIL_API c10::impl::GenericDict pytorch_optimizer_state_dict(const torch::optim::Optimizer& optimizer);
namespace detail {
// The module's parameters and buffers in PyTorch's state_dict order (each module's own, then its children's).
TRAINLOOP_DETAIL_API std::vector<std::pair<std::string, torch::Tensor>> ordered_state(const torch::nn::Module& module);
// load_state_dict from a dict already read (`where`: the file and key, for errors).
TRAINLOOP_DETAIL_API LoadStateDictResult load_state_dict_from(torch::nn::Module& module, const c10::IValue& state,
                                                              const LoadStateDictOptions& options,
                                                              const std::string& where);
// Python's optimizer.load_state_dict: validated entirely, then applied. Errors name `path` and `key`.
TRAINLOOP_DETAIL_API void load_python_optimizer_state(torch::optim::Optimizer& optimizer, const c10::IValue& state,
                                                      const std::string& path, const std::string& key);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API std::vector<std::pair<std::string, torch::Tensor>> ordered_state(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  std::function<void(const torch::nn::Module&, const std::string&)> walk = [&](const torch::nn::Module& m,
                                                                               const std::string& prefix) {
    for (const auto& p : m.named_parameters(false)) state.emplace_back(prefix + p.key(), p.value());
    for (const auto& b : m.named_buffers(false)) state.emplace_back(prefix + b.key(), b.value());
    for (const auto& child : m.named_children()) walk(*child.value(), prefix + child.key() + ".");
  };
  walk(module, "");
  return state;
}

}  // namespace detail
TRAINLOOP_DETAIL_API c10::impl::GenericDict pytorch_state_dict(const torch::nn::Module& module) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::TensorType::get());
  for (const auto& [name, tensor] : detail::ordered_state(module)) d.insert(name, tensor.detach().to(torch::kCPU, false, true));
  return d;
}
namespace detail {

inline std::string shape_text(const torch::Tensor& t) { return "torch.Size(" + c10::str(t.sizes()) + ")"; }

TRAINLOOP_DETAIL_API LoadStateDictResult load_state_dict_from(torch::nn::Module& module, const c10::IValue& state,
                                                              const LoadStateDictOptions& options,
                                                              const std::string& where) {
  if (!state.isGenericDict()) throw CheckpointError(where + " is a " + state.tagKind() + ", not a state dict");
  const auto targets = ordered_state(module);
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, tensor] : targets) by_name[name] = &tensor;
  LoadStateDictResult result;
  std::vector<std::string> mismatches;
  std::vector<std::pair<const torch::Tensor*, torch::Tensor>> copies;
  std::map<std::string, bool> seen;
  for (const auto& item : state.toGenericDict()) {
    if (!item.key().isString()) throw CheckpointError(where + " has a key that is not a string");
    const std::string& file_key = item.key().toStringRef();
    if (file_key == "_metadata") continue;  // an OrderedDict's attribute, not a tensor (never kept by the reader)
    const std::string key = options.module_key(file_key);
    if (key.empty()) continue;
    auto target = by_name.find(key);
    if (target == by_name.end()) {
      result.unexpected_keys.push_back(key);
      continue;
    }
    seen[key] = true;
    const c10::IValue& value = item.value();
    if (auto object = find_python_object(value, where + "/" + file_key))
      throw CheckpointError(object->first + " holds a Python object of class " + object->second +
                            ", not a tensor");
    if (!value.isTensor()) {
      mismatches.push_back("\"" + key + "\" is a " + value.tagKind() + " in the checkpoint, not a tensor");
      continue;
    }
    torch::Tensor source = value.toTensor();
    const torch::Tensor& param = *target->second;
    if (source.sizes() != param.sizes()) {
      mismatches.push_back("size mismatch for " + key + ": copying a param with shape " + shape_text(source) +
                           " from checkpoint, the shape in current model is " + shape_text(param) + ".");
      continue;
    }
    if (source.scalar_type() != param.scalar_type() && !options.convert_dtypes()) {
      mismatches.push_back("dtype mismatch for " + key + ": copying a param of dtype " +
                           std::string(c10::toString(source.scalar_type())) + " from checkpoint, the dtype in current "
                           "model is " + c10::toString(param.scalar_type()) + " (LoadStateDictOptions().convert_dtypes(true) "
                           "converts).");
      continue;
    }
    if (options.map_location()) source = source.to(*options.map_location());
    copies.emplace_back(&param, std::move(source));
  }
  for (const auto& [name, tensor] : targets)
    if (!seen.count(name)) result.missing_keys.push_back(name);
  auto quoted = [](const std::vector<std::string>& keys) {
    std::string s;
    for (const auto& k : keys) s += (s.empty() ? "\"" : ", \"") + k + "\"";
    return s + ". ";
  };
  std::string errors;
  if (options.strict()) {  // PyTorch's order: missing, unexpected, then the mismatches
    if (!result.missing_keys.empty()) errors += "\n\tMissing key(s) in state_dict: " + quoted(result.missing_keys);
    if (!result.unexpected_keys.empty()) errors += "\n\tUnexpected key(s) in state_dict: " + quoted(result.unexpected_keys);
  }
  for (const auto& m : mismatches) errors += "\n\t" + m;
  if (!errors.empty()) {
    std::string name = module.name();
    throw CheckpointError(where + ": Error(s) in loading state_dict for " + name + ":" + errors);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [param, source] : copies) param->copy_(source);
  return result;
}

// --- optimizers ---------------------------------------------------------------------------------------------------

// LibTorch keys an optimizer's state by its parameters' TensorImpl: as a string in 1.x, as the pointer in 2.x.
template <class Map>
typename Map::key_type optimizer_state_key(const torch::Tensor& param) {
  if constexpr (std::is_same_v<typename Map::key_type, std::string>) {
    std::ostringstream key;
    key << param.unsafeGetTensorImpl();
    return key.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}
using OptimizerStateMap = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;

// One optimizer type's PyTorch names: its hyperparameters and its per-parameter state, both ways.
enum class OptimizerKind { adam, adamw, sgd, rmsprop, adagrad };
inline const char* optimizer_kind_name(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::adam: return "Adam";
    case OptimizerKind::adamw: return "AdamW";
    case OptimizerKind::sgd: return "SGD";
    case OptimizerKind::rmsprop: return "RMSprop";
    case OptimizerKind::adagrad: return "Adagrad";
  }
  return "?";
}
inline std::optional<OptimizerKind> optimizer_kind(const torch::optim::Optimizer& o) {
  if (dynamic_cast<const torch::optim::AdamW*>(&o)) return OptimizerKind::adamw;
  if (dynamic_cast<const torch::optim::Adam*>(&o)) return OptimizerKind::adam;
  if (dynamic_cast<const torch::optim::SGD*>(&o)) return OptimizerKind::sgd;
  if (dynamic_cast<const torch::optim::RMSprop*>(&o)) return OptimizerKind::rmsprop;
  if (dynamic_cast<const torch::optim::Adagrad*>(&o)) return OptimizerKind::adagrad;
  return std::nullopt;
}
inline OptimizerKind require_kind(const torch::optim::Optimizer& o, const std::string& where) {
  auto kind = optimizer_kind(o);
  if (!kind)
    throw CheckpointError(where + ": the optimizer is not one whose PyTorch state trainloop maps (Adam, AdamW, SGD, "
                          "RMSprop, Adagrad)");
  return *kind;
}

// A param group's hyperparameters in PyTorch's names and order (the flags PyTorch adds, at their defaults).
TRAINLOOP_DETAIL_API c10::impl::GenericDict python_param_group(OptimizerKind kind,
                                                               const torch::optim::OptimizerOptions& options) {
  c10::impl::GenericDict g = python_dict();
  // PyTorch 2.x's flags, at their defaults (an older PyTorch keeps the ones it does not know, unused).
  auto flags = [&](bool capturable, bool fused) {
    g.insert("maximize", false);
    g.insert("foreach", c10::IValue());
    if (capturable) g.insert("capturable", false);
    g.insert("differentiable", false);
    if (fused) g.insert("fused", c10::IValue());
  };
  switch (kind) {
    case OptimizerKind::adam:
    case OptimizerKind::adamw: {
      auto adam = [&](const auto& o) {
        g.insert("lr", o.lr());
        g.insert("betas", c10::ivalue::Tuple::create({std::get<0>(o.betas()), std::get<1>(o.betas())}));
        g.insert("eps", o.eps());
        g.insert("weight_decay", o.weight_decay());
        g.insert("amsgrad", o.amsgrad());
      };
      if (kind == OptimizerKind::adam) adam(static_cast<const torch::optim::AdamOptions&>(options));
      else adam(static_cast<const torch::optim::AdamWOptions&>(options));
      flags(true, true);
      g.insert("decoupled_weight_decay", kind == OptimizerKind::adamw);  // PyTorch 2.6: AdamW is Adam with it
      break;
    }
    case OptimizerKind::sgd: {
      const auto& o = static_cast<const torch::optim::SGDOptions&>(options);
      g.insert("lr", o.lr());
      g.insert("momentum", o.momentum());
      g.insert("dampening", o.dampening());
      g.insert("weight_decay", o.weight_decay());
      g.insert("nesterov", o.nesterov());
      flags(false, true);
      break;
    }
    case OptimizerKind::rmsprop: {
      const auto& o = static_cast<const torch::optim::RMSpropOptions&>(options);
      g.insert("lr", o.lr());
      g.insert("momentum", o.momentum());
      g.insert("alpha", o.alpha());
      g.insert("eps", o.eps());
      g.insert("centered", o.centered());
      g.insert("weight_decay", o.weight_decay());
      flags(true, false);
      break;
    }
    case OptimizerKind::adagrad: {
      const auto& o = static_cast<const torch::optim::AdagradOptions&>(options);
      g.insert("lr", o.lr());
      g.insert("lr_decay", o.lr_decay());
      g.insert("eps", o.eps());
      g.insert("weight_decay", o.weight_decay());
      g.insert("initial_accumulator_value", o.initial_accumulator_value());
      flags(false, true);
      break;
    }
  }
  return g;
}

// PyTorch keeps `step` as a float32 0-dim tensor (1.12 and later).
inline torch::Tensor python_step(std::int64_t step) { return torch::tensor(static_cast<float>(step)); }

}  // namespace detail
TRAINLOOP_DETAIL_API c10::impl::GenericDict pytorch_optimizer_state_dict(const torch::optim::Optimizer& optimizer) {
  using namespace detail;
  const OptimizerKind kind = require_kind(optimizer, "optimizer state_dict");
  c10::impl::GenericDict state(c10::IntType::get(), c10::AnyType::get());
  c10::impl::GenericList groups(c10::AnyType::get());
  auto& states = const_cast<torch::optim::Optimizer&>(optimizer).state();
  std::int64_t index = 0;
  for (const auto& group : optimizer.param_groups()) {
    c10::impl::GenericDict g = python_param_group(kind, group.options());
    c10::impl::GenericList params(c10::IntType::get());
    for (const auto& param : group.params()) {
      params.push_back(index);
      auto it = states.find(optimizer_state_key<OptimizerStateMap>(param));
      if (it != states.end()) {
        c10::impl::GenericDict s = python_dict();
        auto put = [&](const char* name, const torch::Tensor& t) {
          if (t.defined()) s.insert(name, t.detach().to(torch::kCPU, false, true));
        };
        const torch::optim::OptimizerParamState& base = *it->second;
        switch (kind) {
          case OptimizerKind::adam:
          case OptimizerKind::adamw: {
            auto adam = [&](const auto& a) {
              s.insert("step", python_step(a.step()));
              put("exp_avg", a.exp_avg());
              put("exp_avg_sq", a.exp_avg_sq());
              put("max_exp_avg_sq", a.max_exp_avg_sq());
            };
            if (kind == OptimizerKind::adam) adam(static_cast<const torch::optim::AdamParamState&>(base));
            else adam(static_cast<const torch::optim::AdamWParamState&>(base));
            break;
          }
          case OptimizerKind::sgd: {
            const auto& sgd = static_cast<const torch::optim::SGDParamState&>(base);
            if (sgd.momentum_buffer().defined()) put("momentum_buffer", sgd.momentum_buffer());
            else s.insert("momentum_buffer", c10::IValue());
            break;
          }
          case OptimizerKind::rmsprop: {
            const auto& r = static_cast<const torch::optim::RMSpropParamState&>(base);
            s.insert("step", python_step(r.step()));
            put("square_avg", r.square_avg());
            put("momentum_buffer", r.momentum_buffer());
            put("grad_avg", r.grad_avg());
            break;
          }
          case OptimizerKind::adagrad: {
            const auto& a = static_cast<const torch::optim::AdagradParamState&>(base);
            s.insert("step", python_step(a.step()));
            put("sum", a.sum());
            break;
          }
        }
        state.insert(index, s);
      }
      ++index;
    }
    g.insert("params", params);
    groups.push_back(g);
  }
  c10::impl::GenericDict out = python_dict();
  out.insert("state", state);
  out.insert("param_groups", groups);
  return out;
}
namespace detail {

// Reads a param group's hyperparameters into `options` (a copy: nothing is changed before all are read).
TRAINLOOP_DETAIL_API void read_param_group(OptimizerKind kind, const c10::impl::GenericDict& g,
                                           torch::optim::OptimizerOptions& options, const std::string& where) {
  auto number = [&](const char* key) -> std::optional<double> {
    auto v = dict_get(g, key);
    if (!v) return std::nullopt;
    if (v->isDouble()) return v->toDouble();
    if (v->isInt()) return static_cast<double>(v->toInt());
    if (v->isTensor() && v->toTensor().numel() == 1) return v->toTensor().item<double>();
    throw CheckpointError(where + "/" + key + " is a " + v->tagKind() + ", not a number");
  };
  auto flag = [&](const char* key) -> std::optional<bool> {
    auto v = dict_get(g, key);
    if (!v || v->isNone()) return std::nullopt;
    if (v->isBool()) return v->toBool();
    throw CheckpointError(where + "/" + key + " is a " + v->tagKind() + ", not a boolean");
  };
  // The type is told by the hyperparameters only PyTorch's optimizer of that type has.
  const char* marker = kind == OptimizerKind::sgd       ? "nesterov"
                       : kind == OptimizerKind::rmsprop ? "alpha"
                       : kind == OptimizerKind::adagrad ? "lr_decay"
                                                        : "betas";
  if (!dict_get(g, marker))
    throw CheckpointError(where + " is not a " + optimizer_kind_name(kind) + " optimizer's param group (it has no '" +
                          marker + "'): the checkpoint's optimizer is of another type than configure_optimizers'");
  if (kind == OptimizerKind::adam || kind == OptimizerKind::adamw)
    if (auto decoupled = flag("decoupled_weight_decay"); decoupled && *decoupled != (kind == OptimizerKind::adamw))
      throw CheckpointError(where + "/decoupled_weight_decay is " + (*decoupled ? "True (AdamW's" : "False (Adam's") +
                            " state), and configure_optimizers' optimizer is " + optimizer_kind_name(kind));
  if (flag("maximize").value_or(false))
    throw CheckpointError(where + "/maximize is True, which LibTorch's " + std::string(optimizer_kind_name(kind)) +
                          " does not have");
  auto set = [&](const char* key, auto&& setter) {
    if (auto v = number(key)) setter(*v);
  };
  switch (kind) {
    case OptimizerKind::adam:
    case OptimizerKind::adamw: {
      auto adam = [&](auto& o) {
        set("lr", [&](double v) { o.lr(v); });
        set("eps", [&](double v) { o.eps(v); });
        set("weight_decay", [&](double v) { o.weight_decay(v); });
        if (auto v = flag("amsgrad")) o.amsgrad(*v);
        if (auto betas = dict_get(g, "betas")) {
          if (!betas->isTuple() && !betas->isList()) throw CheckpointError(where + "/betas is not a pair");
          std::vector<c10::IValue> b = betas->isTuple() ? betas->toTupleRef().elements().vec() : betas->toList().vec();
          if (b.size() != 2 || !(b[0].isDouble() || b[0].isInt()) || !(b[1].isDouble() || b[1].isInt()))
            throw CheckpointError(where + "/betas is not a pair of numbers");
          o.betas(std::make_tuple(b[0].toScalar().toDouble(), b[1].toScalar().toDouble()));
        }
      };
      if (kind == OptimizerKind::adam) adam(static_cast<torch::optim::AdamOptions&>(options));
      else adam(static_cast<torch::optim::AdamWOptions&>(options));
      break;
    }
    case OptimizerKind::sgd: {
      auto& o = static_cast<torch::optim::SGDOptions&>(options);
      set("lr", [&](double v) { o.lr(v); });
      set("momentum", [&](double v) { o.momentum(v); });
      set("dampening", [&](double v) { o.dampening(v); });
      set("weight_decay", [&](double v) { o.weight_decay(v); });
      if (auto v = flag("nesterov")) o.nesterov(*v);
      break;
    }
    case OptimizerKind::rmsprop: {
      auto& o = static_cast<torch::optim::RMSpropOptions&>(options);
      set("lr", [&](double v) { o.lr(v); });
      set("momentum", [&](double v) { o.momentum(v); });
      set("alpha", [&](double v) { o.alpha(v); });
      set("eps", [&](double v) { o.eps(v); });
      set("weight_decay", [&](double v) { o.weight_decay(v); });
      if (auto v = flag("centered")) o.centered(*v);
      break;
    }
    case OptimizerKind::adagrad: {
      auto& o = static_cast<torch::optim::AdagradOptions&>(options);
      set("lr", [&](double v) { o.lr(v); });
      set("lr_decay", [&](double v) { o.lr_decay(v); });
      set("eps", [&](double v) { o.eps(v); });
      set("weight_decay", [&](double v) { o.weight_decay(v); });
      set("initial_accumulator_value", [&](double v) { o.initial_accumulator_value(v); });
      break;
    }
  }
}

// One parameter's state from PyTorch's dict (tensors checked against the parameter's shape, moved to its device).
TRAINLOOP_DETAIL_API std::unique_ptr<torch::optim::OptimizerParamState> read_param_state(
    OptimizerKind kind, const c10::IValue& value, const torch::Tensor& param, const std::string& where) {
  if (!value.isGenericDict()) throw CheckpointError(where + " is a " + value.tagKind() + ", not a dict");
  const c10::impl::GenericDict s = value.toGenericDict();
  auto tensor = [&](const char* key, bool required) -> torch::Tensor {
    auto v = dict_get(s, key);
    if (!v || v->isNone()) {
      if (required) throw CheckpointError(where + "/" + key + " is missing");
      return {};
    }
    if (!v->isTensor()) throw CheckpointError(where + "/" + key + " is a " + v->tagKind() + ", not a tensor");
    const torch::Tensor& t = v->toTensor();
    if (t.sizes() != param.sizes())
      throw CheckpointError(where + "/" + key + " has shape " + c10::str(t.sizes()) + ", its parameter " +
                            c10::str(param.sizes()));
    return t.to(param.options()).clone(at::MemoryFormat::Preserve);
  };
  auto step = [&]() -> std::int64_t {
    auto v = dict_get(s, "step");
    if (!v) throw CheckpointError(where + "/step is missing");
    if (v->isInt()) return v->toInt();
    if (v->isDouble()) return static_cast<std::int64_t>(std::llround(v->toDouble()));
    if (v->isTensor() && v->toTensor().numel() == 1) return static_cast<std::int64_t>(std::llround(v->toTensor().item<double>()));
    throw CheckpointError(where + "/step is a " + v->tagKind() + ", not a number");
  };
  switch (kind) {
    case OptimizerKind::adam:
    case OptimizerKind::adamw: {
      auto adam = [&](auto state) {
        state->step(step());
        state->exp_avg(tensor("exp_avg", true));
        state->exp_avg_sq(tensor("exp_avg_sq", true));
        if (auto m = tensor("max_exp_avg_sq", false); m.defined()) state->max_exp_avg_sq(m);
        return std::unique_ptr<torch::optim::OptimizerParamState>(std::move(state));
      };
      if (kind == OptimizerKind::adam) return adam(std::make_unique<torch::optim::AdamParamState>());
      return adam(std::make_unique<torch::optim::AdamWParamState>());
    }
    case OptimizerKind::sgd: {
      auto state = std::make_unique<torch::optim::SGDParamState>();
      if (auto m = tensor("momentum_buffer", false); m.defined()) state->momentum_buffer(m);
      return state;
    }
    case OptimizerKind::rmsprop: {
      auto state = std::make_unique<torch::optim::RMSpropParamState>();
      state->step(step());
      state->square_avg(tensor("square_avg", true));
      if (auto m = tensor("momentum_buffer", false); m.defined()) state->momentum_buffer(m);
      if (auto m = tensor("grad_avg", false); m.defined()) state->grad_avg(m);
      return state;
    }
    case OptimizerKind::adagrad: {
      auto state = std::make_unique<torch::optim::AdagradParamState>();
      state->step(step());
      state->sum(tensor("sum", true));
      return state;
    }
  }
  return nullptr;
}

TRAINLOOP_DETAIL_API void load_python_optimizer_state(torch::optim::Optimizer& optimizer, const c10::IValue& value,
                                                      const std::string& path, const std::string& key) {
  const std::string where = "trainloop: checkpoint '" + path + "': key '" + key + "'";
  auto at = [&](const std::string& sub) { return "trainloop: checkpoint '" + path + "': key '" + key + "/" + sub + "'"; };
  const OptimizerKind kind = require_kind(optimizer, where);
  require_no_python_object(value, path, key);
  if (!value.isGenericDict()) throw CheckpointError(where + " is a " + value.tagKind() + ", not an optimizer state");
  const c10::impl::GenericDict d = value.toGenericDict();
  auto groups_value = dict_get(d, "param_groups");
  auto state_value = dict_get(d, "state");
  if (!groups_value || !groups_value->isList()) throw CheckpointError(at("param_groups") + " is missing or not a list");
  if (!state_value || !state_value->isGenericDict()) throw CheckpointError(at("state") + " is missing or not a dict");
  const auto groups = groups_value->toList();
  auto& param_groups = optimizer.param_groups();
  if (groups.size() != param_groups.size())
    throw CheckpointError(at("param_groups") + " has " + std::to_string(groups.size()) + " groups, the optimizer " +
                          std::to_string(param_groups.size()));
  // Everything is read into new objects first; the optimizer changes only once all of it is valid.
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  std::vector<std::pair<torch::Tensor, std::unique_ptr<torch::optim::OptimizerParamState>>> states;
  const c10::impl::GenericDict state = state_value->toGenericDict();
  std::int64_t index = 0;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const std::string group_key = "param_groups/" + std::to_string(gi);
    const c10::IValue g = groups.get(gi);
    if (!g.isGenericDict()) throw CheckpointError(at(group_key) + " is not a dict");
    options.push_back(param_groups[gi].options().clone());
    read_param_group(kind, g.toGenericDict(), *options.back(), at(group_key));
    auto params = dict_get(g.toGenericDict(), "params");
    if (!params || !params->isList()) throw CheckpointError(at(group_key + "/params") + " is missing or not a list");
    const auto& own = param_groups[gi].params();
    if (params->toList().size() != own.size())
      throw CheckpointError(at(group_key + "/params") + " lists " + std::to_string(params->toList().size()) +
                            " parameters, the optimizer's group " + std::to_string(own.size()));
    for (std::size_t pi = 0; pi < own.size(); ++pi) {
      const c10::IValue id = params->toList().get(pi);
      if (!id.isInt()) throw CheckpointError(at(group_key + "/params") + " holds a " + id.tagKind() + ", not an index");
      auto it = state.find(id);
      if (it != state.end())
        states.emplace_back(own[pi], read_param_state(kind, it->value(), own[pi],
                                                      at("state/" + std::to_string(id.toInt()))));
      ++index;
    }
  }
  for (std::size_t gi = 0; gi < groups.size(); ++gi) param_groups[gi].set_options(std::move(options[gi]));
  auto& target = optimizer.state();
  for (auto& [param, s] : states) target[optimizer_state_key<OptimizerStateMap>(param)] = std::move(s);
}
}  // namespace detail

TRAINLOOP_DETAIL_API std::string LoadStateDictOptions::module_key(const std::string& file_key) const {
  std::string key = file_key;
  for (const auto& prefix : prefixes_)
    if (key.rfind(prefix, 0) == 0) {
      key = key.substr(prefix.size());
      break;
    }
  return rename_ ? rename_(key) : key;
}

TRAINLOOP_DETAIL_API void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  detail::write_pytorch_file(path, pytorch_state_dict(module));
}

TRAINLOOP_DETAIL_API LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path,
                                                         const LoadStateDictOptions& options) {
  c10::IValue value = detail::read_pytorch_file(path, options.map_location());
  std::string key = "";
  // A Lightning checkpoint (or any checkpoint dict keeping the weights under "state_dict"): its weights.
  if (value.isGenericDict())
    if (auto weights = detail::dict_get(value.toGenericDict(), "state_dict"); weights && weights->isGenericDict()) {
      value = *weights;
      key = "state_dict";
    }
  const std::string where = "trainloop: checkpoint '" + path + "'" + (key.empty() ? "" : ": key '" + key + "'");
  return detail::load_state_dict_from(module, value, options, where);
}

TRAINLOOP_DETAIL_API void save_optimizer_state_dict(const torch::optim::Optimizer& optimizer, const std::string& path) {
  detail::write_pytorch_file(path, pytorch_optimizer_state_dict(optimizer));
}

TRAINLOOP_DETAIL_API void load_optimizer_state_dict(torch::optim::Optimizer& optimizer, const std::string& path) {
  detail::load_python_optimizer_state(optimizer, detail::read_pytorch_file(path, std::nullopt), path, "(top level)");
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
