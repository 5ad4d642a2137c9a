// trainloop: runs configured from the command line and config files, LightningCLI's way:
//
//   program [fit|validate|test|predict] [--config run.yaml] [--trainer.max_epochs 10] [--model.lr=3e-4] ...
//
// The Trainer's options (section "trainer"), the program's own sections (structs declaring their fields once, with
// defaults and help), and LightningCLI's top-level seed_everything and ckpt_path. Precedence: defaults < config files
// (in the order given) < the other options (in order). --help lists every option with its type, default and help;
// --print_config prints the resolved configuration as YAML that --config reads back to the same run. Unknown options
// and bad values are errors naming the option (or the file, line and key) and the closest valid name.
//
// Config files are the YAML subset our files are written in (hparams.yaml, config.yaml): nested block mappings of
// scalars (plain, 'single' or "double" quoted), block or flow ([a, b]) lists, comments; no anchors, tags or
// multi-line scalars (an error names the line). Values are read by the option's type, as jsonargparse does, so
// `lr: 1e-3` is a float for a float option. tests/tools/test_cli_yaml.py checks that PyYAML reads every file we write
// to the same values.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <torch/torch.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "parts/core/hooks.hpp"
#include "parts/core/loggers/common.hpp"
#include "parts/core/state.hpp"
#include "parts/torch/trainer_options.hpp"

TRAINLOOP_DETAIL_BEGIN

namespace cli {

/// A bad option, value or config file: the message names it (and the closest valid name).
class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A YAML value of the subset: null, a scalar (its text, and whether it was quoted), a list, or a mapping (in order).
struct Node {
  enum class Kind { null, scalar, list, map };
  Kind kind = Kind::null;
  std::string text;
  bool quoted = false;
  std::vector<Node> items;
  std::vector<std::pair<std::string, Node>> entries;
  std::string where;  // "run.yaml:12" or "the command line", for errors

  static Node scalar(std::string text, bool quoted = false) {
    Node n;
    n.kind = Kind::scalar;
    n.text = std::move(text);
    n.quoted = quoted;
    return n;
  }
  static Node list(std::vector<Node> items) {
    Node n;
    n.kind = Kind::list;
    n.items = std::move(items);
    return n;
  }
  bool is_null() const { return kind == Kind::null; }
};

/// Parses a config file's text (`source` names it in errors).
TRAINLOOP_DETAIL_API Node parse_yaml(const std::string& text, const std::string& source);
/// Parses one value as the command line gives it: a flow list `[1, 2]`, a quoted or plain scalar, or null.
TRAINLOOP_DETAIL_API Node parse_yaml_value(const std::string& text, const std::string& where);
/// A mapping as block YAML (nested mappings indented by two, lists in flow style, strings double-quoted).
TRAINLOOP_DETAIL_API std::string to_yaml(const Node& map, int indent = 0);
/// The valid name closest to `name` (edit distance), or "" when none is close.
TRAINLOOP_DETAIL_API std::string closest_name(const std::string& name, const std::vector<std::string>& names);

/// How a C++ type reads from and writes to a Node: bool, integers, floating point, std::string, std::optional<T>,
/// std::vector<T>, BatchLimit (an int counts, a float is a fraction).
template <class T, class = void>
struct Value;

namespace detail_cli {
TRAINLOOP_DETAIL_API bool to_bool(const Node& node, const std::string& option);
TRAINLOOP_DETAIL_API std::int64_t to_int(const Node& node, const std::string& option);
TRAINLOOP_DETAIL_API double to_float(const Node& node, const std::string& option);
TRAINLOOP_DETAIL_API const std::string& scalar_text(const Node& node, const std::string& option, const char* type);
TRAINLOOP_DETAIL_API bool looks_like_int(const std::string& text);
[[noreturn]] TRAINLOOP_DETAIL_API void bad_value(const Node& node, const std::string& option, const std::string& why);
}  // namespace detail_cli

template <>
struct Value<bool> {
  static std::string type() { return "bool"; }
  static bool read(const Node& n, const std::string& option) { return detail_cli::to_bool(n, option); }
  static Node write(bool v) { return Node::scalar(v ? "true" : "false"); }
};
template <class T>
struct Value<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static std::string type() { return "int"; }
  static T read(const Node& n, const std::string& option) {
    const std::int64_t v = detail_cli::to_int(n, option);
    if constexpr (std::is_unsigned_v<T>) {
      if (v < 0) detail_cli::bad_value(n, option, "must not be negative");
      if (static_cast<std::uint64_t>(v) > std::numeric_limits<T>::max()) detail_cli::bad_value(n, option, "is out of range");
    } else {
      if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max())
        detail_cli::bad_value(n, option, "is out of range");
    }
    return static_cast<T>(v);
  }
  static Node write(T v) { return Node::scalar(std::to_string(v)); }
};
template <class T>
struct Value<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static std::string type() { return "float"; }
  static T read(const Node& n, const std::string& option) { return static_cast<T>(detail_cli::to_float(n, option)); }
  static Node write(T v) { return Node::scalar(trainloop::detail::yaml_number(static_cast<double>(v))); }
};
template <>
struct Value<std::string> {
  static std::string type() { return "str"; }
  static std::string read(const Node& n, const std::string& option) { return detail_cli::scalar_text(n, option, "a string"); }
  static Node write(const std::string& v) { return Node::scalar(v, true); }
};
template <class T>
struct Value<std::optional<T>> {
  static std::string type() { return Value<T>::type() + "|null"; }
  static std::optional<T> read(const Node& n, const std::string& option) {
    if (n.is_null()) return std::nullopt;
    return Value<T>::read(n, option);
  }
  static Node write(const std::optional<T>& v) { return v ? Value<T>::write(*v) : Node(); }
};
template <class T>
struct Value<std::vector<T>> {
  static std::string type() { return "list[" + Value<T>::type() + "]"; }
  static std::vector<T> read(const Node& n, const std::string& option) {
    if (n.kind != Node::Kind::list) detail_cli::bad_value(n, option, "is not a list (write [a, b])");
    std::vector<T> out;
    for (const Node& item : n.items) out.push_back(Value<T>::read(item, option));
    return out;
  }
  static Node write(const std::vector<T>& v) {
    std::vector<Node> items;
    for (const auto& x : v) items.push_back(Value<T>::write(x));
    return Node::list(std::move(items));
  }
};
template <>
struct Value<BatchLimit> {
  static std::string type() { return "int|float"; }
  static BatchLimit read(const Node& n, const std::string& option) {
    const std::string& text = detail_cli::scalar_text(n, option, "a number");
    if (detail_cli::looks_like_int(text)) return BatchLimit(detail_cli::to_int(n, option));
    const double fraction = detail_cli::to_float(n, option);
    return fraction == 1.0 ? BatchLimit() : BatchLimit(fraction);  // 1.0: all, as unset is
  }
  static Node write(const BatchLimit& v) {
    if (v.count()) return Node::scalar(std::to_string(*v.count()));
    return Node::scalar(trainloop::detail::yaml_number(v.fraction().value_or(1.0)));
  }
};

/// One option: its full name ("trainer.max_epochs"), type, help, and how to set and read it (its value before parse is
/// the default).
struct Field {
  std::string name, type, help;
  std::function<void(const Node&)> set;
  std::function<Node()> get;
};

/// What parse() resolved.
struct Run {
  /// "fit", "validate", "test" or "predict".
  std::string subcommand;
  /// Set when the program should exit now with this status (--help and --print_config printed what was asked).
  std::optional<int> exit_code;
  TrainerOptions trainer;
  /// LightningCLI's ckpt_path: the checkpoint to resume (fit) or to evaluate (validate, test, predict).
  std::string ckpt_path;
  /// The resolved configuration as YAML (what --print_config prints and save_config writes).
  std::string config_yaml;
  /// Every option as a flat hyperparameter ("trainer.max_epochs", "model.lr"; lists as YAML text): for
  /// save_hyperparameters, so loggers record the run's configuration.
  StateDict hyperparameters;
  /// Writes config_yaml to `dir`/config.yaml (atomic), as LightningCLI's SaveConfigCallback does; an existing file
  /// with other content is an error unless `overwrite` (a resumed run with the same configuration writes nothing).
  TRAINLOOP_DETAIL_API void save_config(const std::string& dir, bool overwrite = false) const;
};

namespace detail_cli {
TRAINLOOP_DETAIL_API void save_config(const std::string& dir, const std::string& config_yaml, bool overwrite);
template <class L>
using log_dir_t = decltype(std::declval<L&>().log_dir());
template <class L>
using start_t = decltype(std::declval<L&>().start());
}  // namespace detail_cli

/// LightningCLI's SaveConfigCallback, as a Trainer callback: when a stage sets up (rank 0), writes the run's
/// config.yaml into the log folder of the first logger with a log_dir() (CSVLogger, TensorBoardLogger), else into
/// default_root_dir. The same configuration again (a resumed run) writes nothing; another one is an error unless
/// `overwrite`.
class SaveConfigCallback {
 public:
  explicit SaveConfigCallback(const Run& run, bool overwrite = false) : config_yaml_(run.config_yaml), overwrite_(overwrite) {}
  template <class T, class M>
  void setup(T& trainer, M&, const std::string&) {
    if (!trainer.is_global_zero()) return;
    std::string dir;
    std::apply([&](auto&... callbacks) { (find_dir(trainloop::detail::unwrap(callbacks), dir), ...); }, trainer.callbacks());
    detail_cli::save_config(dir.empty() ? trainer.options().default_root_dir() : dir, config_yaml_, overwrite_);
  }

 private:
  template <class C>
  static void find_dir(C& callback, std::string& dir) {
    if constexpr (trainloop::detail::is_detected_v<detail_cli::log_dir_t, C>) {
      if (!dir.empty()) return;
      if constexpr (trainloop::detail::is_detected_v<detail_cli::start_t, C>) callback.start();
      dir = std::filesystem::path(callback.log_dir()).string();
    } else {
      (void)callback, (void)dir;
    }
  }
  std::string config_yaml_;
  bool overwrite_;
};

/// The command line's parser: `cli::Parser parser("train", "what it does"); parser.section("model", model_args);`
/// then `cli::Run run = parser.parse(argc, argv); if (run.exit_code) return *run.exit_code;`.
/// A section is any struct with `template <class F> void fields(F& f) { f("lr", lr, "help"); ... }` over its members
/// (types: see Value); its members' values when added are the defaults.
class Parser {
 public:
  TRAINLOOP_DETAIL_API explicit Parser(std::string program, std::string description = "");
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  template <class Args>
  Parser& section(const std::string& name, Args& args) {
    auto add = [&](const char* field, auto& member, const char* help) {
      using T = std::decay_t<decltype(member)>;
      add_field(name + "." + field, Value<T>::type(), help, [&member, option = name + "." + field](const Node& n) {
        member = Value<T>::read(n, option);
      }, [&member] { return Value<T>::write(member); });
    };
    args.fields(add);
    return *this;
  }
  /// Another spelling of an option (`--epochs` for `--trainer.max_epochs`); with `value`, a flag that takes no
  /// argument and sets the option to it (`--smoke` for `--trainer.fast_dev_run 5`).
  TRAINLOOP_DETAIL_API Parser& alias(const std::string& spelling, const std::string& option,
                                     std::optional<std::string> value = std::nullopt);
  /// The subcommand when none is given (LightningCLI requires one; "" here requires one too).
  Parser& default_subcommand(std::string subcommand) { return default_subcommand_ = std::move(subcommand), *this; }
  /// Where --help and --print_config print (stdout); nullptr: nowhere (Run::config_yaml and help() still have them).
  Parser& output(std::FILE* stream) { return output_ = stream, *this; }
  /// The defaults of the Trainer's options, before the config and the command line.
  TrainerOptions& trainer_defaults() noexcept { return trainer_; }

  /// Resolves argv (errors: cli::Error). --help and --print_config print (see output) and set Run::exit_code to 0.
  TRAINLOOP_DETAIL_API Run parse(int argc, const char* const* argv);
  /// The same from a list of arguments (without the program name).
  TRAINLOOP_DETAIL_API Run parse(const std::vector<std::string>& args);
  /// --help's text.
  TRAINLOOP_DETAIL_API std::string help() const;
  const std::vector<Field>& fields() const noexcept { return fields_; }

 private:
  TRAINLOOP_DETAIL_API void add_field(std::string name, std::string type, std::string help,
                                      std::function<void(const Node&)> set, std::function<Node()> get);
  template <class T, class Get, class Set>
  void trainer_field(const std::string& name, const std::string& help, Get get, Set set) {
    add_field("trainer." + name, Value<T>::type(), help, [this, set, option = "trainer." + name](const Node& n) {
      set(trainer_, Value<T>::read(n, option));
    }, [this, get] { return Value<T>::write(get(trainer_)); });
  }
  TRAINLOOP_DETAIL_API void add_trainer_fields();
  TRAINLOOP_DETAIL_API const Field* find(const std::string& name) const;
  TRAINLOOP_DETAIL_API std::vector<std::string> names() const;
  TRAINLOOP_DETAIL_API void apply_config(const Node& node, const std::string& prefix);
  TRAINLOOP_DETAIL_API Node resolved() const;

  std::string program_, description_, default_subcommand_ = "fit";
  TrainerOptions trainer_;
  std::optional<std::uint64_t> seed_;
  std::string ckpt_path_;
  std::vector<Field> fields_;
  struct Alias {
    std::string spelling, option;
    std::optional<std::string> value;
  };
  std::vector<Alias> aliases_;
  std::FILE* output_ = stdout;
};

}  // namespace cli

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace cli {
namespace detail_cli {
TRAINLOOP_DETAIL_API void bad_value(const Node& node, const std::string& option, const std::string& why) {
  std::string shown = node.kind == Node::Kind::scalar ? "'" + node.text + "'" : node.is_null() ? "null" : "a collection";
  throw Error("trainloop: option '--" + option + "'" + (node.where.empty() ? "" : " (" + node.where + ")") + ": " +
              shown + " " + why);
}
TRAINLOOP_DETAIL_API const std::string& scalar_text(const Node& node, const std::string& option, const char* type) {
  if (node.kind != Node::Kind::scalar) bad_value(node, option, std::string("is not ") + type);
  return node.text;
}
TRAINLOOP_DETAIL_API bool looks_like_int(const std::string& text) {
  std::size_t i = (!text.empty() && (text[0] == '-' || text[0] == '+')) ? 1 : 0;
  if (i >= text.size()) return false;
  for (; i < text.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(text[i])) && text[i] != '_') return false;
  return true;
}
TRAINLOOP_DETAIL_API bool to_bool(const Node& node, const std::string& option) {
  const std::string& t = scalar_text(node, option, "true or false");
  // YAML 1.1's booleans, as PyYAML reads them.
  for (const char* yes : {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})
    if (t == yes) return true;
  for (const char* no : {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})
    if (t == no) return false;
  bad_value(node, option, "is not true or false");
}
TRAINLOOP_DETAIL_API std::int64_t to_int(const Node& node, const std::string& option) {
  std::string t = scalar_text(node, option, "an integer");
  t.erase(std::remove(t.begin(), t.end(), '_'), t.end());
  if (!looks_like_int(t)) bad_value(node, option, "is not an integer");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno == ERANGE) bad_value(node, option, "is out of range");
  return v;
}
TRAINLOOP_DETAIL_API double to_float(const Node& node, const std::string& option) {
  const std::string& t = scalar_text(node, option, "a number");
  for (const char* inf : {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"})
    if (t == inf) return std::numeric_limits<double>::infinity();
  for (const char* inf : {"-.inf", "-.Inf", "-.INF"})
    if (t == inf) return -std::numeric_limits<double>::infinity();
  for (const char* nan : {".nan", ".NaN", ".NAN"})
    if (t == nan) return std::numeric_limits<double>::quiet_NaN();
  std::string digits = t;
  digits.erase(std::remove(digits.begin(), digits.end(), '_'), digits.end());
  char* end = nullptr;
  const double v = std::strtod(digits.c_str(), &end);
  // strtod also reads "inf", "nan" and hex floats, which YAML does not: digits, a point, an exponent only.
  const bool plain = !digits.empty() && digits.find_first_not_of("0123456789+-.eE") == std::string::npos;
  if (!plain || end != digits.c_str() + digits.size()) bad_value(node, option, "is not a number");
  return v;
}
}  // namespace detail_cli

namespace detail_cli {
struct YamlLine {
  int number;
  std::size_t indent;
  std::string text;  // without indentation, comment and trailing blanks
};
[[noreturn]] TRAINLOOP_DETAIL_API void yaml_error(const std::string& where, const std::string& what) {
  throw Error("trainloop: " + where + ": " + what);
}
// The text before a comment (a '#' at the start or after a blank, outside quotes).
TRAINLOOP_DETAIL_API std::string strip_comment(const std::string& line) {
  char quote = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quote) {
      if (c == '\\' && quote == '"') ++i;
      else if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      if (i == 0 || line[i - 1] == ' ' || line[i - 1] == '[' || line[i - 1] == ',' || line[i - 1] == ':' || line[i - 1] == '-')
        quote = c;
    } else if (c == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
      return line.substr(0, i);
    }
  }
  return line;
}
TRAINLOOP_DETAIL_API std::string trim(const std::string& s) {
  const std::size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}
// A quoted scalar starting at text[i]; i ends after the closing quote.
TRAINLOOP_DETAIL_API std::string read_quoted(const std::string& text, std::size_t& i, const std::string& where) {
  const char q = text[i++];
  std::string out;
  while (i < text.size()) {
    const char c = text[i++];
    if (q == '\'' && c == '\'') {
      if (i < text.size() && text[i] == '\'') {
        out += '\'';
        ++i;
        continue;
      }
      return out;
    }
    if (q == '"' && c == '"') return out;
    if (q == '"' && c == '\\') {
      if (i >= text.size()) break;
      const char e = text[i++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '0': out += '\0'; break;
        case '"': case '\\': case '/': out += e; break;
        case 'x': case 'u': case 'U': {
          const std::size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + n > text.size()) yaml_error(where, "a short \\" + std::string(1, e) + " escape");
          const unsigned long code = std::stoul(text.substr(i, n), nullptr, 16);
          i += n;
          if (code < 0x80) out += static_cast<char>(code);  // UTF-8
          else if (code < 0x800) out += static_cast<char>(0xC0 | (code >> 6)), out += static_cast<char>(0x80 | (code & 0x3F));
          else if (code < 0x10000)
            out += static_cast<char>(0xE0 | (code >> 12)), out += static_cast<char>(0x80 | ((code >> 6) & 0x3F)),
                out += static_cast<char>(0x80 | (code & 0x3F));
          else
            out += static_cast<char>(0xF0 | (code >> 18)), out += static_cast<char>(0x80 | ((code >> 12) & 0x3F)),
                out += static_cast<char>(0x80 | ((code >> 6) & 0x3F)), out += static_cast<char>(0x80 | (code & 0x3F));
          break;
        }
        default: yaml_error(where, std::string("an unknown escape \\") + e);
      }
      continue;
    }
    out += c;
  }
  yaml_error(where, "a quoted string is not closed on its line (multi-line scalars are not read)");
}
TRAINLOOP_DETAIL_API bool is_null_text(const std::string& t) { return t.empty() || t == "~" || t == "null" || t == "Null" || t == "NULL"; }
// A flow value (a scalar, or a [list] / {} of them) starting at text[i].
TRAINLOOP_DETAIL_API Node read_flow(const std::string& text, std::size_t& i, const std::string& where, bool inside) {
  while (i < text.size() && text[i] == ' ') ++i;
  Node node;
  node.where = where;
  if (i < text.size() && text[i] == '[') {
    node.kind = Node::Kind::list;
    ++i;
    for (;;) {
      while (i < text.size() && text[i] == ' ') ++i;
      if (i >= text.size()) yaml_error(where, "a flow list is not closed on its line");
      if (text[i] == ']') {
        ++i;
        break;
      }
      node.items.push_back(read_flow(text, i, where, true));
      while (i < text.size() && text[i] == ' ') ++i;
      if (i < text.size() && text[i] == ',') ++i;
      else if (i < text.size() && text[i] != ']') yaml_error(where, "expected ',' or ']' in a flow list");
    }
    return node;
  }
  if (i < text.size() && text[i] == '{') {
    std::size_t j = i + 1;
    while (j < text.size() && text[j] == ' ') ++j;
    if (j < text.size() && text[j] == '}') {
      i = j + 1;
      node.kind = Node::Kind::map;
      return node;
    }
    yaml_error(where, "flow mappings ({a: 1}) are not read; write the mapping as indented lines");
  }
  if (i < text.size() && (text[i] == '"' || text[i] == '\'')) {
    node = Node::scalar(read_quoted(text, i, where), true);
    node.where = where;
    return node;
  }
  if (i < text.size() && (text[i] == '&' || text[i] == '*' || text[i] == '!' || text[i] == '|' || text[i] == '>'))
    yaml_error(where, std::string("'") + text[i] + "' (anchors, aliases, tags and block scalars) is outside the YAML "
                                                   "trainloop reads");
  const std::size_t start = i;
  while (i < text.size() && !(inside && (text[i] == ',' || text[i] == ']'))) ++i;
  const std::string plain = trim(text.substr(start, i - start));
  if (is_null_text(plain)) return node;
  node = Node::scalar(plain);
  node.where = where;
  return node;
}
// Block structure: the lines from `at` indented by exactly `indent`, as a mapping or a sequence.
TRAINLOOP_DETAIL_API Node read_block(const std::vector<YamlLine>& lines, std::size_t& at, std::size_t indent, const std::string& source);
TRAINLOOP_DETAIL_API Node read_inline_or_block(const std::vector<YamlLine>& lines, std::size_t& at, const std::string& rest,
                          std::size_t parent_indent, bool sequence_parent, const std::string& source, int line_number) {
  const std::string where = source + ":" + std::to_string(line_number);
  if (!rest.empty()) {
    std::size_t i = 0;
    Node value = read_flow(rest, i, where, false);
    if (trim(rest.substr(i)).size()) yaml_error(where, "unexpected text after the value: '" + trim(rest.substr(i)) + "'");
    return value;
  }
  // A nested block: deeper lines, or (for a mapping's value) a sequence at the same indentation.
  if (at < lines.size() && (lines[at].indent > parent_indent ||
                            (!sequence_parent && lines[at].indent == parent_indent && lines[at].text.rfind("- ", 0) == 0) ||
                            (!sequence_parent && lines[at].indent == parent_indent && lines[at].text == "-")))
    return read_block(lines, at, lines[at].indent, source);
  Node null;
  null.where = where;
  return null;
}
TRAINLOOP_DETAIL_API Node read_block(const std::vector<YamlLine>& lines, std::size_t& at, std::size_t indent, const std::string& source) {
  Node node;
  const bool sequence = lines[at].text == "-" || lines[at].text.rfind("- ", 0) == 0;
  node.kind = sequence ? Node::Kind::list : Node::Kind::map;
  node.where = source + ":" + std::to_string(lines[at].number);
  while (at < lines.size() && lines[at].indent >= indent) {
    const YamlLine& line = lines[at];
    const std::string where = source + ":" + std::to_string(line.number);
    if (line.indent > indent) yaml_error(where, "unexpected indentation");
    const bool item = line.text == "-" || line.text.rfind("- ", 0) == 0;
    if (item != sequence) {
      if (sequence) break;  // a list at its mapping's indentation ends at the mapping's next key
      yaml_error(where, "expected 'key: value' in this mapping, not a list item");
    }
    ++at;
    if (sequence) {
      const std::string rest = trim(line.text.substr(1));
      if (rest.find(": ") != std::string::npos && rest[0] != '"' && rest[0] != '\'' && rest[0] != '[')
        yaml_error(where, "mappings inside lists are outside the YAML trainloop reads");
      node.items.push_back(read_inline_or_block(lines, at, rest, indent, true, source, line.number));
      continue;
    }
    std::string key;
    std::size_t i = 0;
    if (line.text[0] == '"' || line.text[0] == '\'') {
      key = read_quoted(line.text, i, where);
    } else {
      const std::size_t colon = line.text.find(": ");
      i = colon == std::string::npos ? (line.text.back() == ':' ? line.text.size() - 1 : std::string::npos) : colon;
      if (i == std::string::npos) yaml_error(where, "expected 'key: value', got '" + line.text + "'");
      key = trim(line.text.substr(0, i));
    }
    if (i >= line.text.size() || line.text[i] != ':') yaml_error(where, "expected ':' after the key '" + key + "'");
    for (const auto& entry : node.entries)
      if (entry.first == key) yaml_error(where, "the key '" + key + "' appears twice");
    node.entries.emplace_back(key, read_inline_or_block(lines, at, trim(line.text.substr(i + 1)), indent, false, source, line.number));
  }
  return node;
}
// Edit distance, for "did you mean".
TRAINLOOP_DETAIL_API std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}
TRAINLOOP_DETAIL_API std::string scalar_yaml(const Node& n) {
  switch (n.kind) {
    case Node::Kind::null: return "null";
    case Node::Kind::scalar: return n.quoted ? trainloop::detail::yaml_string(n.text) : n.text;
    case Node::Kind::list: {
      std::string out = "[";
      for (std::size_t i = 0; i < n.items.size(); ++i) out += (i ? ", " : "") + scalar_yaml(n.items[i]);
      return out + "]";
    }
    case Node::Kind::map: return "{}";
  }
  return "null";
}
}  // namespace detail_cli

TRAINLOOP_DETAIL_API Node parse_yaml(const std::string& text, const std::string& source) {
  std::vector<detail_cli::YamlLine> lines;
  int number = 0;
  std::size_t at = 0;
  while (at <= text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string raw = text.substr(at, end - at);
    at = end + 1;
    ++number;
    if (raw.find('\t') != std::string::npos && raw.find_first_not_of(" \t") != std::string::npos &&
        raw.find('\t') < raw.find_first_not_of(" \t"))
      detail_cli::yaml_error(source + ":" + std::to_string(number), "a tab in the indentation (YAML indents with spaces)");
    std::string content = detail_cli::strip_comment(raw);
    const std::size_t indent = content.find_first_not_of(' ');
    if (indent == std::string::npos || detail_cli::trim(content).empty()) continue;
    const std::string stripped = detail_cli::trim(content);
    if (stripped == "---" || stripped == "...") continue;
    if (stripped.rfind("%", 0) == 0) continue;  // a directive
    lines.push_back({number, indent, stripped});
  }
  if (lines.empty()) {
    Node empty;
    empty.kind = Node::Kind::map;
    return empty;
  }
  std::size_t i = 0;
  if (lines[0].text.find(':') == std::string::npos && lines[0].text.rfind("- ", 0) != 0) {
    // A whole document that is one flow value ({} for an empty mapping).
    std::size_t j = 0;
    Node value = detail_cli::read_flow(lines[0].text, j, source + ":" + std::to_string(lines[0].number), false);
    if (lines.size() > 1) detail_cli::yaml_error(source + ":" + std::to_string(lines[1].number), "unexpected text after the document");
    return value;
  }
  Node root = detail_cli::read_block(lines, i, lines[0].indent, source);
  if (i < lines.size()) detail_cli::yaml_error(source + ":" + std::to_string(lines[i].number), "unexpected indentation");
  return root;
}

TRAINLOOP_DETAIL_API Node parse_yaml_value(const std::string& text, const std::string& where) {
  std::size_t i = 0;
  Node value = detail_cli::read_flow(text, i, where, false);
  if (!detail_cli::trim(text.substr(i)).empty()) detail_cli::yaml_error(where, "unexpected text after the value: '" + text.substr(i) + "'");
  return value;
}

TRAINLOOP_DETAIL_API std::string to_yaml(const Node& map, int indent) {
  if (map.kind != Node::Kind::map) return detail_cli::scalar_yaml(map) + "\n";
  if (map.entries.empty()) return indent == 0 ? "{}\n" : "";
  std::string out;
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  for (const auto& [key, value] : map.entries) {
    if (value.kind == Node::Kind::map && !value.entries.empty())
      out += pad + key + ":\n" + to_yaml(value, indent + 2);
    else
      out += pad + key + ": " + detail_cli::scalar_yaml(value) + "\n";
  }
  return out;
}

TRAINLOOP_DETAIL_API std::string closest_name(const std::string& name, const std::vector<std::string>& names) {
  std::string best;
  std::size_t best_distance = std::string::npos;
  for (const auto& candidate : names) {
    const std::size_t d = detail_cli::edit_distance(name, candidate);
    if (d < best_distance) best = candidate, best_distance = d;
  }
  // Close: within a third of the name's length, or the name is a suffix (a section forgotten: "max_epochs").
  if (best_distance <= std::max<std::size_t>(2, name.size() / 3)) return best;
  for (const auto& candidate : names)
    if (candidate.size() > name.size() && candidate.compare(candidate.size() - name.size(), name.size(), name) == 0 &&
        candidate[candidate.size() - name.size() - 1] == '.')
      return candidate;
  return "";
}

TRAINLOOP_DETAIL_API void Run::save_config(const std::string& dir, bool overwrite) const {
  detail_cli::save_config(dir, config_yaml, overwrite);
}
TRAINLOOP_DETAIL_API void detail_cli::save_config(const std::string& dir, const std::string& config_yaml, bool overwrite) {
  const std::filesystem::path path = std::filesystem::path(dir) / "config.yaml";
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw std::runtime_error("trainloop: cannot create the folder '" + dir + "' for config.yaml: " + error.message());
  if (std::filesystem::exists(path) && !overwrite) {
    if (trainloop::detail::read_file_text(path) == config_yaml) return;
    throw std::runtime_error("trainloop: '" + path.string() + "' exists with another configuration; pick another log "
                             "folder or save_config(dir, /*overwrite=*/true) (LightningCLI refuses the same way)");
  }
  trainloop::detail::write_file_atomically(path, config_yaml, "cli: config.yaml");
}

TRAINLOOP_DETAIL_API Parser::Parser(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {
  add_field("seed_everything", "int|null", "Seeds torch's generators when fit starts (TrainerOptions().seed); null: no seeding",
            [this](const Node& n) { seed_ = Value<std::optional<std::uint64_t>>::read(n, "seed_everything"); },
            [this] { return Value<std::optional<std::uint64_t>>::write(seed_); });
  add_field("ckpt_path", "str|null", "A checkpoint: fit resumes it (a path, \"last\" or \"best\"); validate/test/predict load its weights",
            [this](const Node& n) { ckpt_path_ = Value<std::optional<std::string>>::read(n, "ckpt_path").value_or(""); },
            [this] { return ckpt_path_.empty() ? Node() : Value<std::string>::write(ckpt_path_); });
  add_trainer_fields();
}

#define TRAINLOOP_DETAIL_CLI_OPTION(T, name, help) \
  trainer_field<T>(#name, help, [](const TrainerOptions& o) -> T { return o.name(); }, [](TrainerOptions& o, T v) { o.name(v); })
TRAINLOOP_DETAIL_API void Parser::add_trainer_fields() {
  TRAINLOOP_DETAIL_CLI_OPTION(std::string, accelerator, "\"auto\" (CUDA when available), \"cpu\", \"cuda\", \"cuda:N\", \"mps\"");
  TRAINLOOP_DETAIL_CLI_OPTION(std::string, strategy, "\"auto\", \"ddp\" or \"single\"");
  TRAINLOOP_DETAIL_CLI_OPTION(int, devices, "Processes on this machine; 0: what a launcher started");
  TRAINLOOP_DETAIL_CLI_OPTION(std::string, precision, "\"32\", \"16-mixed\", \"bf16-mixed\"");
  trainer_field<std::optional<std::int64_t>>(
      "max_epochs", "Stop after this many epochs; -1: unlimited; null: Lightning's default (1000, or unlimited with max_steps)",
      [](const TrainerOptions& o) { return o.max_epochs() == -2 ? std::nullopt : std::optional<std::int64_t>(o.max_epochs()); },
      [](TrainerOptions& o, std::optional<std::int64_t> v) { o.max_epochs(v.value_or(-2)); });
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, min_epochs, "Train at least this many epochs");
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, max_steps, "Stop after this many optimizer steps; -1: unlimited");
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, min_steps, "Train at least this many optimizer steps");
  trainer_field<double>(
      "max_time", "Wall-clock limit of fit in seconds; 0: none",
      [](const TrainerOptions& o) { return o.max_time().count(); },
      [](TrainerOptions& o, double v) { o.max_time(std::chrono::duration<double>(v)); });
  TRAINLOOP_DETAIL_CLI_OPTION(BatchLimit, limit_train_batches, "Training batches per epoch: a count, or a fraction (1.0: all)");
  TRAINLOOP_DETAIL_CLI_OPTION(BatchLimit, limit_val_batches, "Validation batches: a count, or a fraction");
  TRAINLOOP_DETAIL_CLI_OPTION(BatchLimit, limit_test_batches, "Test batches: a count, or a fraction");
  TRAINLOOP_DETAIL_CLI_OPTION(BatchLimit, limit_predict_batches, "Prediction batches: a count, or a fraction");
  trainer_field<BatchLimit>(
      "overfit_batches", "Train and validate on these first batches: a count, or a fraction; 0: off",
      [](const TrainerOptions& o) { return o.overfit_batches().is_set() ? o.overfit_batches() : BatchLimit(0.0); },
      [](TrainerOptions& o, BatchLimit v) {
        const bool off = v.count() ? *v.count() == 0 : v.fraction() && *v.fraction() == 0.0;
        o.overfit_batches(off ? BatchLimit() : v);
      });
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, fast_dev_run, "Run n batches of each stage to smoke-test the code; 0: off");
  trainer_field<BatchLimit>(
      "val_check_interval", "Validate every n training batches (int) or fraction of an epoch (float)",
      [](const TrainerOptions& o) {
        return o.val_check_batches() ? BatchLimit(*o.val_check_batches()) : BatchLimit(o.val_check_fraction());
      },
      [](TrainerOptions& o, BatchLimit v) {
        if (v.count()) o.val_check_interval(*v.count());
        else o.val_check_interval(v.fraction().value_or(1.0));
      });
  TRAINLOOP_DETAIL_CLI_OPTION(std::optional<std::int64_t>, check_val_every_n_epoch, "Validate every n epochs; null: by val_check_interval across epochs");
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, num_sanity_val_steps, "Validation batches before training; -1: all");
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, accumulate_grad_batches, "Batches per optimizer step");
  TRAINLOOP_DETAIL_CLI_OPTION(double, gradient_clip_val, "Clip gradients to this norm (or value); 0: no clipping");
  trainer_field<std::string>(
      "gradient_clip_algorithm", "\"norm\" or \"value\"",
      [](const TrainerOptions& o) { return std::string(o.gradient_clip_algorithm() == ClipAlgorithm::norm ? "norm" : "value"); },
      [](TrainerOptions& o, std::string v) {
        if (v != "norm" && v != "value")
          throw Error("trainloop: option '--trainer.gradient_clip_algorithm': '" + v + "' is not \"norm\" or \"value\"");
        o.gradient_clip_algorithm(v == "norm" ? ClipAlgorithm::norm : ClipAlgorithm::value);
      });
  TRAINLOOP_DETAIL_CLI_OPTION(std::int64_t, log_every_n_steps, "Write logged step values every n optimizer steps");
  TRAINLOOP_DETAIL_CLI_OPTION(bool, deterministic, "Deterministic algorithms");
  TRAINLOOP_DETAIL_CLI_OPTION(std::string, default_root_dir, "The folder for checkpoints and logs without a path of their own");
  TRAINLOOP_DETAIL_CLI_OPTION(bool, enable_progress_bar, "Show the progress bar");
  TRAINLOOP_DETAIL_CLI_OPTION(bool, enable_model_summary, "Print the model summary when fit starts");
  TRAINLOOP_DETAIL_CLI_OPTION(bool, barebones, "No progress bar, no model summary, no host reads of logged values");
  TRAINLOOP_DETAIL_CLI_OPTION(bool, profiler, "Time every hook and step; report where the time went");
  TRAINLOOP_DETAIL_CLI_OPTION(bool, use_distributed_sampler, "Shard trainloop DataLoaders across data-parallel ranks");
}
#undef TRAINLOOP_DETAIL_CLI_OPTION

TRAINLOOP_DETAIL_API void Parser::add_field(std::string name, std::string type, std::string help,
                                            std::function<void(const Node&)> set, std::function<Node()> get) {
  for (const auto& f : fields_)
    if (f.name == name) throw std::logic_error("trainloop: cli::Parser: the option '" + name + "' is declared twice");
  Field field{std::move(name), std::move(type), std::move(help), std::move(set), std::move(get)};
  fields_.push_back(std::move(field));
}

TRAINLOOP_DETAIL_API Parser& Parser::alias(const std::string& spelling, const std::string& option,
                                           std::optional<std::string> value) {
  if (!find(option)) throw std::logic_error("trainloop: cli::Parser::alias: no option '" + option + "'");
  aliases_.push_back({spelling, option, std::move(value)});
  return *this;
}

TRAINLOOP_DETAIL_API const Field* Parser::find(const std::string& name) const {
  for (const auto& f : fields_)
    if (f.name == name) return &f;
  return nullptr;
}
TRAINLOOP_DETAIL_API std::vector<std::string> Parser::names() const {
  std::vector<std::string> out;
  for (const auto& f : fields_) out.push_back(f.name);
  return out;
}

TRAINLOOP_DETAIL_API void Parser::apply_config(const Node& node, const std::string& prefix) {
  for (const auto& [key, value] : node.entries) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (const Field* field = find(name)) {
      field->set(value);
      continue;
    }
    bool is_section = false;
    for (const auto& f : fields_) is_section = is_section || f.name.rfind(name + ".", 0) == 0;
    if (is_section && value.kind == Node::Kind::map) {
      apply_config(value, name);
      continue;
    }
    const std::string close = closest_name(name, names());
    throw Error("trainloop: " + value.where + ": unknown key '" + name + "'" +
                (close.empty() ? "" : "; did you mean '" + close + "'?") + " (" + program_ + " --help lists them)");
  }
}

TRAINLOOP_DETAIL_API Node Parser::resolved() const {
  Node root;
  root.kind = Node::Kind::map;
  for (const auto& f : fields_) {
    Node* at = &root;
    std::size_t begin = 0;
    for (std::size_t dot = f.name.find('.'); dot != std::string::npos; begin = dot + 1, dot = f.name.find('.', begin)) {
      const std::string part = f.name.substr(begin, dot - begin);
      auto it = std::find_if(at->entries.begin(), at->entries.end(), [&](const auto& e) { return e.first == part; });
      if (it == at->entries.end()) {
        Node section;
        section.kind = Node::Kind::map;
        at->entries.emplace_back(part, section);
        it = at->entries.end() - 1;
      }
      at = &it->second;
    }
    at->entries.emplace_back(f.name.substr(begin), f.get());
  }
  return root;
}

TRAINLOOP_DETAIL_API std::string Parser::help() const {
  std::string out = "usage: " + program_ + " [fit|validate|test|predict] [--config FILE] [--print_config] [--help] [--OPTION VALUE ...]\n";
  if (!description_.empty()) out += "\n" + description_ + "\n";
  out += "\nsubcommands: fit, validate, test, predict" +
         (default_subcommand_.empty() ? std::string(" (one is required)") : " (default: " + default_subcommand_ + ")") +
         "\n\nPrecedence: defaults < --config files (in order) < the other options. A value is YAML: 3, 0.5, \"text\", "
         "[1, 2], null.\n\n  --config FILE                   read options from a YAML file (--print_config writes one)\n"
         "  --print_config                  print the resolved configuration as YAML and exit\n"
         "  --help, -h                      show this help and exit\n";
  std::string section = "\x01";
  for (const auto& f : fields_) {
    const std::size_t dot = f.name.find('.');
    const std::string this_section = dot == std::string::npos ? "" : f.name.substr(0, dot);
    if (this_section != section) {
      section = this_section;
      out += "\n" + (section.empty() ? std::string("general") : section) + ":\n";
    }
    std::string left = "  --" + f.name + " " + f.type;
    if (left.size() < 48) left += std::string(48 - left.size(), ' ');
    else left += "\n" + std::string(48, ' ');
    out += left + f.help + " (default: " + detail_cli::scalar_yaml(f.get()) + ")\n";
  }
  if (!aliases_.empty()) {
    out += "\naliases:\n";
    for (const auto& a : aliases_)
      out += "  " + a.spelling + (a.value ? "" : " VALUE") + " = --" + a.option + (a.value ? " " + *a.value : "") + "\n";
  }
  return out;
}

TRAINLOOP_DETAIL_API Run Parser::parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

TRAINLOOP_DETAIL_API Run Parser::parse(const std::vector<std::string>& args) {
  Run run;
  std::size_t i = 0;
  static const std::vector<std::string> subcommands = {"fit", "validate", "test", "predict"};
  if (i < args.size() && !args[i].empty() && args[i][0] != '-') {
    if (std::find(subcommands.begin(), subcommands.end(), args[i]) == subcommands.end()) {
      const std::string close = closest_name(args[i], subcommands);
      throw Error("trainloop: " + program_ + ": unknown subcommand '" + args[i] + "'" +
                  (close.empty() ? "; expected fit, validate, test or predict" : "; did you mean '" + close + "'?"));
    }
    run.subcommand = args[i++];
  } else if (default_subcommand_.empty()) {
    throw Error("trainloop: " + program_ + ": give a subcommand: fit, validate, test or predict");
  } else {
    run.subcommand = default_subcommand_;
  }
  // First pass: --help, --print_config and the config files; the options wait for the second.
  struct Setting {
    const Field* field;
    std::string value;
    std::string spelling;
  };
  std::vector<Setting> settings;
  std::vector<std::string> configs;
  bool print_config = false;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      if (output_) std::fputs(help().c_str(), output_);
      run.exit_code = 0;
      return run;
    }
    if (arg == "--print_config") {
      print_config = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0)
      throw Error("trainloop: " + program_ + ": unexpected argument '" + arg + "' (options start with --)");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (const std::size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "config") {
      if (!has_value && i + 1 >= args.size()) throw Error("trainloop: " + program_ + ": --config needs a file");
      configs.push_back(has_value ? value : args[++i]);
      continue;
    }
    const Field* field = find(name);
    for (const auto& a : aliases_)
      if (!field && a.spelling == arg.substr(0, arg.find('='))) {
        field = find(a.option);
        if (a.value) {
          if (has_value) throw Error("trainloop: " + program_ + ": " + a.spelling + " takes no value");
          value = *a.value;
          has_value = true;
        }
      }
    if (!field) {
      std::vector<std::string> known = names();
      for (const auto& a : aliases_) known.push_back(a.spelling.substr(a.spelling.find_first_not_of('-')));
      known.insert(known.end(), {"config", "print_config", "help"});
      const std::string close = closest_name(name, known);
      throw Error("trainloop: " + program_ + ": unknown option '--" + name + "'" +
                  (close.empty() ? "" : "; did you mean '--" + close + "'?") + " (--help lists them)");
    }
    if (!has_value) {
      // A bool option alone is true (--trainer.deterministic), as a flag.
      const bool next_is_value = i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0;
      if (field->type == "bool" && !next_is_value) value = "true";
      else if (!next_is_value) throw Error("trainloop: " + program_ + ": option '--" + field->name + "' needs a value (" + field->type + ")");
      else value = args[++i];
    }
    settings.push_back({field, value, arg});
  }
  for (const auto& path : configs) {
    if (!std::filesystem::exists(path)) throw Error("trainloop: " + program_ + ": --config '" + path + "': no such file");
    const Node config = parse_yaml(trainloop::detail::read_file_text(path), path);
    if (config.kind != Node::Kind::map) throw Error("trainloop: " + path + ": a config file is a mapping of options");
    apply_config(config, "");
  }
  for (const auto& s : settings) s.field->set(parse_yaml_value(s.value, "the command line"));
  trainer_.seed(seed_);
  try {
    trainer_.validate();
  } catch (const std::invalid_argument& error) {
    throw Error(error.what());
  }
  run.trainer = trainer_;
  run.ckpt_path = ckpt_path_;
  run.config_yaml = to_yaml(resolved());
  for (const auto& f : fields_) {
    const Node v = f.get();
    const bool number = v.kind == Node::Kind::scalar && !v.quoted && f.type.rfind("bool", 0) != 0;
    if (number && detail_cli::looks_like_int(v.text)) run.hyperparameters[f.name] = detail_cli::to_int(v, f.name);
    else if (number) run.hyperparameters[f.name] = detail_cli::to_float(v, f.name);
    else if (v.kind == Node::Kind::scalar) run.hyperparameters[f.name] = v.text;
    else run.hyperparameters[f.name] = detail_cli::scalar_yaml(v);
  }
  if (print_config) {
    if (output_) std::fputs(run.config_yaml.c_str(), output_);
    run.exit_code = 0;
  }
  return run;
}
}  // namespace cli
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
