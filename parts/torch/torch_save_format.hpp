// trainloop: torch.save's file format, both ways: a zip holding a pickle of the object and the tensors' raw
// storages, what Python's torch.save writes and torch.load reads. State dicts, optimizer states (pytorch_files.hpp)
// and Lightning's checkpoints (lightning_checkpoint.hpp) are written and read through it.
//
// Both directions are trainloop's own code. Writing: LibTorch's pickler (torch::pickle_save) tags containers with
// torch.jit._pickle globals, which Python's weights_only unpickler (torch.load's default since PyTorch 2.6) refuses;
// ours writes only what torch.save itself writes, atomically like our checkpoints (with the integrity record in the
// zip's comment, which Python's reader ignores). Reading: LibTorch's torch::pickle_load turns a
// collections.OrderedDict, which every Python state_dict is, into None and then fails, and it cannot say which key
// held something it does not know. Ours reads the opcodes torch.save emits (pickle protocols 2 to 5), dicts and
// OrderedDicts as dicts, and rebuilds tensors with their dtype, shape, strides, storage offset and shared storages; a
// Python object C++ has no type for (a user's class) is kept as a marker, so the error names the key that holds it,
// and parts of a file nobody reads do not fail the load.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "parts/core/state.hpp"
#include "parts/torch/checkpoint.hpp"

TRAINLOOP_DETAIL_BEGIN

/// Python's `torch.save(value, path)`: dicts, lists, tuples, strings, numbers, booleans, None and tensors (moved to the
/// CPU, detached; dtype, shape and strides kept). Atomic like save_checkpoint; a failure is a CheckpointError naming
/// the path, the file that was there left as it was.
TRAINLOOP_DETAIL_API void save_pytorch_file(const std::string& path, const c10::IValue& value);
/// Python's `torch.load(path)` for files in torch.save's format (the zip format, PyTorch 1.6 and later): dicts and
/// OrderedDicts come back as dicts (keys in the file's order), tensors with their dtype, shape, strides and shared
/// storages, on `map_location` (default: the CPU). A file that is not in that format (our own checkpoint, torch.save's
/// legacy format, a truncated or damaged file), or that holds a Python object C++ has no type for (a user's class, a
/// numpy scalar), is a CheckpointError naming the file and, for the object, the key that holds it.
TRAINLOOP_DETAIL_API c10::IValue load_pytorch_file(const std::string& path,
                                                   std::optional<torch::Device> map_location = std::nullopt);

namespace detail {
// A dict of string keys and any values, as Python's dict (insertion-ordered).
inline c10::impl::GenericDict python_dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }
// A value of the dict `d` at `key` (nullopt when absent).
TRAINLOOP_DETAIL_API std::optional<c10::IValue> dict_get(const c10::impl::GenericDict& d, const std::string& key);
// A StateDict's values as Python's (int, float, str), and back (a value of another type is an error naming `where`).
TRAINLOOP_DETAIL_API c10::impl::GenericDict to_python_dict(const StateDict& state);
TRAINLOOP_DETAIL_API StateDict from_python_dict(const c10::IValue& value, const std::string& where);
// The key path ("hyper_parameters/config") and class of the first Python object C++ has no type for, if any.
TRAINLOOP_DETAIL_API std::optional<std::pair<std::string, std::string>> find_python_object(const c10::IValue& value,
                                                                                            const std::string& path);
// A CheckpointError naming the file and the key (under `key`) when `value` holds a Python object C++ has no type for.
TRAINLOOP_DETAIL_API void require_no_python_object(const c10::IValue& value, const std::string& path,
                                                   const std::string& key);
// Whether the file is readable as torch.save's format (a zip of a pickle and storages), not our checkpoint. False for
// a file that is neither, or damaged: the reader for our checkpoints then says what is wrong with it.
TRAINLOOP_DETAIL_API bool is_pytorch_file(const std::string& path);
// The bytes of torch.save's format, written atomically.
TRAINLOOP_DETAIL_API void write_pytorch_file(const std::string& path, const c10::IValue& value);
// The file's top-level object, Python objects C++ has no type for left as markers (find_python_object finds them).
TRAINLOOP_DETAIL_API c10::IValue read_pytorch_file(const std::string& path, std::optional<torch::Device> map_location);
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
// A Python object the unpickler has no C++ type for, and a global (class or function) it was made by: strings that
// start with a control byte no Python key or value of a state holds. Only find_python_object and the unpickler look.
inline constexpr char python_object_marker[] = "\x01trainloop: python object ";
inline constexpr char python_global_marker[] = "\x01trainloop: python global ";
inline bool has_marker(const c10::IValue& v, const char* marker) {
  return v.isString() && v.toStringRef().rfind(marker, 0) == 0;
}
inline std::string marked_name(const c10::IValue& v, const char* marker) {
  return v.toStringRef().substr(std::strlen(marker));
}

// The storage classes torch.save names (torch.FloatStorage, ...) and their dtypes.
TRAINLOOP_DETAIL_API std::optional<torch::Dtype> storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::Dtype> dtypes = {
      {"torch.DoubleStorage", torch::kDouble},   {"torch.FloatStorage", torch::kFloat},
      {"torch.HalfStorage", torch::kHalf},       {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},       {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},     {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},       {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat}, {"torch.ComplexDoubleStorage", torch::kComplexDouble},
      {"torch.UntypedStorage", torch::kByte}};
  auto it = dtypes.find(name);
  if (it == dtypes.end()) return std::nullopt;
  return it->second;
}

// Reads the pickle of one torch.save file. Errors are CheckpointErrors naming the file.
class PickleReader {
 public:
  PickleReader(const std::string& path, caffe2::serialize::PyTorchStreamReader& archive,
               std::optional<torch::Device> map_location)
      : path_(path), archive_(archive), map_location_(map_location) {}

  c10::IValue read(const std::string& pickle) {
    p_ = reinterpret_cast<const unsigned char*>(pickle.data());
    end_ = p_ + pickle.size();
    begin_ = p_;
    try {
      for (;;) {
        const unsigned char op = take(1)[0];
        if (op == '.') break;  // STOP
        step(op);
      }
    } catch (const c10::Error& error) {  // a damaged pickle LibTorch's containers refuse (an unhashable dict key)
      fail("its pickle is damaged: " + first_line(error.what()));
    }
    if (stack_.size() != 1) fail("the pickle ends with " + std::to_string(stack_.size()) + " values on its stack, not 1");
    return stack_.back();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw checkpoint_error(path_, what + " (at byte " + std::to_string(p_ - begin_) + " of its pickle)");
  }
  const unsigned char* take(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n) fail("its pickle ends early (truncated or damaged)");
    const unsigned char* at = p_;
    p_ += n;
    return at;
  }
  template <class U>
  U little(std::size_t n) {
    const unsigned char* b = take(n);
    U v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<U>(b[i]) << (8 * i);
    return v;
  }
  std::string text(std::size_t n) {
    const unsigned char* b = take(n);
    return std::string(reinterpret_cast<const char*>(b), n);
  }
  std::string line() {
    const unsigned char* nl = static_cast<const unsigned char*>(std::memchr(p_, '\n', static_cast<std::size_t>(end_ - p_)));
    if (!nl) fail("its pickle ends early (truncated or damaged)");
    std::string s(reinterpret_cast<const char*>(p_), static_cast<std::size_t>(nl - p_));
    p_ = nl + 1;
    return s;
  }
  c10::IValue pop() {
    if (stack_.empty()) fail("its pickle pops an empty stack (damaged)");
    c10::IValue v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  std::vector<c10::IValue> pop_to_mark() {
    if (marks_.empty()) fail("its pickle has no mark where one is needed (damaged)");
    const std::size_t mark = marks_.back();
    marks_.pop_back();
    if (mark > stack_.size()) fail("its pickle's mark is past its stack (damaged)");
    std::vector<c10::IValue> items(std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(mark)),
                                   std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }
  c10::IValue& top() {
    if (stack_.empty()) fail("its pickle reads an empty stack (damaged)");
    return stack_.back();
  }
  static c10::IValue tuple(std::vector<c10::IValue> items) { return c10::ivalue::Tuple::create(std::move(items)); }
  static c10::IValue empty_dict() { return c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()); }
  static c10::IValue list(std::vector<c10::IValue> items) {
    c10::impl::GenericList l(c10::AnyType::get());
    for (auto& item : items) l.push_back(std::move(item));
    return l;
  }
  void set_items(c10::IValue& target, std::vector<c10::IValue>& items) {
    if (items.size() % 2 != 0) fail("its pickle sets a dict item without a value (damaged)");
    if (has_marker(target, python_object_marker)) return;  // a dict subclass C++ has no type for: stays a marker
    if (!target.isGenericDict()) fail("its pickle sets items on a " + std::string(target.tagKind()));
    auto d = target.toGenericDict();
    for (std::size_t i = 0; i < items.size(); i += 2) d.insert_or_assign(std::move(items[i]), std::move(items[i + 1]));
  }
  void append(c10::IValue& target, std::vector<c10::IValue>& items) {
    if (has_marker(target, python_object_marker)) return;
    if (!target.isList()) fail("its pickle appends to a " + std::string(target.tagKind()));
    auto l = target.toList();
    for (auto& item : items) l.push_back(std::move(item));
  }
  std::int64_t as_int(const c10::IValue& v, const char* what) {
    if (!v.isInt()) fail(std::string(what) + " is not an integer");
    return v.toInt();
  }
  std::vector<std::int64_t> int_tuple(const c10::IValue& v, const char* what) {
    std::vector<std::int64_t> out;
    if (!v.isTuple()) fail(std::string(what) + " is not a tuple");
    for (const auto& e : v.toTupleRef().elements()) out.push_back(as_int(e, what));
    return out;
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]).
  c10::IValue rebuild_tensor(const std::vector<c10::IValue>& args) {
    if (args.size() < 4 || !args[0].isTensor()) fail("a tensor's rebuild arguments are not (storage, offset, size, stride)");
    const torch::Tensor& storage = args[0].toTensor();
    const std::int64_t offset = as_int(args[1], "a tensor's storage offset");
    const std::vector<std::int64_t> sizes = int_tuple(args[2], "a tensor's size");
    const std::vector<std::int64_t> strides = int_tuple(args[3], "a tensor's stride");
    if (sizes.size() != strides.size()) fail("a tensor's size and stride differ in length");
    const std::int64_t limit = storage.numel();
    std::int64_t last = offset;  // the last element's index in the storage (no overflow: each step is bounded)
    bool empty = false, outside = offset < 0 || offset > limit;
    for (std::size_t i = 0; i < sizes.size() && !outside; ++i) {
      if (sizes[i] < 0 || strides[i] < 0) fail("a tensor has a negative size or stride");
      if (sizes[i] == 0) empty = true;
      else if (strides[i] > 0 && sizes[i] - 1 > (limit - last) / strides[i]) outside = true;
      else last += (sizes[i] - 1) * strides[i];
    }
    if (!empty && (outside || last >= limit))
      fail("a tensor of size " + c10::str(c10::IntArrayRef(sizes)) + " at offset " + std::to_string(offset) +
           " reaches past its storage of " + std::to_string(storage.numel()) + " elements (damaged)");
    return torch::empty({0}, storage.options()).set_(storage.storage(), offset, sizes, strides);
  }

  // A persistent id: ("storage", storage class, key, location, numel) -> the storage's elements as a 1-D tensor.
  c10::IValue load_storage(const c10::IValue& pid) {
    if (!pid.isTuple() || pid.toTupleRef().elements().size() < 5) fail("a persistent id is not a storage's");
    const auto& e = pid.toTupleRef().elements();
    if (!e[0].isString() || e[0].toStringRef() != "storage" || !has_marker(e[1], python_global_marker) ||
        !e[2].isString())
      fail("a persistent id is not a storage's");
    const std::string type = marked_name(e[1], python_global_marker);
    const std::optional<torch::Dtype> dtype = storage_dtype(type);
    if (!dtype) fail("a storage of type " + type + ", which trainloop does not read");
    const std::string key = e[2].toStringRef();
    auto cached = storages_.find(key);
    if (cached != storages_.end()) return cached->second;
    const std::int64_t numel = as_int(e[4], "a storage's size");
    const std::string record = "data/" + key;
    if (!archive_.hasRecord(record)) throw checkpoint_error(path_, "record '" + record + "' is missing (damaged)");
    at::DataPtr data;
    std::size_t bytes = 0;
    try {
      std::tie(data, bytes) = archive_.getRecord(record);
    } catch (const c10::Error& error) {
      throw checkpoint_error(path_, "record '" + record + "': " + first_line(error.what()));
    }
    const std::size_t element = c10::elementSize(*dtype);
    if (numel < 0 || static_cast<std::uint64_t>(numel) > bytes || bytes != static_cast<std::size_t>(numel) * element)
      throw checkpoint_error(path_, "record '" + record + "' holds " + std::to_string(bytes) + " bytes, not the " +
                                        std::to_string(numel) + " x " + std::to_string(element) + " its storage needs");
    torch::Tensor storage = torch::empty({numel}, torch::TensorOptions().dtype(*dtype));
    if (bytes > 0) std::memcpy(storage.data_ptr(), data.get(), bytes);
    if (map_location_ && *map_location_ != storage.device()) storage = storage.to(*map_location_);
    storages_.emplace(key, storage);
    return storage;
  }

  // REDUCE / NEWOBJ: the globals torch.save's files use; anything else stays a marker naming its class.
  c10::IValue call(const c10::IValue& callable, std::vector<c10::IValue> args) {
    if (!has_marker(callable, python_global_marker)) {
      if (has_marker(callable, python_object_marker)) return callable;
      fail("its pickle calls a " + std::string(callable.tagKind()));
    }
    const std::string name = marked_name(callable, python_global_marker);
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") return rebuild_tensor(args);
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (args.empty() || !args[0].isTensor()) fail("a parameter's rebuild arguments hold no tensor");
      return args[0];
    }
    if (name == "collections.OrderedDict" || name == "builtins.dict") return empty_dict();
    if ((name == "builtins.set" || name == "builtins.frozenset" || name == "builtins.list") ) {
      if (args.empty()) return list({});
      if (args[0].isList()) return args[0];
    }
    if (name == "_codecs.encode" && !args.empty() && args[0].isString()) return args[0];  // bytes, protocol 2
    if (name == "torch.device" && !args.empty() && args[0].isString())
      return args.size() > 1 && args[1].isInt() ? args[0].toStringRef() + ":" + std::to_string(args[1].toInt())
                                               : args[0];
    if ((name == "torch.jit._pickle.restore_type_tag" || name.rfind("torch.jit._pickle.build_", 0) == 0) && !args.empty())
      return args[0];  // LibTorch's pickler tags typed containers
    return std::string(python_object_marker) + name;
  }

  void step(unsigned char op) {
    switch (op) {
      case 0x80: take(1); break;                         // PROTO
      case 0x95: take(8); break;                         // FRAME
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0': pop(); break;                            // POP
      case '1': pop_to_mark(); break;                    // POP_MARK
      case '2': stack_.push_back(top()); break;          // DUP
      case 'N': stack_.emplace_back(); break;
      case 0x88: stack_.emplace_back(true); break;
      case 0x89: stack_.emplace_back(false); break;
      case 'J': stack_.emplace_back(static_cast<std::int64_t>(static_cast<std::int32_t>(little<std::uint32_t>(4)))); break;
      case 'K': stack_.emplace_back(static_cast<std::int64_t>(little<std::uint32_t>(1))); break;
      case 'M': stack_.emplace_back(static_cast<std::int64_t>(little<std::uint32_t>(2))); break;
      case 0x8a:    // LONG1
      case 0x8b: {  // LONG4
        const std::size_t n = op == 0x8a ? little<std::size_t>(1) : little<std::size_t>(4);
        if (n > 8) fail("an integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
        std::uint64_t v = n ? little<std::uint64_t>(n) : 0;
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~std::uint64_t{0} << (8 * n);  // sign-extend
        stack_.emplace_back(static_cast<std::int64_t>(v));
        break;
      }
      case 'G': {  // BINFLOAT: big-endian
        const unsigned char* b = take(8);
        std::uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
        double d;
        std::memcpy(&d, &bits, sizeof d);
        stack_.emplace_back(d);
        break;
      }
      case 'X': stack_.emplace_back(text(little<std::size_t>(4))); break;     // BINUNICODE
      case 0x8c: stack_.emplace_back(text(little<std::size_t>(1))); break;    // SHORT_BINUNICODE
      case 0x8d: stack_.emplace_back(text(little<std::size_t>(8))); break;    // BINUNICODE8
      case 'T': stack_.emplace_back(text(little<std::size_t>(4))); break;     // BINSTRING
      case 'U': stack_.emplace_back(text(little<std::size_t>(1))); break;     // SHORT_BINSTRING
      case 'B': stack_.emplace_back(text(little<std::size_t>(4))); break;     // BINBYTES
      case 'C': stack_.emplace_back(text(little<std::size_t>(1))); break;     // SHORT_BINBYTES
      case 0x8e: stack_.emplace_back(text(little<std::size_t>(8))); break;    // BINBYTES8
      case ')': stack_.push_back(tuple({})); break;
      case 0x85: stack_.push_back(tuple({pop()})); break;
      case 0x86: {
        c10::IValue b = pop(), a = pop();
        stack_.push_back(tuple({std::move(a), std::move(b)}));
        break;
      }
      case 0x87: {
        c10::IValue c = pop(), b = pop(), a = pop();
        stack_.push_back(tuple({std::move(a), std::move(b), std::move(c)}));
        break;
      }
      case 't': stack_.push_back(tuple(pop_to_mark())); break;
      case ']': stack_.push_back(list({})); break;
      case 'l': stack_.push_back(list(pop_to_mark())); break;
      case '}': stack_.push_back(empty_dict()); break;
      case 'd': {
        std::vector<c10::IValue> items = pop_to_mark();
        c10::IValue d = empty_dict();
        set_items(d, items);
        stack_.push_back(std::move(d));
        break;
      }
      case 0x8f: stack_.push_back(list({})); break;   // EMPTY_SET: a list
      case 0x91: stack_.push_back(list(pop_to_mark())); break;  // FROZENSET
      case 0x90:                                       // ADDITEMS
      case 'e': {                                      // APPENDS
        std::vector<c10::IValue> items = pop_to_mark();
        append(top(), items);
        break;
      }
      case 'a': {  // APPEND
        std::vector<c10::IValue> items{pop()};
        append(top(), items);
        break;
      }
      case 's': {  // SETITEM
        c10::IValue value = pop(), key = pop();
        std::vector<c10::IValue> items{std::move(key), std::move(value)};
        set_items(top(), items);
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<c10::IValue> items = pop_to_mark();
        set_items(top(), items);
        break;
      }
      case 'q': memo_[little<std::uint32_t>(1)] = top(); break;  // BINPUT
      case 'r': memo_[little<std::uint32_t>(4)] = top(); break;  // LONG_BINPUT
      case 0x94: memo_[static_cast<std::uint32_t>(memo_.size())] = top(); break;  // MEMOIZE
      case 'h':
      case 'j': {  // BINGET, LONG_BINGET
        const std::uint32_t index = little<std::uint32_t>(op == 'h' ? 1 : 4);
        auto it = memo_.find(index);
        if (it == memo_.end()) fail("its pickle reads memo " + std::to_string(index) + ", never stored (damaged)");
        stack_.push_back(it->second);
        break;
      }
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string name = line();
        stack_.emplace_back(std::string(python_global_marker) + module + "." + name);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        c10::IValue name = pop(), module = pop();
        if (!name.isString() || !module.isString()) fail("a global's module and name are not strings");
        stack_.emplace_back(std::string(python_global_marker) + module.toStringRef() + "." + name.toStringRef());
        break;
      }
      case 'R': {  // REDUCE
        c10::IValue args = pop(), callable = pop();
        if (!args.isTuple()) fail("its pickle calls with arguments that are not a tuple");
        stack_.push_back(call(callable, args.toTupleRef().elements().vec()));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        c10::IValue args = pop(), cls = pop();
        if (!args.isTuple()) fail("its pickle creates an object with arguments that are not a tuple");
        stack_.push_back(call(cls, args.toTupleRef().elements().vec()));
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();
        c10::IValue args = pop(), cls = pop();
        if (!args.isTuple()) fail("its pickle creates an object with arguments that are not a tuple");
        stack_.push_back(call(cls, args.toTupleRef().elements().vec()));
        break;
      }
      case 'b': pop(); top(); break;  // BUILD: an OrderedDict's _metadata, an object's state: not kept
      case 'Q': stack_.push_back(load_storage(pop())); break;  // BINPERSID
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("its pickle has opcode ") + hex + ", which torch.save's format does not use (damaged, or "
             "not a torch.save file)");
      }
    }
  }

  const std::string& path_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  std::optional<torch::Device> map_location_;
  const unsigned char *p_ = nullptr, *end_ = nullptr, *begin_ = nullptr;
  std::vector<c10::IValue> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint32_t, c10::IValue> memo_;
  std::unordered_map<std::string, torch::Tensor> storages_;
};

TRAINLOOP_DETAIL_API std::optional<c10::IValue> dict_get(const c10::impl::GenericDict& d, const std::string& key) {
  auto it = d.find(key);
  if (it == d.end()) return std::nullopt;
  return it->value();
}

TRAINLOOP_DETAIL_API c10::impl::GenericDict to_python_dict(const StateDict& state) {
  c10::impl::GenericDict d = python_dict();
  for (const auto& [key, value] : state) std::visit([&, k = key](const auto& v) { d.insert(k, v); }, value);
  return d;
}

TRAINLOOP_DETAIL_API StateDict from_python_dict(const c10::IValue& value, const std::string& where) {
  if (!value.isGenericDict()) throw CheckpointError(where + " is a " + value.tagKind() + ", not a dict");
  StateDict state;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString()) throw CheckpointError(where + " has a key that is not a string");
    const std::string& key = item.key().toStringRef();
    const c10::IValue& v = item.value();
    if (v.isInt()) state[key] = v.toInt();
    else if (v.isBool()) state[key] = std::int64_t{v.toBool() ? 1 : 0};
    else if (v.isDouble()) state[key] = v.toDouble();
    else if (v.isString() && v.toStringRef().rfind("\x01", 0) != 0) state[key] = v.toStringRef();
    else if (v.isTensor() && v.toTensor().numel() == 1) state[key] = v.toTensor().item<double>();
    else throw CheckpointError(where + "/" + key + " is a " + v.tagKind() + ", not a number or a string");
  }
  return state;
}

TRAINLOOP_DETAIL_API std::optional<std::pair<std::string, std::string>> find_python_object(const c10::IValue& value,
                                                                                            const std::string& path) {
  if (std::count(path.begin(), path.end(), '/') > 1000)  // a damaged file's nesting, not a checkpoint's
    return std::make_pair(path.substr(0, 200) + "...", std::string("(nested over 1000 levels deep)"));
  if (has_marker(value, python_object_marker)) return std::make_pair(path, marked_name(value, python_object_marker));
  if (has_marker(value, python_global_marker)) return std::make_pair(path, marked_name(value, python_global_marker));
  auto join = [&](const std::string& key) { return path.empty() ? key : path + "/" + key; };
  if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) {
      const c10::IValue& k = item.key();
      const std::string key = k.isString() ? k.toStringRef() : k.isInt() ? std::to_string(k.toInt()) : "?";
      if (auto found = find_python_object(item.value(), join(key))) return found;
    }
  } else if (value.isList()) {
    const auto l = value.toList();
    for (std::size_t i = 0; i < l.size(); ++i)
      if (auto found = find_python_object(l.get(i), join(std::to_string(i)))) return found;
  } else if (value.isTuple()) {
    const auto& e = value.toTupleRef().elements();
    for (std::size_t i = 0; i < e.size(); ++i)
      if (auto found = find_python_object(e[i], join(std::to_string(i)))) return found;
  }
  return std::nullopt;
}

TRAINLOOP_DETAIL_API void require_no_python_object(const c10::IValue& value, const std::string& path,
                                                   const std::string& key) {
  if (auto object = find_python_object(value, key))
    throw checkpoint_error(path, "key '" + object->first + "' holds a Python object of class " + object->second +
                                     ", which C++ cannot read (only dicts, lists, tuples, strings, numbers, booleans, "
                                     "None and tensors)");
}

// The zip of a torch.save file (its integrity record, when trainloop wrote it, verified and removed).
inline std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_pytorch_archive(const std::string& path,
                                                                                   std::string& bytes,
                                                                                   std::istringstream& stream) {
  bytes = read_whole_file(path);
  strip_integrity_record(path, bytes, false);
  // torch.save's legacy format (before PyTorch 1.6, or _use_new_zipfile_serialization=False) is a bare pickle.
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x80 && bytes[1] <= 5)
    throw checkpoint_error(path, "torch.save's legacy format (a bare pickle, PyTorch < 1.6 or "
                                 "_use_new_zipfile_serialization=False), which trainloop does not read: load it in "
                                 "Python and torch.save it again");
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "PK\x03\x04", 4) != 0)
    throw checkpoint_error(path, "not a zip archive, so neither a torch.save file nor a trainloop checkpoint");
  stream.str(bytes);
  try {
    return std::make_unique<caffe2::serialize::PyTorchStreamReader>(&stream);
  } catch (const c10::Error& error) {
    throw checkpoint_error(path, "not a readable zip archive (truncated or damaged): " + first_line(error.what()));
  }
}

TRAINLOOP_DETAIL_API bool is_pytorch_file(const std::string& path) {
  std::string bytes;
  std::istringstream stream;
  try {
    auto archive = open_pytorch_archive(path, bytes, stream);
    // LibTorch's C++ archive (our checkpoints) is a TorchScript module: it has constants.pkl; torch.save never does.
    return archive->hasRecord("data.pkl") && !archive->hasRecord("constants.pkl");
  } catch (const CheckpointError&) {
    return false;
  }
}

TRAINLOOP_DETAIL_API c10::IValue read_pytorch_file(const std::string& path, std::optional<torch::Device> map_location) {
  std::string bytes;
  std::istringstream stream;
  auto archive = open_pytorch_archive(path, bytes, stream);
  if (archive->hasRecord("constants.pkl"))
    throw checkpoint_error(path, "a trainloop (LibTorch archive) checkpoint, not a torch.save file: read it with "
                                 "load_checkpoint, or fit(..., ckpt_path)");
  if (!archive->hasRecord("data.pkl")) throw checkpoint_error(path, "no data.pkl record: not a torch.save file");
  if (archive->hasRecord("byteorder")) {
    at::DataPtr order;
    std::size_t size = 0;
    std::tie(order, size) = archive->getRecord("byteorder");
    if (std::string(static_cast<const char*>(order.get()), size) != "little")
      throw checkpoint_error(path, "written on a big-endian machine, which trainloop does not read");
  }
  at::DataPtr data;
  std::size_t size = 0;
  try {
    std::tie(data, size) = archive->getRecord("data.pkl");
  } catch (const c10::Error& error) {
    throw checkpoint_error(path, "record 'data.pkl': " + first_line(error.what()));
  }
  const std::string pickle(static_cast<const char*>(data.get()), size);
  return PickleReader(path, *archive, map_location).read(pickle);
}

// Writes torch.save's pickle (protocol 2) of a tree of plain values and tensors. Only the globals Python's
// weights_only unpickler allows (torch.load's default since PyTorch 2.6) appear: torch._utils._rebuild_tensor_v2,
// the storage classes, collections.OrderedDict. LibTorch's own pickler also writes torch.jit._pickle's type tags,
// which that unpickler refuses.
class PickleWriter {
 public:
  explicit PickleWriter(const std::string& path) : path_(path) {}

  // The pickle, and each storage's bytes under its key (tensors sharing a storage share it).
  std::string pickle(const c10::IValue& value) {
    out_ = "\x80\x02";  // PROTO 2
    put(value, "");
    out_ += '.';      // STOP
    return out_;
  }
  const std::vector<std::pair<std::string, torch::Tensor>>& storages() const { return storages_; }

 private:
  void op(char c) { out_ += c; }
  template <class U>
  void little(U v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) out_ += static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff);
  }
  void global(const char* module, const char* name) {
    op('c');
    out_ += module;
    out_ += '\n';
    out_ += name;
    out_ += '\n';
  }
  void string(const std::string& s) {
    op('X');
    little(s.size(), 4);
    out_ += s;
  }
  void integer(std::int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      little(v, 1);
    } else if (v >= 0 && v < 65536) {
      op('M');
      little(v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      little(static_cast<std::uint32_t>(static_cast<std::int32_t>(v)), 4);
    } else {  // LONG1: 8 bytes, two's complement
      op('\x8a');
      little(8, 1);
      little(static_cast<std::uint64_t>(v), 8);
    }
  }
  void number(double d) {
    op('G');
    std::uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    for (int i = 7; i >= 0; --i) out_ += static_cast<char>((bits >> (8 * i)) & 0xff);
  }
  void tensor(torch::Tensor t, const std::string& key) {
    if (t.is_sparse() || t.is_quantized() || t.is_mkldnn())
      throw checkpoint_error(path_, "key '" + key + "': a sparse, quantized or MKL-DNN tensor, which torch.save's "
                                    "dense format does not hold");
    t = t.detach();
    if (!t.device().is_cpu()) t = t.to(torch::kCPU);
    const c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
    auto found = storage_keys_.find(storage);
    std::string storage_key;
    if (found != storage_keys_.end()) {
      storage_key = found->second;
    } else {
      storage_key = std::to_string(storages_.size());
      storage_keys_.emplace(storage, storage_key);
      // The whole storage, as a 1-D tensor of its elements (a view keeps its offset into it).
      const std::int64_t elements = static_cast<std::int64_t>(t.storage().nbytes() / t.element_size());
      storages_.emplace_back(storage_key, torch::empty({0}, t.options()).set_(t.storage(), 0, {elements}, {1}));
    }
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');  // the persistent id: ("storage", storage class, key, location, number of elements)
    string("storage");
    global("torch", storage_class(t.scalar_type(), key).c_str());
    string(storage_key);
    string("cpu");
    integer(static_cast<std::int64_t>(t.storage().nbytes() / t.element_size()));
    op('t');
    op('Q');  // BINPERSID
    integer(t.storage_offset());
    sequence_of(t.sizes());
    sequence_of(t.strides());
    op('\x89');  // requires_grad False: state dicts hold detached tensors
    global("collections", "OrderedDict");  // no backward hooks
    op(')');
    op('R');
    op('t');
    op('R');
  }
  void sequence_of(c10::IntArrayRef values) {
    op('(');
    for (auto v : values) integer(v);
    op('t');
  }
  std::string storage_class(c10::ScalarType type, const std::string& key) const {
    switch (type) {
      case torch::kDouble: return "DoubleStorage";
      case torch::kFloat: return "FloatStorage";
      case torch::kHalf: return "HalfStorage";
      case torch::kBFloat16: return "BFloat16Storage";
      case torch::kLong: return "LongStorage";
      case torch::kInt: return "IntStorage";
      case torch::kShort: return "ShortStorage";
      case torch::kChar: return "CharStorage";
      case torch::kByte: return "ByteStorage";
      case torch::kBool: return "BoolStorage";
      case torch::kComplexFloat: return "ComplexFloatStorage";
      case torch::kComplexDouble: return "ComplexDoubleStorage";
      default:
        throw checkpoint_error(path_, "key '" + key + "': a tensor of dtype " + std::string(c10::toString(type)) +
                                          ", which torch.save's format does not name");
    }
  }
  void put(const c10::IValue& v, const std::string& key) {
    auto join = [&](const std::string& k) { return key.empty() ? k : key + "/" + k; };
    if (v.isNone()) {
      op('N');
    } else if (v.isBool()) {
      op(v.toBool() ? '\x88' : '\x89');
    } else if (v.isInt()) {
      integer(v.toInt());
    } else if (v.isDouble()) {
      number(v.toDouble());
    } else if (v.isString()) {
      string(v.toStringRef());
    } else if (v.isTensor()) {
      tensor(v.toTensor(), key);
    } else if (v.isTuple()) {
      const auto& e = v.toTupleRef().elements();
      if (e.empty()) return op(')');
      if (e.size() > 3) op('(');
      for (std::size_t i = 0; i < e.size(); ++i) put(e[i], join(std::to_string(i)));
      op(e.size() == 1 ? '\x85' : e.size() == 2 ? '\x86' : e.size() == 3 ? '\x87' : 't');
    } else if (v.isList()) {
      const auto l = v.toList();
      op(']');
      if (l.empty()) return;
      op('(');
      for (std::size_t i = 0; i < l.size(); ++i) put(l.get(i), join(std::to_string(i)));
      op('e');  // APPENDS
    } else if (v.isGenericDict()) {
      const auto d = v.toGenericDict();
      op('}');
      if (d.empty()) return;
      op('(');
      for (const auto& item : d) {
        const c10::IValue& k = item.key();
        if (!k.isString() && !k.isInt() && !k.isDouble() && !k.isBool())
          throw checkpoint_error(path_, "key '" + key + "': a dict key of type " + k.tagKind() + ", which a state "
                                        "dict does not hold");
        put(k, key);
        put(item.value(), join(k.isString() ? k.toStringRef() : k.isInt() ? std::to_string(k.toInt()) : "?"));
      }
      op('u');  // SETITEMS
    } else if (v.isDevice()) {
      string(v.toDevice().str());
    } else {
      throw checkpoint_error(path_, "key '" + key + "': a " + std::string(v.tagKind()) + ", which trainloop does not "
                                    "write in torch.save's format (dicts, lists, tuples, strings, numbers, booleans, "
                                    "None, tensors)");
    }
  }

  const std::string& path_;
  std::string out_;
  std::unordered_map<const c10::StorageImpl*, std::string> storage_keys_;
  std::vector<std::pair<std::string, torch::Tensor>> storages_;
};

TRAINLOOP_DETAIL_API void write_pytorch_file(const std::string& path, const c10::IValue& value) {
  PickleWriter pickler(path);
  const std::string pickle = pickler.pickle(value);  // errors (an unwritable value) before the file is touched
  AtomicCheckpointWriter writer(path);
  try {
    // torch.save's records: the pickle, the storages, the byte order (PyTorch 2.x reads it) and the format version.
    caffe2::serialize::PyTorchStreamWriter archive(
        std::function<std::size_t(const void*, std::size_t)>(
            [&writer](const void* data, std::size_t size) { return writer.write(data, size); }));
    archive.writeRecord("data.pkl", pickle.data(), pickle.size());
    archive.writeRecord("byteorder", "little", 6);
    for (const auto& [key, storage] : pickler.storages())
      archive.writeRecord("data/" + key, storage.data_ptr(), storage.nbytes());
    archive.writeRecord("version", "3\n", 2);
    archive.writeEndOfFile();
  } catch (const c10::Error& error) {
    throw checkpoint_error(path, "writing failed, the previous file is untouched: " + first_line(error.what()));
  }
  writer.commit();
}
}  // namespace detail

TRAINLOOP_DETAIL_API void save_pytorch_file(const std::string& path, const c10::IValue& value) {
  detail::write_pytorch_file(path, value);
}

TRAINLOOP_DETAIL_API c10::IValue load_pytorch_file(const std::string& path, std::optional<torch::Device> map_location) {
  c10::IValue value = detail::read_pytorch_file(path, map_location);
  detail::require_no_python_object(value, path, "");
  return value;
}

#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
