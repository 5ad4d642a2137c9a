// trainloop: checkpoint files. One file holds the model's parameters and buffers, every optimizer's state, named
// state dictionaries (loop counters, the data loader's position, schedulers, callbacks keyed by a stable id,
// hyperparameters), named tensor dictionaries (EMA weights, the epoch's running sums), the RNG states (CPU and CUDA),
// the trainloop version and a format version.
//
// The file is LibTorch's archive (a zip) with an integrity record in the zip's comment field: CRC-32C and size of
// everything before it. It stays a valid zip for any reader; trainloop verifies it before a byte reaches LibTorch's
// parser, so a damaged file is a clear error in milliseconds, never a crash, a huge allocation or a silent load.
// Writes are atomic (a locked temporary in the same folder, fsync'ed, renamed over the target, the folder fsync'ed):
// a crash leaves the old file or the new one; a full disk or a file-size limit is an exception with the old file
// intact and no temporary left; temporaries of writers that died (SIGKILL) are removed at the folder's next write.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parts/core/crc32c.hpp"
#include "parts/core/state.hpp"
#include "parts/torch/device.hpp"

TRAINLOOP_DETAIL_BEGIN

/// Named tensors: a callback's tensor state (EMA weights) in a checkpoint.
using TensorDict = std::map<std::string, torch::Tensor>;

/// The layout version this trainloop writes and reads. 2: the integrity record (files of format 1 had none).
inline constexpr std::int64_t checkpoint_format_version = 2;

/// The layout of a fit's checkpoint file: trainloop's own (LibTorch's archive with an integrity record; exact resume),
/// or Lightning's (a torch.save dict that Python's Lightning loads and resumes from; lightning_checkpoint.hpp).
enum class CheckpointFormat { trainloop, lightning };

/// Any checkpoint error: the message names the file and, where known, the key.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// save_checkpoint refused a state holding NaN or inf (the file that was there stays as it was).
class NonFiniteStateError : public CheckpointError {
 public:
  using CheckpointError::CheckpointError;
};

/// Writes a checkpoint atomically. `states` are named state dictionaries (keys like "loop", "loader",
/// "callback/EarlyStopping", "scheduler/0", "hparams"); `tensor_states` named tensor dictionaries (stored on the CPU
/// side of the archive as saved; keys like "callback/EMA"). A failure (disk full, file-size limit, no permission) is a
/// CheckpointError naming the path, and the file that was there before stays as it was. A model or tensor state
/// holding NaN or inf is refused (NonFiniteStateError, nothing written): a diverged run never replaces a good file.
TRAINLOOP_DETAIL_API void save_checkpoint(const std::string& path, const torch::nn::Module& model,
                                          const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers = {},
                                          const std::map<std::string, StateDict>& states = {}, bool include_rng = true,
                                          const std::map<std::string, TensorDict>& tensor_states = {});
/// Reads a checkpoint into `model` and `optimizers` (tensors land on the model's device, whatever device saved them;
/// `map_location` picks where the file's tensors are first loaded) and returns its named states. The file's integrity
/// record is verified first, then everything is validated before anything is changed: a missing, damaged, truncated
/// or foreign file, a newer format, a different model (missing or unexpected keys, shape mismatch) or a different
/// optimizer count is a CheckpointError naming the file and key. With `tensor_states`, the checkpoint's named tensor
/// dictionaries are put there (loaded to `map_location`).
TRAINLOOP_DETAIL_API std::map<std::string, StateDict> load_checkpoint(
    const std::string& path, torch::nn::Module& model,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers = {},
    std::optional<torch::Device> map_location = std::nullopt, bool restore_rng = true,
    std::map<std::string, TensorDict>* tensor_states = nullptr);
/// The named state dictionaries of a checkpoint, without a model (to see what a file holds: its loop counters,
/// ModelCheckpoint's best path, the hyperparameters). Verified like load_checkpoint.
TRAINLOOP_DETAIL_API std::map<std::string, StateDict> read_checkpoint_states(const std::string& path);
/// Weights only (parameters and buffers), for export; load them into any module with the same names and shapes,
/// a plain torch::nn::Module included, with load_checkpoint(path, module).
TRAINLOOP_DETAIL_API void save_weights(const std::string& path, const torch::nn::Module& model);

namespace detail {
// The integrity record: the zip's comment, fixed length, "trainloop-checkpoint crc32c=%08x size=%020llu".
inline constexpr char integrity_tag[] = "trainloop-checkpoint crc32c=";
inline constexpr std::size_t integrity_record_size = sizeof(integrity_tag) - 1 + 8 + 6 + 20;
// The zip's end-of-central-directory record: 22 bytes, signature "PK\5\6", comment length at offset 20.
inline constexpr std::size_t zip_end_record_size = 22;
inline bool is_zip_end_record(const char* p) { return std::memcmp(p, "PK\x05\x06", 4) == 0; }
TRAINLOOP_DETAIL_API std::uint16_t zip_comment_length(const char* end_record);
TRAINLOOP_DETAIL_API void set_zip_comment_length(char* end_record, std::uint16_t length);

// Writes a file atomically from what LibTorch's archive writer hands over. write() never fails towards LibTorch (its
// writer throws again from its destructor when a write fails, which aborts the process): the first error is kept and
// reported by commit(). The last 22 bytes are held back, since the zip's end record gets the integrity record's
// length patched in. SIGXFSZ is blocked on this thread while writing, so a file-size limit is EFBIG, not a kill.
class AtomicCheckpointWriter {
 public:
  TRAINLOOP_DETAIL_API explicit AtomicCheckpointWriter(std::string path);
  AtomicCheckpointWriter(const AtomicCheckpointWriter&) = delete;
  AtomicCheckpointWriter& operator=(const AtomicCheckpointWriter&) = delete;
  TRAINLOOP_DETAIL_API ~AtomicCheckpointWriter();

  TRAINLOOP_DETAIL_API std::size_t write(const void* data, std::size_t size);
  TRAINLOOP_DETAIL_API void commit();

 private:
  static constexpr std::size_t buffer_capacity = std::size_t{1} << 20;

  // Writes the first n buffered bytes (when no error happened yet), adding them to the CRC.
  TRAINLOOP_DETAIL_API void flush(std::size_t n);
  [[noreturn]] TRAINLOOP_DETAIL_API void fail_with(int error, const std::string& what);

  std::string path_, temporary_;
  int fd_ = -1;
  int error_ = 0;
  bool committed_ = false;
  std::vector<char> buffer_;
  std::uint32_t crc_ = 0;
  std::uint64_t written_ = 0;
  sigset_t previous_mask_{};
};

// The model's parameters and buffers by name (EMA reads them too).
TRAINLOOP_DETAIL_API std::map<std::string, torch::Tensor> named_tensors(const torch::nn::Module& model);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API CheckpointError checkpoint_error(const std::string& path, const std::string& what);
// The first line of a c10::Error, without LibTorch's backtrace.
inline std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }
TRAINLOOP_DETAIL_API std::string folder_of(const std::string& path);
TRAINLOOP_DETAIL_API std::string errno_text(int error);

// Temporaries are "<target>.tmp-<pid>", locked (flock) by their writer while it lives. One whose writer is gone
// (the pid is dead and the lock is free) is removed.
TRAINLOOP_DETAIL_API bool is_temporary_name(const std::string& name, long& pid);
// Removes a temporary when no writer holds its lock (the lock dies with its process).
TRAINLOOP_DETAIL_API void remove_if_unlocked(const std::string& path);
TRAINLOOP_DETAIL_API void remove_stale_temporaries(const std::string& folder);

TRAINLOOP_DETAIL_API void fsync_folder_or_throw(const std::string& path);

TRAINLOOP_DETAIL_API AtomicCheckpointWriter::AtomicCheckpointWriter(std::string path) : path_(std::move(path)) {
  remove_stale_temporaries(folder_of(path_));
  temporary_ = path_ + ".tmp-" + std::to_string(::getpid());
  for (int attempt = 0; attempt < 2 && fd_ < 0; ++attempt) {
    fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno == EEXIST && attempt == 0) remove_if_unlocked(temporary_);  // an earlier process's, same pid
  }
  if (fd_ < 0) throw checkpoint_error(path_, "writing failed, the previous file is untouched: cannot create '" +
                                                 temporary_ + "': " + errno_text(errno));
  ::flock(fd_, LOCK_EX | LOCK_NB);  // marks it in use: cleaners leave it alone
  sigset_t xfsz;
  sigemptyset(&xfsz);
  sigaddset(&xfsz, SIGXFSZ);
  pthread_sigmask(SIG_BLOCK, &xfsz, &previous_mask_);
  buffer_.reserve(buffer_capacity + zip_end_record_size);
}

TRAINLOOP_DETAIL_API AtomicCheckpointWriter::~AtomicCheckpointWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temporary_.c_str());
  // A SIGXFSZ raised by our write is consumed, then the thread's mask is as it was.
  sigset_t pending, xfsz;
  sigemptyset(&xfsz);
  sigaddset(&xfsz, SIGXFSZ);
  if (sigpending(&pending) == 0 && sigismember(&pending, SIGXFSZ) && !sigismember(&previous_mask_, SIGXFSZ)) {
    const timespec now{0, 0};
    sigtimedwait(&xfsz, nullptr, &now);
  }
  pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);
}

TRAINLOOP_DETAIL_API std::size_t AtomicCheckpointWriter::write(const void* data, std::size_t size) {
  const char* bytes = static_cast<const char*>(data);
  if (bytes == nullptr) buffer_.insert(buffer_.end(), size, '\0');  // (padding, should a writer send it so)
  else buffer_.insert(buffer_.end(), bytes, bytes + size);
  if (buffer_.size() >= buffer_capacity + zip_end_record_size) flush(buffer_.size() - zip_end_record_size);
  return size;
}

TRAINLOOP_DETAIL_API void AtomicCheckpointWriter::commit() {
  const char* const no_end_record = "LibTorch's archive did not end with a zip end record";
  if (buffer_.size() < zip_end_record_size) fail_with(0, no_end_record);
  char* end_record = buffer_.data() + buffer_.size() - zip_end_record_size;
  if (!is_zip_end_record(end_record) || zip_comment_length(end_record) != 0) fail_with(0, no_end_record);
  set_zip_comment_length(end_record, static_cast<std::uint16_t>(integrity_record_size));
  flush(buffer_.size());
  char record[integrity_record_size + 1];
  std::snprintf(record, sizeof record, "%s%08" PRIx32 " size=%020" PRIu64, integrity_tag, crc_,
                static_cast<std::uint64_t>(written_));
  buffer_.assign(record, record + integrity_record_size);
  flush(buffer_.size());
  if (error_) fail_with(error_, "");
  if (::fsync(fd_) != 0) fail_with(errno, "fsync: ");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail_with(errno, "close: ");
  if (std::rename(temporary_.c_str(), path_.c_str()) != 0)
    fail_with(errno, "cannot rename the written file into place: ");
  committed_ = true;
  fsync_folder_or_throw(path_);
}

TRAINLOOP_DETAIL_API void AtomicCheckpointWriter::flush(std::size_t n) {
  if (!error_) {
    crc_ = crc32c_update(crc_, buffer_.data(), n);
    for (std::size_t done = 0; done < n;) {
      const ssize_t wrote = ::write(fd_, buffer_.data() + done, n - done);
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote <= 0) {
        error_ = wrote < 0 ? errno : EIO;
        break;
      }
      done += static_cast<std::size_t>(wrote);
    }
    written_ += n;
  }
  buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(n));
}

TRAINLOOP_DETAIL_API void AtomicCheckpointWriter::fail_with(int error, const std::string& what) {
  throw checkpoint_error(path_, "writing failed, the previous file is untouched: " + what +
                                    (error ? errno_text(error) : std::string()));
}

// Reads a checkpoint file whole and verifies its integrity record; returns the archive as LibTorch wrote it (the
// record stripped). Memory: the file's size.
// The file's bytes; a file that cannot be read is an error naming it.
TRAINLOOP_DETAIL_API std::string read_whole_file(const std::string& path);
// Verifies and removes the integrity record at the end of `bytes` (the zip's comment). Without one: an error when
// `required`, else false (a file Python's torch.save wrote has none).
TRAINLOOP_DETAIL_API bool strip_integrity_record(const std::string& path, std::string& bytes, bool required);
TRAINLOOP_DETAIL_API std::string read_verified_checkpoint(const std::string& path);

// A StateDict as three typed dictionaries (TorchScript attributes need one value type per dictionary).
TRAINLOOP_DETAIL_API void write_state_dict(torch::serialize::OutputArchive& archive, const StateDict& state);
TRAINLOOP_DETAIL_API StateDict read_state_dict(torch::serialize::InputArchive& archive);
TRAINLOOP_DETAIL_API std::map<std::string, torch::Tensor> named_tensors(const torch::nn::Module& model) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& p : model.named_parameters()) tensors[p.key()] = p.value();
  for (const auto& b : model.named_buffers()) tensors[b.key()] = b.value();
  return tensors;
}
// The name of the first floating tensor holding NaN or inf, or "" when all are finite: one reduction on the device
// and one read to the host for the whole state.
TRAINLOOP_DETAIL_API std::string first_non_finite(const std::map<std::string, torch::Tensor>& model,
                                                  const std::map<std::string, TensorDict>& tensor_states);

// A verified file opened as LibTorch's archive; LibTorch's errors (parse errors, out_of_range, bad_alloc) name the
// file.
TRAINLOOP_DETAIL_API void open_checkpoint(const std::string& path, torch::serialize::InputArchive& archive,
                                          std::optional<torch::Device> map_location);
TRAINLOOP_DETAIL_API std::map<std::string, StateDict> read_states(torch::serialize::InputArchive& archive);
// Runs f; whatever LibTorch throws while reading becomes an error naming the file (ours pass through).
template <class F>
decltype(auto) reading(const std::string& path, F&& f) {
  try {
    return f();
  } catch (const CheckpointError&) {
    throw;
  } catch (const c10::Error& error) {
    throw checkpoint_error(path, "unreadable content: " + first_line(error.what()));
  } catch (const std::exception& error) {
    throw checkpoint_error(path, std::string("unreadable content: ") + error.what());
  }
}
}  // namespace detail

TRAINLOOP_DETAIL_API void save_checkpoint(const std::string& path, const torch::nn::Module& model,
                                          const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
                                          const std::map<std::string, StateDict>& states, bool include_rng,
                                          const std::map<std::string, TensorDict>& tensor_states) {
  const auto weights_by_name = detail::named_tensors(model);
  const std::string bad = detail::first_non_finite(weights_by_name, tensor_states);
  if (!bad.empty())
    throw NonFiniteStateError("trainloop: checkpoint '" + path + "': not written: '" + bad +
                              "' holds NaN or inf (the file already there, if any, is kept)");
  torch::serialize::OutputArchive archive;
  archive.write("trainloop_format_version", c10::IValue(checkpoint_format_version));
  archive.write("trainloop_version", c10::IValue(std::string(version_string)));
  c10::Dict<std::string, torch::Tensor> weights;
  for (const auto& [name, tensor] : weights_by_name) weights.insert(name, tensor.detach());
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
  if (!tensor_states.empty()) {  // absent when no callback has tensors
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
    archive.write("rng_cpu", detail::cpu_generator().get_state(), /*is_buffer=*/true);
    for (std::size_t i = 0; i < detail::cuda_generator_count(); ++i)
      archive.write("rng_cuda_" + std::to_string(i), detail::cuda_generator(i).get_state(), /*is_buffer=*/true);
  }

  detail::AtomicCheckpointWriter writer(path);
  try {
    archive.save_to([&writer](const void* data, std::size_t size) { return writer.write(data, size); });
  } catch (const c10::Error& error) {
    throw detail::checkpoint_error(path, "writing failed, the previous file is untouched: " + detail::first_line(error.what()));
  }
  writer.commit();
}

TRAINLOOP_DETAIL_API std::map<std::string, StateDict> load_checkpoint(
    const std::string& path, torch::nn::Module& model,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers, std::optional<torch::Device> map_location,
    bool restore_rng, std::map<std::string, TensorDict>* tensor_states) {
  torch::serialize::InputArchive archive;
  detail::open_checkpoint(path, archive, map_location);
  return detail::reading(path, [&] {
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
    std::vector<torch::serialize::InputArchive> optimizer_archives(optimizers.size());
    for (std::size_t i = 0; i < optimizers.size(); ++i)
      archive.read("optimizer_" + std::to_string(i), optimizer_archives[i]);
    auto states = detail::read_states(archive);
    std::map<std::string, TensorDict> tensors;
    c10::IValue tensor_names;
    if (archive.try_read("tensor_state_names", tensor_names)) {
      const auto names_list = tensor_names.toList();
      for (std::size_t i = 0; i < names_list.size(); ++i) {
        c10::IValue dict;
        archive.read("tensors_" + std::to_string(i), dict);
        TensorDict& named = tensors[names_list.get(i).toStringRef()];
        for (const auto& e : dict.toGenericDict()) named[e.key().toStringRef()] = e.value().toTensor();
      }
    }

    // Validated and read: now restore.
    for (std::size_t i = 0; i < optimizers.size(); ++i) optimizers[i]->load(optimizer_archives[i]);
    {
      torch::NoGradGuard no_grad;
      for (const auto& entry : weights) mine.at(entry.key().toStringRef()).copy_(entry.value().toTensor());
    }
    if (tensor_states) *tensor_states = std::move(tensors);
    if (restore_rng) {
      torch::Tensor cpu_state;
      if (archive.try_read("rng_cpu", cpu_state, /*is_buffer=*/true))
        detail::cpu_generator().set_state(cpu_state.to(torch::kCPU));  // a handle: setting it sets the default
      for (std::size_t i = 0; i < detail::cuda_generator_count(); ++i) {
        torch::Tensor cuda_state;
        if (archive.try_read("rng_cuda_" + std::to_string(i), cuda_state, /*is_buffer=*/true))
          detail::cuda_generator(i).set_state(cuda_state.to(torch::kCPU));
      }
    }
    return states;
  });
}

TRAINLOOP_DETAIL_API std::map<std::string, StateDict> read_checkpoint_states(const std::string& path) {
  torch::serialize::InputArchive archive;
  detail::open_checkpoint(path, archive, torch::Device(torch::kCPU));
  return detail::reading(path, [&] { return detail::read_states(archive); });
}

TRAINLOOP_DETAIL_API void save_weights(const std::string& path, const torch::nn::Module& model) {
  save_checkpoint(path, model, {}, {}, /*include_rng=*/false);
}

namespace detail {
TRAINLOOP_DETAIL_API std::uint16_t zip_comment_length(const char* end_record) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(end_record[20]) |
                                    (static_cast<unsigned char>(end_record[21]) << 8));
}
TRAINLOOP_DETAIL_API void set_zip_comment_length(char* end_record, std::uint16_t length) {
  end_record[20] = static_cast<char>(length & 0xFF);
  end_record[21] = static_cast<char>(length >> 8);
}
TRAINLOOP_DETAIL_API CheckpointError checkpoint_error(const std::string& path, const std::string& what) {
  return CheckpointError("trainloop: checkpoint '" + path + "': " + what);
}
TRAINLOOP_DETAIL_API std::string folder_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}
TRAINLOOP_DETAIL_API std::string errno_text(int error) {
  std::string text = std::strerror(error);
  if (error == ENOSPC) text += " (disk full)";
  if (error == EFBIG) text += " (over the file size limit, ulimit -f?)";
  if (error == EDQUOT) text += " (disk quota)";
  return text;
}
TRAINLOOP_DETAIL_API bool is_temporary_name(const std::string& name, long& pid) {
  const auto at = name.rfind(".tmp-");
  if (at == std::string::npos || at + 5 >= name.size()) return false;
  for (std::size_t i = at + 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return false;
  pid = std::strtol(name.c_str() + at + 5, nullptr, 10);
  return pid > 0;
}
TRAINLOOP_DETAIL_API void remove_if_unlocked(const std::string& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) return;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) ::unlink(path.c_str());
  ::close(fd);
}
TRAINLOOP_DETAIL_API void remove_stale_temporaries(const std::string& folder) {
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) return;  // the write itself will report the folder's problem
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(dir)) {
    long pid = 0;
    const std::string name = entry->d_name;
    if (!is_temporary_name(name, pid) || pid == static_cast<long>(::getpid())) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;  // its writer may still be at work
    stale.push_back(folder + "/" + name);
  }
  ::closedir(dir);
  for (const auto& path : stale) remove_if_unlocked(path);
}
TRAINLOOP_DETAIL_API void fsync_folder_or_throw(const std::string& path) {
  const std::string folder = folder_of(path);
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw checkpoint_error(path, "cannot open its folder to sync: " + errno_text(errno));
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (rc != 0) throw checkpoint_error(path, "fsync of its folder failed: " + errno_text(error));
}
TRAINLOOP_DETAIL_API std::string read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw checkpoint_error(path, std::strerror(errno));
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  struct stat info {};
  if (::fstat(fd, &info) != 0) throw checkpoint_error(path, std::strerror(errno));
  if (!S_ISREG(info.st_mode)) throw checkpoint_error(path, "not a regular file");
  std::string bytes;
  try {
    bytes.resize(static_cast<std::size_t>(info.st_size));
  } catch (const std::bad_alloc&) {
    throw checkpoint_error(path, "cannot hold its " + std::to_string(info.st_size) + " bytes in memory");
  }
  for (std::size_t done = 0; done < bytes.size();) {
    const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw checkpoint_error(path, std::string("read failed: ") + std::strerror(errno));
    if (got == 0) throw checkpoint_error(path, "it shrank while being read");
    done += static_cast<std::size_t>(got);
  }
  return bytes;
}
TRAINLOOP_DETAIL_API bool strip_integrity_record(const std::string& path, std::string& bytes, bool required) {
  const std::string no_record =
      "no trainloop integrity record at its end: truncated, not a trainloop checkpoint, or written by a trainloop "
      "older than format 2";
  if (bytes.size() < zip_end_record_size + integrity_record_size) {
    if (required) throw checkpoint_error(path, no_record);
    return false;
  }
  const std::size_t payload = bytes.size() - integrity_record_size;
  const char* record = bytes.data() + payload;
  char* end_record = bytes.data() + payload - zip_end_record_size;
  if (std::memcmp(record, integrity_tag, sizeof(integrity_tag) - 1) != 0 || !is_zip_end_record(end_record) ||
      zip_comment_length(end_record) != integrity_record_size) {
    if (required) throw checkpoint_error(path, no_record);
    return false;
  }
  std::uint32_t recorded_crc = 0;
  std::uint64_t recorded_size = 0;
  const std::string text(record, integrity_record_size);
  if (std::sscanf(text.c_str() + sizeof(integrity_tag) - 1, "%8" SCNx32 " size=%20" SCNu64, &recorded_crc,
                  &recorded_size) != 2)
    throw checkpoint_error(path, "its integrity record is damaged: '" + text + "'");
  if (recorded_size != payload)
    throw checkpoint_error(path, "truncated or extended: the record says " + std::to_string(recorded_size) +
                                     " bytes precede it, the file has " + std::to_string(payload));
  const std::uint32_t crc = crc32c(bytes.data(), payload);
  if (crc != recorded_crc) {
    char detail[96];
    std::snprintf(detail, sizeof detail, "CRC-32C %08" PRIx32 ", recorded %08" PRIx32, crc, recorded_crc);
    throw checkpoint_error(path, std::string("corrupt: the content changed after it was written (") + detail + ")");
  }
  set_zip_comment_length(end_record, 0);
  bytes.resize(payload);
  return true;
}
TRAINLOOP_DETAIL_API std::string read_verified_checkpoint(const std::string& path) {
  std::string bytes = read_whole_file(path);
  strip_integrity_record(path, bytes, true);
  return bytes;
}
TRAINLOOP_DETAIL_API void write_state_dict(torch::serialize::OutputArchive& archive, const StateDict& state) {
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
TRAINLOOP_DETAIL_API StateDict read_state_dict(torch::serialize::InputArchive& archive) {
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
TRAINLOOP_DETAIL_API std::string first_non_finite(const std::map<std::string, torch::Tensor>& model,
                                                  const std::map<std::string, TensorDict>& tensor_states) {
  std::vector<std::pair<std::string, torch::Tensor>> checked;
  for (const auto& [name, tensor] : model)
    if (tensor.defined() && tensor.is_floating_point()) checked.emplace_back("model/" + name, tensor);
  for (const auto& [key, tensors] : tensor_states) {
    if (key.rfind("trainer/", 0) == 0) continue;  // logged values (a NaN loss) are data, not state to protect
    for (const auto& [name, tensor] : tensors)
      if (tensor.defined() && tensor.is_floating_point()) checked.emplace_back(key + "/" + name, tensor);
  }
  if (checked.empty()) return "";
  std::vector<torch::Tensor> finite;
  finite.reserve(checked.size());
  for (const auto& entry : checked) finite.push_back(torch::isfinite(entry.second.detach()).all().to(torch::kCPU));
  const torch::Tensor flags = torch::stack(finite);
  if (flags.all().item<bool>()) return "";
  const bool* each = flags.data_ptr<bool>();
  for (std::size_t i = 0; i < checked.size(); ++i)
    if (!each[i]) return checked[i].first;
  return "";
}
TRAINLOOP_DETAIL_API void open_checkpoint(const std::string& path, torch::serialize::InputArchive& archive,
                                          std::optional<torch::Device> map_location) {
  const std::string bytes = read_verified_checkpoint(path);
  c10::optional<torch::Device> device;  // c10::optional is not std::optional in LibTorch 1.x
  if (map_location) device = *map_location;
  try {
    archive.load_from(bytes.data(), bytes.size(), device);
  } catch (const c10::Error& error) {
    throw checkpoint_error(path, "not a readable checkpoint: " + first_line(error.what()));
  } catch (const std::exception& error) {
    throw checkpoint_error(path, std::string("not a readable checkpoint: ") + error.what());
  }
  c10::IValue format;
  if (!archive.try_read("trainloop_format_version", format) || !format.isInt())
    throw checkpoint_error(path, "not a trainloop checkpoint (no trainloop_format_version)");
  c10::IValue written_by;
  archive.try_read("trainloop_version", written_by);
  if (format.toInt() > checkpoint_format_version)
    throw checkpoint_error(path, "format version " + std::to_string(format.toInt()) + " (written by trainloop " +
                                     (written_by.isString() ? written_by.toStringRef() : "?") +
                                     ") is newer than this trainloop (" + version_string + ") reads (" +
                                     std::to_string(checkpoint_format_version) + ")");
}
TRAINLOOP_DETAIL_API std::map<std::string, StateDict> read_states(torch::serialize::InputArchive& archive) {
  std::map<std::string, StateDict> states;
  c10::IValue names;
  archive.read("state_names", names);
  const auto list = names.toList();
  for (std::size_t i = 0; i < list.size(); ++i) {
    torch::serialize::InputArchive nested;
    archive.read("state_" + std::to_string(i), nested);
    states[list.get(i).toStringRef()] = read_state_dict(nested);
  }
  return states;
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
