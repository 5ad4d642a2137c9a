// trainloop: checkpoint files. One file holds the model's parameters and buffers, every optimizer's state, named
// state dictionaries (loop counters, the data loader's position, schedulers, callbacks keyed by a stable id,
// hyperparameters), the RNG states (CPU and CUDA), the trainloop version and a format version. Writes are atomic
// (a temporary file in the same folder, flushed and fsync'ed, renamed over the target, the folder fsync'ed): a crash
// leaves the old file or the new one, never a torn one. Loading validates everything and names the file and the key.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

TRAINLOOP_DETAIL_BEGIN

/// Named tensors: a callback's tensor state (EMA weights) in a checkpoint.
using TensorDict = std::map<std::string, torch::Tensor>;

/// The layout version this trainloop writes; it reads this one and older.
inline constexpr std::int64_t checkpoint_format_version = 1;

namespace detail {
inline std::runtime_error checkpoint_error(const std::string& path, const std::string& what) {
  return std::runtime_error("trainloop: checkpoint '" + path + "': " + what);
}
// The first line of a c10::Error, without LibTorch's backtrace.
inline std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

inline void fsync_or_throw(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw checkpoint_error(path, std::string("cannot open to sync: ") + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) throw checkpoint_error(path, std::string("fsync failed: ") + std::strerror(error));
}

// A StateDict as three typed dictionaries (TorchScript attributes need one value type per dictionary).
inline void write_state_dict(torch::serialize::OutputArchive& archive, const StateDict& state) {
  c10::Dict<std::string, std::int64_t> ints;
  c10::Dict<std::string, double> doubles;
  c10::Dict<std::string, std::string> strings;
  for (const auto& [key, value] : state) {
    if (const auto* i = std::get_if<std::int64_t>(&value)) ints.insert(key, *i);
    else if (const auto* d = std::get_if<double>(&value)) doubles.insert(key, *d);
    else strings.insert(key, std::get<std::string>(value));
  }
  archive.write("ints", c10::IValue(ints));
  archive.write("doubles", c10::IValue(doubles));
  archive.write("strings", c10::IValue(strings));
}
inline StateDict read_state_dict(torch::serialize::InputArchive& archive) {
  StateDict state;
  c10::IValue ints, doubles, strings;
  archive.read("ints", ints);
  archive.read("doubles", doubles);
  archive.read("strings", strings);
  for (const auto& e : ints.toGenericDict()) state[e.key().toStringRef()] = e.value().toInt();
  for (const auto& e : doubles.toGenericDict()) state[e.key().toStringRef()] = e.value().toDouble();
  for (const auto& e : strings.toGenericDict()) state[e.key().toStringRef()] = e.value().toStringRef();
  return state;
}
inline std::map<std::string, torch::Tensor> named_tensors(const torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& p : model.named_parameters()) tensors[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) tensors[b.key()] = b.value();
  return tensors;
}
}  // namespace detail

/// Writes a checkpoint atomically. `states` are named state dictionaries (keys like "loop", "loader",
/// "callback/EarlyStopping", "scheduler/0", "hparams"); `tensor_states` named tensor dictionaries (stored on the CPU
/// side of the archive as saved; keys like "callback/EMA"). A failure (disk full, no permission) is an error naming
/// the path, and the file that was there before stays as it was.
inline void save_checkpoint(const std::string& path, const torch::nn::Module& model,
                            const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers = {},
                            const std::map<std::string, StateDict>& states = {}, bool include_rng = true,
                            const std::map<std::string, TensorDict>& tensor_states = {}) {
  torch::serialize::OutputArchive archive;
  archive.write("trainloop_format_version", c10::IValue(checkpoint_format_version));
  archive.write("trainloop_version", c10::IValue(std::string(version_string)));
  c10::Dict<std::string, torch::Tensor> weights;
  for (const auto& [name, tensor] : detail::named_tensors(model)) weights.insert(name, tensor.detach());
  archive.write("model", c10::IValue(weights));
  archive.write("optimizer_count", c10::IValue(static_cast<std::int64_t>(optimizers.size())));
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    torch::serialize::OutputArchive nested;
    optimizers[i]->save(nested);
    archive.write("optimizer_" + std::to_string(i), nested);
  }
  c10::List<std::string> state_names;
  for (const auto& [name, state] : states) {
    state_names.push_back(name);
    torch::serialize::OutputArchive nested;
    detail::write_state_dict(nested, state);
    archive.write("state_" + std::to_string(state_names.size() - 1), nested);
  }
  archive.write("state_names", c10::IValue(state_names));
  if (!tensor_states.empty()) {  // absent in older files and when no callback has tensors
    c10::List<std::string> tensor_names;
    for (const auto& [name, tensors] : tensor_states) {
      tensor_names.push_back(name);
      c10::Dict<std::string, torch::Tensor> dict;
      for (const auto& [key, tensor] : tensors) dict.insert(key, tensor.detach());
      archive.write("tensors_" + std::to_string(tensor_names.size() - 1), c10::IValue(dict));
    }
    archive.write("tensor_state_names", c10::IValue(tensor_names));
  }
  if (include_rng) {
    archive.write("rng_cpu", at::detail::getDefaultCPUGenerator().get_state(), /*is_buffer=*/true);
    const auto cuda_devices = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
    for (int i = 0; i < cuda_devices; ++i)
      archive.write("rng_cuda_" + std::to_string(i),
                    at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i))).get_state(),
                    /*is_buffer=*/true);
  }

  const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  try {
    archive.save_to(temporary);
    detail::fsync_or_throw(temporary, false);
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
      throw detail::checkpoint_error(path, std::string("cannot rename the written file into place: ") + std::strerror(errno));
    const auto slash = path.find_last_of('/');
    detail::fsync_or_throw(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)), true);
  } catch (const c10::Error& error) {
    std::remove(temporary.c_str());
    throw detail::checkpoint_error(path, "writing failed, the previous file is untouched: " + detail::first_line(error.what()));
  } catch (...) {
    std::remove(temporary.c_str());
    throw;
  }
}

/// Reads a checkpoint into `model` and `optimizers` (tensors land on the model's device, whatever device saved them;
/// `map_location` picks where the file's tensors are first loaded) and returns its named states. Everything is
/// validated before anything is changed: a missing, truncated or foreign file, a newer format, a different model
/// (missing or unexpected keys, shape mismatch) or a different optimizer count is an error naming the file and key.
/// With `tensor_states`, the checkpoint's named tensor dictionaries are put there (loaded to `map_location`).
inline std::map<std::string, StateDict> load_checkpoint(
    const std::string& path, torch::nn::Module& model,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers = {},
    std::optional<torch::Device> map_location = std::nullopt, bool restore_rng = true,
    std::map<std::string, TensorDict>* tensor_states = nullptr) {
  if (::access(path.c_str(), R_OK) != 0) throw detail::checkpoint_error(path, std::strerror(errno));
  torch::serialize::InputArchive archive;
  c10::optional<torch::Device> device;  // c10::optional is not std::optional in LibTorch 1.x
  if (map_location) device = *map_location;
  try {
    archive.load_from(path, device);
  } catch (const c10::Error& error) {
    throw detail::checkpoint_error(path, "not a readable checkpoint (truncated or corrupt?): " + detail::first_line(error.what()));
  }
  c10::IValue format;
  if (!archive.try_read("trainloop_format_version", format) || !format.isInt())
    throw detail::checkpoint_error(path, "not a trainloop checkpoint (no trainloop_format_version)");
  c10::IValue written_by;
  archive.try_read("trainloop_version", written_by);
  if (format.toInt() > checkpoint_format_version)
    throw detail::checkpoint_error(path, "format version " + std::to_string(format.toInt()) + " (written by trainloop " +
                                             (written_by.isString() ? written_by.toStringRef() : "?") +
                                             ") is newer than this trainloop (" + version_string + ") reads (" +
                                             std::to_string(checkpoint_format_version) + ")");
  try {
    // The model: the same keys and shapes, or nothing is touched.
    c10::IValue weights_value;
    archive.read("model", weights_value);
    const auto weights = weights_value.toGenericDict();
    auto mine = detail::named_tensors(model);
    for (const auto& entry : weights) {
      const std::string& key = entry.key().toStringRef();
      auto it = mine.find(key);
      if (it == mine.end()) throw detail::checkpoint_error(path, "key 'model/" + key + "' is not in this model (a different model?)");
      const torch::Tensor saved = entry.value().toTensor();
      if (saved.sizes() != it->second.sizes())
        throw detail::checkpoint_error(path, "key 'model/" + key + "' has shape " + c10::str(saved.sizes()) +
                                                 ", this model's has " + c10::str(it->second.sizes()));
    }
    for (const auto& [key, tensor] : mine)
      if (!weights.contains(key)) throw detail::checkpoint_error(path, "key 'model/" + key + "' is missing (a different model?)");
    c10::IValue count;
    archive.read("optimizer_count", count);
    if (count.toInt() != static_cast<std::int64_t>(optimizers.size()))
      throw detail::checkpoint_error(path, "it holds " + std::to_string(count.toInt()) + " optimizer state(s), " +
                                               std::to_string(optimizers.size()) + " optimizer(s) were given");

    // Validated: now restore.
    {
      torch::NoGradGuard no_grad;
      for (const auto& entry : weights) mine.at(entry.key().toStringRef()).copy_(entry.value().toTensor());
    }
    for (std::size_t i = 0; i < optimizers.size(); ++i) {
      torch::serialize::InputArchive nested;
      archive.read("optimizer_" + std::to_string(i), nested);
      optimizers[i]->load(nested);
    }
    std::map<std::string, StateDict> states;
    c10::IValue names;
    archive.read("state_names", names);
    const auto list = names.toList();
    for (std::size_t i = 0; i < list.size(); ++i) {
      torch::serialize::InputArchive nested;
      archive.read("state_" + std::to_string(i), nested);
      states[list.get(i).toStringRef()] = detail::read_state_dict(nested);
    }
    c10::IValue tensor_names;
    if (tensor_states && archive.try_read("tensor_state_names", tensor_names)) {
      const auto names_list = tensor_names.toList();
      for (std::size_t i = 0; i < names_list.size(); ++i) {
        c10::IValue dict;
        archive.read("tensors_" + std::to_string(i), dict);
        TensorDict& tensors = (*tensor_states)[names_list.get(i).toStringRef()];
        for (const auto& e : dict.toGenericDict()) tensors[e.key().toStringRef()] = e.value().toTensor();
      }
    }
    if (restore_rng) {
      torch::Tensor cpu_state;
      if (archive.try_read("rng_cpu", cpu_state, /*is_buffer=*/true)) {
        at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle: setting it sets the default
        generator.set_state(cpu_state.to(torch::kCPU));
      }
      const auto cuda_devices = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
      for (int i = 0; i < cuda_devices; ++i) {
        torch::Tensor cuda_state;
        if (archive.try_read("rng_cuda_" + std::to_string(i), cuda_state, /*is_buffer=*/true)) {
          at::Generator generator =
              at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
          generator.set_state(cuda_state.to(torch::kCPU));
        }
      }
    }
    return states;
  } catch (const c10::Error& error) {
    throw detail::checkpoint_error(path, "unreadable content: " + detail::first_line(error.what()));
  }
}

/// Weights only (parameters and buffers), for export; load them into any module with the same names and shapes,
/// a plain torch::nn::Module included, with load_checkpoint(path, module).
inline void save_weights(const std::string& path, const torch::nn::Module& model) {
  save_checkpoint(path, model, {}, {}, /*include_rng=*/false);
}

TRAINLOOP_DETAIL_END
